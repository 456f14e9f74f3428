"""Local mode's runs: each ``respond`` flow runs inside the ``serve`` process.

``serve`` answers an alert or a slash command with a run id; :class:`InProcessStarter`
is what starts that run here (scaled mode's counterpart is
:class:`clampdown.app.deployment.DeploymentStarter`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from clampdown.core.settings import Settings

logger = logging.getLogger("clampdown.serve")
MAX_CONCURRENT_RUNS = 8


class InProcessStarter:
    """``start_run`` for local mode: each run is a ``respond`` flow in a worker thread.

    The Prefect API URL in force when the starter is made (``serve`` makes it inside
    ``local_api()``) is used by every run: worker threads do not inherit the context
    variables that hold Prefect's settings. So are clampdown's settings (``drill``):
    ``conf``, or the environment when the starter is made. The runbook library is looked
    up at each start (:func:`clampdown.core.settings.current_library`).
    """

    def __init__(
        self, max_workers: int = MAX_CONCURRENT_RUNS, conf: Settings | None = None
    ) -> None:
        from prefect.settings import PREFECT_API_URL

        from clampdown.core.settings import settings

        self.conf = conf if conf is not None else settings()
        self.api_url: str | None = PREFECT_API_URL.value()
        self.executor = ThreadPoolExecutor(max_workers, thread_name_prefix="clampdown-run")
        self.futures: dict[str, Future[Any]] = {}
        self._running: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Task[Any]]] = {}
        _STARTERS.add(self)

    def __call__(self, runbook: Path, inputs: dict[str, Any], trigger: dict[str, Any]) -> str:
        from clampdown.core import inputs as inputs_mod
        from clampdown.core.ledger import new_run_id
        from clampdown.core.lint import load_runbook
        from clampdown.core.settings import current_library

        loaded, _ = load_runbook(runbook)
        protected = inputs_mod.protect(loaded.model.inputs, inputs)
        run_id = new_run_id()
        conf = self.conf
        options = {
            "run_id": run_id,
            "trigger": trigger,
            "library": str(current_library()),
            "drill": conf.drill,
        }
        future = self.executor.submit(self._run, run_id, str(runbook), protected, options)
        future.add_done_callback(lambda f: _log_outcome(run_id, f))
        self.futures[run_id] = future
        return run_id

    def _run(
        self, run_id: str, runbook: str, inputs: dict[str, Any], options: dict[str, Any]
    ) -> Any:
        from prefect.settings import PREFECT_API_URL, temporary_settings

        from clampdown_flows.prefect_api import shared_clients
        from clampdown_flows.respond import respond

        async def execute() -> Any:
            task = asyncio.current_task()
            assert task is not None
            self._running[run_id] = (asyncio.get_running_loop(), task)
            try:
                async with shared_clients():
                    return await respond(runbook, inputs, return_state=True, **options)
            finally:
                self._running.pop(run_id, None)

        settings_ctx = (
            temporary_settings({PREFECT_API_URL: self.api_url})
            if self.api_url
            else contextlib.nullcontext()
        )
        with settings_ctx:
            return asyncio.run(execute())

    def shutdown(self) -> None:
        """Stop taking runs; runs in progress finish before the process exits."""
        self.executor.shutdown(wait=False, cancel_futures=True)

    def interrupt_running(self) -> list[str]:
        """Interrupt the runs still in progress (as Ctrl-C does to ``clampdown run``).

        Their ledgers end without ``run.end``. For test sessions and embedders that must
        not wait for a run paused at an approval; ``clampdown serve`` lets runs finish.
        """
        interrupted = []
        for run_id, (loop, task) in list(self._running.items()):
            loop.call_soon_threadsafe(task.cancel)
            interrupted.append(run_id)
        return interrupted


_STARTERS: weakref.WeakSet[InProcessStarter] = weakref.WeakSet()


def interrupt_all_runs() -> list[str]:
    """:meth:`InProcessStarter.interrupt_running` on every starter of this process."""
    return [run_id for starter in list(_STARTERS) for run_id in starter.interrupt_running()]


def _log_outcome(run_id: str, future: Future[Any]) -> None:
    if future.cancelled():
        logger.warning("run %s was cancelled before it started (server stopping)", run_id)
    elif isinstance(exc := future.exception(), asyncio.CancelledError):
        logger.warning("run %s was interrupted; its ledger has no run.end", run_id)
    elif exc is not None:
        logger.error("run %s could not run: %s", run_id, exc, exc_info=exc)
