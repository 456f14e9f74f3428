"""What a clicker is told (issue 11): "Not counted" only for a decision the run refused; a
decision delivered that the run has not answered yet gets one truthful wording, whichever
of the senders' "still waiting" verdicts it is. The verdicts come from the real sender
(:mod:`clampdown_flows.decisions`), the ephemeral messages go through the real slack_sdk
client to the Slack stand-in."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from clampdown.core.approvals import Decision, DecisionVerdict
from clampdown_flows import decisions
from clampdown_slack.approval_actions import _decide
from clampdown_slack.client import SlackSettings, slack_client
from clampdown_slack.testing.standin import SlackStandIn

TOKEN = "xoxb-1111-2222-clickreplies"
CHANNEL = "C0INCIDENT"
VALUE = {"run_id": "run0001", "step": "approve_containment", "params_hash": "0" * 64}


def _sent() -> Decision:
    """The on-call approver's Slack click on :data:`VALUE`'s request."""
    return Decision(
        run_id=VALUE["run_id"],
        step=VALUE["step"],
        params_hash=VALUE["params_hash"],
        decision="approve",
        approver="U0ONCALL1",
        source="slack",
    )


def _still_waiting_verdicts(tmp_path: Path) -> list[DecisionVerdict]:
    """Every "delivered, not answered yet" verdict the sender gives."""
    sent = _sent()
    # the run did not write its approval.decision record before the sender's deadline
    timed_out = decisions._verdict(tmp_path / "ledger.jsonl", sent, time.monotonic() - 1)
    # kept in the run's inbox: no process holds the run now
    kept = decisions._queued(VALUE["run_id"], VALUE["step"])
    return [timed_out, kept]


@pytest.fixture
def client():
    with SlackStandIn(token=TOKEN) as standin:
        settings = SlackSettings(
            slack_bot_token=TOKEN, slack_api_url=standin.url, slack_max_retries=0
        )
        yield standin, slack_client(settings)


def _click(client: Any, verdict: DecisionVerdict, decision: str = "approve") -> str:
    standin, web = client
    before = len(standin.ephemeral)

    def submit(*_: Any, **__: Any) -> DecisionVerdict:
        return verdict

    reason = "" if decision == "approve" else "not this one"
    _decide(submit, web, VALUE, CHANNEL, "U0ONCALL1", decision, reason)
    new = standin.ephemeral[before:]
    assert len(new) == 1, new
    return str(new[0]["text"])


def test_a_decision_the_run_has_not_answered_is_never_called_not_counted(
    client: Any, tmp_path: Path
) -> None:
    verdicts = _still_waiting_verdicts(tmp_path)
    texts = {_click(client, verdict) for verdict in verdicts}
    assert len(texts) == 1, texts  # one wording, whichever verdict
    [text] = texts
    assert "Not counted" not in text
    assert text.startswith(
        ":hourglass_flowing_sand: Your approval of `approve_containment` is in, "
        "but run `run0001` has not answered yet"
    )
    assert "this card changes once the request is decided" in text
    denial = _click(client, verdicts[0], "deny")
    assert denial.startswith(":hourglass_flowing_sand: Your denial of `approve_containment`")


def test_a_refused_decision_still_says_not_counted_and_why(client: Any) -> None:
    refused = DecisionVerdict(
        False, "U0ONCALL1 started this run; two-person rule: someone else must decide", None
    )
    text = _click(client, refused)
    assert text == (
        ":no_entry: Not counted: U0ONCALL1 started this run; two-person rule: "
        "someone else must decide"
    )


def test_a_counted_decision_gets_no_message(client: Any) -> None:
    standin, web = client

    def submit(*_: Any, **__: Any) -> DecisionVerdict:
        return DecisionVerdict(True, "counted", None, VALUE["step"])

    _decide(submit, web, VALUE, CHANNEL, "U0ONCALL1", "approve", "")
    assert standin.ephemeral == []


def test_clicks_are_acknowledged_while_earlier_ones_wait_for_their_runs(client: Any) -> None:
    """Delivering a decision waits for the run's verdict (up to 30 s). On Bolt's own five
    listener threads, five such waits held back the next click's acknowledgement past
    Slack's 3 s: it is acknowledged at once now, whatever the others wait for."""
    import json
    import threading
    from urllib.parse import urlencode

    from slack_bolt import App, BoltRequest

    from clampdown_slack.approval_actions import register_approval_actions
    from clampdown_slack.approval_card import APPROVE_ACTION

    release = threading.Event()
    delivered: list[str] = []

    def slow_run(run_id: str, *_: Any, **__: Any) -> DecisionVerdict:
        delivered.append(run_id)
        release.wait(60)  # the run has not answered yet
        return DecisionVerdict(True, "counted", None, "approve_containment")

    from slack_bolt.authorization import AuthorizeResult

    def authorize(**_: Any) -> AuthorizeResult:
        return AuthorizeResult(enterprise_id=None, team_id="T0TEAM", bot_token=TOKEN)

    app = App(
        client=client[1],  # the Slack stand-in
        authorize=authorize,
        signing_secret="unused",
        request_verification_enabled=False,
        token_verification_enabled=False,
        process_before_response=False,
    )
    register_approval_actions(app, slow_run)

    def click(n: int) -> BoltRequest:
        value = json.dumps(VALUE | {"run_id": f"run{n:04d}"})
        payload = {
            "type": "block_actions",
            "user": {"id": f"U0ONCALL{n}"},
            "team": {"id": "T0TEAM"},
            "channel": {"id": CHANNEL},
            "container": {"channel_id": CHANNEL},
            "trigger_id": f"trigger-{n}",
            "actions": [{"action_id": APPROVE_ACTION, "value": value, "type": "button"}],
        }
        body = urlencode({"payload": json.dumps(payload)})
        return BoltRequest(
            body=body, headers={"content-type": ["application/x-www-form-urlencoded"]}
        )

    answers: list[int] = []
    try:
        clicks = [threading.Thread(target=lambda n=n: answers.append(app.dispatch(click(n)).status))
                  for n in range(12)]  # fmt: skip
        for thread in clicks:
            thread.start()
        for thread in clicks:
            thread.join(20)  # bounded only so a regression fails instead of hanging
        assert answers == [200] * 12, answers
        deadline = time.monotonic() + 20
        while len(delivered) < 12 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sorted(delivered) == sorted(f"run{n:04d}" for n in range(12))
    finally:
        release.set()


