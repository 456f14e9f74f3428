"""Paused runs hold no thread (issue 11): 20 runs waiting at an approval in one
``InProcessStarter`` — serve's local mode, real Prefect flow runs, Slack configured (the
stand-in) — keep no more threads than one paused run does.

Before, each paused run kept two idle threads: Prefect's flow-run heartbeat
(``flow_engine._send_heartbeats``) and the run's Slack sender (``clampdown-slack-<run>``,
blocked on its empty queue). The step threads are bounded apart (2 here, so that their
lazy start cannot blur the count).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from clampdown.app.local_runs import InProcessStarter
from clampdown.core.ledger import read
from clampdown.core.settings import settings
from clampdown_flows.decisions import submit_decision
from clampdown_slack.testing.standin import SlackStandIn
from tests.approver_keys import approver_keys

TOKEN = "xoxb-1111-2222-pausedthreads"
CHANNEL, CHANNEL_ID = "#incident-response", "C0INCIDENT"
APPROVER, STARTER = "U0LEAD", "U0STARTER"
GATED = f"""\
apiVersion: clampdown/v1
kind: Runbook
metadata: {{name: paused-gate, title: Paused gate, severity: high}}
steps:
  - id: approve
    uses: approval.request
    with: {{summary: "Go?", approvers: {{users: [{APPROVER}]}}, min_approvals: 1,
           timeout: 30m}}
  - {{id: act, uses: core.log, needs: [approve], with: {{message: approved}}}}
"""
UNGATED = """\
apiVersion: clampdown/v1
kind: Runbook
metadata: {name: quick-note, title: Quick note, severity: low}
steps:
  - {id: note, uses: core.log, with: {message: done}}
"""
SMALL_CONSTANT = 4  # e.g. an AnyIO worker thread or a Slack stand-in request in flight

pytestmark = pytest.mark.usefixtures("prefect_server")


@pytest.fixture
def slack(monkeypatch: pytest.MonkeyPatch) -> Any:
    with SlackStandIn(token=TOKEN) as standin:
        monkeypatch.setenv("CLAMPDOWN_SLACK_BOT_TOKEN", TOKEN)
        monkeypatch.setenv("CLAMPDOWN_SLACK_CHANNEL", CHANNEL)
        monkeypatch.setenv("CLAMPDOWN_SLACK_API_URL", standin.url)
        monkeypatch.setenv("CLAMPDOWN_SLACK_RETRY_INTERVAL", "0")
        monkeypatch.setenv("CLAMPDOWN_SLACK_MAX_RETRIES", "1")
        monkeypatch.delenv("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", raising=False)
        yield standin


def wait_for(check: Any, what: str, timeout: float = 180) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; threads: {thread_kinds()}")


def types(run_id: str) -> list[str]:
    path = settings().ledger_path(run_id)
    return [r["type"] for r in read(path)] if path.is_file() else []


def pending(run_id: str) -> bool:
    path = settings().paths.run(run_id).approval_request("approve")
    return path.is_file() and json.loads(path.read_text())["status"] == "pending"


def started_with(ident: int | None) -> str:
    """The function a thread was started with: its outermost frame outside threading."""
    frame, found = sys._current_frames().get(ident or -1), "?"
    while frame is not None:
        if not frame.f_code.co_filename.endswith("threading.py"):
            found = frame.f_code.co_name
        frame = frame.f_back
    return found


def thread_kinds() -> Counter[str]:
    return Counter(
        f"{t.name.rsplit('-', 1)[0] if t.name.startswith('clampdown-') else t.name}"
        f" [{started_with(t.ident)}]"
        for t in threading.enumerate()
    )


def settled(slack: SlackStandIn, runs: list[str]) -> bool:
    """Every run waits at its approval, its card is in Slack, and no sender is busy."""
    cards = [m for m in slack.messages(CHANNEL_ID) if m.get("blocks")]
    return (
        all(pending(r) for r in runs)
        and len(cards) >= len(runs)
        and not any(t.name.startswith("clampdown-slack-") for t in threading.enumerate())
    )


def test_heartbeats_stay_on_when_the_operator_configured_them() -> None:
    """The off branch is the test below (no heartbeat thread with 20 runs paused)."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    from clampdown.app.local_runs import _heartbeat_off

    with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: 60}):
        assert _heartbeat_off() == {}  # the operator's 60 s is kept


def test_twenty_paused_runs_hold_no_more_threads_than_one(
    slack: SlackStandIn,
    clampdown_home: Path,
    write_runbook: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    keys = approver_keys(tmp_path, monkeypatch, APPROVER)
    gated, ungated = write_runbook(GATED, "paused-gate.yaml"), write_runbook(UNGATED, "quick.yaml")
    trigger = {"type": "manual", "user": STARTER}
    starter = InProcessStarter(step_threads=2)
    try:
        runs = [starter(gated, {}, trigger)]
        wait_for(lambda: settled(slack, runs), "one run paused, its card posted")
        one, kinds_one = threading.active_count(), thread_kinds()

        runs += [starter(gated, {}, trigger) for _ in range(19)]
        wait_for(lambda: settled(slack, runs), "20 runs paused, their cards posted")
        twenty, kinds_twenty = threading.active_count(), thread_kinds()
        assert twenty <= one + SMALL_CONSTANT, (
            f"{twenty} threads with 20 runs paused, {one} with 1:\n"
            f"20: {dict(kinds_twenty)}\n1: {dict(kinds_one)}"
        )
        assert not [k for k in kinds_twenty if "heartbeat" in k], kinds_twenty

        # a run that ends is forgotten by the starter; the paused ones are kept (shutdown)
        quick = starter(ungated, {}, trigger)
        wait_for(lambda: "run.end" in types(quick), "the ungated run to end")
        wait_for(lambda: quick not in starter.futures, "the ended run's future to be pruned")
        assert sorted(starter.futures) == sorted(runs)

        # a paused run's Slack sender ended while it waited: a decision starts a new one,
        # which edits the card and then the header, in order, with nothing missed
        # with the starter's wake-up registry, as serve sends a Slack click: the gate looks
        # once the flow run is resumed, not at its next poll (5 s apart for 30 minutes)
        verdict = submit_decision(
            runs[0], "approve", APPROVER, key=keys[APPROVER], wakeups=starter.wakeups
        )
        assert verdict.accepted, verdict.reason
        wait_for(lambda: "run.end" in types(runs[0]), "the approved run to end")
        wait_for(lambda: runs[0] not in starter.futures, "its future to be pruned")
    finally:
        starter.shutdown()
    records = read(settings().ledger_path(runs[0]))
    assert records[-1]["type"] == "run.end" and records[-1]["status"] == "succeeded"
    assert not [r for r in records if r["type"] == "slack.miss"]
    posted = next(r for r in records if r["type"] == "slack.posted")
    thread = slack.thread(CHANNEL_ID, posted["message_ts"])
    header, card = thread[0], next(m for m in thread if m.get("blocks"))
    assert "Status: *SUCCEEDED*" in header["text"], header["text"]
    assert not card["text"].startswith("Approval needed"), card["text"]  # edited: decided
    edits = [c for c in slack.calls_to("chat.update") if c.params.get("ts") in (card["ts"],)]
    assert edits, "the card was not edited after the decision"
