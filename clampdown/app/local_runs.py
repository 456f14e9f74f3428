"""Local mode's runs: each ``respond`` flow runs inside the ``serve`` process.

``serve`` answers an alert or a slash command with a run id; :class:`InProcessStarter`
is what starts that run here (scaled mode's counterpart is
:class:`clampdown.app.deployment.DeploymentStarter`).

What it guarantees, and how:

* **"started" means started.** The run's start record (``runs/<id>/start.json``,
  :mod:`clampdown.core.run_start`) is on disk, fsync'd, before the run id is returned;
  when it cannot be written the starter raises
  :class:`~clampdown.core.runs.RunNotStarted` (serve answers 503 + Retry-After).
  The triage starts a run in three moves (:meth:`InProcessStarter.prepare`, then
  :meth:`PreparedRun.record` inside the state store's claim, then
  :meth:`PreparedRun.launch` once the claim committed), so that the dedup keys, the run
  slot and the start record are one decision (:mod:`clampdown_flows.triage`).
* **Loaded once.** The runbook the caller loaded and checked (the triage's) goes to the
  run's ``respond`` in its context (:mod:`clampdown_flows.preloaded`), not read again.
* **Paused runs hold no worker thread.** Every run is a task on one event loop, in one
  thread the starter owns: a run waiting for people is a suspended coroutine, not a
  blocked thread, so hundreds may wait while others run. What bounds work is the step
  threads (synchronous actions run in the loop's executor, ``step_threads`` of them).
  Nothing else keeps a thread per run: the run's Slack sender ends when it has nothing
  to send (:mod:`clampdown_slack.run_thread`), and Prefect's flow-run heartbeat — a
  thread per flow run — is off (``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` unset), see
  :func:`_heartbeat_off`.
* **A run outlives the process.** At start, and every ``scan_every`` seconds, the
  starter looks for runs in its ``CLAMPDOWN_HOME`` that have a start record, no
  ``run.end`` and no live process holding them (:mod:`clampdown.core.run_ownership`),
  and continues each (``respond(resume=True)``, :mod:`clampdown.core.engine.resume`).
* **Stopping suspends.** :meth:`shutdown` (serve's SIGTERM) cancels each run with
  :data:`~clampdown_flows.respond.SUSPEND`: the run records ``run.suspended``, keeps no
  ``run.end``, and the next serve continues it — approvals included, with the same
  request and the decisions already counted.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import functools
import logging
import threading
import weakref
from collections.abc import Callable, Coroutine
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clampdown.core.run_ownership import RunHeld

if TYPE_CHECKING:
    from clampdown.core.home import Home
    from clampdown.core.run_start import RunStart
    from clampdown.core.settings import Settings
    from clampdown_flows.preloaded import Preloaded

logger = logging.getLogger("clampdown.serve")
STEP_THREADS = 16
"""Threads for synchronous action calls across all runs (AWS calls block in boto3)."""
SCAN_EVERY = 30.0
"""Seconds between looks for stopped runs to continue."""
SHUTDOWN_GRACE = 10.0
"""Seconds serve waits at shutdown for its runs to record that they were suspended."""
Given = tuple[tuple[contextvars.ContextVar[Any], Any], ...]
"""Context variables and the values one run alone sees in them (what its starter hands it)."""


class InProcessStarter:
    """``start_run`` for local mode: each run a ``respond`` flow on the starter's event loop.

    The Prefect API URL in force when the starter is made (``serve`` makes it inside
    ``local_api()``) is used by every run, with Prefect's flow-run heartbeats off unless
    configured then (:func:`_heartbeat_off`); so are clampdown's settings (``drill``):
    ``conf``, or the environment when the starter is made. The runbook library is looked
    up at each start (:func:`clampdown.core.settings.current_library`).

    ``resume_stopped``: continue runs of this home whose process died (serve: yes; a test
    that starts a starter beside others' runs: no).
    """

    def __init__(
        self,
        conf: Settings | None = None,
        *,
        step_threads: int = STEP_THREADS,
        resume_stopped: bool = False,
        scan_every: float = SCAN_EVERY,
    ) -> None:
        from prefect.settings import PREFECT_API_URL

        from clampdown.core.settings import settings

        self.conf = conf if conf is not None else settings()
        self.api_url: str | None = PREFECT_API_URL.value()
        self._prefect_updates = _heartbeat_off()  # read here, in the caller's settings
        from clampdown_flows.decision_wakeup import Wakeups

        # this process's paused approval waits: a decision sent here wakes its run at once
        self.wakeups = Wakeups()
        self.futures: dict[str, Future[Any]] = {}  # runs not ended yet (pruned as they end)
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self._ended: set[str] = set()  # runs seen with run.end: never looked at again
        self._loop = asyncio.new_event_loop()
        self._loop.set_default_executor(
            ThreadPoolExecutor(step_threads, thread_name_prefix="clampdown-step")
        )
        self._ready = threading.Event()
        self._thread = threading.Thread(
            target=self._loop_thread, name="clampdown-runs", daemon=True
        )
        self._thread.start()
        self._ready.wait()
        self._watcher: Future[Any] | None = None
        if resume_stopped:
            self._watcher = asyncio.run_coroutine_threadsafe(self._watch(scan_every), self._loop)
        _STARTERS.add(self)

    # starting ---------------------------------------------------------------------------

    def __call__(self, runbook: Path, inputs: dict[str, Any], trigger: dict[str, Any]) -> str:
        """Record the run's start durably, start it, and return its id (or raise
        :class:`~clampdown.core.runs.RunNotStarted`: nothing was started)."""
        from clampdown.core.ledger import new_run_id

        prepared = self.prepare(runbook, inputs, trigger, run_id=new_run_id())
        prepared.record()
        prepared.launch()
        return prepared.run_id

    def prepare(
        self,
        runbook: Path,
        inputs: dict[str, Any],
        trigger: dict[str, Any],
        *,
        run_id: str,
        preloaded: Preloaded | None = None,
        library: Path | None = None,
    ) -> PreparedRun:
        """The run ``run_id`` of ``runbook`` with its start record built, nothing written.

        ``preloaded``: the runbook as the caller loaded and checked it from ``runbook``
        (the triage's); without it the runbook is loaded and checked here. ``library``: the
        library the caller found ``runbook`` in (the triage's, read when serve started),
        recorded in the start record; without it, ``CLAMPDOWN_LIBRARY`` as it is now (a
        full read of the settings, ~1 ms per alert). A runbook that
        does not load, or inputs it cannot protect, raise
        :class:`~clampdown.core.diagnostics.ClampdownError`."""
        from clampdown.core import inputs as inputs_mod
        from clampdown.core.run_start import RunStart
        from clampdown.core.sealed_inputs import inputs_key_from_env
        from clampdown.core.settings import current_library
        from clampdown_flows.preloaded import load_checked

        if preloaded is None or preloaded.path != str(runbook):
            preloaded = load_checked(runbook)
        protected = inputs_mod.protect(preloaded.model.inputs, inputs)
        start = RunStart.of(
            run_id,
            str(runbook),
            protected,
            trigger,
            library=str(library if library is not None else current_library()),
            drill=self.conf.drill,
            inputs_key=inputs_key_from_env(),
        )
        return PreparedRun(self, run_id, runbook, start, preloaded)

    def _record(self, prepared: PreparedRun) -> None:
        from clampdown.core.runs import RunNotStarted

        try:
            prepared.start.save(self.conf.paths.run(prepared.run_id))
        except OSError as exc:
            logger.error(
                "run of %s not started: its start cannot be recorded: %s", prepared.runbook, exc
            )
            raise RunNotStarted(
                f"the run cannot be recorded in {self.conf.paths.runs_dir}: {exc.strerror or exc}",
                "free disk space or make CLAMPDOWN_HOME writable; the sender should retry",
            ) from None

    def _launch(self, prepared: PreparedRun, on_start: Callable[[], None] | None = None) -> None:
        from clampdown_flows.preloaded import PRELOADED, RUN_STARTED

        start = prepared.start
        options = {
            "run_id": prepared.run_id,
            "trigger": start.trigger,
            "library": start.library,
            "drill": start.drill,
        }
        path, protected = str(prepared.runbook), start.inputs
        self._submit(
            prepared.run_id,
            lambda respond: respond(path, protected, **options),
            ((PRELOADED, prepared.preloaded), (RUN_STARTED, on_start)),
        )

    def _discard(self, prepared: PreparedRun) -> None:
        """Remove a start record whose claim did not commit (best effort: said when not)."""
        from clampdown.core.home import RUN_START

        try:
            self.conf.paths.run(prepared.run_id).remove(RUN_START)
        except Exception as exc:
            logger.error(
                "run %s was not started but its start record could not be removed (%s): "
                "serve will continue it as a stopped run",
                prepared.run_id,
                exc,
            )

    def resume(self, run_id: str) -> None:
        """Continue a stopped run of this home (its process died); one that never wrote
        its first ledger record starts from its start record."""
        from clampdown.core.run_start import continuation

        files = self.conf.paths.run(run_id).materialize()  # from the run store, if any
        runbook, inputs, options = continuation(files)
        self._submit(run_id, lambda respond: respond(runbook, inputs, run_id=run_id, **options))

    def wait(self, run_id: str, timeout: float | None = None) -> None:
        """Block until ``run_id`` no longer runs in this starter (at once when it has
        ended: ended runs are forgotten); TimeoutError when it still runs after ``timeout``.

        Why not ``futures[run_id]``: a run that ends before its caller looks has been
        pruned already. How a run ended is in its ledger (``run.end``) and in serve's log
        (an error that escaped the flow), not in the return of this call."""
        future = self.futures.get(run_id)
        if future is not None:
            done, _ = concurrent.futures.wait([future], timeout)
            if not done:
                raise TimeoutError(f"run {run_id} still runs after {timeout} s")

    def _submit(
        self,
        run_id: str,
        call: Callable[[Any], Coroutine[Any, Any, Any]],
        given: Given = (),
    ) -> None:
        """Run ``call(respond)`` on the loop; ``given``: context variables and the values
        this run alone sees in them."""
        future = asyncio.run_coroutine_threadsafe(self._execute(run_id, call, given), self._loop)
        self.futures[run_id] = future
        future.add_done_callback(functools.partial(self._done, run_id))

    def _done(self, run_id: str, future: Future[Any]) -> None:
        """A run's future ended: say how, and forget it (a long-lived serve starts runs
        for months; shutdown only needs those still going)."""
        _log_outcome(run_id, future)
        if self.futures.get(run_id) is future:  # not a newer continuation of the same run
            del self.futures[run_id]

    async def _execute(
        self,
        run_id: str,
        call: Callable[[Any], Coroutine[Any, Any, Any]],
        given: Given = (),
    ) -> Any:
        """Run ``call(respond)`` as its own task, in a copy of the host's context (its
        Prefect settings and shared clients), so that runs do not see each other's."""
        from clampdown_flows.respond import respond

        context = self._context.copy()
        for variable, value in given:
            context.run(variable.set, value)
        coroutine = call(functools.partial(respond, return_state=True))
        task = asyncio.get_running_loop().create_task(coroutine, context=context)
        self._tasks[run_id] = task
        try:
            return await task
        finally:
            self._tasks.pop(run_id, None)

    def _loop_thread(self) -> None:
        """The runs' event loop: a host task enters Prefect's settings and shared clients
        once, and every run's task starts from a copy of that context."""
        from prefect.settings import PREFECT_API_URL, temporary_settings

        from clampdown_flows.prefect_api import shared_clients

        async def host() -> None:
            self._stop = asyncio.Event()
            updates = dict(self._prefect_updates)
            if self.api_url:
                updates[PREFECT_API_URL] = self.api_url
            settings_ctx = temporary_settings(updates) if updates else contextlib.nullcontext()
            with settings_ctx, self.wakeups.serving():
                async with shared_clients():
                    self._context = contextvars.copy_context()
                    self._ready.set()
                    await self._stop.wait()

        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(host())
        finally:
            self._ready.set()  # never leave the constructor waiting

    # resuming ---------------------------------------------------------------------------

    async def _watch(self, every: float) -> None:
        """Continue stopped runs now, then every ``every`` seconds."""
        while True:
            try:
                stopped = await asyncio.to_thread(self.stopped_runs)
            except Exception as exc:  # a scan that fails must not stop the next one
                logger.error("could not look for stopped runs: %s", exc)
                stopped = []
            for run_id in stopped:
                logger.warning("run %s has no live process: continuing it", run_id)
                self.resume(run_id)
            await asyncio.sleep(every)

    def stopped_runs(self) -> list[str]:
        """Runs of this home with a start record, no ``run.end`` and no process holding them."""
        going = dict(self.futures)  # copied: runs' done callbacks prune it meanwhile
        return [
            run_id
            for run_id in stopped_runs(self.conf.paths, skip=self._ended)
            if run_id not in going or going[run_id].done()
        ]

    # stopping ---------------------------------------------------------------------------

    def shutdown(self, grace: float = SHUTDOWN_GRACE) -> list[str]:
        """Stop: every run still going is suspended (continued by the next serve).

        Returns the ids of the runs suspended. Steps in flight are cancelled where they
        wait; a synchronous AWS call already sent finishes in its thread, and the run's
        undo intent (written before the call) lets rollback put it back either way.
        """
        from clampdown_flows.respond import SUSPEND

        if self._watcher is not None:
            self._watcher.cancel()
        suspended = list(self._tasks)
        for task in list(self._tasks.values()):
            self._loop.call_soon_threadsafe(task.cancel, SUSPEND)
        pending = [f for f in list(self.futures.values()) if not f.done()]
        concurrent.futures.wait(pending, timeout=grace)
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=grace)
        return suspended

    def interrupt_running(self) -> list[str]:
        """Interrupt the runs still in progress (as Ctrl-C does to ``clampdown run``).

        Each ends as ``cancelled`` and says so (``run.end``). For test sessions and
        embedders that must not wait for a run paused at an approval.
        """
        interrupted = list(self._tasks)
        for task in list(self._tasks.values()):
            self._loop.call_soon_threadsafe(task.cancel)
        return interrupted


