"""The ``respond`` flow: a runbook's run as a Prefect flow run, one task run per attempt.

The step-running rules are the core's (:mod:`clampdown.core.engine.scheduler`:
which step runs when, skips, cancels, failure policies, approvals' effect). This
module adapts them to Prefect: :class:`PrefectRunner` runs each action step as a
Prefect task with the step's retries, retry delay and timeout (so the Prefect UI
shows one task run per step) and carries out approval steps by pausing the flow
run (:mod:`clampdown_flows.approval_gate`). It also names the flow run, leaves a
markdown artifact, and wires the plug-ins a provider registered: run observers
(the Slack thread) and evidence sinks (S3), see :mod:`clampdown.core.extensions`.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import tempfile
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import acreate_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run as runtime_flow_run
from prefect.utilities.annotations import quote

from clampdown.core import inputs as inputs_mod
from clampdown.core.diagnostics import ClampdownError
from clampdown.core.durations import format_duration
from clampdown.core.engine.evidence import (
    anchors,
    manifest_uri,
    store_ledger,
    write_manifests,
)
from clampdown.core.engine.gate_policy import GatePolicy
from clampdown.core.engine.observing import Observers
from clampdown.core.engine.scheduler import (
    Attempt,
    Limits,
    Produced,
    render_outputs,
    run_status,
    schedule,
)
from clampdown.core.engine.state import RunState, new_state
from clampdown.core.extensions import RunHeader, evidence_sinks, ledger_signer, run_observers
from clampdown.core.incident_report_render import markdown_from_ledger
from clampdown.core.ledger import new_run_id, now
from clampdown.core.ledger_signing import note_unsigned, open_ledger
from clampdown.core.lint import load_runbook
from clampdown.core.loader import resolve
from clampdown.core.models import Runbook, Step
from clampdown.core.sealed_inputs import unseal_inputs
from clampdown.core.settings import settings
from clampdown_flows.approval_gate import Gatekeeper
from clampdown_flows.approval_store import default_approvers
from clampdown_flows.prefect_api import local_api, shared_clients


class RunFailed(Exception):
    """The runbook run failed; the flow run is marked Failed with this message."""


@task(
    name="step",
    task_run_name="{step_id}",
    cache_policy=NO_CACHE,
    persist_result=False,
    log_prints=False,
)
async def run_step(step_id: str, attempt: Attempt) -> Produced:
    """One attempt of one step (Prefect calls it again on retry).

    ``attempt`` comes wrapped in :func:`~prefect.utilities.annotations.quote`, which
    Prefect unwraps without looking inside: the attempt is bound to its run's state,
    which Prefect must neither walk for upstream futures nor record. So the step
    reaches its run through its parameter, not through a registry of runs.
    """
    try:
        logger: Any = get_run_logger()
    except Exception:  # outside a Prefect run context
        logger = logging.getLogger("clampdown.run")
    return await attempt(logger)


@functools.lru_cache(maxsize=256)
def _step_task(retries: int, retry_delay: float, timeout: float) -> Any:
    """``run_step`` with these settings; built once per combination (a new Task costs ~2 ms)."""
    return run_step.with_options(
        retries=retries, retry_delay_seconds=retry_delay, timeout_seconds=timeout
    )


class PrefectRunner:
    """The scheduler's :class:`~clampdown.core.engine.scheduler.StepRunner` in a flow run."""

    def __init__(self, gatekeeper: Gatekeeper) -> None:
        self.gatekeeper = gatekeeper

    async def run_action(self, step: Step, attempt: Attempt, limits: Limits) -> Produced:
        runner = _step_task(limits.retries, limits.retry_delay, limits.timeout)
        return await runner(step.id, quote(attempt))

    async def request_approval(self, step: Step, params: Any) -> dict[str, Any]:
        return await self.gatekeeper.request(step.id, params)


