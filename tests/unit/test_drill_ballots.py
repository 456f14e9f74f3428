"""The drill's approver (``Ballots``): when it sends a decision, and what it makes of the answer.

A flaky ``clampdown drill --interactive`` (the terminal's deny clicked the moment the card
was in Slack, before the run had saved its request: serve refused it with an ephemeral
"has no approval request" and the drill, which only read the ledger, waited out its 180 s
limit) is replayed here without servers: serve's click handler is a fake that answers as
the real one does (:mod:`clampdown_slack.approval_actions`), in Slack's ephemeral messages.
"""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console

from clampdown.app.drill import decisions
from clampdown.app.drill.decisions import RETRY_SECONDS, VERDICT_WAIT, Ballots
from clampdown.app.drill.timeline import Clock, Timeline
from clampdown.app.drill.world import SLACK_CHANNEL
from clampdown.app.progress import Screen
from clampdown.core.diagnostics import ClampdownError
from clampdown.core.home import Home
from clampdown_flows.approval_store import write_request

RUN, STEP, APPROVER = "a1b2c3d4e5f6", "approve_containment", "U0APPROVE1"
VALUE = json.dumps({"run_id": RUN, "step": STEP, "params_hash": "f" * 64})


class FakeSlack:
    """The Slack stand-in as the drill reads it: the card, and the ephemeral answers."""

    url = "http://slack.invalid/"

    def __init__(self) -> None:
        self.ephemeral: list[dict[str, Any]] = []
        card = {"type": "actions", "elements": [{"type": "button", "value": VALUE}]}
        self._messages = [{"ts": "1700000000.000200", "blocks": [card]}]

    def messages(self, channel: str) -> list[dict[str, Any]]:
        return list(self._messages) if channel == SLACK_CHANNEL else []


class FakeServe:
    """``POST /slack/events`` as serve answers it: HTTP 200 at once, and for a decision the
    run does not take, an ephemeral message to the clicker (``answer``)."""

    def __init__(self, slack: FakeSlack) -> None:
        self.slack = slack
        self.posts: list[str] = []
        self.answer: str | None = None

    def __call__(self, base_url: str, body: bytes, headers: dict[str, str]) -> None:
        payload = json.loads(dict(_form(body))["payload"])
        self.posts.append(payload["type"])
        if payload["type"] == "view_submission" and self.answer is not None:
            self.slack.ephemeral.append(
                {"channel": SLACK_CHANNEL, "user": payload["user"]["id"], "text": self.answer}
            )

    def clicks(self) -> int:
        return self.posts.count("view_submission")


def _form(body: bytes) -> list[tuple[str, str]]:
    from urllib.parse import parse_qsl

    return parse_qsl(body.decode())


class Now:
    """The drill's ``time.time()``, moved by hand."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC).timestamp()

    def time(self) -> float:
        return self.now


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    slack = FakeSlack()
    serve = FakeServe(slack)
    now = Now()
    monkeypatch.setattr(decisions, "post_slack_event", serve)
    monkeypatch.setattr(decisions, "time", now)
    timeline = Timeline(Clock(), Console(file=io.StringIO(), width=200))
    session = SimpleNamespace(
        drill=SimpleNamespace(roles=SimpleNamespace(approver=SimpleNamespace(slack_user=APPROVER))),
        clock=Clock(),
        slack=slack,
        keys=SimpleNamespace(signing_secret="drill-signing-secret"),
        base_url="http://serve.invalid",
        workspace=tmp_path,
    )
    ballots = Ballots(
        session,  # type: ignore[arg-type]
        timeline,
        interactive=True,
        ask=lambda question: ("deny", "not in a drill, please"),
    )
    asked = {
        "type": "approval.request",
        "step": STEP,
        "ts": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "summary": "Contain suspected model theft",
        "gated": {},
    }
    return SimpleNamespace(
        ballots=ballots, serve=serve, now=now, timeline=timeline, records=[asked], home=tmp_path
    )


def _save_request(home: Path) -> None:
    """What the run saves once its approval wait is set up (after the card is posted)."""
    write_request(Home(home).run(RUN), STEP, {"step": STEP, "run_id": RUN, "status": "pending"})


def test_a_decision_waits_until_the_run_has_saved_its_request(world: SimpleNamespace) -> None:
    """The ledger's approval.request and the card come before the saved request that serve
    checks a click against: a click in between was refused, so none is sent then."""
    world.ballots.decide(RUN, world.records)
    world.ballots.decide(RUN, world.records)
    assert world.serve.posts == []
    assert world.timeline.failures == []

    _save_request(world.home)
    world.ballots.decide(RUN, world.records)
    assert world.serve.posts == ["block_actions", "view_submission"]  # the deny, its reason
    assert world.timeline.failures == []


def test_a_click_refused_before_it_reached_the_run_is_noticed_and_sent_again(
    world: SimpleNamespace,
) -> None:
    """A refusal that leaves no ledger record is only in Slack, as "Not counted" to the
    clicker: the drill reads it as the person would, says so, and clicks again later."""
    _save_request(world.home)
    world.serve.answer = f":no_entry: run '{RUN}' has no approval request"
    world.ballots.decide(RUN, world.records)
    assert world.serve.clicks() == 1

    world.serve.answer = None  # the next click is taken (its verdict will be in the ledger)
    world.now.now += 1
    world.ballots.decide(RUN, world.records)  # reads the refusal; the retry is not due yet
    assert world.serve.clicks() == 1
    world.now.now += RETRY_SECONDS
    world.ballots.decide(RUN, world.records)
    assert world.serve.clicks() == 2
    assert world.timeline.failures == []


def test_an_answer_that_the_decision_is_in_is_not_a_refusal(world: SimpleNamespace) -> None:
    """Serve's "in, but the run has not answered yet" is waited on, not clicked again."""
    from clampdown_slack.approval_actions import AWAITING

    _save_request(world.home)
    world.serve.answer = AWAITING.format(what="denial", step=STEP, run=RUN)
    world.ballots.decide(RUN, world.records)
    world.now.now += RETRY_SECONDS + 1
    world.ballots.decide(RUN, world.records)
    assert world.serve.clicks() == 1
    assert world.timeline.failures == []


