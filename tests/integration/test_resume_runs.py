"""Suspending and continuing runs in one process, on the session's Prefect API.

The e2e tests kill real `clampdown serve` processes; these check the same machinery
faster and more finely: a run suspended at its approval (what serve's SIGTERM does),
decisions sent while no process holds it — a genuine one and a forged one written
straight into its inbox — and the run continued by another starter.
"""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import pytest

from clampdown.app.local_runs import InProcessStarter, stopped_runs
from clampdown.core.approvals import Decision
from clampdown.core.ledger import read
from clampdown.core.settings import settings
from clampdown_flows.decision_inbox import keep
from clampdown_flows.decisions import submit_decision
from tests.approver_keys import approver_keys
from tests.waiting import wait_for

RUNBOOK = """\
apiVersion: clampdown/v1
kind: Runbook
metadata: {name: resumable-gate, title: Resumable gate, severity: high}
steps:
  - {id: first, uses: core.log, with: {message: "before the gate"}}
  - id: approve
    uses: approval.request
    needs: [first]
    with: {summary: "Go?", approvers: {users: [U0TERM1, U0TERM2]}, min_approvals: 2,
           timeout: 30m}
  - {id: act, uses: core.log, needs: [approve], with: {message: approved}}
"""


def types(run_id: str) -> list[str]:
    path = settings().ledger_path(run_id)
    return [r["type"] for r in read(path)] if path.is_file() else []


def pending(run_id: str) -> dict[str, Any]:
    path = settings().paths.run(run_id).approval_request("approve")
    return wait_for(
        lambda: path.is_file() and (r := json.loads(path.read_text()))["status"] == "pending" and r,
        "the approval request",
    )


@pytest.fixture
def keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.delenv("CLAMPDOWN_SLACK_BOT_TOKEN", raising=False)
    return approver_keys(tmp_path, monkeypatch, "U0TERM1", "U0TERM2")


def test_a_suspended_run_counts_decisions_sent_while_stopped_and_refuses_a_forged_one(
    prefect_server: str, clampdown_home: Path, write_runbook: Any, keys: Any
) -> None:
    path = write_runbook(RUNBOOK, "resumable-gate.yaml")
    first = InProcessStarter()
    run_id = first(path, {}, {"type": "manual", "user": "U0LEAD"})
    before = pending(run_id)
    assert first.shutdown() == [run_id]  # serve's SIGTERM
    assert "run.suspended" in types(run_id) and "run.end" not in types(run_id)
    assert stopped_runs(settings().paths) == [run_id]

    # U0TERM1 approves while nothing runs the run: kept, not counted yet
    verdict = submit_decision(run_id, "approve", "U0TERM1", key=keys["U0TERM1"])
    assert verdict.queued and not verdict.accepted and "not counted yet" in verdict.reason
    # someone who can write CLAMPDOWN_HOME drops a decision "from U0TERM2" with no signature
    forged = Decision(
        run_id=run_id,
        step="approve",
        params_hash=before["params_hash"],
        nonce=before["nonce"],
        decision="approve",
        approver="U0TERM2",
        source="terminal",
    )
    keep(settings().paths.run(run_id), forged)

    second = InProcessStarter(resume_stopped=True, scan_every=3600)
    try:
        wait_for(lambda: "approval.resumed" in types(run_id), "the run to wait again")
        wait_for(lambda: types(run_id).count("approval.decision") == 2, "the inbox read")
        records = read(settings().ledger_path(run_id))
        decisions = [r for r in records if r["type"] == "approval.decision"]
        by_approver = {d["approver"]: d for d in decisions}
        assert by_approver["U0TERM1"]["accepted"] is True
        assert by_approver["U0TERM2"]["accepted"] is False  # the forged file is refused
        assert "run.end" not in types(run_id)  # one of two approvals: still waiting
        again = pending(run_id)
        assert (again["nonce"], again["deadline"]) == (before["nonce"], before["deadline"])
        # each kept decision is forgotten once recorded: the file goes just after its
        # ledger record is written (wait for it; read at once, the last one may be there)
        inbox = settings().paths.run(run_id).decision_inbox
        wait_for(lambda: not list(inbox.glob("*.json")), "the inbox to be emptied")

        # sent as serve sends a Slack click: with the starter's wake-up registry, so the
        # gate looks as soon as the flow run is resumed, not at its next poll (5 s apart
        # for a 30-minute gate); the decision meets the same checks either way
        counted = submit_decision(
            run_id, "approve", "U0TERM2", key=keys["U0TERM2"], wakeups=second.wakeups
        )
        assert counted.accepted, counted.reason
        wait_for(lambda: "run.end" in types(run_id), "the run to end")
    finally:
        second.shutdown()
    records = read(settings().ledger_path(run_id))
    starts = [r["step"] for r in records if r["type"] == "step.start"]
    assert starts.count("first") == 1  # ended before the stop: not run again
    assert starts.count("act") == 1
    [resumed] = [r for r in records if r["type"] == "run.resumed"]
    assert resumed["rerun"] == ["approve"] and resumed["resumes"] == 1
    end = records[-1]
    assert end["type"] == "run.end" and end["status"] == "succeeded"
    [closed] = [r for r in records if r["type"] == "approval.end"]
    assert closed["approvers"] == ["U0TERM1", "U0TERM2"]


