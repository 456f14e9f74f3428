"""The ``respond`` flow: execute a runbook's step DAG as Prefect tasks.

Scheduling is plain asyncio inside one async flow: every step becomes an asyncio
task the moment all of its ``needs`` have finished, so independent steps
overlap and a dependant starts as soon as (and only when) its needs are done.
Each step runs as a Prefect task with its own retries, retry delay and timeout,
so the Prefect UI shows one task run per step.

Which steps run is decided by :mod:`clampdown.core.rules` (docs/runbooks.md §10.2).
What a failure does:

* ``on_failure: abort`` (default) stops scheduling new steps: steps already
  running finish (a half-cancelled containment call helps nobody), steps not
  started are ``cancelled`` except those whose ``if:`` uses a status function,
  which still run. The run fails.
* ``on_failure: continue`` lets the rest of the run go on; the run succeeds
  unless another step aborts it.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import inspect
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import acreate_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run as runtime_flow_run

from clampdown.app.deployment import unseal_inputs
from clampdown.core import inputs as inputs_mod
from clampdown.core.actions import Action, ActionContext, registry
from clampdown.core.diagnostics import ClampdownError
from clampdown.core.durations import format_duration
from clampdown.core.expressions import (
    ExpressionError,
    render,
)
from clampdown.core.graph import upstream
from clampdown.core.ledger import Ledger, new_run_id, now
from clampdown.core.lint import load_runbook
from clampdown.core.loader import resolve
from clampdown.core.models import Runbook, Step
from clampdown.core.rules import decide
from clampdown.core.settings import settings
from clampdown_flows.approval_gate import Gatekeeper
from clampdown_flows.prefect_api import local_api, shared_clients
from clampdown_slack.run_thread import Header, RunThread

DEFAULT_TIMEOUT = 300.0
DEFAULT_RETRY_DELAY = 2.0
TERMINAL = frozenset({"succeeded", "failed", "skipped", "cancelled"})


class RunFailed(Exception):
    """The runbook run failed; the flow run is marked Failed with this message."""


@dataclass
class StepResult:
    status: str = "pending"
    outputs: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    started: float | None = None
    ended: float | None = None
    attempts: int = 0

    @property
    def seconds(self) -> float | None:
        if self.started is None or self.ended is None:
            return None
        return self.ended - self.started


@dataclass
class RunState:
    """Everything one run knows; step tasks reach it through the run id."""

    run_id: str
    runbook: Runbook
    inputs: dict[str, Any]
    ledger: Ledger
    run_info: dict[str, Any]
    ancestors: dict[str, set[str]]
    results: dict[str, StepResult] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    targets: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)
    aborted_by: str | None = None
    slack: RunThread | None = None  # the run's Slack status thread, when configured
    gate: Gatekeeper | None = None  # the run's approvals (set when the run starts)

    @property
    def denied_by(self) -> str | None:
        """The first approval step that did not end approved (the run ends ``denied``)."""
        if self.gate is None:
            return None
        return next((s for s, o in self.gate.outcomes.items() if o != "approved"), None)

    def context(self) -> dict[str, Any]:
        """Names visible to expressions: only finished steps appear under ``steps``."""
        steps = {
            sid: {"status": r.status, "outputs": r.outputs}
            for sid, r in self.results.items()
            if r.status in TERMINAL
        }
        return {"inputs": self.inputs, "steps": steps, "run": self.run_info}


# Runs in progress in this process. Step tasks look their run up here by id:
# passing the state as a task parameter would have Prefect inspect and record it.
_RUNS: dict[str, RunState] = {}


@task(
    name="step",
    task_run_name="{step_id}",
    cache_policy=NO_CACHE,
    persist_result=False,
    log_prints=False,
)
async def run_step(run_id: str, step_id: str) -> dict[str, Any]:
    """One attempt of one step (Prefect calls it again on retry)."""
    state = _RUNS[run_id]
    step = state.runbook.step(step_id)
    result = state.results[step_id]
    result.attempts += 1
    action_cls = registry().get(step.uses)
    region, account = state.targets[step_id]
    ctx = ActionContext(
        run_id=run_id,
        step_id=step_id,
        runbook=state.runbook.metadata.name,
        drill=bool(state.run_info.get("drill")),
        region=region,
        account=account,
        logger=_logger(state),
    )
    try:
        output = await _call(action_cls(), state.params[step_id], ctx)
    except BaseException as exc:
        error = state.ledger.scrub(_describe(exc))
        # what the action changed before failing is kept: rollback needs it too
        state.ledger.append(
            "step.attempt_failed",
            step=step_id,
            attempt=result.attempts,
            error=error,
            undo=ctx.undo,
        )
        if isinstance(exc, Exception):  # Prefect logs this; it must carry no secret
            raise StepError(error) from None
        raise
    outputs = output.model_dump(mode="json") if output is not None else {}
    return {"outputs": outputs, "undo": ctx.undo}


@functools.lru_cache(maxsize=256)
def _step_task(retries: int, retry_delay: float, timeout: float) -> Any:
    """``run_step`` with these settings; built once per combination (a new Task costs ~2 ms)."""
    return run_step.with_options(
        retries=retries, retry_delay_seconds=retry_delay, timeout_seconds=timeout
    )


async def _call(action: Action, params: Any, ctx: ActionContext) -> Any:
    if inspect.iscoroutinefunction(action.run):
        return await action.run(params, ctx)
    return await asyncio.to_thread(action.run, params, ctx)


def _render_setting(state: RunState, step: Step, name: str) -> str | None:
    value = state.runbook.setting(step, name, None)
    return None if value is None else str(render(value, state.context()))


class StepError(Exception):
    """An attempt failed; the message is the action's error with secrets masked."""


