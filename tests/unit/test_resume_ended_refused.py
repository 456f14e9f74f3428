"""``clampdown resume`` of a run that already ended: refused with an error that says how it
ended and what can still be done, exit 1, before any Prefect API is started and without
touching the run's files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import clampdown.app.cli_runs as cli_runs
from clampdown.app.cli import app
from clampdown.core.home import Home
from clampdown.core.ledger_signing import open_ledger
from clampdown.core.run_start import RunStart
from tests.paths import REPO

runner = CliRunner()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Home:
    root = tmp_path / "home"
    monkeypatch.setenv("CLAMPDOWN_HOME", str(root))
    for name in ("CLAMPDOWN_LEDGER_KEY", "CLAMPDOWN_LEDGER_KMS_KEY_ID", "CLAMPDOWN_DRILL"):
        monkeypatch.delenv(name, raising=False)

    def no_prefect(*_: Any, **__: Any) -> Any:
        raise AssertionError("a Prefect API was asked for")

    monkeypatch.setattr(cli_runs, "resident_prefect", no_prefect)
    # resume sets it (setdefault) before it asks for Prefect: put back after the test
    monkeypatch.setenv("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
    return Home(root)


def ended_run(home: Home, run_id: str, *end: dict[str, Any]) -> Path:
    """A run with its start record and a ledger that ends with ``end`` records."""
    files = home.run(run_id)
    runbook = str(REPO / "runbooks" / "engine-self-check.yaml")
    RunStart.of(run_id, runbook, {}, {"type": "manual"}).save(files)
    ledger = open_ledger(files.ledger, run_id, None)
    ledger.append("run.start", run={"id": run_id, "runbook": "engine-self-check", "drill": False})
    for record in end:
        ledger.append(record.pop("type"), **record)
    ledger.close()
    return files.ledger


def test_resume_of_a_failed_run_is_refused_saying_how_it_ended(home: Home) -> None:
    ledger = ended_run(
        home,
        "ended0001",
        {"type": "step.end", "step": "boom", "status": "failed"},
        {"type": "run.end", "status": "failed", "aborted_by": "boom", "error": "deliberate"},
        {"type": "alert.joined", "source": "late"},  # records may follow run.end
    )
    before = ledger.read_bytes()
    result = runner.invoke(app, ["resume", "ended0001"])
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert (
        "error: run 'ended0001' cannot be resumed: it already ended: failed "
        "(step 'boom' failed), at 20" in result.output
    )
    assert "`clampdown report ended0001`" in result.output
    assert "`clampdown rollback ended0001`" in result.output
    assert ledger.read_bytes() == before


def test_resume_of_a_cancelled_run_names_why(home: Home) -> None:
    error = "interrupted (Ctrl-C or the process was stopped): steps not started were not run"
    ended_run(home, "ended0002", {"type": "run.end", "status": "cancelled", "error": error})
    result = runner.invoke(app, ["resume", "ended0002"])
    assert result.exit_code == 1, result.output
    assert f"it already ended: cancelled ({error})" in " ".join(result.output.split())


def test_a_stopped_run_is_not_taken_for_an_ended_one(home: Home) -> None:
    """No run.end (a torn last line is not one): resume goes on to start Prefect."""
    ledger = ended_run(home, "stopped001")
    with ledger.open("ab") as fh:
        fh.write(b'{"type": "run.end", "sta')  # the write a kill -9 cut short
    result = runner.invoke(app, ["resume", "stopped001"])
    assert isinstance(result.exception, AssertionError)  # it asked for Prefect
    assert "a Prefect API was asked for" in str(result.exception)