def test_a_run_whose_runbook_changed_while_stopped_ends_and_says_why(
    prefect_server: str, clampdown_home: Path, write_runbook: Any, keys: Any
) -> None:
    path = write_runbook(RUNBOOK, "resumable-gate.yaml")
    first = InProcessStarter()
    run_id = first(path, {}, {"type": "manual"})
    pending(run_id)
    first.shutdown()
    path.write_text(RUNBOOK.replace("before the gate", "edited meanwhile"))

    second = InProcessStarter(resume_stopped=True, scan_every=3600)
    try:
        wait_for(lambda: "run.end" in types(run_id), "the run to end")
    finally:
        second.shutdown()
    end = read(settings().ledger_path(run_id))[-1]
    assert end["status"] == "failed" and "runbook" in end["error"] and "changed" in end["error"]
    assert stopped_runs(settings().paths) == []  # ended: its slots are free


def test_a_break_glass_decision_is_recorded_as_such(
    prefect_server: str,
    clampdown_home: Path,
    write_runbook: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Groups nobody can resolve (no Slack, no CLAMPDOWN_GROUPS): a break-glass approver's
    decision counts, and the ledger says it counted by break glass."""
    monkeypatch.delenv("CLAMPDOWN_SLACK_BOT_TOKEN", raising=False)
    monkeypatch.delenv("CLAMPDOWN_GROUPS", raising=False)
    monkeypatch.setenv("CLAMPDOWN_BREAK_GLASS_APPROVERS", "U0CISO")
    keys = approver_keys(tmp_path, monkeypatch, "U0CISO")
    path = write_runbook(
        RUNBOOK.replace("users: [U0TERM1, U0TERM2]}, min_approvals: 2", "groups: [ir-leads]}"),
        "glass.yaml",
    )
    starter = InProcessStarter()
    try:
        run_id = starter(path, {}, {"type": "manual"})
        pending(run_id)
        verdict = submit_decision(
            run_id, "approve", "U0CISO", key=keys["U0CISO"], wakeups=starter.wakeups
        )  # the gate looks at once, not at its next poll (as for a click in serve)
        assert verdict.accepted, verdict.reason
        wait_for(lambda: "run.end" in types(run_id), "the run to end")
    finally:
        starter.shutdown()
    [decision] = [
        r for r in read(settings().ledger_path(run_id)) if r["type"] == "approval.decision"
    ]
    assert decision["accepted"] and decision["break_glass"] is True


class TenthSleeps:
    """``asyncio`` as the approval gate sees it, with its sleeps a tenth as long: the gate
    waits out an outage with a back-off from 1 s; the test keeps the API down until its
    decision is sent, so the shorter back-off changes the waits, not the order of events."""

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    @staticmethod
    async def sleep(delay: float, result: Any = None) -> Any:
        return await asyncio.sleep(delay / 10, result)


def test_an_approval_waits_out_a_prefect_outage_and_counts_a_decision_sent_during_it(
    prefect_server: str,
    clampdown_home: Path,
    write_runbook: Any,
    keys: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The API stops answering as the run pauses, and still for a while after; a decision
    sent meanwhile cannot be delivered. The approval is not failed: the run waits, and
    once the API answers it reads the decision kept in its inbox and goes on."""
    import httpx
    import prefect.flow_runs

    from clampdown_flows import approval_gate, decisions

    real_pause, real_resume = prefect.flow_runs.apause_flow_run, approval_gate._resume_after_timeout
    down = {"pause": 1, "resume": 2}  # failures left
    sent = threading.Event()  # the API answers again only once the decision was sent

    async def pause(*args: Any, **kwargs: Any) -> Any:
        if down["pause"]:
            down["pause"] -= 1
            raise httpx.ConnectError("[Errno 111] Connection refused")
        return await real_pause(*args, **kwargs)

    async def resume() -> None:
        if down["resume"] or not sent.is_set():
            down["resume"] = max(0, down["resume"] - 1)
            raise httpx.ConnectError("[Errno 111] Connection refused")
        await real_resume()

    def undeliverable(*args: Any, **kwargs: Any) -> None:
        raise httpx.ConnectError("[Errno 111] Connection refused")

    monkeypatch.setattr(prefect.flow_runs, "apause_flow_run", pause)
    monkeypatch.setattr(approval_gate, "_resume_after_timeout", resume)
    monkeypatch.setattr(decisions, "_resume", undeliverable)
    monkeypatch.setattr(approval_gate, "asyncio", TenthSleeps())  # the gate's back-off: 1, 2, 4 s
    path = write_runbook(RUNBOOK.replace(", U0TERM2]}, min_approvals: 2", "]}"), "outage.yaml")
    starter = InProcessStarter()
    try:
        run_id = starter(path, {}, {"type": "manual"})
        wait_for(lambda: "approval.api_unreachable" in types(run_id), "the outage to be seen")
        verdict = submit_decision(run_id, "approve", "U0TERM1", key=keys["U0TERM1"])
        sent.set()
        assert verdict.queued and "cannot be reached" in verdict.reason
        wait_for(lambda: "run.end" in types(run_id), "the run to end")
    finally:
        starter.shutdown()
    records = read(settings().ledger_path(run_id))
    kinds = [r["type"] for r in records]
    assert kinds.index("approval.api_unreachable") < kinds.index("approval.api_reachable")
    assert kinds.index("approval.api_reachable") < kinds.index("approval.decision")
    assert records[-1]["status"] == "succeeded" and down == {"pause": 0, "resume": 0}