def _logger() -> Any:
    """The flow run's logger (the Prefect UI shows it), or clampdown's outside a run."""
    try:
        return get_run_logger()
    except Exception:
        return logging.getLogger("clampdown.run")


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

    The settings are read once, here (on a stock Prefect worker this flow is the entry
    point), and handed to the engine, the approval gate, observers and evidence sinks.
    """
    conf = settings()
    run_id = run_id or new_run_id()
    path = resolve(runbook, library or conf.library)
    loaded, _warnings = load_runbook(path)
    rb: Runbook = loaded.model
    files = conf.paths.run(run_id)
    sinks = evidence_sinks(conf)  # signed heads go to the evidence bucket as the run goes
    ledger = open_ledger(files.ledger, run_id, ledger_signer(conf), anchors(sinks))
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
        note_unsigned(ledger, _logger())  # no signing key: said in the ledger and the log

    try:
        values = inputs_mod.validate(rb.inputs, inputs)
    except ClampdownError as exc:  # still on the record: who tried to run what, and why not
        record_start(inputs)
        ledger.append("run.end", status="failed", error=str(exc), outputs={})
        ledger.close()
        raise
    record_start(values)
    ledger.redact(*inputs_mod.secret_values(rb.inputs, values))  # secret defaults too
    state = new_state(run_id, rb, values, ledger, run_info, files)
    state.gate = policy = GatePolicy(state, functools.partial(default_approvers, conf))
    state.observers = observers = Observers(state, run_observers(run_id, ledger, conf))
    runner = PrefectRunner(Gatekeeper(state, policy, observers, conf))
    observers.started(_header(state))
    try:
        await schedule(state, runner)
        status = run_status(state)
        observers.ended(status)
        outputs, output_errors = render_outputs(state)
        pin, evidence_errors = await asyncio.to_thread(write_manifests, sinks, run_id, ledger.path)
        ledger.append(
            "run.end",
            status=status,
            outputs=outputs,
            output_errors=output_errors,
            aborted_by=state.aborted_by,
            steps={sid: r.status for sid, r in state.results.items()},
            evidence=manifest_uri(sinks, run_id),
            manifest=pin,  # its version id and SHA-256: verify reads that version
        )
        await _artifact(state, status)
        await _report_artifact(state)
    finally:
        observers.ended("interrupted")  # no-op when already told above
        ledger.close()
    evidence_error = await asyncio.to_thread(store_ledger, sinks, run_id, ledger, evidence_errors)
    summary = {
        "run_id": run_id,
        "runbook": rb.metadata.name,
        "status": status,
        "outputs": outputs,
        "steps": {sid: r.status for sid, r in state.results.items()},
        "ledger": str(ledger.path),
        "evidence": manifest_uri(sinks, run_id),
        "evidence_error": evidence_error,
    }
    if state.aborted_by:
        failed = state.results[state.aborted_by]
        raise RunFailed(f"run {run_id} failed: step '{state.aborted_by}' failed: {failed.error}")
    return summary


def _header(state: RunState) -> RunHeader:
    rb, info = state.runbook, state.run_info
    return RunHeader(
        title=rb.metadata.title,
        runbook=rb.metadata.name,
        severity=str(rb.metadata.severity),
        trigger=info["trigger"],
        run_id=state.run_id,
        drill=bool(info.get("drill")),
        flow_run_id=str(runtime_flow_run.id) if runtime_flow_run.id else None,
    )


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


async def _report_artifact(state: RunState) -> None:
    """The run's incident report (``clampdown report``) as a markdown artifact of the run."""
    try:
        markdown = markdown_from_ledger(state.ledger.path)
    except Exception as exc:  # the run's outcome does not depend on its report
        get_run_logger().warning("no incident report artifact: %s", exc)
        return
    await acreate_markdown_artifact(
        markdown=markdown,
        key=f"clampdown-report-{state.run_id}".lower(),
        description=f"incident report of clampdown run {state.run_id}",
    )
