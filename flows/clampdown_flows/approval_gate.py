"""Approval gates inside the ``respond`` flow.

:class:`Gatekeeper`: an ``approval.request`` step builds a
:class:`~clampdown.core.approvals.Request` (gated steps' exact parameters and their hash),
writes it to ``runs/<id>/approvals/<step>.json``, posts the card, and waits. One
waiter per run pauses the flow run with Prefect's ``apause_flow_run(wait_for_input=…)``
while any request is pending; each resume carries one :class:`Decision`, which the
flow checks (:meth:`Request.refusal`) and records in the ledger, accepted or not.
Steps already running go on while the flow run is paused (Prefect 3 orchestrates
task runs client-side); only new steps wait, because they wait for the gate.

Decisions reach it through :func:`clampdown_flows.decisions.submit_decision` (Slack clicks,
``clampdown approve``) or the Prefect UI's resume form; either way they meet the same
checks here. Where requests and keys live: :mod:`clampdown_flows.approval_store`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from clampdown.core.approvals import ApprovalRequest, Decision, Request, params_hash
from clampdown.core.diagnostics import ClampdownError
from clampdown.core.expressions import render
from clampdown_flows.approval_store import (
    allowed_sources,
    approval_key,
    default_approvers,
    request_file,
    resolve_members,
    write_json,
)

if TYPE_CHECKING:
    from clampdown_flows.respond import RunState
    from clampdown_slack.run_thread import Card

POLL_SECONDS = 0.5  # how often a paused flow asks its API whether it was resumed
log = logging.getLogger("clampdown.core.approvals")


class ApprovalTimedOut(Exception):
    """``on_timeout: fail``: the approval step fails with this message."""


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Pending:
    request: Request
    future: asyncio.Future[Any]
    card: Card | None
    extra: dict[str, Any]


class Gatekeeper:
    """One run's approvals: requests, the single pause loop, and what each decision did."""

    def __init__(self, state: RunState, on_change: Callable[[], None] = lambda: None) -> None:
        self.state = state
        self.on_change = on_change  # a request started or ended: the Slack header shows it
        self.pending: dict[str, _Pending] = {}
        self.outcomes: dict[str, str] = {}  # approval step id -> approved/denied/timed_out
        self.approved_params: dict[str, str] = {}  # gated step id -> hash of its approved params
        self.gated_by: dict[str, str] = {}  # gated step id -> its approval step
        # group members as last resolved, per approval step: used while Slack cannot answer
        self._members: dict[str, set[str] | None] = {}
        self._waiter: asyncio.Task[None] | None = None
        self._key = b""
        # the runbook's approval steps, found once: every step's decision asks about them
        self._gates = {s.id for s in state.runbook.steps if _is_gate(s.uses)}

    # what the engine asks ------------------------------------------------------------

    def gates_of(self, step_id: str) -> set[str]:
        """Approval steps upstream of ``step_id``."""
        return self.state.ancestors[step_id] & self._gates

    def blocked_by(self, step_id: str) -> str | None:
        """The first upstream approval that did not end approved (None: free to run)."""
        for gate in sorted(self.gates_of(step_id)):
            if self.outcomes.get(gate) != "approved":
                return gate
        return None

    def check_params(self, step_id: str, params: Any) -> str | None:
        """Why a gated step may not run with these parameters (None: what was approved)."""
        if step_id not in self.gated_by:
            return None
        approved = self.approved_params.get(step_id)
        if approved is None:
            return "it was not part of what was approved (its if: was false then)"
        if params_hash(params.model_dump(mode="json")) != approved:
            return (
                "its parameters differ from the ones approved; "
                "nothing was run (start a new approval)"
            )
        return None

    # the approval step -----------------------------------------------------------------

    async def request(self, step_id: str, params: ApprovalRequest.Input) -> dict[str, Any]:
        """Carry out one ``approval.request`` step; returns its outputs."""
        request = self._build(step_id, params)
        ledger = self.state.ledger
        ledger.append(
            "approval.request",
            step=step_id,
            summary=request.summary,
            gated=request.gated,
            params_hash=request.params_hash,
            approvers={"users": sorted(request.allowed_users), "groups": list(request.groups)},
            min_approvals=request.min_approvals,
            two_person_rule=request.two_person_rule,
            started_by=request.started_by,
            deadline=request.deadline.isoformat(),
            on_timeout=request.on_timeout,
        )
        self._key = approval_key(self.state.run_id, create=True)
        card = self._post_card(request)
        self._members[step_id] = await asyncio.to_thread(resolve_members, request.groups)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        extra = self._where()
        self.pending[step_id] = _Pending(request, future, card, extra)
        self._save(self.pending[step_id], "pending")
        self.on_change()
        if self._waiter is None or self._waiter.done():
            self._waiter = asyncio.create_task(self._wait_loop())
        try:
            return await future
        finally:
            self.pending.pop(step_id, None)
            self.on_change()

    def _build(self, step_id: str, params: ApprovalRequest.Input) -> Request:
        state = self.state
        gated: dict[str, dict[str, Any]] = {}
        hashes: dict[str, str] = {}
        from clampdown.core.actions import registry

        # Gated steps are judged as they would be if approved: a step whose if: is then
        # false will not run, so its parameters are neither shown nor bound.
        context = state.context()
        context["steps"] = {**context["steps"], step_id: _as_if_approved()}
        for step in state.runbook.steps:
            if step_id not in step.needs:
                continue
            self.gated_by[step.id] = step_id
            action = registry().get(step.uses)
            if not _would_run(step, context):
                gated[step.id] = {"uses": step.uses, "will_run": False, "if": str(step.if_)}
                continue
            try:
                shown = action.Input.model_validate(render(step.with_, context))
            except Exception as exc:
                raise ClampdownError(
                    f"the parameters of gated step '{step.id}' cannot be known before the "
                    f"approval: {exc}",
                    f"make '{step_id}' need every step whose outputs '{step.id}' uses, "
                    f"or give '{step.id}' an if: that is false when they are missing",
                ) from None
            values = shown.model_dump(mode="json")
            hashes[step.id] = params_hash(values)
            gated[step.id] = {
                "uses": step.uses,
                "params": values,
                "destructive": bool(action.destructive),
                "reversible": bool(getattr(action, "reversible", not action.destructive)),
            }
        users, groups = list(params.approvers.users), list(params.approvers.groups)
        if params.approvers.empty:
            users, groups = default_approvers()
        started = _now()
        return Request(
            run_id=state.run_id,
            step=step_id,
            summary=state.ledger.scrub(params.summary),
            gated=json.loads(state.ledger.scrub(json.dumps(gated))),
            params_hash=params_hash(gated),
            allowed_users=frozenset(users),
            groups=tuple(groups),
            min_approvals=params.min_approvals,
            two_person_rule=params.two_person_rule,
            started_by=_starter(state.run_info.get("trigger") or {}),
            requested_at=started,
            deadline=started + timedelta(seconds=float(params.timeout)),
            on_timeout=params.on_timeout,
            step_hashes=hashes,
        )

    def _where(self) -> dict[str, Any]:
        """How a sender reaches this paused run: the Prefect API and the flow run id."""
        from prefect.runtime import flow_run
        from prefect.settings import PREFECT_API_URL

        return {"api_url": PREFECT_API_URL.value(), "flow_run_id": str(flow_run.id)}

    def _save(self, pending: _Pending, status: str) -> None:
        data = pending.request.to_json() | pending.extra | {"status": status}
        write_json(request_file(self.state.run_id, pending.request.step), data)

    async def _wait_loop(self) -> None:
        """Pause while anything is pending; hand each decision to its request."""
        from prefect.exceptions import FlowPauseTimeout
        from prefect.flow_runs import apause_flow_run
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
                )
                try:
                    received = await apause_flow_run(
                        wait_for_input=prefilled,
                        timeout=max(1, math.ceil(wait)),
                        poll_interval=POLL_SECONDS,
                        key=f"approval-{uuid.uuid4().hex[:12]}",
                    )
                except FlowPauseTimeout:
                    await _resume_after_timeout()
                    continue
                await self._dispatch(received)
        except Exception as exc:  # the gate must never hang a run: fail the pending steps
            for pending in list(self.pending.values()):
                if not pending.future.done():
                    pending.future.set_exception(exc)

    def _expire(self) -> None:
        at = _now()
        for step_id, pending in list(self.pending.items()):
            if at >= pending.request.deadline and not pending.future.done():
                self._finish(pending, "timed_out", at)
                self.pending.pop(step_id, None)

    async def _dispatch(self, received: Any) -> None:
        data = received.model_dump() if hasattr(received, "model_dump") else dict(received)
        decision = Decision.model_validate({k: data[k] for k in Decision.model_fields if k in data})
        at = _now()
        pending = self.pending.get(decision.step)
        refusal: str | None
        if decision.source != "prefect-ui" and not decision.signature_valid(self._key):
            refusal = (
                f"the decision claims to come from {decision.source} but is not signed "
                "with the run's approval key"
            )
        elif decision.source not in allowed_sources():
            refusal = f"decisions from {decision.source} are not accepted here"
        elif pending is None:
            refusal = f"no approval is pending at step '{decision.step}'"
        else:
            members = await asyncio.to_thread(resolve_members, pending.request.groups)
            if members is None:  # Slack cannot answer now: the membership seen at request time
                members = self._members.get(decision.step)
            else:
                self._members[decision.step] = members
            refusal = pending.request.refusal(decision, members, at)
        self.state.ledger.append(
            "approval.decision",
            step=decision.step,
            decision_id=decision.decision_id,
            approver=decision.approver,
            decision=decision.decision,
            reason=self.state.ledger.scrub(decision.reason),
            source=decision.source,
            accepted=refusal is None,
            refusal=refusal,
        )
        slack = self.state.slack
        if refusal is not None:  # the sender tells the person (submit_decision returns it)
            log.warning("run %s: decision refused: %s", self.state.run_id, refusal)
            return
        assert pending is not None
        pending.request.record(decision)
        outcome = pending.request.decided
        if outcome is None:
            self._save(pending, "pending")
            if slack is not None:
                from clampdown_slack.approval_card import progress_text

                slack.reply(progress_text(pending.request))
            return
        self._finish(pending, outcome, at)
        self.pending.pop(decision.step, None)

    def _finish(self, pending: _Pending, outcome: str, at: datetime) -> None:
        request = pending.request
        approved = outcome == "approved" or (
            outcome == "timed_out" and request.on_timeout == "approve"
        )
        self.outcomes[request.step] = "approved" if approved else outcome
        if approved:
            self.approved_params.update(request.step_hashes)
        denial = request.denial
        outputs = {
            "approved": approved,
            "outcome": outcome,
            "approvers": sorted(request.approvals),
            "denied_by": denial.approver if denial else None,
            "reason": denial.reason if denial else None,
        }
        self.state.ledger.append(
            "approval.end",
            step=request.step,
            **outputs,
            at=at.isoformat(),
            on_timeout=request.on_timeout if outcome == "timed_out" else None,
        )
        self._save(pending, outcome)
        self._update_card(pending, outcome, at)
        if outcome == "timed_out" and request.on_timeout == "fail":
            pending.future.set_exception(
                ApprovalTimedOut(f"no decision by the deadline {request.deadline.isoformat()}")
            )
        else:
            pending.future.set_result(outputs)

    # Slack ---------------------------------------------------------------------------

    def _post_card(self, request: Request) -> Card | None:
        slack = self.state.slack
        if slack is None:
            return None
        from clampdown_slack.approval_card import request_blocks

        return slack.post_card(f"Approval needed: {request.summary}", request_blocks(request))

    def _update_card(self, pending: _Pending, outcome: str, at: datetime) -> None:
        slack = self.state.slack
        if slack is None:
            return
        from clampdown_slack.approval_card import decided_blocks

        request = pending.request
        if pending.card is not None:
            slack.update_card(
                pending.card, f"{outcome}: {request.summary}", decided_blocks(request, outcome, at)
            )
        if outcome == "timed_out":
            slack.reply(
                f":hourglass: No decision on `{request.step}` by the deadline: "
                f"following on_timeout={request.on_timeout}"
            )


def _as_if_approved() -> dict[str, Any]:
    outputs = {"approved": True, "outcome": "approved", "approvers": [], "denied_by": None}
    return {"status": "succeeded", "outputs": {**outputs, "reason": None}}


def _would_run(step: Any, context: dict[str, Any]) -> bool:
    """A gated step's if: once approved (True when it has none or uses a status function)."""
    from clampdown.core.expressions import compile_expression, condition_source, evaluate

    if step.if_ is None:
        return True
    source = condition_source(step.if_)
    if compile_expression(source).uses_status_function:
        return True
    try:
        return bool(evaluate(source, context))
    except Exception:  # it reads something not known yet: assume it runs, so it is bound
        return True


def _is_gate(uses: str) -> bool:
    from clampdown.core.actions import registry

    try:
        return bool(registry().get(uses).approval_gate)
    except ClampdownError:
        return False


def _starter(trigger: dict[str, Any]) -> str | None:
    """Who started the run, as an approver id: the two-person rule compares with it."""
    user = trigger.get("user")
    return str(user) if user else None


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
    lines.append("Fill in your Slack user id as approver; the flow checks it like a Slack click.")
    return "\n".join(lines)
