"""Deployment mode: runs start on a Prefect server and execute on workers (the scaled mode).

Two halves meet at the ``respond`` deployment of ``prefect.yaml``:

* :class:`DeploymentStarter` (the ``clampdown serve`` side) has the contract of
  :class:`clampdown.app.local_runs.InProcessStarter`: ``start_run(runbook, inputs, trigger)``
  returns clampdown's run id at once. It creates a Prefect flow run with
  ``run_deployment(..., timeout=0)``; any worker on the pool executes it.
* :class:`InProcessWorker` (``clampdown worker``) is a Prefect ``process`` worker
  that executes each flow run inside its own long-lived process instead of
  spawning ``python -m prefect.engine`` for it. A new interpreter has to import
  Prefect, boto3 and clampdown before the first step (about 3 s on a 2-core
  machine); that is most of the time an alert waits for containment
  (docs/benchmarks.md). Stock ``prefect worker start --pool clampdown`` workers
  can serve the same pool: whichever worker claims a run executes it.

**Secret inputs.** Prefect stores flow-run parameters in its database and shows
them in its UI. A ``SecretStr`` parameter is stored as ``**********`` — masked,
so it also never reaches a worker on another machine. Secret inputs therefore
travel *sealed*: encrypted with a Fernet key (``CLAMPDOWN_INPUTS_KEY``) that
``clampdown serve`` and the workers hold and the Prefect server does not. The
database keeps only ciphertext; :func:`clampdown.core.sealed_inputs.unseal_inputs`
opens it on the worker. A runbook with secret inputs and no key configured is refused
before any run is created, rather than started with a mask in place of the secret.

**A run is "started" only once the Prefect server holds its flow run.** When the server
is unreachable or refuses to create the flow run (deployment missing, server error),
:class:`DeploymentStarter` raises :class:`~clampdown.core.runs.RunNotStarted`: ``serve``
answers the alert 503 with ``Retry-After`` and the sender's retry starts it. So does
``is_finished`` when the server cannot be asked (the triage needs the answer to decide).

Runbooks are passed by name, not path: a worker resolves the name in its own
``CLAMPDOWN_LIBRARY`` (the same release of the library on every machine; the
ledger's ``run.start`` records the digest of the file that ran).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import threading
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from clampdown.core.diagnostics import ClampdownError
from clampdown.core.runs import RunNotStarted
from clampdown.core.sealed_inputs import seal_inputs, unseal_inputs

logger = logging.getLogger("clampdown.deployment")

DEFAULT_DEPLOYMENT = "respond/clampdown"
DEFAULT_POOL = "clampdown"
MAX_REMEMBERED_RUNS = 1000
FINISHED_CACHE = 1.0  # seconds a "not finished yet" answer from Prefect is trusted


class DeploymentSettings(BaseSettings):
    """``CLAMPDOWN_*`` settings of the scaled mode (read by serve and by workers)."""

    model_config = SettingsConfigDict(env_prefix="CLAMPDOWN_", extra="ignore")

    deployment: str = Field(DEFAULT_DEPLOYMENT, description="<flow>/<deployment> to run")
    work_pool: str = Field(DEFAULT_POOL, description="work pool of the respond deployment")
    inputs_key: SecretStr | None = Field(
        None, description="Fernet key sealing secret inputs between serve and workers"
    )


def deployment_settings() -> DeploymentSettings:
    try:
        return DeploymentSettings()
    except Exception as exc:  # pydantic ValidationError: name the variable, never the value
        raise ClampdownError(
            f"invalid scaled-mode setting: {exc.__class__.__name__}",
            "check CLAMPDOWN_DEPLOYMENT, CLAMPDOWN_WORK_POOL and CLAMPDOWN_INPUTS_KEY",
        ) from None


# --- the serve side ---------------------------------------------------------------------------


class DeploymentStarter:
    """``start_run`` for deployment mode: a flow run of the ``respond`` deployment.

    Returns clampdown's run id (passed to the flow as ``run_id``) as soon as the
    Prefect server has the flow run; the flow run ids of the latest runs are kept in
    :attr:`flow_runs` (run id -> flow run id).
    Safe to call from any thread: it uses Prefect's sync client, never the caller's loop.
    """

    def __init__(self, deployment: str | None = None, api_url: str | None = None) -> None:
        from prefect.settings import PREFECT_API_URL

        conf = deployment_settings()
        self.deployment = deployment or conf.deployment
        self.inputs_key = conf.inputs_key
        self.api_url = api_url or PREFECT_API_URL.value()
        if not self.api_url:
            raise ClampdownError(
                "deployment mode needs a Prefect server, and PREFECT_API_URL is not set",
                "set PREFECT_API_URL to the server the workers poll, e.g. "
                "http://prefect.internal:4200/api",
            )
        self.flow_runs: dict[str, str] = {}
        self._lock = threading.Lock()
        self._finished: set[str] = set()  # a final state stays final
        self._asked: dict[str, float] = {}  # run id -> when Prefect last said "not finished"

    def __call__(self, runbook: Path, inputs: dict[str, Any], trigger: dict[str, Any]) -> str:
        from prefect.deployments import run_deployment
        from prefect.settings import PREFECT_API_URL, temporary_settings

        from clampdown.core.ledger import new_run_id
        from clampdown.core.lint import load_runbook

        loaded, _ = load_runbook(runbook)
        specs = loaded.model.inputs
        secret = {name for name, spec in specs.items() if spec.secret}
        sealed = seal_inputs(secret, inputs, self.inputs_key)
        run_id = new_run_id()
        parameters = {
            "runbook": Path(runbook).stem,  # a name: the worker resolves it in its own library
            "inputs": sealed,
            "run_id": run_id,
            "trigger": trigger,
        }
        try:
            with temporary_settings({PREFECT_API_URL: self.api_url}):
                flow_run = run_deployment(
                    name=self.deployment,
                    parameters=parameters,
                    timeout=0,
                    idempotency_key=f"clampdown-{run_id}",
                    tags=["clampdown"],
                    as_subflow=False,  # a run is never the child of whatever started it
                    _sync=True,
                )
        except Exception as exc:  # no flow run on the server: nothing was started
            what = f"could not create a flow run of {self.deployment}"
            raise self._not_started(what, exc) from exc
        with self._lock:
            self.flow_runs[run_id] = str(flow_run.id)
            while len(self.flow_runs) > MAX_REMEMBERED_RUNS:  # a long-lived serve stays bounded
                del self.flow_runs[next(iter(self.flow_runs))]
        logger.info("run %s started as flow run %s of %s", run_id, flow_run.id, self.deployment)
        return run_id

    def is_finished(self, run_id: str) -> bool:
        """Whether run ``run_id`` has ended, asked of the Prefect server.

        The triage needs it for correlation and ``max_concurrent_runs``; in deployment
        mode the ledgers live on the workers, so the server's flow run state is the
        authority. Finished runs are remembered; "still running" is trusted for a second
        (the triage may ask many times in an alert storm).
        """
        import time

        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with self._lock:
            if run_id in self._finished:
                return True
            asked = self._asked.get(run_id)
            if asked is not None and time.monotonic() - asked < FINISHED_CACHE:
                return False
        try:
            with (
                temporary_settings({PREFECT_API_URL: self.api_url}),
                get_client(sync_client=True) as client,
            ):
                found = client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(name=FlowRunFilterName(like_=run_id)), limit=5
                )
        except Exception as exc:  # the triage cannot decide without it: the sender retries
            raise self._not_started(f"could not ask whether run {run_id} has ended", exc) from exc
        # flow runs of `respond` are named "<runbook>-<run id>"
        mine = [f for f in found if f.name.endswith(f"-{run_id}")]
        done = bool(mine) and all(f.state is not None and f.state.is_final() for f in mine)
        with self._lock:
            if done:
                self._finished.add(run_id)
                self._asked.pop(run_id, None)
            else:
                self._asked[run_id] = time.monotonic()
                while len(self._asked) > MAX_REMEMBERED_RUNS:
                    del self._asked[next(iter(self._asked))]
        return done

    def _not_started(self, what: str, exc: Exception) -> RunNotStarted:
        """The :class:`RunNotStarted` for a failed call to the Prefect server, logged.

        The message (it reaches the alert's sender) says what failed and why in words;
        the server's address is in the hint and the log only.
        """
        import httpx

        if isinstance(exc, httpx.TransportError | OSError):
            why = f"the Prefect server is unreachable ({exc.__class__.__name__}: {exc})"
        else:
            why = f"the Prefect server refused ({exc.__class__.__name__}: {exc})"
        error = RunNotStarted(
            f"{what}: {why}",
            f"check the Prefect server at {self.api_url} (PREFECT_API_URL) and the "
            f"deployment {self.deployment} (CLAMPDOWN_DEPLOYMENT); alert senders retry",
        )
        logger.error("%s — %s", error.message, error.hint)
        return error

    def shutdown(self) -> None:
        """Nothing to stop: runs live on the workers."""


# --- the worker side --------------------------------------------------------------------------


def in_process_worker_class() -> type:
    """:class:`InProcessWorker`, built on first use so importing this module stays light."""
    global _WORKER_CLASS
    if _WORKER_CLASS is None:
        _WORKER_CLASS = _build_worker_class()
    return _WORKER_CLASS


_WORKER_CLASS: type | None = None


def _build_worker_class() -> type:
    import anyio
    from prefect.exceptions import InfrastructureNotAvailable
    from prefect.workers.process import ProcessWorker, ProcessWorkerResult

    class InProcessWorker(ProcessWorker):  # type: ignore[misc]
        """A ``process``-pool worker that runs each ``respond`` flow run in this process.

        Each run gets a thread with its own event loop (as in local mode), so one
        slow run never delays polling. Flow runs of other flows are refused:
        this worker only imports clampdown's ``respond``.
        """

        @classmethod
        def __dispatch_key__(cls) -> str:
            # Serves "process" pools (``type`` is inherited) without replacing Prefect's
            # own ProcessWorker in its registry of worker types.
            return "clampdown-in-process"

        async def run(
            self, flow_run: Any, configuration: Any, task_status: Any = None
        ) -> ProcessWorkerResult:
            flow = await self.client.read_flow(flow_run.flow_id)
            if flow.name != "respond":  # raising here marks the run crashed, with this reason
                raise RuntimeError(
                    f"clampdown worker only runs the respond flow, not '{flow.name}': "
                    "serve other flows from another work pool"
                )
            if task_status is not None:
                task_status.started(os.getpid())
            status = await anyio.to_thread.run_sync(
                _execute_flow_run, flow_run, abandon_on_cancel=True
            )
            return ProcessWorkerResult(status_code=status, identifier=str(os.getpid()))

        async def kill_infrastructure(
            self, infrastructure_pid: str, configuration: Any, grace_seconds: int = 30
        ) -> None:
            # The "infrastructure" is this worker: never kill it for one run.
            raise InfrastructureNotAvailable(
                "runs execute inside the clampdown worker; cancel the flow run instead"
            )

    return InProcessWorker


def _execute_flow_run(flow_run: Any) -> int:
    """Run one flow run of ``respond`` to its end; 0 when the engine reported a final state."""
    from prefect.flow_engine import run_flow_async

    from clampdown_flows.prefect_api import shared_clients
    from clampdown_flows.respond import respond

    parameters = dict(flow_run.parameters or {})
    try:
        if "inputs" in parameters and isinstance(parameters["inputs"], dict):
            parameters["inputs"] = unseal_inputs(parameters["inputs"])
    except ClampdownError as exc:
        logger.error("flow run %s: %s (%s)", flow_run.id, exc.message, exc.hint)
        _fail(flow_run, f"{exc.message} — {exc.hint}")
        return 1

    async def execute() -> Any:
        async with shared_clients():
            return await run_flow_async(
                respond, flow_run=flow_run, parameters=parameters, return_type="state"
            )

    asyncio.run(execute())
    return 0


def _fail(flow_run: Any, message: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.states import Failed

    with (
        contextlib.suppress(Exception),
        get_client(sync_client=True) as client,
    ):
        client.set_flow_run_state(flow_run.id, Failed(message=message), force=True)


RESUME_EVERY = 30.0
REPOLL_PAUSE = 10.0
"""Seconds between a worker that gave up polling (Prefect unreachable too long) and the
next one this process starts."""
POLLING_GAVE_UP = "Service exceeded error threshold"  # prefect.utilities.services
"""Seconds between a worker's looks for stopped runs of its home to continue."""


async def run_worker(
    pool: str,
    name: str | None = None,
    limit: int | None = None,
    poll_seconds: float = 0.5,
    resume_every: float = RESUME_EVERY,
) -> None:
    """Poll ``pool`` every ``poll_seconds`` and run what it hands out in this process.

    Beside it, runs of this worker's ``CLAMPDOWN_HOME`` whose process died (a worker
    killed mid-run: no ``run.end``, nobody holds them) are continued here, at start and
    every ``resume_every`` seconds (:mod:`clampdown.core.engine.resume`).
    """
    import anyio
    from prefect.settings import PREFECT_WORKER_QUERY_SECONDS, temporary_settings

    from clampdown.core.settings import settings

    worker_cls = in_process_worker_class()
    import clampdown_flows.respond  # noqa: F401 - imported once here, not on the first alert's clock

    conf = settings()
    with temporary_settings({PREFECT_WORKER_QUERY_SECONDS: poll_seconds}):
        async with anyio.create_task_group() as group:
            group.start_soon(_continue_stopped_runs, conf, resume_every)
            await keep_polling(lambda: worker_cls(work_pool_name=pool, name=name, limit=limit))
            group.cancel_scope.cancel()


async def keep_polling(make_worker: Any, pause: float = REPOLL_PAUSE) -> None:
    """Run ``make_worker().start()``; when Prefect's polling gives up, start a new worker.

    Why: Prefect's worker stops polling after about four rounds of failed polls (a long
    outage of its API) and returns. Here that would end the process while the runs it
    executes in its threads — paused at an approval, riding the outage out — are still
    going: the worker would half shut down, their next decision would fail, and no
    supervisor restarts a process that is still alive. So this process keeps polling,
    with a new worker after ``pause`` seconds, for as long as it lives.
    """
    import anyio

    while True:
        try:
            await make_worker().start()
            return
        except Exception as exc:  # only the give-up is retried
            if not _polling_gave_up(exc):
                raise
        logger.error(
            "the Prefect API did not answer the worker's polls for too long and Prefect's "
            "worker stopped polling; runs in this process go on; a new worker polls in %.0f s",
            pause,
        )
        await anyio.sleep(pause)


def _polling_gave_up(exc: BaseException) -> bool:
    """Whether ``exc`` is (or a group holding only) Prefect's "exceeded error threshold"."""
    if isinstance(exc, BaseExceptionGroup):
        return all(_polling_gave_up(inner) for inner in exc.exceptions)
    return isinstance(exc, RuntimeError) and POLLING_GAVE_UP in str(exc)


async def _continue_stopped_runs(conf: Any, every: float) -> None:
    """Continue this home's stopped runs, each in a thread of its own, now and every
    ``every`` seconds; a run already being continued here is not started twice."""
    import anyio

    from clampdown.app.local_runs import stopped_runs

    ended: set[str] = set()
    busy: set[str] = set()

    def resume(run_id: str) -> None:
        try:
            _continue_run(run_id)
        finally:
            busy.discard(run_id)

    async with anyio.create_task_group() as group:
        while True:
            try:
                found = await anyio.to_thread.run_sync(stopped_runs, conf.paths, ended)
            except Exception as exc:  # the next look may work: never stop the worker
                logger.error("could not look for stopped runs: %s", exc)
                found = []
            for run_id in found:
                if run_id in busy:
                    continue
                busy.add(run_id)
                logger.warning("run %s has no live process: continuing it here", run_id)
                group.start_soon(
                    functools.partial(anyio.to_thread.run_sync, abandon_on_cancel=True),
                    resume,
                    run_id,
                )
            await anyio.sleep(every)


def _continue_run(run_id: str) -> None:
    """Continue one stopped run in this thread (a flow run of its own, outside the pool)."""
    from clampdown.core.run_start import continuation
    from clampdown.core.settings import settings
    from clampdown_flows.prefect_api import shared_clients
    from clampdown_flows.respond import respond

    files = settings().paths.run(run_id).materialize()  # from the run store, if any
    runbook, inputs, options = continuation(files)

    async def execute() -> Any:
        async with shared_clients():
            return await respond(runbook, inputs, run_id=run_id, return_state=True, **options)

    try:
        asyncio.run(execute())
    except Exception as exc:  # logged; the run's ledger says what became of it
        logger.error("run %s could not be continued: %s", run_id, exc)
