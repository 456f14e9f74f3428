"""What an approval gates, and what its outcome lets run: the policy half of approval steps.

An ``approval.request`` step gates the steps that list it in ``needs`` and every
destructive step further downstream (nothing downstream runs unless it is approved,
so nothing destructive downstream may run with parameters nobody saw). When it
starts, :meth:`GatePolicy.open` binds each gated step's exact parameters (judged as
if approved: a gated step whose ``if:`` would then be false is shown as not running
and bound to nothing) into a :class:`~clampdown.core.approvals.Request` and records
``approval.request``. A destructive step further down whose parameters come from
steps that run only after the approval is shown with its ``with:`` as written,
marked "known at run time" (lint says to make it a direct need of the gate). An
action may add what else an approver must see and the hash must bind
(``approval_details``: ``core.rollback_run`` lists every undo action it will run).
How the run waits for decisions is not decided here (the Prefect flow pauses, see
:mod:`clampdown_flows.approval_gate`); once a request ends, :meth:`GatePolicy.close`
records ``approval.end`` and from then on :meth:`blocked_by` and :meth:`check_params`
tell the scheduler what may run.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from clampdown.core.actions import InputValidationError, registry, validate_input
from clampdown.core.approvals import ApprovalRequest, Request, params_hash
from clampdown.core.diagnostics import ClampdownError
from clampdown.core.expressions import (
    compile_expression,
    condition_source,
    evaluate_condition,
    render,
)

if TYPE_CHECKING:
    from clampdown.core.engine.state import RunState

DefaultApprovers = Callable[[], tuple[list[str], list[str]]]
"""Users and groups who decide when a request names nobody (``CLAMPDOWN_APPROVERS``)."""


class ApprovalTimedOut(Exception):
    """``on_timeout: fail``: the approval step fails with this message."""


def now() -> datetime:
    return datetime.now(UTC)


class GatePolicy:
    """One run's approvals: what each gates, how each ended, which parameters were approved."""

    def __init__(self, state: RunState, default_approvers: DefaultApprovers) -> None:
        self.state = state
        self.default_approvers = default_approvers
        self.outcomes: dict[str, str] = {}  # approval step id -> approved/denied/timed_out
        self.approved_params: dict[str, str] = {}  # gated step id -> hash of its approved params
        self.gated_by: dict[str, str] = {}  # gated step id -> its approval step
        self.waiting: set[str] = set()  # approval steps waiting for decisions now
        # gated steps further downstream whose parameters are known only at run time
        self.at_run_time: set[str] = set()
        self._uses = {s.id: s.uses for s in state.runbook.steps}
        # the runbook's approval steps, found once: every step's decision asks about them
        self._gates = {s.id for s in state.runbook.steps if _is_gate(s.uses)}

    # what the scheduler asks -----------------------------------------------------------

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
        if step_id not in self.gated_by or step_id in self.at_run_time:
            return None
        approved = self.approved_params.get(step_id)
        if approved is None:
            return "it was not part of what was approved (its if: was false then)"
        try:
            shown = self._bound(step_id, params.model_dump(mode="json"), params)
        except ClampdownError as exc:
            return f"what it would do cannot be shown as approved: {exc}"
        if params_hash(shown) != approved and self._as_shown(shown) != approved:
            return (
                "its parameters differ from the ones approved; "
                "nothing was run (start a new approval)"
            )
        return None

    def _as_shown(self, values: dict[str, Any]) -> str:
        """The hash of ``values`` as the approver was shown them (secret inputs masked, as
        the request and the ledger have them). A run resumed after its approval knows the
        approved parameters only from the ledger's ``approval.request``, which holds them
        masked: a gated step carrying a secret then matches them only this way."""
        return params_hash(json.loads(self.state.ledger.scrub(json.dumps(values))))

    def _bound(self, step_id: str, values: dict[str, Any], params: Any) -> dict[str, Any]:
        """The parameters, plus what the action says an approval must also bind."""
        details = getattr(registry().get(self._uses[step_id]), "approval_details", None)
        if details is None:
            return values
        signer = getattr(self.state.ledger.hook, "signer", None)
        return {**values, **details(params, self.state.files.home, signer)}

    # an approval step's life -----------------------------------------------------------

    def open(self, step_id: str, params: ApprovalRequest.Input) -> Request:
        """The request of approval step ``step_id``, recorded as ``approval.request``."""
        request = self.build(step_id, params)
        self.state.ledger.append(
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
        return request

    def build(self, step_id: str, params: ApprovalRequest.Input) -> Request:
        state = self.state
        gated: dict[str, dict[str, Any]] = {}
        hashes: dict[str, str] = {}
        # Gated steps are judged as they would be if approved: a step whose if: is then
        # false will not run, so its parameters are neither shown nor bound.
        context = state.context()
        context["steps"] = {**context["steps"], step_id: _as_if_approved()}
        for step in state.runbook.steps:
            direct = step_id in step.needs
            action = registry().get(step.uses)
            if not direct and not (
                step_id in state.ancestors[step.id]
                and action.destructive
                and not _is_gate(step.uses)
            ):
                continue
            self.gated_by[step.id] = step_id
            if not _would_run(step, context):
                gated[step.id] = {"uses": step.uses, "will_run": False, "if": str(step.if_)}
                continue
            shown = self._gated(step, action, context, direct)
            if shown is None:  # downstream, parameters known only at run time
                self.at_run_time.add(step.id)
                gated[step.id] = _at_run_time(step, action)
                continue
            hashes[step.id] = params_hash(shown)
            gated[step.id] = {
                "uses": step.uses,
                "params": shown,
                "destructive": bool(action.destructive),
                "reversible": bool(getattr(action, "reversible", not action.destructive)),
                **({} if direct else {"guarded": f"downstream of {step_id}, not a direct need"}),
            }
        users, groups = list(params.approvers.users), list(params.approvers.groups)
        if params.approvers.empty:
            users, groups = self.default_approvers()
        started = now()
        # what the approver is shown (secret inputs masked) is what they sign: the request's
        # hash is of that, so `clampdown approve` can check that it shows what it signs; the
        # real values stay bound by ``step_hashes``, checked when each gated step runs
        shown_gated = json.loads(state.ledger.scrub(json.dumps(gated)))
        return Request(
            run_id=state.run_id,
            step=step_id,
            summary=state.ledger.scrub(params.summary),
            gated=shown_gated,
            params_hash=params_hash(shown_gated),
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

    def _gated(
        self, step: Any, action: Any, context: dict[str, Any], direct: bool
    ) -> dict[str, Any] | None:
        """A gated step's parameters as shown and bound (None: known only at run time)."""
        state = self.state
        try:
            model = validate_input(action, render(step.with_, context), step.id, state.ledger.scrub)
        except InputValidationError as exc:  # known, but refused: not a needs problem
            raise ClampdownError(
                f"gated step '{step.id}' cannot be put to approval: "
                + "; ".join(map(str, exc.problems)),
                f"fix the with: value of '{step.id}' or the input that gives it; nothing was run",
            ) from None
        except Exception as exc:
            if not direct:
                return None
            raise ClampdownError(
                f"the parameters of gated step '{step.id}' cannot be known before the "
                f"approval: {exc}",
                f"make '{self.gated_by[step.id]}' need every step whose outputs "
                f"'{step.id}' uses, or give '{step.id}' an if: that is false when they "
                "are missing",
            ) from None
        try:
            return self._bound(step.id, model.model_dump(mode="json"), model)
        except ClampdownError as exc:
            raise ClampdownError(
                f"gated step '{step.id}' cannot be put to approval: {exc.message}",
                exc.hint or "nothing was run",
            ) from None

    def close(
        self, request: Request, outcome: str, at: datetime
    ) -> tuple[dict[str, Any], ApprovalTimedOut | None]:
        """Request ``request`` ended with ``outcome``; recorded as ``approval.end``.

        Returns the approval step's outputs, and the error it fails with instead
        (a timeout with ``on_timeout: fail``) or None.
        """
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
        if outcome == "timed_out" and request.on_timeout == "fail":
            return outputs, ApprovalTimedOut(
                f"no decision by the deadline {request.deadline.isoformat()}"
            )
        return outputs, None


def _at_run_time(step: Any, action: Any) -> dict[str, Any]:
    """A downstream destructive step whose parameters come from steps after the gate."""
    return {
        "uses": step.uses,
        "params": {"with (known at run time)": step.with_},
        "destructive": bool(action.destructive),
        "reversible": bool(getattr(action, "reversible", not action.destructive)),
        "guarded": "downstream, parameters known only at run time (make it a direct need "
        "of the gate to bind them)",
    }


def _as_if_approved() -> dict[str, Any]:
    outputs = {"approved": True, "outcome": "approved", "approvers": [], "denied_by": None}
    return {"status": "succeeded", "outputs": {**outputs, "reason": None}}


def _would_run(step: Any, context: dict[str, Any]) -> bool:
    """A gated step's if: once approved (True when it has none or uses a status function)."""
    if step.if_ is None:
        return True
    source = condition_source(step.if_)
    if compile_expression(source).uses_status_function:
        return True
    try:
        return evaluate_condition(step.if_, context)
    except Exception:  # it reads something not known yet: assume it runs, so it is bound
        return True


def _is_gate(uses: str) -> bool:
    try:
        return bool(registry().get(uses).approval_gate)
    except ClampdownError:
        return False


def _starter(trigger: dict[str, Any]) -> str | None:
    """Who started the run, as an approver id: the two-person rule compares with it."""
    user = trigger.get("user")
    return str(user) if user else None