def test_a_click_nobody_answers_is_a_failure_well_before_the_drills_time_limit(
    world: SimpleNamespace,
) -> None:
    """No ledger verdict and nothing in Slack: after VERDICT_WAIT the drill says so (in the
    report's failures) and clicks again, instead of waiting silently for its time limit."""
    assert VERDICT_WAIT < 90  # the drills' time limits are 180 s and more
    _save_request(world.home)
    world.ballots.decide(RUN, world.records)
    world.now.now += VERDICT_WAIT - 2  # (the wait counts from a second before the click)
    world.ballots.decide(RUN, world.records)
    assert world.timeline.failures == []

    world.now.now += 3
    world.ballots.decide(RUN, world.records)
    (failure,) = world.timeline.failures
    assert f"the deny of {STEP} by {APPROVER} was clicked in Slack" in failure, failure
    assert f"within {VERDICT_WAIT:g} s" in failure
    world.now.now += RETRY_SECONDS
    world.ballots.decide(RUN, world.records)
    assert world.serve.clicks() == 2


def test_a_verdict_in_the_ledger_ends_the_ballot(world: SimpleNamespace) -> None:
    """The run's counted decision (its ledger record) is the answer: no second click."""
    _save_request(world.home)
    world.ballots.decide(RUN, world.records)
    counted = {
        "type": "approval.decision",
        "step": STEP,
        "approver": APPROVER,
        "accepted": True,
        "ts": datetime.fromtimestamp(world.now.now, UTC).isoformat().replace("+00:00", "Z"),
    }
    world.now.now += VERDICT_WAIT + RETRY_SECONDS
    world.ballots.decide(RUN, [*world.records, counted])
    world.ballots.decide(RUN, [*world.records, counted])
    assert world.serve.clicks() == 1
    assert world.timeline.failures == []


def test_the_follower_knows_when_the_next_decision_is_due(world: SimpleNamespace) -> None:
    """A decision scripted N s after the card is sent N s after it, not up to a poll later:
    the follower wakes at the next ballot's due time (none while a click awaits its verdict)."""
    assert world.ballots.next_due() is None
    world.ballots.decide(RUN, world.records)  # the run has not saved its request: not sent
    assert world.ballots.next_due() == world.now.now
    _save_request(world.home)
    world.ballots.decide(RUN, world.records)  # sent: its verdict is waited on, nothing is due
    assert world.serve.clicks() == 1
    assert world.ballots.next_due() is None


@pytest.mark.parametrize("answers", [[], ["deny"]], ids=["at-the-question", "at-the-reason"])
def test_the_end_of_the_terminals_input_stops_the_drill_saying_what_was_asked(
    monkeypatch: pytest.MonkeyPatch, answers: list[str]
) -> None:
    """``--interactive`` with the input at its end (Ctrl-D, a pipe run dry): a user error
    naming the decision that was wanted, not a bare "Aborted." (typer's word for EOFError)."""
    typed = iter(answers)

    def terminal_input(*_: object) -> str:
        try:
            return next(typed)
        except StopIteration:
            raise EOFError from None

    monkeypatch.setattr("builtins.input", terminal_input)
    ask = decisions.terminal_asker(Console(file=io.StringIO()), Screen())
    question = decisions.ApprovalQuestion(RUN, STEP, APPROVER, "Contain it", {})
    with pytest.raises(ClampdownError) as raised:
        ask(question)
    assert f"input ended while step {STEP} of run {RUN} waited" in raised.value.message
    assert "without --interactive" in raised.value.hint