def _ledger_line(record: dict[str, object]) -> str:
    return json.dumps(record) + "\n"


def test_a_deciding_decision_reports_the_outcome_written_just_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run writes ``approval.end`` right after the decision that decides a request; a
    sender reading between the two still reports the outcome (it was None: a flaky
    "counted" with no outcome under load). The end is written once the sender has read
    the decision alone, rather than by a timer 0.15 s on, which a loaded machine could
    run after the sender stopped looking."""
    sent = _sent()
    ledger = tmp_path / "ledger.jsonl"
    decided = {"type": "approval.decision", "decision_id": sent.decision_id, "accepted": True}
    ledger.write_text(_ledger_line(decided))
    end = {"type": "approval.end", "step": VALUE["step"], "outcome": "approved"}
    reads: list[int] = []
    real_read = decisions.read_written

    def read_then_end(path: Path) -> list[dict[str, Any]]:
        records = real_read(path)
        reads.append(len(records))
        if len(reads) == 1:  # the sender saw the decision alone: the run writes the end now
            with ledger.open("a") as out:
                out.write(_ledger_line(end))
        return records

    monkeypatch.setattr(decisions, "read_written", read_then_end)
    verdict = decisions._verdict(ledger, sent, time.monotonic() + 30)
    assert reads[0] == 1, reads  # read between the two records
    assert verdict.accepted and verdict.outcome == "approved", verdict


def test_a_decision_that_does_not_end_the_request_is_counted_with_no_outcome(
    tmp_path: Path,
) -> None:
    """One of a quorum: nothing follows it; counted, no outcome, after the short settle."""
    sent = _sent()
    ledger = tmp_path / "ledger.jsonl"
    decided = {"type": "approval.decision", "decision_id": sent.decision_id, "accepted": True}
    earlier_end = {"type": "approval.end", "step": VALUE["step"], "outcome": "denied"}
    ledger.write_text(_ledger_line(earlier_end) + _ledger_line(decided))
    verdict = decisions._verdict(ledger, sent, time.monotonic() + 30)
    assert verdict.accepted and verdict.outcome is None, verdict
