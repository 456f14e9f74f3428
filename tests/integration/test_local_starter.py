"""serve's local starter hands the runbook it loaded to the run (issue 15): the run's
``respond`` does not load and lint the file again, and records the digest of the bytes
that were loaded; a run started any other way still loads it itself."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from clampdown.app.local_runs import InProcessStarter
from clampdown.core.ledger import read
from clampdown.core.settings import settings
from clampdown_flows import preloaded

RUNBOOK = """\
apiVersion: clampdown/v1
kind: Runbook
metadata: {name: loaded-once, title: Loaded once, severity: low}
steps:
  - {id: only, uses: core.log, with: {message: "hello"}}
"""


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every load-and-check of a runbook for a run, by path."""
    seen: list[str] = []
    real = preloaded.load_runbook

    def counted(path: Any, *args: Any) -> Any:
        seen.append(str(path))
        return real(path, *args)

    monkeypatch.setattr(preloaded, "load_runbook", counted)
    return seen


def test_a_run_started_by_the_starter_is_not_loaded_again(
    prefect_server: str, clampdown_home: Path, write_runbook: Any, loads: list[str]
) -> None:
    path = write_runbook(RUNBOOK, "loaded-once.yaml")
    starter = InProcessStarter()
    try:
        run_id = starter(path, {}, {"type": "manual"})
        starter.wait(run_id, 120)
    finally:
        starter.shutdown()
    records = read(settings().ledger_path(run_id))
    assert records[-1]["type"] == "run.end" and records[-1]["status"] == "succeeded"
    assert loads == [str(path)]  # the starter's load; respond used it
    assert records[0]["digest"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_run_given_another_runbook_loads_its_own(
    prefect_server: str, clampdown_home: Path, write_runbook: Any, loads: list[str]
) -> None:
    """The hand-off names its file: a run of another path ignores it and loads its own."""
    path = write_runbook(RUNBOOK, "loaded-once.yaml")
    other = write_runbook(RUNBOOK.replace("loaded-once", "other-one"), "other-one.yaml")
    starter = InProcessStarter()
    try:
        prepared = starter.prepare(path, {}, {"type": "manual"}, run_id="handoff00001")
        mismatched = preloaded.Preloaded(str(other), prepared.preloaded.model, "0" * 64)
        wrong = type(prepared)(starter, prepared.run_id, path, prepared.start, mismatched)
        wrong.record()
        wrong.launch()
        starter.wait(wrong.run_id, 120)
    finally:
        starter.shutdown()
    records = read(settings().ledger_path("handoff00001"))
    assert records[-1]["status"] == "succeeded"
    assert loads == [str(path), str(path)]  # prepare's, then the run's own
    assert records[0]["digest"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_launcher_is_told_once_run_start_is_durable(
    prefect_server: str, clampdown_home: Path, write_runbook: Any
) -> None:
    """``launch(on_start)``: called once, from the run, when its ``run.start`` is on disk
    (the triage's launcher launches the next waiting run then, without polling ledgers)."""
    path = write_runbook(RUNBOOK, "loaded-once.yaml")
    seen: list[list[str]] = []
    starter = InProcessStarter()
    try:
        prepared = starter.prepare(path, {}, {"type": "manual"}, run_id="told00000001")
        ledger = settings().ledger_path(prepared.run_id)
        prepared.record()
        prepared.launch(lambda: seen.append([r["type"] for r in read(ledger)]))
        starter.wait(prepared.run_id, 120)
    finally:
        starter.shutdown()
    assert seen == [["run.start"]]  # once, with run.start written and nothing after it yet
    assert read(ledger)[-1]["status"] == "succeeded"


def test_the_library_given_is_recorded_without_reading_the_settings(
    clampdown_home: Path, write_runbook: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``prepare(library=...)`` (the triage's) is the start record's library; without it,
    ``CLAMPDOWN_LIBRARY`` as it is now."""
    from clampdown.core import settings as settings_module

    path = write_runbook(RUNBOOK, "loaded-once.yaml")
    starter = InProcessStarter()
    try:
        reads: list[int] = []
        real = settings_module.current_library
        monkeypatch.setattr(settings_module, "current_library", lambda: reads.append(1) or real())
        given = starter.prepare(
            path, {}, {"type": "manual"}, run_id="lib000000001", library=path.parent
        )
        assert given.start.library == str(path.parent) and reads == []
        monkeypatch.setenv("CLAMPDOWN_LIBRARY", str(tmp_path / "elsewhere"))
        now = starter.prepare(path, {}, {"type": "manual"}, run_id="lib000000002")
        assert now.start.library == str(tmp_path / "elsewhere") and reads == [1]
    finally:
        starter.shutdown()
