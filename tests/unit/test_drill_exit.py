"""``clampdown drill`` leaves its heap out of the garbage collections of Python's exit.

A drill builds a large heap in its process (moto's simulated account, boto3's and
Prefect's models, serve): Python's exit ran its final collections over all of it, 4.3 s
after the report was printed at load 10. The command freezes the heap once the report is
printed (``gc.freeze``), so those collections skip it; here the drill itself is replaced
by its result, and the command must have frozen the heap by the time it exits.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import typer
from typer.testing import CliRunner

import clampdown.app.drill.runner as runner
from clampdown.app.cli_drill import register


@pytest.fixture
def unfrozen(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")  # restored
    gc.unfreeze()
    yield
    gc.unfreeze()  # the rest of the test session collects as before


def test_the_heap_is_frozen_once_the_report_is_printed(
    unfrozen: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    report = SimpleNamespace(
        all_met=True, verdict="all objectives met", objectives=[], expected_missed=[]
    )
    result = SimpleNamespace(
        report=report, html=tmp_path / "r.html", markdown=tmp_path / "r.md", exit_code=0
    )
    frozen_during_drill: list[int] = []
    options: dict[str, object] = {}

    def drill(*args: object, **kwargs: object) -> SimpleNamespace:
        frozen_during_drill.append(gc.get_freeze_count())
        options.update(kwargs)
        return result

    monkeypatch.setattr(runner, "run_drill", drill)
    app = typer.Typer()
    register(app)
    done = CliRunner().invoke(app, ["drill"])
    assert done.exit_code == 0, done.output
    assert "report:" in done.output
    assert frozen_during_drill == [0]  # not before the drill runs: its start freezes its own
    assert options.get("freeze_start") is True  # the command's process runs this drill alone
    assert gc.get_freeze_count() > 0
