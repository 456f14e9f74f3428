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
import contextlib
import functools
import hashlib
import json
import logging
import os
import signal
import socket
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import acreate_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run as runtime_flow_run
from prefect.utilities.annotations import quote

from clampdown.core import inputs as inputs_mod
from clampdown.core import run_ownership
from clampdown.core.actions import registry
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
from clampdown.core.engine.resume import MAX_RESUMES, restore
from clampdown.core.engine.scheduler import (
    Attempt,
    Limits,
    Produced,
    render_outputs,
    retry_may_help,
    run_status,
    schedule,
)
from clampdown.core.engine.state import RunState, new_state
from clampdown.core.extensions import RunHeader, evidence_sinks, ledger_signer, run_observers
from clampdown.core.home import RunFiles
from clampdown.core.ledger import new_run_id, now, started_as_drill
from clampdown.core.ledger import read as read_ledger
from clampdown.core.ledger_signing import note_unsigned, open_ledger, verify_ledger
from clampdown.core.loader import resolve
from clampdown.core.models import Runbook, Step
from clampdown.core.run_start import RunStart
from clampdown.core.sealed_inputs import inputs_key_from_env, unseal_inputs
from clampdown.core.settings import Settings, settings
from clampdown_flows.approval_gate import Gatekeeper
from clampdown_flows.approval_store import default_approvers
from clampdown_flows.plain_flow import plain_json_flow
from clampdown_flows.prefect_api import local_api, shared_clients
from clampdown_flows.preloaded import load_checked, preloaded_for, tell_started
from clampdown_flows.run_client import RunName


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
        retries=retries,
        retry_delay_seconds=retry_delay,
        timeout_seconds=timeout,
        retry_condition_fn=_retry_may_help,
    )


