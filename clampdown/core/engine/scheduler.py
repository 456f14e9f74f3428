"""The step-running rules: which step runs when, and what its end does to the run.

Scheduling is plain asyncio: every step becomes an asyncio task the moment all of
its ``needs`` have finished, so independent steps overlap and a dependant starts as
soon as (and only when) its needs are done. How one step is executed is the
:class:`StepRunner`'s business (the Prefect flow runs each action as a Prefect
task with its retries, retry delay and timeout, and pauses for approvals).

Which steps run is decided by :mod:`clampdown.core.rules` (docs/runbooks.md §10.2).
What a failure does:

* ``on_failure: abort`` (default) stops scheduling new steps: steps already
  running finish (a half-cancelled containment call helps nobody), steps not
  started are ``cancelled`` except those whose ``if:`` uses a status function,
  which still run. The run fails.
* ``on_failure: continue`` lets the rest of the run go on; the run succeeds
  unless another step aborts it.

Nothing downstream of an approval that did not end approved runs (the run ends
``denied``), except non-destructive steps that ask for it with a status function.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from clampdown.core.actions import Action, ActionContext, Intent, registry, validate_input
from clampdown.core.diagnostics import ClampdownError
from clampdown.core.engine.state import TERMINAL, RunState
from clampdown.core.expressions import (
    ExpressionError,
    compile_expression,
    condition_source,
    render,
)
from clampdown.core.ledger import Ledger
from clampdown.core.models import Step
from clampdown.core.rules import decide

DEFAULT_TIMEOUT = 300.0
DEFAULT_RETRY_DELAY = 2.0

Produced = dict[str, Any]
"""What a successful attempt returns: ``{"outputs": {...}, "undo": [...]}``, and the ids of
the undo intents it settled (``"confirmed"``, ``"not_made"``) when there are any."""

Attempt = Callable[[Any], Awaitable[Produced]]
"""One attempt of an action step, given the logger the action should write to.

Each call is a new attempt (counted, recorded as ``step.attempt_failed`` when it
fails); it raises :class:`StepError` (secrets masked) when the action fails.
"""


@dataclass(frozen=True)
class Limits:
    """How often and how long a step may try: the runbook's settings for it."""

    retries: int
    retry_delay: float
    timeout: float


class StepRunner(Protocol):
    """Executes what the scheduler decided to run."""

    async def run_action(self, step: Step, attempt: Attempt, limits: Limits) -> Produced:
        """Call ``attempt`` until it succeeds, at most ``1 + limits.retries`` times,
        ``limits.retry_delay`` seconds apart, each within ``limits.timeout`` seconds
        (raising :class:`TimeoutError` past it); raise the last attempt's error. A
        :class:`StepError` whose ``retry_may_help`` is False is not tried again."""
        ...

    async def request_approval(self, step: Step, params: Any) -> dict[str, Any]:
        """Carry out an ``approval.request`` step: open the request on ``state.gate``,
        wait for its end, close it there; return the step's outputs (or raise)."""
        ...


class StepError(Exception):
    """An attempt failed; the message is the action's error with secrets masked.

    ``retry_may_help`` is the action error's (:attr:`ClampdownError.retry_may_help`):
    False, the runner does not try the step again (a rollback of a run already rolled
    back would be refused the same way after every retry delay)."""

    def __init__(self, message: str, *, retry_may_help: bool = True) -> None:
        super().__init__(message)
        self.retry_may_help = retry_may_help


def retry_may_help(error: object) -> bool:
    """Whether trying again could change ``error``'s answer: its ``retry_may_help``
    (:attr:`ClampdownError.retry_may_help`, :class:`StepError`'s), yes when it says nothing."""
    return getattr(error, "retry_may_help", True) is not False


async def schedule(state: RunState, runner: StepRunner) -> None:
    """Run every step of ``state``'s runbook to a terminal status.

    Each pass decides, in document order, every waiting step whose needs have all
    finished (a step finished early in the pass lets later steps in the document go
    in the same pass); then it waits for a running step to end. Readiness is kept
    incrementally, so a pass costs what it decides, not the size of the runbook.
    """
    ready = _Readiness(state)
    running: dict[asyncio.Task[None], str] = {}
    while ready.waiting or running:
        for step in ready.this_pass():
            if _decide(state, step):
                running[asyncio.create_task(_execute(state, step, runner))] = step.id
            else:  # skipped, cancelled or failed early: finished now
                ready.finished(step.id)
        if not running:
            if ready.waiting and not ready.pending():  # only a cycle (which lint rejects) gets here
                raise RuntimeError("no step can start: the runbook's needs form a cycle")
            continue
        try:
            done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError as exc:
            await _cancel_steps(running, exc)
            raise
        for finished in done:
            sid = running.pop(finished)
            finished.result()
            ready.finished(sid)


