"""Approval gates inside the ``respond`` flow: Prefect's pause protocol.

What an approval gates and what its outcome lets run is the core's
(:class:`~clampdown.core.engine.gate_policy.GatePolicy`). Here, :class:`Gatekeeper`
carries out an ``approval.request`` step: the policy opens the request (gated steps'
exact parameters and their hash), it is written to ``runs/<id>/approvals/<step>.json``,
the run's observers show it (the Slack card), and the step waits. One waiter per run
pauses the flow run with Prefect's ``apause_flow_run(wait_for_input=…)`` while any
request is pending; each resume carries one :class:`Decision`, which the flow checks
(:meth:`Request.refusal`) and records in the ledger, accepted or not.
Steps already running go on while the flow run is paused (Prefect 3 orchestrates
task runs client-side); only new steps wait, because they wait for the gate.

Decisions reach it through :func:`clampdown_flows.decisions.submit_decision` (Slack clicks,
``clampdown approve``) or the Prefect UI's resume form, always as run input posted to the
Prefect API; so each carries a proof of who made it, checked here before anything else
(:mod:`clampdown.core.decision_proof`), and then meets the same rules.
A paused run finds out it was resumed at its next poll of the Prefect API
(:func:`poll_seconds`); when the sender is in the same process as the run (serve's Slack
click, a drill's scripted approver) it also wakes the wait at once
(:mod:`clampdown_flows.decision_wakeup`), and the run takes the same run input then.
Where requests and keys live: :mod:`clampdown_flows.approval_store`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from clampdown.core.approvals import ApprovalRequest, Decision, Request
from clampdown.core.decision_proof import Proof, Verifier
from clampdown.core.engine.gate_policy import ApprovalTimedOut, GatePolicy
from clampdown.core.engine.gate_policy import now as _now
from clampdown.core.engine.observing import Observers
from clampdown.core.engine.resume import Waiting
from clampdown.core.engine.scheduler import describe
from clampdown.core.engine.state import RunState
from clampdown.core.settings import Settings
from clampdown_flows.approval_store import (
    BreakGlass,
    allowed_sources,
    approval_key,
    counted_by_break_glass,
    resolve_members,
    write_request,
)
from clampdown_flows.decision_inbox import forget, inbox_decisions, read_request
from clampdown_flows.decision_wakeup import Wakeups
from clampdown_flows.decision_wakeup import current as current_wakeups

__all__ = ["ApprovalTimedOut", "Gatekeeper"]

POLL_SECONDS = 0.5  # the quickest a paused flow asks its API whether it was resumed
POLL_MAX_SECONDS = 5.0
log = logging.getLogger("clampdown.approvals")


def poll_seconds(wait: float) -> float:
    """How often a paused run asks the Prefect API whether it was resumed: 1/180 of the
    ``wait`` left to decide, between 0.5 and 5 s. Each ask costs the local server ~10 ms of
    CPU: 100 runs asking every 0.5 s saturated it on 2 cores and a new run took 10 s to
    start (docs/benchmarks.md, paused_runs); people given 15 minutes do not notice 5 s."""
    return min(POLL_MAX_SECONDS, max(POLL_SECONDS, wait / 180))


@dataclass
class _Pending:
    request: Request
    future: asyncio.Future[Any]
    handles: list[Any]  # what the run's observers returned for it (the Slack card)
    extra: dict[str, Any] = field(default_factory=dict)


class Gatekeeper:
    """One run's approval waits: requests pending, the single pause loop, the decisions."""

    def __init__(
        self,
        state: RunState,
        policy: GatePolicy,
        observers: Observers,
        conf: Settings,
        wakeups: Wakeups | None = None,
    ) -> None:
        self.state = state
        # the registry of whoever runs this flow (by default the one in the flow's context):
        # a decision sent from this process wakes the wait at once; None: the poll alone
        self.wakeups = wakeups if wakeups is not None else current_wakeups()
        self.conf = conf  # the run's settings, read once when the flow started
        self.policy = policy
        self.observers = observers  # the run's, told of requests (the Slack card)
        self.pending: dict[str, _Pending] = {}
        # group members as last resolved, per approval step: used while Slack cannot answer
        self._members: dict[str, set[str] | None] = {}
        self._waiter: asyncio.Task[None] | None = None
        self._key = b""
        # a resumed run's approvals that were waiting when its process stopped
        self.resumed: dict[str, Waiting] = {}

    def _changed(self) -> None:
        """A request started or ended: the observers' step list shows it."""
        self.observers.changed()

    def _drop(self, step_id: str) -> None:
        self.pending.pop(step_id, None)
        self.policy.waiting.discard(step_id)

    # the approval step -----------------------------------------------------------------

    async def request(self, step_id: str, params: ApprovalRequest.Input) -> dict[str, Any]:
        """Carry out one ``approval.request`` step; returns its outputs."""
        self._key = approval_key(self.state.files, create=True)
        waiting = self.resumed.pop(step_id, None)
        request = self._reopen(step_id, params, waiting) if waiting else None
        if request is None:
            request = self.policy.open(step_id, params)
            request.new_nonce()
        extra = self._where()
        # saved before the card is posted: a click on it (or `clampdown approve`) is checked
        # against this file, and one sent before it existed was refused and lost
        self._write(request, extra, "pending")
        handles = self.observers.approval_requested(request)
        self._members[step_id] = await asyncio.to_thread(resolve_members, request.groups, self.conf)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.pending[step_id] = _Pending(request, future, handles, extra)
        self.policy.waiting.add(step_id)
        self._changed()
        if self._waiter is None or self._waiter.done():
            self._waiter = asyncio.create_task(self._wait_loop())
        await self._drain_inbox(step_id, waiting)
        try:
            return await future
        finally:
            self._drop(step_id)
            self._changed()

    def _reopen(self, step_id: str, params: Any, waiting: Waiting) -> Request | None:
        """The request a resumed run was waiting on, re-entered as it was: same nonce and
        deadline (so cards already posted still work), its counted decisions counted.

        None when it cannot be re-entered as it was (no saved request, or the gated
        parameters would now differ): the caller opens a new request, as the ledger says.
        """
        request = self.policy.build(step_id, params)  # the gate's bookkeeping, no record
        saved = read_request(self.state.files, step_id)
        if saved is None or saved.get("params_hash") != request.params_hash:
            self.state.ledger.append(
                "approval.reopened",
                step=step_id,
                reason="the saved request is missing or its gated parameters changed: "
                "a new request is opened",
            )
            return None
        request.nonce = str(saved.get("nonce") or "")
        request.requested_at = datetime.fromisoformat(saved["requested_at"])
        request.deadline = datetime.fromisoformat(saved["deadline"])
        for record in waiting.decisions:
            request.record(_counted(record, request), record.get("key"))
        self.state.ledger.append(
            "approval.resumed",
            step=step_id,
            params_hash=request.params_hash,
            deadline=request.deadline.isoformat(),
            counted=sorted(request.approvals),
        )
        return request

    async def _drain_inbox(self, step_id: str, waiting: Waiting | None) -> None:
        """Decisions that reached the run while no process held it (or before this wait
        began): each meets the same checks as one sent now; one already recorded in the
        ledger is not counted again."""
        recorded = waiting.recorded if waiting else set()
        for _, decision in inbox_decisions(self.state.files, step_id):
            if decision.decision_id in recorded:
                forget(self.state.files, decision.decision_id)  # already in the ledger
            else:  # checked as if sent now; recorded (counted or refused), then forgotten
                await self._dispatch(decision)

    def _where(self) -> dict[str, Any]:
        """How a sender reaches this paused run: the Prefect API and the flow run id."""
        from prefect.runtime import flow_run
        from prefect.settings import PREFECT_API_URL

        return {"api_url": PREFECT_API_URL.value(), "flow_run_id": str(flow_run.id)}

    def _save(self, pending: _Pending, status: str) -> None:
        self._write(pending.request, pending.extra, status)

    def _write(self, request: Request, extra: dict[str, Any], status: str) -> None:
        """The request as senders check a decision against it (``approvals/<step>.json``)."""
        write_request(
            self.state.files, request.step, request.to_json() | extra | {"status": status}
        )

    async def _wait_loop(self) -> None:
        """Pause while anything is pending; hand each decision to its request."""
        from prefect.exceptions import FlowPauseTimeout
        from prefect.input import RunInput

        form = RunInput.subclass_from_base_model_type(Decision)
        try:
            while self.pending:
                self._expire()
                if not self.pending:
                    break
                first = min(self.pending.values(), key=lambda p: p.request.deadline)
                wait = (first.request.deadline - _now()).total_seconds()
                prefilled = form.with_initial_data(
                    description=_ui_description(first.request),
                    run_id=first.request.run_id,
                    step=first.request.step,
                    params_hash=first.request.params_hash,
                    nonce=first.request.nonce,
                )
                try:
                    received = await self._pause(prefilled, max(1, math.ceil(wait)), wait)
                except FlowPauseTimeout:
                    await _resume_after_timeout()
                    continue
                except Exception as exc:
                    if not unreachable(exc):
                        raise
                    await self._ride_out(exc)
                    continue
                await self._dispatch(received)
        except Exception as exc:  # the gate must never hang a run: fail the pending steps
            for pending in list(self.pending.values()):
                if not pending.future.done():
                    pending.future.set_exception(exc)

    async def _pause(self, form: Any, timeout: int, wait: float) -> Any:
        """One pause of the flow run with ``form`` as its input; returns the input.

        Prefect's ``apause_flow_run`` asks the API whether the run was resumed every
        :func:`poll_seconds`. With a wake-up registry (:mod:`clampdown_flows.decision_wakeup`),
        a sender in this process that resumed the run rings this pause's bell: the gate
        then reads the flow run once, and if it is Running again *after this pause* (its
        key among the pauses that fired), it takes the decision from the run input as the
        poll would have, and ends Prefect's wait. A bell that finds it still paused (or
        between two pauses) changes nothing: the poll goes on.
        """
        from prefect.flow_runs import apause_flow_run

        key = f"approval-{uuid.uuid4().hex[:12]}"
        pause = apause_flow_run(
            wait_for_input=form, timeout=timeout, poll_interval=poll_seconds(wait), key=key
        )
        if self.wakeups is None:
            return await pause
        flow_run_id = self._flow_run_id()
        with self.wakeups.listening(flow_run_id) as bell:
            paused = asyncio.ensure_future(pause)
            rung: asyncio.Future[Any] | None = None
            try:
                while True:
                    rung = asyncio.ensure_future(bell.wait())
                    await asyncio.wait({paused, rung}, return_when=asyncio.FIRST_COMPLETED)
                    if paused.done():
                        return paused.result()
                    bell.clear()
                    if await _resumed_after(flow_run_id, key):
                        return await _taken(paused, form, key)
            finally:  # also when this wait is cancelled (the run suspended): nothing left
                for waiting in (paused, rung):
                    if waiting is not None and not waiting.done():
                        waiting.cancel()

    def _flow_run_id(self) -> str:
        from prefect.runtime import flow_run

        return str(flow_run.id)

    async def _ride_out(self, exc: Exception) -> None:
        """The Prefect API cannot be reached (an outage, a restart): wait for it instead of
        failing the approval, until it answers again or every pending request expires.

        Decisions sent meanwhile are in the run's inbox (the sender keeps each one before
        delivering it): once the API answers, the flow run is set Running again (it may
        still show the pause that was cut) and the inbox is read, so none is lost.
        """
        self.state.ledger.append(
            "approval.api_unreachable",
            error=self.state.ledger.scrub(describe(exc)),
            waiting=sorted(self.pending),
        )
        log.warning("run %s: Prefect API unreachable, approvals keep waiting: %s",
                    self.state.run_id, exc)  # fmt: skip
        delay = 1.0
        while self.pending:
            await asyncio.sleep(delay)
            delay = min(delay * 2, OUTAGE_RETRY_MAX)
            self._expire()
            try:
                await _resume_after_timeout()
            except Exception as again:
                if not unreachable(again):
                    raise
                continue
            self.state.ledger.append("approval.api_reachable", waiting=sorted(self.pending))
            for step_id in list(self.pending):
                await self._drain_inbox(step_id, None)
            return

    def _expire(self) -> None:
        at = _now()
        for step_id, pending in list(self.pending.items()):
            if at >= pending.request.deadline and not pending.future.done():
                self._finish(pending, "timed_out", at)
                self._drop(step_id)

    def _verifier(self) -> Verifier:
        """The run's proof checks: its approval key, the allowed signers, the UI switch."""
        conf = self.conf
        return Verifier(
            run_key=self._key,
            allowed_signers=conf.allowed_signers,
            home=conf.home,
            prefect_ui=conf.prefect_ui_decisions,
        )

    async def _dispatch(self, received: Any) -> None:
        data = received.model_dump() if hasattr(received, "model_dump") else dict(received)
        decision = Decision.model_validate({k: data[k] for k in Decision.model_fields if k in data})
        at = _now()
        pending = self.pending.get(decision.step)
        # ssh-keygen runs in a thread: the run's other steps go on meanwhile
        proof = await asyncio.to_thread(self._verifier().check, decision)
        refusal = proof.refusal
        if refusal is None and decision.source not in allowed_sources():
            refusal = f"decisions from {decision.source} are not accepted here"
        if refusal is None and pending is None:
            refusal = f"no approval is pending at step '{decision.step}'"
        glass = False  # counted only because its groups cannot be resolved: break glass
        if refusal is None:
            assert pending is not None
            members = await asyncio.to_thread(resolve_members, pending.request.groups, self.conf)
            kept = self._members.get(decision.step)
            if members is None or (
                # Slack cannot answer now: the membership seen at request time, if any,
                # before break glass
                isinstance(members, BreakGlass) and kept and not isinstance(kept, BreakGlass)
            ):
                members = kept if kept is not None else members
            else:
                self._members[decision.step] = members
            refusal = pending.request.refusal(decision, members, at, proof.key)
            glass = refusal is None and counted_by_break_glass(
                members, decision.approver, pending.request.allowed_users
            )
        decides = None  # what the request becomes with it, in its record: the sender's verdict
        if refusal is None and pending is not None:
            decides = pending.request.outcome_if_counted(decision)
        self._record(decision, proof, refusal, glass, decides)
        if refusal is not None:  # the sender tells the person (submit_decision returns it)
            log.warning("run %s: decision refused: %s", self.state.run_id, refusal)
            return
        assert pending is not None
        pending.request.record(decision, proof.key)
        outcome = pending.request.decided
        if outcome is None:
            self._save(pending, "pending")
            self.observers.approval_progress(pending.handles, pending.request)
            return
        self._finish(pending, outcome, at)
        self._drop(decision.step)

    def _record(
        self,
        decision: Decision,
        proof: Proof,
        refusal: str | None,
        glass: bool = False,
        decides: str | None = None,
    ) -> None:
        """Every decision that reached the run goes to the ledger, counted or refused; one
        that counted only as a break-glass approver's says so (``break_glass``). A counted
        one says what it made of the request (``decides``: approved, denied, or null while
        more approvals are needed), read by its sender (:func:`clampdown_flows.decisions`)."""
        scrub = self.state.ledger.scrub
        self.state.ledger.append(
            "approval.decision",
            step=decision.step,
            decision_id=decision.decision_id,
            approver=decision.approver,
            decision=decision.decision,
            reason=scrub(decision.reason),
            source=decision.source,
            authenticated_by=proof.by if proof.refusal is None else None,
            key=proof.key if refusal is None else None,  # a resumed run counts it once
            accepted=refusal is None,
            refusal=scrub(refusal) if refusal else None,
            **({"break_glass": True} if glass else {}),
            **({"decides": decides} if refusal is None else {}),
        )
        forget(self.state.files, decision.decision_id)  # recorded: done

    def _finish(self, pending: _Pending, outcome: str, at: datetime) -> None:
        outputs, error = self.policy.close(pending.request, outcome, at)
        self._save(pending, outcome)
        self.observers.approval_ended(pending.handles, pending.request, outcome, at)
        if error is not None:
            pending.future.set_exception(error)
        else:
            pending.future.set_result(outputs)


