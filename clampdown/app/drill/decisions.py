"""Approvals in a drill: scripted decisions delivered as a person would, or typed ones.

A scripted decision becomes a signed Slack click on the approval card (a deny also
submits the reason modal); with no card in Slack it goes through ``clampdown approve``'s
path, signed with the approver's own drill key (:mod:`clampdown.app.drill.signers`).
A refused decision is tried again a little later, and the verdict is read from the
ledger, never assumed. With ``--interactive`` the person at the terminal decides.

A decision is sent only once the run has saved its request (what ``clampdown approve``
and serve's click handler read): the ledger's ``approval.request`` and the card come a
moment before it, and a decision sent in between was refused with "has no approval
request". A click refused before it reaches the run leaves no ledger record, only the
ephemeral "Not counted" the clicker sees, so the drill reads that answer as the person
would; and a click that gets no verdict at all within :data:`VERDICT_WAIT` is a failure of
the drill, said as such, instead of a silent wait until the drill's time limit.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.markup import escape

from clampdown.app.cli_options import gated_lines
from clampdown.app.drill.requests import deny_submission, post_slack_event, slack_click
from clampdown.app.drill.runs import epoch
from clampdown.app.drill.session import DrillSession
from clampdown.app.drill.timeline import Timeline
from clampdown.app.drill.world import SLACK_CHANNEL
from clampdown.app.progress import Screen
from clampdown.core.diagnostics import ClampdownError
from clampdown.core.drill_model import Decide
from clampdown.core.home import Home

RETRY_SECONDS = 3.0  # a refused decision is tried again this much later, like a person would
MAX_TRIES = 20
VERDICT_WAIT = 45.0
"""Seconds a click may go without a verdict in the ledger or a refusal in Slack before the
drill calls it lost and clicks again (serve waits 30 s for the run's verdict, then says
the decision is in but not answered yet)."""


@dataclass(frozen=True)
class ApprovalQuestion:
    """What the person at the terminal decides on: the request as the run recorded it."""

    run_id: str
    step: str
    approver: str  # who the drill decides as (the drill's approver)
    summary: str
    gated: dict[str, Any]  # gated step -> uses, params, reversible (or will_run: false)


Asker = Callable[[ApprovalQuestion], tuple[str, str]]


@dataclass
class Ballot:
    """One scripted (or typed) decision for one approval, until the flow counts it."""

    decision: str
    approver: str
    reason: str
    due: float
    done: bool = False
    tries: int = 0
    waiting_since: float | None = None  # clicked; the verdict comes through the ledger
    answers_seen: int = 0  # Slack's ephemeral answers before the click (later ones answer it)


def _verdict(
    records: list[dict[str, Any]], step: str, approver: str, since: float
) -> tuple[bool, str | None] | None:
    """The flow's verdict on ``approver``'s decision sent after ``since`` (None: not yet)."""
    for r in records:
        if (
            r.get("type") == "approval.decision"
            and r.get("step") == step
            and r.get("approver") == approver
            and epoch(r["ts"]) >= since
        ):
            return bool(r.get("accepted")), r.get("refusal")
    return None


class Ballots:
    """One ballot per approval of every run, until the flow counts it.

    :meth:`decide` is called with a run's ledger records on every poll; the
    ballots live here and nowhere else. ``ask`` (interactive drills) is asked for a
    decision and a reason when an approval is first seen.
    """

    def __init__(
        self,
        session: DrillSession,
        timeline: Timeline,
        *,
        interactive: bool = False,
        ask: Asker | None = None,
        screen: Screen | None = None,
    ) -> None:
        self._session = session
        self._drill = session.drill
        self._timeline = timeline
        self._interactive = interactive
        self._ask = ask or terminal_asker(session.console, screen or Screen())
        self._ballots: dict[tuple[str, str], Ballot] = {}
        self._scripted: list[tuple[str, str]] = []  # (run, approval step) asked so far

    def decide(self, run_id: str, records: list[dict[str, Any]]) -> None:
        """Deliver each scripted decision when due; retry a refused one, as a person would."""
        for step, request in self._pending_approvals(run_id, records).items():
            key = (run_id, step)
            ballot = self._ballots.get(key)
            if ballot is None:
                ballot = self._ballot(key, request)
                if ballot is None:
                    continue
                self._ballots[key] = ballot
            if ballot.waiting_since is not None:
                verdict = self._clicked_verdict(records, step, ballot)
                if verdict is None:
                    continue
                accepted, refusal = verdict
                ballot.waiting_since = None
                if accepted:
                    ballot.done = True
                    continue
                self._refused(step, ballot, refusal)
            if ballot.done or time.time() < ballot.due or not self._request_saved(run_id, step):
                continue
            self._deliver(run_id, step, ballot)

    def next_due(self) -> float | None:
        """When the next scripted decision is due (epoch seconds; None: none is waiting to
        be sent): the follower wakes then rather than at its next poll, so a decision
        scripted N s after the card goes N s after it, not up to a poll later."""
        waiting = [b.due for b in self._ballots.values() if not b.done and b.waiting_since is None]
        return min(waiting, default=None)

    def _clicked_verdict(
        self, records: list[dict[str, Any]], step: str, ballot: Ballot
    ) -> tuple[bool, str | None] | None:
        """The verdict on a click: the run's (ledger), else a refusal Slack showed the clicker
        (one that never reached the run: no record), else, after :data:`VERDICT_WAIT`, a
        failure of the drill; None while still waiting."""
        assert ballot.waiting_since is not None
        verdict = _verdict(records, step, ballot.approver, ballot.waiting_since)
        if verdict is not None:
            return verdict
        refusal = self._slack_refusal(ballot)
        if refusal is not None:
            return False, refusal
        if time.time() - ballot.waiting_since < VERDICT_WAIT:
            return None
        self._timeline.fail(
            f"the {ballot.decision} of {step} by {ballot.approver} was clicked in Slack, but "
            f"neither the run's ledger nor Slack answered it within {VERDICT_WAIT:g} s"
        )
        return False, f"no answer {VERDICT_WAIT:g} s after the click"

    def _slack_refusal(self, ballot: Ballot) -> str | None:
        """What Slack told the clicker since the click when it was not counted (serve answers
        a click only with an ephemeral message; one that is not "in, not answered yet" is a
        refusal)."""
        from clampdown_slack.approval_actions import AWAITING

        slack = self._session.slack
        if slack is None:
            return None
        waiting = AWAITING.split("{", 1)[0]
        for answer in slack.ephemeral[ballot.answers_seen :]:
            text = str(answer.get("text") or "")
            if answer.get("user") == ballot.approver and not text.startswith(waiting):
                return text
        return None

    def _request_saved(self, run_id: str, step: str) -> bool:
        """Whether the run has saved its request for ``step``: what a decision is checked
        against by ``clampdown approve`` and serve's click handler (both refuse one sent
        before it, and the card is in Slack a moment earlier)."""
        from clampdown_flows.decision_inbox import read_request

        return read_request(Home(self._session.workspace).run(run_id), step) is not None

    def _pending_approvals(
        self, run_id: str, records: list[dict[str, Any]]
    ) -> dict[str, dict[str, Any]]:
        """Approval requests of a run not yet ended: step -> its ``approval.request`` record."""
        asked: dict[str, dict[str, Any]] = {}
        for r in records:
            step = r.get("step")
            if r.get("type") == "approval.request" and step:
                asked.setdefault(step, r)
            elif r.get("type") == "approval.end" and step in asked:
                asked.pop(step)
                self._ballots.pop((run_id, step), None)
        return asked

    def _ballot(self, key: tuple[str, str], request: dict[str, Any]) -> Ballot | None:
        run_id, step = key
        approver = self._drill.roles.approver.slack_user
        asked = epoch(request["ts"])
        if self._interactive:
            question = ApprovalQuestion(
                run_id,
                step,
                approver,
                str(request.get("summary") or ""),
                dict(request.get("gated") or {}),
            )
            decision, reason = self._ask(question)
            return Ballot(decision, approver, reason, due=time.time())
        inject = self._decision_for(step)
        self._scripted.append(key)
        if inject is None:
            self._timeline.note(f"no decision is scripted for approval {step} of run {run_id}")
            return Ballot("none", approver, "", due=float("inf"), done=True)
        person = self._drill.roles.get(inject.by)
        assert person is not None  # lint checked it
        return Ballot(inject.type, person.slack_user, inject.reason, due=asked + inject.after)

    def _refused(self, step: str, ballot: Ballot, refusal: str | None) -> None:
        ballot.tries += 1
        self._timeline.say(
            self._session.clock.now(),
            f"{ballot.decision} by {ballot.approver} not counted: {refusal}",
        )
        if ballot.tries >= MAX_TRIES:
            ballot.done = True
            self._timeline.fail(
                f"the {ballot.decision} of {step} by {ballot.approver} was refused "
                f"{ballot.tries} times; last: {refusal}"
            )
        else:
            ballot.due = time.time() + RETRY_SECONDS

    def _decision_for(self, step: str) -> Decide | None:
        decides = [i for i in self._drill.injects if isinstance(i, Decide)]
        named = [i for i in decides if i.step == step]
        if named:
            return named[0]
        unnamed = [i for i in decides if i.step is None]
        used = len([k for k in self._scripted if not any(i.step == k[1] for i in decides)])
        return unnamed[used] if used < len(unnamed) else None

    def _deliver(self, run_id: str, step: str, ballot: Ballot) -> None:
        """A signed Slack click on the card when it reached Slack; else the terminal path."""
        at = self._session.clock.now()
        label = f"{ballot.decision} by {ballot.approver}"
        card = self._card(run_id, step)
        try:
            if card is not None:
                self._click(card, ballot)
                ballot.waiting_since = time.time() - 1.0  # ledger timestamps vs. this clock
                how = "signed Slack click"
            else:
                how = "clampdown approve (no card reached Slack)"
                verdict = _submit(run_id, step, ballot, self._session)
                if not verdict.accepted:
                    self._refused(step, ballot, verdict.reason)
                    return
                ballot.done = True
        except Exception as exc:
            ballot.tries += 1
            self._timeline.fail(f"the {ballot.decision} of {step} could not be delivered: {exc}")
            ballot.due = time.time() + RETRY_SECONDS
            ballot.done = ballot.tries >= MAX_TRIES
            return
        self._timeline.say(at, f"{label} ({how})")

    def _card(self, run_id: str, step: str) -> dict[str, Any] | None:
        """The approval card for ``step`` as the Slack stand-in received it, if any."""
        slack = self._session.slack
        if slack is None:
            return None
        for message in reversed(slack.messages(SLACK_CHANNEL)):
            for value in _button_values(message.get("blocks") or []):
                try:
                    data = json.loads(value)
                except ValueError:
                    continue
                if data.get("run_id") == run_id and data.get("step") == step:
                    return {**message, "channel": SLACK_CHANNEL, "_value": value}
        return None

    def _click(self, card: dict[str, Any], ballot: Ballot) -> None:
        """Approve: one click. Deny: the click, then the reason modal's submission."""
        from clampdown_slack.approval_card import APPROVE_ACTION, DENY_ACTION

        session = self._session
        assert session.slack is not None  # a card came from the stand-in
        secret = session.keys.signing_secret
        value = card.pop("_value")
        action = APPROVE_ACTION if ballot.decision == "approve" else DENY_ACTION
        ballot.answers_seen = len(session.slack.ephemeral)  # Slack's answers to this click follow
        response_url = f"{session.slack.url}response_url/{secrets.token_hex(4)}"
        body, headers = slack_click(action, value, ballot.approver, card, secret, response_url)
        post_slack_event(session.base_url, body, headers)
        if ballot.decision == "deny":
            body, headers = deny_submission(
                value, card["channel"], ballot.approver, ballot.reason, secret
            )
            post_slack_event(session.base_url, body, headers)


