"""clampdown runs: recent runs and their status, read from the ledgers."""

from __future__ import annotations

import json
import os
from pathlib import Path

from typer.testing import CliRunner

from clampdown.app.cli import app
from clampdown.core.ledger import Ledger

runner = CliRunner()


def write_run(home: Path, run_id: str, started: str, end: dict | None, steps=()) -> None:
    ledger = Ledger(home / "runs" / run_id / "ledger.jsonl")
    ledger.append(
        "run.start",
        run={
            "id": run_id,
            "runbook": "contain-iam-user",
            "started_at": started,
            "trigger": {"type": "manual"},
        },
    )
    for step in steps:
        ledger.append("step.start", step=step)
    if end is not None:
        ledger.append("run.end", **end)
    ledger.close()


def test_runs_lists_newest_first_with_status_and_what_is_running(clampdown_home: Path):
    write_run(clampdown_home, "aaa111", "2026-11-26T06:00:00Z", {"status": "succeeded"})
    write_run(
        clampdown_home,
        "bbb222",
        "2026-11-26T07:00:00Z",
        {"status": "failed", "aborted_by": "revoke"},
    )
    write_run(clampdown_home, "ccc333", "2026-11-26T08:00:00Z", None, steps=["snapshot", "revoke"])
    (clampdown_home / "runs" / "junk").mkdir()
    (clampdown_home / "runs" / "junk" / "ledger.jsonl").write_text("not json\n")
    os.utime(clampdown_home / "runs" / "junk" / "ledger.jsonl")
    result = runner.invoke(app, ["runs", "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [(r["run_id"], r["status"]) for r in rows] == [
        ("ccc333", "in progress"),
        ("bbb222", "failed"),
        ("aaa111", "succeeded"),
    ]
    assert rows[0]["detail"] == "running: snapshot, revoke"
    assert rows[1]["detail"] == "aborted by revoke"


def test_runs_with_no_runs_says_so(clampdown_home: Path):
    result = runner.invoke(app, ["runs"])
    assert result.exit_code == 0 and "no runs under" in result.output
