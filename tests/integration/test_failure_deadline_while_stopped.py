"""Failure table (docs/operations.md, "what survives what"): the approval's deadline
passed while the run was stopped.

A run waits for an approval, its serve is stopped (the run suspended, as serve's SIGTERM
suspends it) and nothing runs it until after the approval's deadline. The next serve
must not give people a new deadline: the request times out as it would have, its
``on_timeout`` applies (deny, by default), and the gated step does not run.
The test waits for the deadline itself (read from the request), not for a guessed time.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from clampdown.app.local_runs import InProcessStarter, stopped_runs
from clampdown.core.ledger import read
from clampdown.core.settings import settings
from tests.approver_keys import approver_keys
from tests.waiting import wait_for

# 30 s: ample for the test to stop the run before its deadline on a loaded machine
RUNBOOK = """\
apiVersion: clampdown/v1
kind: Runbook
metadata: {name: deadline-while-stopped, title: Deadline while stopped, severity: high}
steps:
  - id: approve
    uses: approval.request
    with: {summary: "Go?", approvers: {users: [U0TERM1]}, timeout: 30s}
  - {id: act, uses: core.log, needs: [approve], with: {message: approved}}
"""
BOUND = 120.0


def wait_for_event(check: Any, what: str) -> Any:
    """:func:`tests.waiting.wait_for` within this file's :data:`BOUND`."""
    return wait_for(check, what, BOUND)


def when(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def test_an_approval_whose_deadline_passed_while_stopped_times_out_on_resume(
    prefect_server: str,
    clampdown_home: Path,
    write_runbook: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CLAMPDOWN_SLACK_BOT_TOKEN", raising=False)
    approver_keys(tmp_path, monkeypatch, "U0TERM1")
    path = write_runbook(RUNBOOK, "deadline-while-stopped.yaml")
    first = InProcessStarter()
    run_id = first(path, {}, {"type": "manual"})
    file = settings().paths.run(run_id).approval_request("approve")
    request = wait_for_event(lambda: file.is_file() and json.loads(file.read_text()), "the gate")
    assert first.shutdown() == [run_id]  # serve stopped: the run is suspended
    ledger = settings().ledger_path(run_id)
    [suspended] = [r for r in read(ledger) if r["type"] == "run.suspended"]
    deadline = when(request["deadline"])
    assert when(suspended["ts"]) < deadline  # stopped while the approval still waited
    assert "approval.end" not in [r["type"] for r in read(ledger)]
    wait_for_event(lambda: datetime.now(UTC) > deadline, "the deadline to pass")  # the event itself
    assert stopped_runs(settings().paths) == [run_id]

    second = InProcessStarter(resume_stopped=True, scan_every=3600)  # the next serve
    try:
        wait_for_event(lambda: "run.end" in [r["type"] for r in read(ledger)], "the run to end")
    finally:
        second.shutdown()
    records = read(ledger)
    [resumed] = [r for r in records if r["type"] == "run.resumed"]
    [closed] = [r for r in records if r["type"] == "approval.end"]
    assert closed["seq"] > resumed["seq"]
    assert closed["outcome"] == "timed_out" and closed["approved"] is False, closed
    assert not any(r["type"] == "step.start" and r["step"] == "act" for r in records)
    end = records[-1]
    assert end["type"] == "run.end" and end["status"] == "denied", end  # on_timeout: deny
    assert end["steps"]["act"] != "succeeded", end
