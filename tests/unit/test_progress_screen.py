"""The live progress table holds still while the interactive drill asks a question."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from rich.console import Console

from clampdown.app.progress import RunProgress, Screen
from clampdown.core.loader import load
from tests.paths import LIBRARY


def progress(tmp_path: Path, console: Console) -> RunProgress:
    model = load(LIBRARY / "engine-self-check.yaml").model
    return RunProgress(tmp_path / "run1" / "ledger.jsonl", model, console)


def test_a_prompt_stops_the_live_table_and_it_starts_again_after(tmp_path: Path) -> None:
    console = Console(file=io.StringIO(), force_terminal=True, width=120)
    live = progress(tmp_path, console)
    screen = Screen()
    with live:
        screen.show(live)
        assert live._live is not None and live._live.is_started
        with screen.held():
            assert not live._live.is_started  # nothing redraws over the question
            console.print("approve or deny?")
        assert live._live.is_started
        screen.show(None)
    text = console.file.getvalue()
    assert "approve or deny?" in text


def test_without_a_terminal_or_a_live_table_holding_changes_nothing(tmp_path: Path) -> None:
    console = Console(file=io.StringIO())  # not a terminal: one line per event, no live view
    screen = Screen()
    with screen.held():  # nothing shown yet
        pass
    with progress(tmp_path, console) as plain:
        screen.show(plain)
        assert plain._live is None
        with screen.held():
            console.print("approve or deny?")
    assert "approve or deny?" in console.file.getvalue()


def chain(n: int) -> Any:
    """A runbook of ``n`` chained ``core.log`` steps, as a model."""
    from clampdown.core.models import Runbook

    steps = [
        {"id": f"s{i}", "uses": "core.log", "with": {"message": "x"}}
        | ({"needs": [f"s{i - 1}"]} if i else {})
        for i in range(n)
    ]
    return Runbook.model_validate(
        {
            "apiVersion": "clampdown/v1",
            "kind": "Runbook",
            "metadata": {"name": "long-chain", "title": "Long chain"},
            "steps": steps,
        }
    )


def write(ledger: Path, *records: dict[str, Any]) -> None:
    ledger.parent.mkdir(parents=True, exist_ok=True)
    with ledger.open("a") as fh:
        for record in records:
            fh.write(json.dumps(record) + "\n")


def test_a_long_run_shows_a_screenful_around_the_running_step_and_counts_the_rest(
    tmp_path: Path,
) -> None:
    ledger = tmp_path / "run1" / "ledger.jsonl"
    view = RunProgress(ledger, chain(500), Console(file=io.StringIO(), width=160), max_rows=12)
    for i in range(300):
        write(
            ledger,
            {"type": "step.start", "step": f"s{i}"},
            {"type": "step.end", "step": f"s{i}", "status": "succeeded", "seconds": 0.01},
        )
    write(ledger, {"type": "step.start", "step": "s300"})
    view._poll()
    shown = [s.id for s in view.shown_steps()]
    assert len(shown) == 12
    assert "s300" in shown  # the running step
    assert shown[0] != "s0" and "s299" in shown  # the latest to end, not the first
    assert "s301" in shown  # the next to start
    assert shown == sorted(shown, key=lambda s: int(s[1:]))  # runbook order
    table = view.table()
    assert table.row_count == 12
    assert table.caption == "500 steps: 199 pending, 1 running, 300 succeeded (488 not shown)"


def test_a_short_run_shows_every_step_in_order(tmp_path: Path) -> None:
    view = RunProgress(tmp_path / "r" / "ledger.jsonl", chain(5), Console(file=io.StringIO()))
    assert [s.id for s in view.shown_steps()] == ["s0", "s1", "s2", "s3", "s4"]
    assert view.table().caption is None


def test_the_live_table_is_redrawn_when_a_record_changes_it_not_on_every_tick(
    tmp_path: Path,
) -> None:
    ledger = tmp_path / "run1" / "ledger.jsonl"
    view = RunProgress(ledger, chain(3), Console(file=io.StringIO()))
    assert view._due() is True  # the first draw
    assert view._due() is False  # nothing changed, no clock running
    write(ledger, {"type": "step.start", "step": "s0"})
    view._poll()
    assert view._due() is True
    assert view._due() is False  # within the second: the running clock waits
    view._drawn -= 1.5
    assert view._due() is True  # a second later: the running step's clock moves