async def _cancel_steps(running: dict[asyncio.Task[None], str], exc: BaseException) -> None:
    """The run was cancelled (suspended for the next process, or Ctrl-C): cancel every step
    in flight with the same message, and wait until each has stopped where it waited.

    Each step is a task of its own: cancelling the run's task cancelled only this wait.
    Steps left going went on in the loop after the run had written ``run.suspended``, so a
    suspended approval could go on to pause the flow run that Prefect had just marked
    crashed and write ``step.end failed``, which the next process then read as the step's
    end (h-races26). A cancelled step writes nothing: the next process sees it was running.
    An AWS call already sent finishes in its thread; the run's undo intent, written before
    the call, lets rollback put it back either way."""
    for task in running:
        task.cancel(*exc.args)
    await asyncio.gather(*running, return_exceptions=True)


class _Readiness:
    """Which waiting steps may be decided: each step's count of unfinished needs.

    When a step finishes, only its dependants are looked at; one whose count reaches
    zero is ready. A pass hands out ready steps in document order, as a scan of the
    waiting steps would: one made ready during the pass is handed out in it when it
    comes later in the document, in the next pass otherwise.
    """

    def __init__(self, state: RunState) -> None:
        self.steps = state.runbook.steps
        results = state.results
        self.unfinished = {sid for sid, r in results.items() if r.status not in TERMINAL}
        self.count = [sum(results[n].status not in TERMINAL for n in s.needs) for s in self.steps]
        self.dependants: dict[str, list[int]] = {}
        for i, step in enumerate(self.steps):
            for need in step.needs:
                self.dependants.setdefault(need, []).append(i)
        # a resumed run starts with steps already finished: they are not decided again
        self.heap = [
            i
            for i, count in enumerate(self.count)
            if count == 0 and self.steps[i].id in self.unfinished
        ]  # sorted: a heap
        self.next_pass: list[int] = []
        self.position = -1  # document index of the step being decided (-1: between passes)
        self.waiting = len(self.unfinished)

    def this_pass(self) -> Iterator[Step]:
        while self.heap:
            self.position = heapq.heappop(self.heap)
            self.waiting -= 1
            yield self.steps[self.position]
        self.position = -1
        for i in self.next_pass:
            heapq.heappush(self.heap, i)
        self.next_pass.clear()

    def pending(self) -> bool:
        return bool(self.heap)

    def finished(self, step_id: str) -> None:
        if step_id not in self.unfinished:
            return
        self.unfinished.discard(step_id)
        for i in self.dependants.get(step_id, ()):
            self.count[i] -= 1
            if self.count[i] == 0:
                if i > self.position:
                    heapq.heappush(self.heap, i)
                else:
                    self.next_pass.append(i)


def run_status(state: RunState) -> str:
    """failed (a step aborted the run), denied (an approval did not end approved), succeeded."""
    if state.aborted_by:
        return "failed"
    return "denied" if state.denied_by else "succeeded"


def render_outputs(state: RunState) -> tuple[dict[str, Any], dict[str, str]]:
    """Render the runbook's outputs; one that cannot be rendered is reported, not fatal."""
    values: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for name, template in state.runbook.outputs.items():
        try:
            values[name] = render(template, state.context())
        except ExpressionError as exc:
            values[name], errors[name] = None, str(exc)
    return values, errors


def describe(exc: BaseException) -> str:
    """An error as the ledger, the artifact and Prefect's state message show it."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, asyncio.CancelledError):  # inside the attempt: a timeout or a Ctrl-C
        return "interrupted (timed out or cancelled)"
    text = str(exc) or type(exc).__name__
    return (
        f"{type(exc).__name__}: {text}"
        if not isinstance(exc, ClampdownError | ExpressionError | StepError)
        else text
    )


def notify(state: RunState, note: str | None = None) -> None:
    """A step changed status: tell the run's observers (``note``: a line worth a reply)."""
    if state.observers:
        state.observers.changed(note)


# --- deciding -------------------------------------------------------------------------