def _logger(state: RunState) -> logging.Logger | logging.LoggerAdapter[Any]:
    try:
        base: Any = get_run_logger()
    except Exception:  # outside a Prefect run context
        base = logging.getLogger("clampdown.run")
    return _Redacting(base, state.ledger)


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


def _describe(exc: BaseException) -> str:
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


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _flow_run_name() -> str:
    params = runtime_flow_run.parameters
    return f"{Path(str(params.get('runbook', 'runbook'))).stem}-{params.get('run_id') or 'run'}"


# Results are never persisted (the ledger is the record), so no storage is ever
# written. Naming one spares two API round trips per run that Prefect otherwise
# makes to look up the server's default result-storage block.
_UNUSED_RESULT_STORAGE = Path(tempfile.gettempdir()) / "clampdown-prefect-results"


@flow(
    name="respond",
    flow_run_name=_flow_run_name,
    persist_result=False,
    result_storage=_UNUSED_RESULT_STORAGE,
    validate_parameters=False,
    log_prints=False,
)
async def respond(
    runbook: str,
    inputs: dict[str, Any] | None = None,
    run_id: str | None = None,
    trigger: dict[str, Any] | None = None,
    drill: bool = False,
    library: str | None = None,
) -> dict[str, Any]:
    """Execute ``runbook`` (a path, or a name in the library) with ``inputs``.

    Returns the run id, status, rendered outputs, per-step statuses and the
    ledger path. Raises :class:`RunFailed` (flow run Failed) when a step aborts
    the run, and :class:`~clampdown.core.diagnostics.ClampdownError` for a runbook or
    inputs that do not validate — before anything is executed.
    """
    conf = settings()
    run_id = run_id or new_run_id()
    path = resolve(runbook, library or conf.library)
    loaded, _warnings = load_runbook(path)
    rb: Runbook = loaded.model
    ledger = Ledger(conf.ledger_path(run_id))
    inputs = inputs_mod.reveal(unseal_inputs(inputs or {}))
    ledger.redact(*inputs_mod.secret_values(rb.inputs, inputs))
    run_info = {
        "id": run_id,
        "runbook": rb.metadata.name,
        "started_at": now(),
        "trigger": trigger or {"type": "manual"},
        "drill": drill,
    }

    def record_start(shown_inputs: dict[str, Any]) -> None:
        ledger.append(
            "run.start",
            run=run_info,
            runbook_path=str(path),
            digest=_digest(path),
            inputs=inputs_mod.masked(rb.inputs, shown_inputs),
            flow_run_id=str(runtime_flow_run.id),
        )

    try:
        values = inputs_mod.validate(rb.inputs, inputs)
    except ClampdownError as exc:  # still on the record: who tried to run what, and why not
        record_start(inputs)
        ledger.append("run.end", status="failed", error=str(exc), outputs={})
        ledger.close()
        raise
    record_start(values)
    ledger.redact(*inputs_mod.secret_values(rb.inputs, values))  # secret defaults too
    state = RunState(
        run_id,
        rb,
        values,
        ledger,
        run_info,
        upstream({s.id: s.needs for s in rb.steps}),
        {s.id: StepResult() for s in rb.steps},
    )
    state.gate = Gatekeeper(state, on_change=lambda: _notify(state))
    _RUNS[run_id] = state
    _slack_start(state)
    try:
        await _schedule(state)
        status = _status(state)
        _slack_close(state, status)
        outputs, output_errors = _outputs(state)
        ledger.append(
            "run.end",
            status=status,
            outputs=outputs,
            output_errors=output_errors,
            aborted_by=state.aborted_by,
            steps={sid: r.status for sid, r in state.results.items()},
            evidence=_evidence_uri(run_id),
        )
        await _artifact(state, status)
    finally:
        _slack_close(state, "interrupted")  # no-op when already closed above
        _RUNS.pop(run_id, None)
        ledger.close()
    evidence_error = await asyncio.to_thread(_publish_evidence, run_id, ledger.path)
    summary = {
        "run_id": run_id,
        "runbook": rb.metadata.name,
        "status": status,
        "outputs": outputs,
        "steps": {sid: r.status for sid, r in state.results.items()},
        "ledger": str(ledger.path),
        "evidence": _evidence_uri(run_id),
        "evidence_error": evidence_error,
    }
    if state.aborted_by:
        failed = state.results[state.aborted_by]
        raise RunFailed(f"run {run_id} failed: step '{state.aborted_by}' failed: {failed.error}")
    return summary