def _submit(run_id: str, step: str, ballot: Ballot, session: DrillSession) -> Any:
    """``clampdown approve``'s path, for an approval whose card never reached Slack: the
    decision signed with the approver's own drill key, as ``clampdown approve --key`` does."""
    from clampdown_flows.decisions import submit_decision

    return submit_decision(
        run_id,
        step,
        ballot.approver,
        ballot.decision,  # type: ignore[arg-type]
        ballot.reason,
        "terminal",
        key=session.signers.key_for(ballot.approver),
        # serve runs the drill's flows in this process: the run looks at once, not at its poll
        wakeups=getattr(session.app.state.starter, "wakeups", None),
    )


def terminal_asker(console: Console, screen: Screen) -> Asker:
    """Ask the person at the terminal for each decision (``--interactive``).

    The live progress table is held while the question is on screen, and the question
    shows what ``clampdown approve`` shows: the summary and every gated step with its
    exact parameters.
    """

    def ask(question: ApprovalQuestion) -> tuple[str, str]:
        from rich.prompt import Prompt

        with screen.held():
            console.print(
                f"[bold yellow]Approval needed[/] in run {question.run_id}, step "
                f"[bold]{escape(question.step)}[/] (you decide as {question.approver}):",
                soft_wrap=True,
            )
            console.print(f"  {question.summary}", markup=False, highlight=False, soft_wrap=True)
            for line in gated_lines(question.gated):
                console.print(line, markup=False, highlight=False, soft_wrap=True)
            try:
                answer = Prompt.ask(
                    "approve or deny?", choices=["approve", "deny"], console=console
                )
                reason = ""
                if answer == "deny":
                    reason = Prompt.ask("why (required)", console=console) or "denied in the drill"
            except EOFError:
                raise _input_ended(question) from None
        return answer, reason

    return ask


def _input_ended(question: ApprovalQuestion) -> ClampdownError:
    """The terminal's input ended (Ctrl-D, a pipe run dry) with a decision still wanted:
    nobody is left to decide, so the drill stops, and says which decision was wanted,
    rather than waiting out its time limit or ending in a bare "Aborted."."""
    return ClampdownError(
        f"the terminal's input ended while step {question.step} of run {question.run_id} "
        "waited for your decision: the drill stopped without a report",
        hint="answer each approval at the terminal (a fast denial can end a run before a "
        "later alert of the drill, which then starts a run that asks again), or run the "
        "drill without --interactive: its scripted approver decides",
    )


def _button_values(blocks: list[dict[str, Any]]) -> Iterator[str]:
    for block in blocks:
        for element in block.get("elements", []) or []:
            if element.get("type") == "button" and element.get("value"):
                yield str(element["value"])
        accessory = block.get("accessory") or {}
        if accessory.get("type") == "button" and accessory.get("value"):
            yield str(accessory["value"])
