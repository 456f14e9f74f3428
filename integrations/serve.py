"""``clampdown serve``: one ASGI app for everything that reaches clampdown over HTTP.

* ``GET /healthz`` — ``{"ok": true, "runbooks": N}`` (503 when the library is unreadable).
* ``POST /slack/events`` — the Bolt app (:mod:`integrations.slack.app`): slash command
  ``/clampdown``; Slack's signature is verified on every request.
* Alert endpoints (``POST /alerts/<source>``, another issue) mount on the same app.

Runs start in-process: a thread pool owned by the app runs each ``respond`` flow with
``asyncio.run`` against the process's Prefect API (:func:`serve` starts one local API
for the whole server). Scale-out (``run_deployment``) replaces :func:`in_process_starter`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from clampdown.diagnostics import ClampdownError
from integrations.slack.app import SlackAppSettings, StartRun, build_slack_app, library_runbooks

logger = logging.getLogger("clampdown.serve")
MAX_CONCURRENT_RUNS = 8


class InProcessStarter:
    """``start_run`` for local mode: each run is a ``respond`` flow in a worker thread.

    The Prefect API URL in force when the starter is made (``serve`` makes it inside
    ``local_api()``) is used by every run: worker threads do not inherit the context
    variables that hold Prefect's settings.
    """

    def __init__(self, max_workers: int = MAX_CONCURRENT_RUNS) -> None:
        from prefect.settings import PREFECT_API_URL

        self.api_url: str | None = PREFECT_API_URL.value()
        self.executor = ThreadPoolExecutor(max_workers, thread_name_prefix="clampdown-run")
        self.futures: dict[str, Future[Any]] = {}

    def __call__(self, runbook: Path, inputs: dict[str, Any], trigger: dict[str, Any]) -> str:
        from clampdown import inputs as inputs_mod
        from clampdown.ledger import new_run_id
        from clampdown.lint import load_runbook
        from clampdown.settings import settings

        loaded, _ = load_runbook(runbook)
        protected = inputs_mod.protect(loaded.model.inputs, inputs)
        run_id = new_run_id()
        options = {"run_id": run_id, "trigger": trigger, "library": str(settings().library)}
        future = self.executor.submit(self._run, str(runbook), protected, options)
        future.add_done_callback(lambda f: _log_outcome(run_id, f))
        self.futures[run_id] = future
        return run_id

    def _run(self, runbook: str, inputs: dict[str, Any], options: dict[str, Any]) -> Any:
        from prefect.settings import PREFECT_API_URL, temporary_settings

        from flows.prefect_api import shared_clients
        from flows.respond import respond

        async def execute() -> Any:
            async with shared_clients():
                return await respond(runbook, inputs, return_state=True, **options)

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


def _log_outcome(run_id: str, future: Future[Any]) -> None:
    if future.cancelled():
        logger.warning("run %s was cancelled before it started (server stopping)", run_id)
    elif (exc := future.exception()) is not None:
        logger.error("run %s could not run: %s", run_id, exc, exc_info=exc)


def create_app(
    settings: SlackAppSettings | None = None, start_run: StartRun | None = None
) -> FastAPI:
    """The server's ASGI app; ``start_run`` defaults to an :class:`InProcessStarter`."""
    from slack_bolt.adapter.starlette.handler import to_bolt_request, to_starlette_response
    from starlette.concurrency import run_in_threadpool

    settings = settings if settings is not None else SlackAppSettings()
    starter = InProcessStarter() if start_run is None else None
    slack = build_slack_app(settings, start_run or starter)  # type: ignore[arg-type]

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        if starter is not None:
            starter.shutdown()

    app = FastAPI(title="clampdown", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.slack = slack
    app.state.starter = starter

    @app.get("/healthz")
    def healthz() -> Response:
        try:
            count = len(library_runbooks())
        except ClampdownError as exc:
            return JSONResponse({"ok": False, "runbooks": 0, "error": exc.message}, 503)
        return JSONResponse({"ok": True, "runbooks": count})

    @app.post("/slack/events")
    async def slack_events(request: Request) -> Response:
        body = await request.body()
        # Bolt's App is synchronous: dispatch in a worker thread (it returns once acked).
        bolt_response = await run_in_threadpool(slack.dispatch, to_bolt_request(request, body))
        return to_starlette_response(bolt_response)

    return app


def serve(host: str = "127.0.0.1", port: int = 8080) -> None:
    """Run the server; the whole process shares one local Prefect API (or PREFECT_API_URL)."""
    import uvicorn

    from flows.prefect_api import local_api

    with local_api():
        uvicorn.run(create_app(), host=host, port=port)