def _status(state: RunState) -> str:
    """failed (a step aborted the run), denied (an approval did not end approved), succeeded."""
    if state.aborted_by:
        return "failed"
    return "denied" if state.denied_by else "succeeded"


def _evidence_uri(run_id: str) -> str | None:
    bucket = settings().evidence_bucket
    return f"s3://{bucket}/incidents/{run_id}/manifest.json" if bucket else None


def _publish_evidence(run_id: str, ledger: Path) -> str | None:
    """Upload the ledger beside the run's evidence and write the manifest.

    Runs after ``run.end`` (the ledger is complete). A failure here does not
    change what the run did; it is logged and returned so the caller can say so.
    """
    conf = settings()
    if not conf.evidence_bucket:
        return None
    import boto3

    from clampdown_aws.evidence_store import EvidenceStore

    try:
        store = EvidenceStore(
            boto3.client("s3"),
            conf.evidence_bucket,
            run_id,
            retention_days=conf.evidence_retention_days,
            lock_mode=conf.evidence_lock_mode,
        )
        store.put("ledger.jsonl", [ledger.read_bytes()], "application/x-ndjson")
        store.write_manifest()
    except Exception as exc:
        message = f"evidence upload to s3://{conf.evidence_bucket} failed: {exc}"
        logging.getLogger("clampdown.evidence").error(message)
        return message
    return None


def run_in_process(runbook: str, inputs: dict[str, Any], **options: Any) -> Any:
    """Run ``respond`` here and now; returns its final Prefect state, never raises for a failed run.

    Uses the Prefect server at ``PREFECT_API_URL`` when one is configured, else a
    local one started for the duration (see :mod:`clampdown_flows.prefect_api`).
    """

    async def execute() -> Any:
        async with shared_clients():
            return await respond(runbook, inputs, return_state=True, **options)

    with local_api():
        return asyncio.run(execute())


async def _schedule(state: RunState) -> None:
    rb = state.runbook
    running: dict[asyncio.Task[None], str] = {}
    waiting = [s.id for s in rb.steps]
    while waiting or running:
        for sid in list(waiting):
            step = rb.step(sid)
            if all(state.results[n].status in TERMINAL for n in step.needs):
                waiting.remove(sid)
                if _decide(state, step):
                    running[asyncio.create_task(_execute(state, step))] = sid
        if not running:
            continue
        done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
        for finished in done:
            running.pop(finished)
            finished.result()


def _decide(state: RunState, step: Step) -> bool:
    """Skip, cancel, fail early (bad expression or params), or let the step run."""
    result = state.results[step.id]
    context = state.context()
    statuses = {sid: r.status for sid, r in state.results.items()}
    try:
        verdict = decide(step, statuses, state.ancestors[step.id], context, state.aborted_by)
        if verdict.outcome != "run":
            return _finish_early(state, step, verdict.outcome, verdict.reason)
        action = registry().get(step.uses)
        blocker = _not_approved(state, step, action)
        if blocker:
            return _finish_early(state, step, "skipped", blocker)
        rendered = render(step.with_, context)
        state.params[step.id] = action.Input.model_validate(rendered)
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
        return _fail(state, step, _describe(exc))
    result.status = "running"
    _notify(state)
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
    from clampdown.core.expressions import compile_expression, condition_source

    if step.if_ is None:
        return False
    return compile_expression(condition_source(step.if_)).uses_status_function