def _decide(state: RunState, step: Step) -> bool:
    """Skip, cancel, fail early (bad expression or params), or let the step run."""
    result = state.results[step.id]
    context = state.context()
    # the statuses decide() reads: the step's ancestors' (not every step's, each time)
    seen = (*state.ancestors[step.id], *step.needs)
    statuses = {sid: state.results[sid].status for sid in seen}
    try:
        verdict = decide(step, statuses, state.ancestors[step.id], context, state.aborted_by)
        if verdict.outcome != "run":
            return _finish_early(state, step, verdict.outcome, verdict.reason)
        action = registry().get(step.uses)
        blocker = _not_approved(state, step, action)
        if blocker:
            return _finish_early(state, step, "skipped", blocker)
        rendered = render(step.with_, context)
        state.params[step.id] = validate_input(action, rendered, step.id, state.ledger.scrub)
        assert state.gate is not None
        changed = state.gate.check_params(step.id, state.params[step.id])
        if changed:
            raise ClampdownError(f"not run: {changed}")
        state.targets[step.id] = (
            _render_setting(state, step, "region"),
            _render_setting(state, step, "account"),
        )
    except Exception as exc:  # bad expression or parameters: the step fails, no retry
        result.started = time.monotonic()
        state.ledger.append("step.start", step=step.id, uses=step.uses, attempt=0)
        return _fail(state, step, describe(exc))
    result.status = "running"
    notify(state)
    return True


def _not_approved(state: RunState, step: Step, action: type[Action]) -> str | None:
    """Why ``step`` may not run for want of an approval (None: it may).

    Nothing downstream of an approval that did not end approved runs, whatever its
    ``if:`` says, except a non-destructive step that asks for it with always() or
    failure() (a final report that says the containment was denied).
    """
    assert state.gate is not None
    gate = state.gate.blocked_by(step.id)
    if gate is None:
        return None
    if not action.destructive and _status_aware(step):
        return None
    outcome = state.gate.outcomes.get(gate, "not decided")
    return f"approval '{gate}' {outcome.replace('_', ' ')}"


def _status_aware(step: Step) -> bool:
    if step.if_ is None:
        return False
    return compile_expression(condition_source(step.if_)).uses_status_function


def _render_setting(state: RunState, step: Step, name: str) -> str | None:
    value = state.runbook.setting(step, name, None)
    return None if value is None else str(render(value, state.context()))


def _finish_early(state: RunState, step: Step, status: str, reason: str) -> bool:
    result = state.results[step.id]
    result.status, result.error = status, reason
    state.step_ended(step.id)
    notify(state)
    state.ledger.append(
        f"step.{'skip' if status == 'skipped' else 'cancel'}",
        step=step.id,
        uses=step.uses,
        reason=reason,
    )
    return False


def _fail(state: RunState, step: Step, error: str, **fields: Any) -> bool:
    result = state.results[step.id]
    error = state.ledger.scrub(error)  # it reaches Prefect's state message and the artifact
    result.status, result.error, result.ended = "failed", error, time.monotonic()
    state.step_ended(step.id)
    policy = state.runbook.setting(step, "on_failure", "abort")
    state.ledger.append(
        "step.end",
        step=step.id,
        status="failed",
        error=error,
        on_failure=policy,
        attempts=result.attempts,
        seconds=result.seconds,
        **fields,
    )
    if policy == "abort" and state.aborted_by is None:
        state.aborted_by = step.id
    notify(state, f"❌ step `{step.id}` failed ({policy}): {error}")
    return False


# --- running --------------------------------------------------------------------------


async def _execute(state: RunState, step: Step, runner: StepRunner) -> None:
    rb, result = state.runbook, state.results[step.id]
    params = state.params[step.id]
    result.started = time.monotonic()
    region, account = state.targets[step.id]
    state.ledger.append(
        "step.start",
        step=step.id,
        uses=step.uses,
        params=params.model_dump(mode="json"),
        region=region,
        account=account,
        preapproved=step.preapproved,
    )
    try:
        if registry().get(step.uses).approval_gate:
            result.attempts = 1
            produced = {"outputs": await runner.request_approval(step, params), "undo": []}
        else:
            limits = _approved_horizon(
                state,
                step,
                Limits(
                    rb.setting(step, "retries", 0),
                    rb.setting(step, "retry_delay", DEFAULT_RETRY_DELAY),
                    rb.setting(step, "timeout", DEFAULT_TIMEOUT),
                ),
            )
            produced = await runner.run_action(
                step, functools.partial(_attempt, state, step), limits
            )
    except Exception as exc:
        _fail(state, step, describe(exc))
        return
    result.status, result.outputs = "succeeded", produced["outputs"]
    state.step_ended(step.id)
    result.ended = time.monotonic()
    notify(state)
    state.ledger.append(
        "step.end",
        step=step.id,
        status="succeeded",
        outputs=result.outputs,
        undo=produced["undo"],
        attempts=result.attempts,
        seconds=result.seconds,
        **_settled(produced),
    )