def _retry_may_help(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect's retry condition: not when the attempt's error says the same call would be
    refused the same way (:attr:`StepError.retry_may_help`)."""
    return retry_may_help(state.data)


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


def _flow_run_name(params: Mapping[str, Any]) -> str:
    """``<runbook file's stem>-<run id>``: what the Prefect UI lists the run as. From the
    parameters alone, so the shared client names the flow run when it creates it
    (:mod:`clampdown_flows.run_client`) instead of renaming it once it began."""
    return f"{Path(str(params.get('runbook', 'runbook'))).stem}-{params.get('run_id') or 'run'}"


# Results are never persisted (the ledger is the record), so no storage is ever
# written. Naming one spares two API round trips per run that Prefect otherwise
# makes to look up the server's default result-storage block.
_UNUSED_RESULT_STORAGE = Path(tempfile.gettempdir()) / "clampdown-prefect-results"


@plain_json_flow(  # its parameters are JSON: no FastAPI import to send them
    name="respond",
    flow_run_name=RunName(_flow_run_name),
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
    resume: bool = False,
) -> dict[str, Any]:
    """Execute ``runbook`` (a path, or a name in the library) with ``inputs``.

    Returns the run id, status, rendered outputs, per-step statuses and the
    ledger path. Raises :class:`RunFailed` (flow run Failed) when a step aborts
    the run, and :class:`~clampdown.core.diagnostics.ClampdownError` for a runbook or
    inputs that do not validate — before anything is executed.

    ``resume``: continue run ``run_id`` from its ledger and start record (its process
    died): see :mod:`clampdown.core.engine.resume`. The run is held
    (:mod:`clampdown.core.run_ownership`) while this flow runs it, so two processes
    never run it at once and a process that dies lets it go.

    The settings are read once, here (on a stock Prefect worker this flow is the entry
    point), and handed to the engine, the approval gate, observers and evidence sinks.
    """
    conf = settings()
    run_id = run_id or new_run_id()
    files = conf.paths.run(run_id)
    with run_ownership.hold(files):
        files.materialize()  # scaled mode: the run as the run store holds it, on this machine
        if resume:
            return await _continue(conf, files)
        if not files.start.exists():  # `clampdown run`, a worker: serve's starter wrote it
            RunStart.of(
                run_id,
                runbook,
                inputs or {},
                trigger or {"type": "manual"},
                library=library,
                drill=drill,
                inputs_key=inputs_key_from_env(),
            ).save(files)
        conf = settings_of_run(conf, drill)  # its signer and evidence lock mode
        return await _start(conf, files, runbook, inputs, trigger, drill, library)


async def _start(
    conf: Settings,
    files: RunFiles,
    runbook: str,
    inputs: dict[str, Any] | None,
    trigger: dict[str, Any] | None,
    drill: bool,
    library: str | None,
) -> dict[str, Any]:
    """A new run: validate, record ``run.start``, run every step.

    The runbook is the one serve's starter already loaded and checked from the same file,
    when it handed one over in this run's context (:mod:`clampdown_flows.preloaded`);
    otherwise it is loaded and checked here."""
    run_id = files.run_id
    path = resolve(runbook, library or conf.library)
    given = preloaded_for(path) or load_checked(path)
    rb: Runbook = given.model
    sinks = evidence_sinks(conf)  # signed heads go to the evidence bucket as the run goes
    ledger = open_ledger(
        files.ledger, run_id, ledger_signer(conf), anchors(sinks), files.ledger_primary
    )
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
            digest=given.digest,
            inputs=inputs_mod.masked(rb.inputs, shown_inputs),
            flow_run_id=str(runtime_flow_run.id),
        )
        tell_started()  # run.start is durable: serve's launcher may launch the next run
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
    gatekeeper = _wire(state, conf)
    return await _drive(state, gatekeeper, sinks)


async def _continue(conf: Settings, files: RunFiles) -> dict[str, Any]:
    """A run whose process died: rebuilt from its ledger, continued where it stopped.

    Refused (nothing done, the ledger left as it is) when the ledger does not verify:
    a forged ``step.end`` must not make a containment step look done. A run that cannot
    go on — its runbook changed, its secret inputs were not kept, it stopped too often —
    ends with ``run.end`` and the reason, so it releases its dedup and concurrency slots.
    """
    run_id = files.run_id
    conf = settings_of_run(conf, recorded_drill(files))  # its signer and lock mode
    signer = ledger_signer(conf)
    records = _trusted_records(files, signer)
    first = records[0] if records else None
    if first is None or first.get("type") != "run.start":
        raise ClampdownError(
            f"run '{run_id}' has no run.start: nothing to continue",
            "start it again with `clampdown run`",
        )
    if any(r.get("type") == "run.end" for r in records):
        raise ClampdownError(f"run '{run_id}' has already ended", "see `clampdown runs`")
    start = RunStart.load(files)
    sinks = evidence_sinks(conf)
    ledger = open_ledger(files.ledger, run_id, signer, anchors(sinks), files.ledger_primary)
    run_info = dict(first["run"])
    path = Path(str(first.get("runbook_path")))
    why_not = _why_not_resumable(records, path, first, start)
    if why_not is not None or start is None:
        ledger.append("run.end", status="failed", error=why_not, outputs={})
        ledger.close()
        _logger().error("run %s cannot be resumed: %s", run_id, why_not)
        raise RunFailed(f"run {run_id} cannot be resumed: {why_not}")
    from clampdown.core.lint import load_runbook  # resumed runs only (new ones: preloaded)

    rb: Runbook = load_runbook(path)[0].model
    inputs = inputs_mod.reveal(unseal_inputs(start.inputs))
    ledger.redact(*inputs_mod.secret_values(rb.inputs, inputs))
    values = inputs_mod.validate(rb.inputs, inputs)
    ledger.redact(*inputs_mod.secret_values(rb.inputs, values))
    changed = _inputs_changed(rb, values, first, ledger.scrub)
    if changed is not None:
        ledger.append("run.end", status="failed", error=changed, outputs={})
        ledger.close()
        _logger().error("run %s cannot be resumed: %s", run_id, changed)
        raise RunFailed(f"run {run_id} cannot be resumed: {changed}")
    state = new_state(run_id, rb, values, ledger, run_info, files)
    gatekeeper = _wire(state, conf)
    restored = restore(state, records)
    gatekeeper.resumed = restored.waiting
    ledger.append(
        "run.resumed",
        resumes=restored.resumes + 1,
        rerun=restored.rerun,
        waiting=sorted(restored.waiting),
        flow_run_id=str(runtime_flow_run.id),
        previous_flow_run_id=restored.previous_flow_run,
        by=f"pid {os.getpid()} on {socket.gethostname()}",
    )
    await _close_previous_flow_run(restored.previous_flow_run, run_id)
    return await _drive(state, gatekeeper, sinks, resumed=True)


def settings_of_run(conf: Settings, drill: bool) -> Settings:
    """The settings a run whose record says ``drill`` works with: ``conf`` (read at the
    flow's start) when the process's ``CLAMPDOWN_DRILL`` agrees, else the environment
    read again with the run's flag.

    Why: the drill flag decides defaults a run must keep for its whole life, whichever
    process runs it: the evidence lock mode (GOVERNANCE in drills, so their simulated
    buckets can be emptied; COMPLIANCE otherwise) and a drill's own ledger key. A real
    run resumed by a drill's process must not get deletable evidence, nor a drill resumed
    elsewhere lose the key its ledger is signed with. A lock mode or key set explicitly
    in the environment still applies."""
    if conf.drill == drill:
        return conf
    return Settings(drill=drill)  # read as settings() read it: the same environment


def recorded_drill(files: RunFiles) -> bool:
    """Whether the run of ``files`` (stopped, or to be rolled back) is a drill: its
    ``run.start`` says (read before its ledger is verified, to pick the key that verifies
    it: a changed flag then fails verification), else its start record."""
    drill = started_as_drill(files.ledger)
    if drill is not None:
        return drill
    start = RunStart.load(files)
    return bool(start is not None and start.drill)


def _trusted_records(files: RunFiles, signer: Any) -> list[dict[str, Any]]:
    """The run's ledger records, if its chain and signatures hold (cut short is expected)."""
    if not files.ledger.is_file():
        return []
    verdict = verify_ledger(files.ledger.read_bytes().splitlines(), signer)
    if verdict.status not in ("truncated", "intact") and not (
        verdict.status == "unsigned" and signer is None
    ):
        raise ClampdownError(
            f"run '{files.run_id}' is not resumed: its ledger fails verification: "
            f"{verdict.message}",
            "nothing was done; investigate with `clampdown verify "
            f"{files.run_id}` (a forged record must not make a step look done)",
        )
    return read_ledger(files.ledger)


def _why_not_resumable(
    records: list[dict[str, Any]], path: Path, first: dict[str, Any], start: RunStart | None
) -> str | None:
    crashes = _unplanned_stops(records)
    if crashes > MAX_RESUMES:
        return (
            f"could not be resumed: its process stopped {crashes} times; something in "
            "the run stops it (see the logs); start a new run when fixed"
        )
    if start is None:
        return "could not be resumed: it has no start record (started by an older version)"
    if start.secrets_left_out:
        return (
            "could not be resumed: its secret inputs "
            f"({', '.join(start.secrets_left_out)}) were not kept (set CLAMPDOWN_INPUTS_KEY "
            "to keep them sealed); start a new run"
        )
    if not path.is_file() or _digest(path) != first.get("digest"):
        return (
            f"could not be resumed: its runbook {path} changed or is gone since the run "
            "started; start a new run"
        )
    return None


def _inputs_changed(
    rb: Runbook, values: dict[str, Any], first: dict[str, Any], scrub: Callable[[Any], Any]
) -> str | None:
    """Why the inputs a stopped run would continue with are not the ones it started with,
    or None. They come from its start record (``start.json``: it keeps the secret ones,
    sealed), which is not signed; the signed ``run.start`` has them too, secret ones
    masked. Someone who can write the run's files could otherwise edit ``start.json`` and
    point every step not yet done (and those without a gate) at another target. Secret
    inputs are masked on both sides: they are checked only by their seal. The ledger masks a
    secret's text inside any other value too (``scrub``): such a value is compared as the
    ledger wrote it (unmasked as well: a secret *default* is masked only after ``run.start``)."""
    now = json.loads(json.dumps(inputs_mod.masked(rb.inputs, values), default=str))
    recorded = first.get("inputs") or {}
    if now == recorded or scrub(now) == recorded:
        return None
    names = sorted(k for k in now.keys() | recorded.keys() if now.get(k) != recorded.get(k))
    return (
        "could not be resumed: its start record's inputs differ from the signed run.start "
        f"({', '.join(names)}): the run's files were changed; start a new run"
    )


def _unplanned_stops(records: list[dict[str, Any]]) -> int:
    """How many of the run's processes stopped without suspending it, the one that just
    stopped included. Each process's part of the ledger begins with ``run.start`` or
    ``run.resumed``; a part with ``run.suspended`` ended in good order (serve's SIGTERM: a
    deploy, ``systemctl stop``) and is not counted. Why: the limit stops resuming a run
    that keeps killing its process, and a run waiting hours for an approval must not be
    ended because serve was deployed four times meanwhile."""
    stops, suspended = 0, False
    for record in records:
        kind = record.get("type")
        if kind == "run.resumed":
            stops += not suspended
            suspended = False
        elif kind == "run.suspended":
            suspended = True
    return stops + (not suspended)


async def _close_previous_flow_run(flow_run_id: str | None, run_id: str) -> None:
    """The dead process's flow run stays Running or Paused in Prefect: mark it Crashed,
    pointing at the flow run that continues it (best effort: the ledger is the record)."""
    if not flow_run_id or flow_run_id == "None":
        return
    from prefect import get_client
    from prefect.states import Crashed

    try:
        async with get_client() as client:
            await client.set_flow_run_state(
                uuid.UUID(flow_run_id),
                Crashed(
                    message=f"its process stopped; clampdown run {run_id} continues as flow "
                    f"run {runtime_flow_run.id}"
                ),
                force=True,
            )
    except Exception as exc:
        _logger().warning("could not mark flow run %s crashed: %s", flow_run_id, exc)


def _wire(state: RunState, conf: Settings) -> Gatekeeper:
    """The run's approvals policy, observers and gatekeeper."""
    state.gate = policy = GatePolicy(state, functools.partial(default_approvers, conf))
    state.observers = observers = Observers(state, run_observers(state.run_id, state.ledger, conf))
    return Gatekeeper(state, policy, observers, conf)


SUSPEND = "clampdown:suspend"
"""The message a run's task is cancelled with when its process is stopping (serve's
SIGTERM): the run records ``run.suspended``, keeps no ``run.end``, and is resumed by the
next process. Any other cancellation (Ctrl-C) ends the run as cancelled."""


async def _drive(
    state: RunState, gatekeeper: Gatekeeper, sinks: Any, resumed: bool = False
) -> dict[str, Any]:
    """Run the steps still to run, then end the run: ``run.end``, manifest, artifacts."""
    run_id, ledger, observers = state.run_id, state.ledger, gatekeeper.observers
    runner = PrefectRunner(gatekeeper)
    ended = False
    observers.started(_header(state))
    if resumed:
        observers.changed("▶️ run resumed: its process had stopped; steps that ended are kept")
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
        ended = True
        await _artifact(state, status)
    except asyncio.CancelledError as exc:
        if not ended:
            _stopped(state, exc)
        raise
    finally:
        observers.ended("interrupted")  # no-op when already told above
        ledger.close()
        _release(state)
    evidence_error = await asyncio.to_thread(store_ledger, sinks, run_id, ledger, evidence_errors)
    summary = {
        "run_id": run_id,
        "runbook": state.runbook.metadata.name,
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


def _release(state: RunState) -> None:
    """What the run's actions kept for it in this process goes (AWS: its boto3 clients,
    reused by its steps): :meth:`Action.release_run` of each action class the runbook uses."""
    for action in {registry().get(step.uses) for step in state.runbook.steps}:
        action.release_run(state.run_id)


def _stopped(state: RunState, exc: asyncio.CancelledError) -> None:
    """The run's task was cancelled: suspended for another process, or ended as cancelled."""
    if SUSPEND in exc.args:
        state.ledger.append(
            "run.suspended",
            reason="its process is stopping; the run is continued by the next one "
            "(clampdown serve at start, or `clampdown resume`)",
            running=[sid for sid, r in state.results.items() if r.status == "running"],
        )
        if state.observers:
            state.observers.changed(
                "⏸️ run suspended: clampdown is restarting; it continues when it is back"
            )
        return
    state.ledger.append(
        "run.end",
        status="cancelled",
        error="interrupted (Ctrl-C or the process was stopped): steps not started were not run",
        outputs={},
        steps={sid: r.status for sid, r in state.results.items()},
    )


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


def run_in_process(
    runbook: str,
    inputs: dict[str, Any],
    on_interrupt: Callable[[], None] | None = None,
    **options: Any,
) -> Any:
    """Run ``respond`` here and now; returns its final Prefect state, never raises for a failed run.

    Uses the Prefect server at ``PREFECT_API_URL`` when one is configured, else a
    local one started for the duration (see :mod:`clampdown_flows.prefect_api`).
    ``on_interrupt`` is called on each Ctrl-C before asyncio's own handling (which
    cancels the run): the command's bound on how long it may then take
    (:mod:`clampdown.app.interrupt`).
    """

    async def execute() -> Any:
        with _chained_sigint(on_interrupt):
            async with shared_clients():
                return await respond(runbook, inputs, return_state=True, **options)

    with local_api():
        return asyncio.run(execute())


@contextlib.contextmanager
def _chained_sigint(on_interrupt: Callable[[], None] | None) -> Iterator[None]:
    """Call ``on_interrupt`` on SIGINT, then the handler in place: asyncio.run's, which
    cancels the run's task at its next await (installed before this coroutine runs, and
    only when the handler was Python's default: so this one is installed here, inside)."""
    if on_interrupt is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous == signal.SIG_IGN:  # ignored on purpose (`cmd &` in a script, nohup): kept
        yield
        return

    def chained(signum: int, frame: Any) -> None:
        on_interrupt()
        if callable(previous):
            previous(signum, frame)
        else:
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, chained)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


ICONS = {"succeeded": "✅", "failed": "❌", "skipped": "⏭️", "cancelled": "⛔", "pending": "…"}


async def _artifact(state: RunState, status: str) -> None:
    """The run's one markdown artifact: its incident report (``clampdown report``), then the
    step table (status, duration, attempts, note) and the ledger's path.

    One artifact, not two: each is a request to the Prefect server, which is the busiest
    process of a serve under a burst of alerts (docs/benchmarks.md, serve throughput).
    A report that cannot be built leaves the step table alone, and says why.

    The report's modules are imported here, when the steps are done, not with this
    module: they are not on the way to a run's first step."""
    try:
        from clampdown.core.incident_report_render import markdown_from_ledger

        report = markdown_from_ledger(state.ledger.path)
    except Exception as exc:  # the run's outcome does not depend on its report
        get_run_logger().warning("no incident report in the artifact: %s", exc)
        report = "\n".join(
            [
                f"# {state.runbook.metadata.title}",
                f"Run `{state.run_id}` of `{state.runbook.metadata.name}`: **{status}**"
                + (" (drill)" if state.run_info.get("drill") else ""),
                "",
                f"The incident report could not be built: {exc}",
            ]
        )
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
            report.rstrip("\n"),
            "",
            f"## Steps: {state.runbook.metadata.title}",
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
        key=f"clampdown-report-{state.run_id}".lower(),
        description=f"incident report of clampdown run {state.run_id}",
    )
