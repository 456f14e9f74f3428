"""A decision sent from the process that runs the flow wakes the paused run at once.

The paused run's own poll of the Prefect API is made an hour long here
(``approval_gate.poll_seconds``), and each sender waits at most a minute for the run's
verdict: only the wake-up (:mod:`clampdown_flows.decision_wakeup`) lets the run see a
decision in that minute. Without it every verdict below is "the run has not answered
yet". The decisions still meet every check: one bound to other parameters is refused
and recorded, and a bell that rings while nothing was decided changes nothing.

Real flow runs on the session's Prefect API, started by serve's ``InProcessStarter``
(which owns the registry); no Slack (the approver is listed by user id).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clampdown.app.local_runs import InProcessStarter
from clampdown.core.ledger import read as read_ledger
from clampdown.core.settings import settings
from clampdown_flows import approval_gate
from clampdown_flows.decision_inbox import read_request
from clampdown_flows.decisions import submit_decision

LEAD = "U0LEAD"
SENDER_WAIT = 60.0  # each sender's bound; the run's own poll is an hour apart here
RUNBOOK = """\
apiVersion: clampdown/v1
kind: Runbook
metadata: {name: woken-gate, title: Gate woken by its decision, severity: high}
steps:
  - id: approve
    uses: approval.request
    with: {summary: "Go?", approvers: {users: [U0LEAD]}, timeout: 2h}
  - id: act
    uses: core.log
    needs: [approve]
    with: {message: approved}
"""


@pytest.fixture
def runbook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("CLAMPDOWN_SLACK_BOT_TOKEN", "CLAMPDOWN_SLACK_CHANNEL"):
        monkeypatch.delenv(name, raising=False)
    folder = tmp_path / "library"
    folder.mkdir()
    path = folder / "woken-gate.yaml"
    path.write_text(RUNBOOK, encoding="utf-8")
    monkeypatch.setenv("CLAMPDOWN_LIBRARY", str(folder))
    return path


@pytest.fixture
def hour_long_poll(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Every pause polls once an hour; returns the waits the gate asked about."""
    asked: list[float] = []

    def hourly(wait: float) -> float:
        asked.append(wait)
        return 3600.0

    monkeypatch.setattr(approval_gate, "poll_seconds", hourly)
    return asked


@pytest.fixture
def starter(prefect_server: str, runbook: Path) -> Iterator[InProcessStarter]:
    runs = InProcessStarter()
    yield runs
    runs.shutdown()


def _records(run_id: str, kind: str) -> list[dict[str, Any]]:
    return [r for r in read_ledger(settings().ledger_path(run_id)) if r["type"] == kind]


def _paused_request(run_id: str, timeout: float = 60) -> dict[str, Any]:
    """The saved request once the run waits on it (pending, with its flow run id)."""
    files = settings().paths.run(run_id)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        saved = read_request(files, "approve")
        if saved and saved.get("status") == "pending" and saved.get("flow_run_id"):
            return saved
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} never waited at its approval")


def _ring_while_paused(starter: InProcessStarter, flow_run_id: str, timeout: float = 60) -> None:
    """Ring the run's bell with nothing decided, once its pause listens for one."""
    deadline = time.monotonic() + timeout
    while not starter.wakeups.wake(flow_run_id):
        assert time.monotonic() < deadline, "the paused run never listened for a wake-up"
        time.sleep(0.05)


def test_a_decision_sent_in_the_runs_process_is_counted_without_waiting_for_the_poll(
    starter: InProcessStarter, runbook: Path, hour_long_poll: list[float]
) -> None:
    run_id = starter(runbook, {}, {"type": "manual"})
    request = _paused_request(run_id)
    _ring_while_paused(starter, str(request["flow_run_id"]))  # nothing decided: still paused

    refused = submit_decision(
        run_id, "approve", LEAD, source="slack", params_hash_seen="0" * 64,
        wait=SENDER_WAIT, wakeups=starter.wakeups,
    )  # fmt: skip
    assert not refused.accepted and not refused.queued, refused
    assert "parameters" in refused.reason, refused.reason

    counted = submit_decision(
        run_id, "approve", LEAD, source="slack", wait=SENDER_WAIT, wakeups=starter.wakeups
    )
    assert counted.accepted and counted.outcome == "approved", counted

    starter.wait(run_id, 60)
    (end,) = _records(run_id, "run.end")
    assert end["status"] == "succeeded" and end["steps"]["act"] == "succeeded"
    decided = _records(run_id, "approval.decision")
    assert [(r["accepted"], r["approver"]) for r in decided] == [(False, LEAD), (True, LEAD)]
    assert hour_long_poll, "the gate did not pause through approval_gate.poll_seconds"
    assert starter.wakeups.rung >= 3  # the idle ring, then one per decision


def test_the_sender_reads_the_outcome_from_the_decision_even_when_the_run_ends_it_late(
    starter: InProcessStarter, runbook: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run writes what a counted decision made of the request in its own record
    (``decides``). Before, the sender looked for the ``approval.end`` after it for 0.5 s:
    a run slower than that between the two records (a loaded machine) had
    ``clampdown approve`` say "more approvals needed" for a decision that approved."""
    finish = approval_gate.Gatekeeper._finish

    def late_finish(self: Any, *args: Any, **kwargs: Any) -> None:
        time.sleep(2.0)  # the request's end written well after the sender's old settle
        finish(self, *args, **kwargs)

    monkeypatch.setattr(approval_gate.Gatekeeper, "_finish", late_finish)
    run_id = starter(runbook, {}, {"type": "manual"})
    _paused_request(run_id)
    counted = submit_decision(
        run_id, "approve", LEAD, source="slack", wait=SENDER_WAIT, wakeups=starter.wakeups
    )
    assert counted.accepted and counted.outcome == "approved", counted
    starter.wait(run_id, 60)
    (decided,) = _records(run_id, "approval.decision")
    assert decided["decides"] == "approved"
    (end,) = _records(run_id, "approval.end")
    assert end["outcome"] == decided["decides"]