APPROVED_RETRIES = 4
APPROVED_RETRY_DELAY = 5.0


def _approved_horizon(state: RunState, step: Step, limits: Limits) -> Limits:
    """A destructive step people approved tries for longer: at least
    :data:`APPROVED_RETRIES` retries :data:`APPROVED_RETRY_DELAY` s apart (about 20 s
    beyond botocore's own retries), so a few seconds of AWS trouble at the moment of
    containment do not fail the run and spend the approval (people would have to
    approve again). The runbook's own settings win when they ask for more."""
    gate = state.gate
    if gate is None or not registry().get(step.uses).destructive:
        return limits
    if step.id not in gate.gated_by or gate.blocked_by(step.id) is not None:
        return limits
    return Limits(
        max(limits.retries, APPROVED_RETRIES),
        max(limits.retry_delay, APPROVED_RETRY_DELAY),
        limits.timeout,
    )


async def _attempt(state: RunState, step: Step, logger: Any) -> Produced:
    """One attempt of one action step (the runner calls it again on retry).

    The action declares each change before making it (``ctx.changing``): the intent is
    an ``undo.intent`` ledger record, on disk before the call. The attempt's end
    (``step.end`` through :func:`_execute`, or ``step.attempt_failed``) carries the undo
    records it confirmed and the ids of the intents it settled; an intent without them
    (the process died, the call timed out) is undone by rollback as one that may have
    been applied (:mod:`clampdown.core.undo`).
    """
    result = state.results[step.id]
    result.attempts += 1
    action_cls = registry().get(step.uses)
    region, account = state.targets[step.id]
    ctx = ActionContext(
        run_id=state.run_id,
        step_id=step.id,
        runbook=state.runbook.metadata.name,
        home=state.files.home,
        drill=bool(state.run_info.get("drill")),
        region=region,
        account=account,
        logger=_Redacting(logger, state.ledger),
        mask=state.ledger.scrub,
        ledger_signer=getattr(state.ledger.hook, "signer", None),
        intent_hook=functools.partial(_write_intent, state.ledger, step.id, result.attempts),
    )
    try:
        output = await _call(action_cls(), state.params[step.id], ctx)
    except BaseException as exc:
        error = state.ledger.scrub(describe(exc))
        # what the action changed before failing is kept: rollback needs it too
        state.ledger.append(
            "step.attempt_failed",
            step=step.id,
            attempt=result.attempts,
            error=error,
            undo=ctx.undo,
            **_settled({"confirmed": ctx.confirmed, "not_made": ctx.not_made}),
        )
        if isinstance(exc, Exception):  # the runner logs this; it must carry no secret
            raise StepError(error, retry_may_help=retry_may_help(exc)) from None
        raise
    outputs = output.model_dump(mode="json") if output is not None else {}
    return {
        "outputs": outputs,
        "undo": ctx.undo,
        "confirmed": ctx.confirmed,
        "not_made": ctx.not_made,
    }


def _write_intent(ledger: Ledger, step_id: str, attempt: int, intent: Intent) -> None:
    """An ``undo.intent`` record, fsync'd before the action makes the change.

    Called from the action's own thread (a sync action runs in ``asyncio.to_thread``):
    :meth:`Ledger.append` takes its lock and the file lock, as for every record. Secrets
    registered with the ledger are masked in it like in any other record.
    """
    ledger.append(
        "undo.intent",
        step=step_id,
        attempt=attempt,
        intent=intent.id,
        description=intent.description,
        how=intent.how,
    )


def _settled(produced: Produced) -> dict[str, list[str]]:
    """The ``confirmed`` and ``not_made`` intent ids of an attempt, left out when empty."""
    return {k: list(produced[k]) for k in ("confirmed", "not_made") if produced.get(k)}


async def _call(action: Action, params: Any, ctx: ActionContext) -> Any:
    if inspect.iscoroutinefunction(action.run):
        return await action.run(params, ctx)
    return await asyncio.to_thread(action.run, params, ctx)


class _Redacting(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Secrets registered with the ledger are masked in log lines too."""

    def __init__(self, logger: Any, ledger: Ledger) -> None:
        super().__init__(logger, {})
        self.ledger = ledger

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return self.ledger.scrub(str(msg)), kwargs

    def log(self, level: int, msg: Any, *args: Any, **kwargs: Any) -> None:
        text = str(msg) % args if args else str(msg)
        super().log(level, text, **kwargs)