def _finish_early(state: RunState, step: Step, status: str, reason: str) -> bool:
    result = state.results[step.id]
    result.status, result.error = status, reason
    _notify(state)
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
    _notify(state, f"❌ step `{step.id}` failed ({policy}): {error}")
    return False


async def _execute(state: RunState, step: Step) -> None:
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
            assert state.gate is not None
            result.attempts = 1
            produced = {"outputs": await state.gate.request(step.id, params), "undo": []}
        else:
            runner = _step_task(
                rb.setting(step, "retries", 0),
                rb.setting(step, "retry_delay", DEFAULT_RETRY_DELAY),
                rb.setting(step, "timeout", DEFAULT_TIMEOUT),
            )
            produced = await runner(state.run_id, step.id)
    except Exception as exc:
        _fail(state, step, _describe(exc))
        return
    result.status, result.outputs = "succeeded", produced["outputs"]
    result.ended = time.monotonic()
    _notify(state)
    state.ledger.append(
        "step.end",
        step=step.id,
        status="succeeded",
        outputs=result.outputs,
        undo=produced["undo"],
        attempts=result.attempts,
        seconds=result.seconds,
    )


def _slack_start(state: RunState) -> None:
    """Post the run's Slack header (in the background) when Slack is configured."""
    thread = RunThread.from_env(state.run_id, state.ledger)
    if thread is None:
        return
    rb, info = state.runbook, state.run_info
    header = Header(
        title=rb.metadata.title,
        runbook=rb.metadata.name,
        severity=str(rb.metadata.severity),
        trigger=info["trigger"],
        run_id=state.run_id,
        drill=bool(info.get("drill")),
        flow_run_id=str(runtime_flow_run.id) if runtime_flow_run.id else None,
    )
    thread.start(header, _statuses(state))
    state.slack = thread


def _statuses(state: RunState) -> list[tuple[str, str]]:
    waiting = state.gate.pending if state.gate is not None else {}
    return [
        (sid, "waiting for approval" if sid in waiting else r.status)
        for sid, r in state.results.items()
    ]


def _notify(state: RunState, reply: str | None = None) -> None:
    """A step changed status: refresh the Slack header (and reply in its thread)."""
    if state.slack is None:
        return
    if reply is not None:
        state.slack.reply(reply)
    state.slack.update(_statuses(state))


def _slack_close(state: RunState, outcome: str) -> None:
    if state.slack is not None:
        state.slack.close(outcome, _statuses(state))


def _outputs(state: RunState) -> tuple[dict[str, Any], dict[str, str]]:
    """Render the runbook's outputs; one that cannot be rendered is reported, not fatal."""
    values: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for name, template in state.runbook.outputs.items():
        try:
            values[name] = render(template, state.context())
        except ExpressionError as exc:
            values[name], errors[name] = None, str(exc)
    return values, errors


ICONS = {"succeeded": "✅", "failed": "❌", "skipped": "⏭️", "cancelled": "⛔", "pending": "…"}


async def _artifact(state: RunState, status: str) -> None:
    rows = []
    for step in state.runbook.steps:
        r = state.results[step.id]
        took = format_duration(r.seconds) if r.seconds is not None else "—"
        note = (r.error or "").replace("|", "\\|").replace("\n", " ")
        rows.append(
            f"| {ICONS.get(r.status, '')} {r.status} | `{step.id}` | `{step.uses}` "
            f"| {took} | {r.attempts} | {note} |"
        )
    markdown = "\n".join(
        [
            f"# {state.runbook.metadata.title}",
            f"Run `{state.run_id}` of `{state.runbook.metadata.name}`: **{status}**"
            + (" (drill)" if state.run_info.get("drill") else ""),
            "",
            "| status | step | action | duration | attempts | note |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
            f"Ledger: `{state.ledger.path}`",
        ]
    )
    await acreate_markdown_artifact(
        markdown=markdown,
        key=f"clampdown-run-{state.run_id}",
        description=f"clampdown run {state.run_id}",
    )