def _counted(record: dict[str, Any], request: Request) -> Decision:
    """A decision the run had counted before it stopped, from its ledger record."""
    return Decision(
        run_id=request.run_id,
        step=request.step,
        params_hash=request.params_hash,
        nonce=request.nonce,
        decision=record["decision"],
        approver=record["approver"],
        reason=str(record.get("reason") or ""),
        source=record.get("source") or "prefect-ui",
        decision_id=record["decision_id"],
    )


OUTAGE_RETRY_MAX = 10.0
"""Seconds between a waiting gate's tries to reach a Prefect API that stopped answering."""


def unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says the Prefect API cannot be reached now (worth waiting out)."""
    import httpx
    from prefect.exceptions import PrefectHTTPStatusError

    if isinstance(exc, httpx.TransportError):
        return True
    return isinstance(exc, PrefectHTTPStatusError) and exc.response.status_code >= 500


async def _resumed_after(flow_run_id: str, key: str) -> bool:
    """Whether the flow run is Running again after the pause ``key`` (what Prefect's poll
    looks for; the key tells this pause from one before it or one not yet recorded)."""
    from prefect import get_client

    async with get_client() as client:
        run = await client.read_flow_run(uuid.UUID(flow_run_id))
    fired = run.empirical_policy.pause_keys or set()
    return run.state is not None and run.state.is_running() and key in fired


async def _taken(paused: asyncio.Future[Any], form: Any, key: str) -> Any:
    """End Prefect's wait for pause ``key`` (resumed, as the API says) and return the run
    input it would have returned: its own result if it got there first."""
    from prefect.input.run_input import keyset_from_paused_state
    from prefect.states import Paused

    paused.cancel()
    await asyncio.wait({paused})
    if not paused.cancelled() and paused.exception() is None:
        return paused.result()
    return await form.aload(keyset_from_paused_state(Paused(pause_key=key)))


async def _resume_after_timeout() -> None:
    """After a pause timed out the flow run is still Paused: set it Running to go on."""
    from prefect import get_client
    from prefect.runtime import flow_run
    from prefect.states import Running

    async with get_client() as client:
        await client.set_flow_run_state(flow_run.id, Running(), force=True)


def _ui_description(request: Request) -> str:
    lines = [
        f"**clampdown approval** — {request.summary}",
        "",
        f"Run `{request.run_id}`, step `{request.step}`; deadline {request.deadline.isoformat()}.",
        "Gated steps and their exact parameters:",
    ]
    for step_id, gated in request.gated.items():
        shown = json.dumps(gated["params"]) if "params" in gated else "will not run"
        lines.append(f"- `{step_id}` ({gated['uses']}): `{shown}`")
    lines.append(
        "Decisions typed here count only when CLAMPDOWN_PREFECT_UI_DECISIONS=true; then fill "
        "in your Slack user id as approver and the flow checks it like a Slack click."
    )
    return "\n".join(lines)