@dataclass(frozen=True)
class PreparedRun:
    """A run of ``starter`` whose id is chosen and whose start record is built.

    :meth:`record` writes the start record durably (raises
    :class:`~clampdown.core.runs.RunNotStarted` when it cannot); :meth:`launch` starts
    the run on the starter's loop (``on_start``: called from the run once its
    ``run.start`` is durable, :data:`clampdown_flows.preloaded.RUN_STARTED`);
    :meth:`discard` removes a recorded start that must not run (its claim did not commit).
    The triage records inside the state store's claim and launches after it committed."""

    starter: InProcessStarter
    run_id: str
    runbook: Path
    start: RunStart
    preloaded: Preloaded

    def record(self) -> None:
        self.starter._record(self)

    def launch(self, on_start: Callable[[], None] | None = None) -> None:
        self.starter._launch(self, on_start)

    def discard(self) -> None:
        self.starter._discard(self)


def _heartbeat_off() -> dict[Any, Any]:
    """Prefect's flow-run heartbeats off for local mode's runs, unless configured.

    Prefect 3 starts one thread per flow run (``flow_engine._send_heartbeats``) that
    sends a ``prefect.flow-run.heartbeat`` event every ``flows.heartbeat_frequency``
    seconds (180 by default) for the whole run, a wait for people included. Heartbeats
    exist so that a Prefect automation can mark a run whose process died as crashed;
    local mode knows a dead run by its ``flock`` (:mod:`clampdown.core.run_ownership`)
    and its serve starts its own Prefect API with no such automation. ``None`` is
    Prefect's documented "no heartbeats" value: no thread. An operator who set
    ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` (environment or profile) keeps it.
    """
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, get_current_settings

    if "heartbeat_frequency" in get_current_settings().flows.model_fields_set:
        return {}
    return {PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}


