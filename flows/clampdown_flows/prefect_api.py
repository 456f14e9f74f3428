"""The Prefect API for local mode, started once per process and shared by its runs.

Local mode runs flows in this process against Prefect's embedded server
(SQLite). Two of Prefect 3.9's defaults cost far more than the work of a
runbook, and both are fixed here without turning any tracking off:

1. **SQLite write conflicts.** The server opens its transactions in SQLite's
   ``DEFERRED`` mode. A request that reads and then writes (``POST
   /flow_runs/`` does) fails at once with ``SQLITE_BUSY`` when the server's
   background services (task-run recorder, event persister, log writer) are
   writing the previous run's records: a read lock cannot be upgraded while
   another writer holds the database, and SQLite refuses rather than deadlock,
   so ``busy_timeout`` never applies. The server answers 503 and the client
   sleeps 2 s (then 4 s) before retrying. Prefect's own comment in
   ``prefect/server/database/configurations.py`` names the remedy —
   ``BEGIN IMMEDIATE`` — and uses it only for ``SELECT … FOR UPDATE``. Our
   server process (:func:`create_app`) opens every explicit transaction with
   ``IMMEDIATE``: writers queue on ``busy_timeout`` instead of failing. The
   same transactions run, in order; on a single-user local server the lost
   read concurrency costs nothing. PostgreSQL (scaled mode) is untouched.
2. **A new API client, and TLS context, per flow run.** Each run builds a
   ``PrefectClient`` plus two ``SyncPrefectClient`` objects, and each loads the
   certifi CA bundle (~30 ms apiece) even for ``http://127.0.0.1``.
   :func:`shared_clients` enters Prefect's own ``SyncClientContext`` and
   ``AsyncClientContext`` once, so every run of the process reuses one client
   of each kind — what those contexts exist for.

The third well-known cost, the ~1 s that every *sync* flow run waits at exit
for the heartbeat thread to finish a ``time.sleep(1)`` slice, does not apply:
``respond`` is an async flow, and the async engine does not join that thread.
Heartbeats are still sent. docs/benchmarks.md has the measurements.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from prefect.server.api.server import SubprocessASGIServer

logger = logging.getLogger("clampdown.prefect")
APP_FACTORY = "clampdown_flows.prefect_api:create_app"


def create_app() -> Any:
    """Prefect's API application, with SQLite writes serialised (see the module docstring)."""
    from prefect.server.api.server import create_app as prefect_create_app

    serialize_sqlite_writes()
    return prefect_create_app()


def serialize_sqlite_writes() -> bool:
    """Make the server's SQLite transactions ``BEGIN IMMEDIATE``; False if Prefect changed."""
    from prefect.server.database import configurations

    config = getattr(configurations, "AioSqliteConfiguration", None)
    mode = getattr(configurations, "SQLITE_BEGIN_MODE", None)
    if config is None or mode is None or not hasattr(config, "begin_transaction"):
        logger.warning("Prefect's SQLite configuration has changed; transactions stay DEFERRED")
        return False
    if getattr(config, "_clampdown_immediate", False):
        return True

    @asynccontextmanager
    async def begin_transaction(
        self: Any, session: Any, with_for_update: bool = False
    ) -> AsyncIterator[Any]:
        token = mode.set("IMMEDIATE")
        try:
            async with session.begin() as transaction:
                yield transaction
        finally:
            mode.reset(token)

    config.begin_transaction = begin_transaction
    config._clampdown_immediate = True
    return True


class LocalPrefectServer(SubprocessASGIServer):
    """Prefect's own subprocess server, serving :func:`create_app` instead of the stock app."""

    def _run_uvicorn_command(self) -> Any:
        import os
        import subprocess
        import sys

        from prefect.settings import get_current_settings

        return subprocess.Popen(
            args=[
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                APP_FACTORY,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "error",
                "--lifespan",
                "on",
            ],
            env={
                **os.environ,
                "PREFECT_UI_ENABLED": "0",
                "PREFECT__SERVER_EPHEMERAL": "1",
                "PREFECT__SERVER_FINAL": "1",
                **get_current_settings().to_environment_variables(exclude_unset=True),
            },
        )


@contextmanager
def local_api(timeout: int = 60) -> Iterator[str]:
    """The API URL to use: ``PREFECT_API_URL`` if set, else a local server started here.

    The server is registered as Prefect's default ephemeral server, so any
    Prefect code in this process that would start one uses it instead.
    """
    from prefect.settings import PREFECT_API_URL, temporary_settings

    configured = PREFECT_API_URL.value()
    if configured:
        yield configured
        return
    previous = SubprocessASGIServer._instances.get(None)
    server = LocalPrefectServer(port=_free_port())
    SubprocessASGIServer._instances[None] = server
    try:
        server.start(timeout=timeout)
        with temporary_settings({PREFECT_API_URL: server.api_url}):
            yield server.api_url
    finally:
        flush_to_api()
        server.stop()
        SubprocessASGIServer._instances.pop(server.port, None)
        if previous is None:
            SubprocessASGIServer._instances.pop(None, None)
        else:
            SubprocessASGIServer._instances[None] = previous


def flush_to_api(timeout: float = 10) -> None:
    """Ship the logs and events still queued in this process before the server goes away."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=timeout)
    EventsWorker.drain_all(timeout=timeout)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def shared_clients() -> AsyncIterator[None]:
    """Reuse one sync and one async Prefect client for every flow run inside this block."""
    from prefect.context import AsyncClientContext, SyncClientContext

    with SyncClientContext.get_or_create():
        async with AsyncClientContext.get_or_create():
            yield