def stopped_runs(home: Home, skip: set[str] | None = None) -> list[str]:
    """Runs under ``home`` that have a start record, no ``run.end``, and no live process.

    ``skip``: run ids known to have ended (filled in as they are found: a run that
    ended never starts again, so a long-lived server reads each ledger to its end once).
    With a run store (the scaled mode) the candidates are the store's runs without
    ``run.end``, wherever they ran, and "no live process" is its advisory lock.
    """
    from clampdown.core.run_ownership import is_stopped

    if home.store is not None:
        return [r for r in home.store.unended() if is_stopped(home.run(r))]
    found = []
    folder = home.runs_dir
    for start in sorted(folder.glob("*/start.json")) if folder.is_dir() else []:
        run_id = start.parent.name
        if skip is not None and run_id in skip:
            continue
        files = home.run(run_id)
        if _has_ended(files.ledger):
            if skip is not None:
                skip.add(run_id)
            continue
        if is_stopped(files):
            found.append(run_id)
    return found


def _has_ended(ledger: Path) -> bool:
    try:
        data = ledger.read_bytes()
    except FileNotFoundError:
        return False
    return b'"type":"run.end"' in data or b'"type": "run.end"' in data


_STARTERS: weakref.WeakSet[InProcessStarter] = weakref.WeakSet()


def interrupt_all_runs() -> list[str]:
    """:meth:`InProcessStarter.interrupt_running` on every starter of this process."""
    return [run_id for starter in list(_STARTERS) for run_id in starter.interrupt_running()]


def _log_outcome(run_id: str, future: Future[Any]) -> None:
    if future.cancelled() or isinstance(future.exception(), asyncio.CancelledError):
        logger.warning("run %s was suspended or interrupted (its ledger says which)", run_id)
    elif isinstance(exc := future.exception(), RunHeld):
        logger.info("run %s is run by another process: %s", run_id, exc)
    elif exc is not None:
        logger.error("run %s could not run: %s", run_id, exc, exc_info=exc)
