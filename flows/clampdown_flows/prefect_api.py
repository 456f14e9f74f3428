"""The Prefect API for local mode: a server of this process's own (:func:`local_api`:
``serve``, drills, the tests) or the Prefect home's resident one (:func:`resident_api`:
``run``, ``resume``, ``rollback``; :mod:`clampdown_flows.resident_api`), shared by the
process's runs. Either way, before the block ends every task run the process reported is
in Prefect's record (:mod:`clampdown_flows.prefect_record`).

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
   of each kind — what those contexts exist for. The clients clampdown creates
   (those two, and the one that reads Prefect's record back) share one TLS context
   per process (:mod:`clampdown_flows.client_tls`).

Two more change what the server does per run, keeping its record (docs/operations.md):
its task-run recorder writes in group commit (:mod:`clampdown_flows.task_run_batches`,
installed by :func:`create_app`), and Prefect's triggers service (automations, which
clampdown does not use) is off unless the environment turns it on
(:data:`clampdown_flows.resident_api.SERVICES_OFF`, set where the server is spawned).

The local API is not open to whoever can reach the loopback port: the server requires
Prefect's own HTTP basic auth (``PREFECT_SERVER_API_AUTH_STRING``) with a secret made
once per Prefect home (:func:`local_auth_string`, a 0600 file beside the Prefect
database, which whoever can read could open directly anyway), and clampdown's clients
send it (``PREFECT_API_AUTH_STRING``). An unauthenticated request gets 401.

The third well-known cost, the ~1 s that every *sync* flow run waits at exit
for the heartbeat thread to finish a ``time.sleep(1)`` slice, does not apply:
``respond`` is an async flow, and the async engine does not join that thread.
Heartbeats are still sent. docs/benchmarks.md has the measurements.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clampdown_flows.frozen_imports import imports_frozen
from clampdown_flows.loopback import free_port
from clampdown_flows.prefect_record import TaskRunWatch, wait_for_record, watching

if TYPE_CHECKING:
    from clampdown_flows.resident_api import EarlyServer

logger = logging.getLogger("clampdown.prefect")
APP_FACTORY = "clampdown_flows.prefect_api:create_app"
AUTH_FILE = "clampdown-api-auth"  # in the Prefect home, beside the local server's database
AUTH_USER = "clampdown"


def auth_file() -> Path:
    """Where the local API's secret is: beside the Prefect home's database (``PREFECT_HOME``)."""
    from prefect.settings import PREFECT_HOME

    return Path(PREFECT_HOME.value()).expanduser() / AUTH_FILE


def local_auth_string(*, create: bool = False) -> str | None:
    """``clampdown:<secret>``: what the local API requires and clampdown's clients send.

    Made once (0600, ``O_EXCL``: two processes starting at once agree on one secret); None
    when there is none and ``create`` is false (no local API was ever started here).
    """
    path = auth_file()
    if create and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write(f"{AUTH_USER}:{secrets.token_urlsafe(32)}\n")
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return text or None


def create_app() -> Any:
    """Prefect's API application, with SQLite writes serialised and its task-run recorder
    in group commit (see the module docstring).

    Wrapped to answer the resident API's proof of identity, and to stop after a quiet
    spell when started as a resident (:mod:`clampdown_flows.resident_api`); a new home's
    database starts as a copy of the user's migrated template (then this process skips
    Alembic's no-op check), and the first migrated database becomes that template
    (:mod:`clampdown_flows.prefect_template`). The copy is made before Prefect's app is
    built, which reads the settings it changes.
    """
    with imports_frozen():
        from prefect.server.api.server import create_app as prefect_create_app

        from clampdown_flows import task_run_batches
        from clampdown_flows.prefect_template import StartupHooks, for_this_server, prepare
        from clampdown_flows.resident_api import IDLE_ENV, ProofAndIdle

        serialize_sqlite_writes()
        task_run_batches.install()
        follow_parent(os.environ.get(PARENT_ENV))
        idle = float(os.environ.get(IDLE_ENV) or 0)
        template = for_this_server()
        prepare(template)
        settings_follow_environment()
        app = StartupHooks(prefect_create_app(), template.after_startup)
        return ProofAndIdle(app, resident_identity(server=True), idle)


AUTH_ENV = "PREFECT_SERVER_API_AUTH_STRING"


def settings_follow_environment() -> bool:
    """Prefect's settings re-read from this server process's environment, once, when it
    set there a value they do not have yet: the home's secret
    (:mod:`clampdown_flows.resident_server` sets it after Prefect was imported) or the
    skipped migration check (:func:`clampdown_flows.prefect_template.skip_migration_check`).

    Re-read with ``prefect.context.refresh_global_settings_context``, what Prefect itself
    does after its plug-ins set variables (a new settings object costs ~0.1 s, so only
    when needed). True when re-read.
    """
    from prefect.context import refresh_global_settings_context
    from prefect.settings import get_current_settings

    from clampdown_flows.prefect_template import MIGRATE_ON_START

    current = get_current_settings()
    secret = current.server.api.auth_string
    auth = os.environ.get(AUTH_ENV)
    stale_auth = auth is not None and auth != (secret.get_secret_value() if secret else None)
    migrate = current.server.database.migrate_on_start
    stale_migrate = os.environ.get(MIGRATE_ON_START) == "false" and migrate
    if stale_auth or stale_migrate:
        refresh_global_settings_context()
        return True
    return False


PARENT_ENV = "CLAMPDOWN_PREFECT_PARENT"
"""Set for a local API that belongs to one process (``serve``, ``clampdown run`` without a
resident API, the tests): the pid it must not outlive."""


def follow_parent(parent: str | None, every: float = 2.0) -> None:
    """Stop this server when the process that started it is gone.

    A ``kill -9`` of ``serve`` gives its local API no chance to be stopped, and each
    restart would leave one more server on the same database. The kernel re-parents an
    orphan, so a changed parent pid is the sign: the server then stops itself (SIGTERM to
    itself: uvicorn shuts down cleanly). A resident API has no such parent.
    """
    if not parent or not parent.isdigit():
        return
    import signal
    import threading
    import time

    def watch() -> None:
        while os.getppid() == int(parent):
            time.sleep(every)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="clampdown-parent-watch", daemon=True).start()


def resident_identity(*, server: bool = False) -> Any:
    """What a resident API proves: this Prefect home, its secret and database, the versions."""
    from importlib.metadata import version

    from prefect.settings import get_current_settings

    from clampdown_flows.resident_api import Identity

    current = get_current_settings()
    if server:
        auth = os.environ.get("PREFECT_SERVER_API_AUTH_STRING", "")
    else:
        auth = local_auth_string(create=True) or ""
    database = current.server.database.connection_url
    return Identity(
        home=Path(current.home).expanduser(),
        auth=auth,
        database=database.get_secret_value() if database else "",
        version=f"prefect {version('prefect')}, clampdown {version('clampdown')}",
    )


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


@functools.cache
def local_server_class() -> Any:
    """Prefect's own subprocess server, serving :func:`create_app` instead of the stock app.

    Built on first use: ``prefect.server.api.server`` is the server side of Prefect (its
    database models, services and API routes) and takes ~2 s to import. A process that
    only runs flows against an API (a worker, ``clampdown approve``, a run reusing a
    local API that is already up) never needs it.
    """
    from prefect.server.api.server import SubprocessASGIServer

    class LocalPrefectServer(SubprocessASGIServer):
        def _run_uvicorn_command(self) -> Any:
            return _start_server_process(self.port)

        def start(self, timeout: int | None = None) -> None:
            if not self.running:
                _start_watched(self, float(timeout or 60))

    return LocalPrefectServer


SERVER_EXIT_STARTUP_FAILURE = 3  # uvicorn's, for a port taken and any other failed start


def _port_in_use(port: int) -> bool:
    """Whether something listens on the loopback ``port`` the server was given now: binding
    it as uvicorn does (``SO_REUSEADDR``: a closed connection's TIME_WAIT does not count)
    fails."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _start_watched(
    server: Any,
    timeout: float,
    process: Any = None,
    while_starting: Callable[[], object] | None = None,
) -> None:
    """Prefect's ``SubprocessASGIServer.start``, except that a server process that exits
    before it answers is an error at once, with its exit code. ``process``: the server's,
    already started; ``while_starting``: run once it is started, before the wait.

    Why: Prefect's loop notices only exit code 3 (it tries another port) and otherwise
    asks ``/health`` until ``timeout`` while the process is long gone: a caller that gave
    900 s waited 15 minutes for a dead server (seen in the test suite under load). And
    uvicorn exits with 3 for every failed start, not only a port taken: an app whose
    start-up raises (a Prefect database its migrations cannot upgrade) would be started
    again on port after port until ``timeout``. So 3 means "try another port" here only
    while the port is in use. The server's own output goes where this process's goes
    (above the error).
    """
    import atexit

    import httpx

    from clampdown.core.diagnostics import ClampdownError

    if server.port is None:
        server.port = server.find_available_port()
    server.running = True
    try:
        server.server_process = process or server._run_uvicorn_command()
        atexit.register(server.stop)
        deadline = time.monotonic() + timeout
        if while_starting is not None:
            while_starting()
        with httpx.Client(timeout=5) as client:
            while True:
                code = server.server_process.poll()
                if code == SERVER_EXIT_STARTUP_FAILURE and _port_in_use(server.port):
                    server.port = server.find_available_port()
                    server.server_process = server._run_uvicorn_command()
                    continue
                if code is not None:
                    raise ClampdownError(
                        f"the local Prefect API (port {server.port}) exited with code {code} "
                        "before it answered",
                        "its own messages are above; set PREFECT_API_URL to use a Prefect "
                        "server you run, or try again",
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{server.api_url}/health").status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise ClampdownError(
                        f"the local Prefect API (port {server.port}) did not answer within "
                        f"{timeout:.0f} s",
                        "the machine may be overloaded; set PREFECT_API_URL to use a Prefect "
                        "server you run, or try again",
                    )
                time.sleep(0.1)
    except BaseException:
        server.running = False
        raise


def _start_server_process(
    port: int, extra_env: dict[str, str] | None = None, log: Any = None
) -> Any:
    """``uvicorn`` serving :func:`create_app` on 127.0.0.1:``port``, with the auth string.

    With ``log`` (a file), detached for a resident API: its own session (a Ctrl-C in the
    terminal that started it does not stop it), output to ``log``, and without
    clampdown's, AWS's and Slack's variables, which a Prefect server never needs.
    """
    import subprocess
    import sys

    from prefect.settings import get_current_settings

    from clampdown_flows.resident_api import SERVER_ENV, SERVICES_OFF

    env = {
        **SERVICES_OFF,  # unless the environment says otherwise
        **os.environ,
        **SERVER_ENV,
        **get_current_settings().to_environment_variables(exclude_unset=True),
        "PREFECT_SERVER_API_AUTH_STRING": local_auth_string(create=True) or "",
        PARENT_ENV: str(os.getpid()),  # a local API stops when its process is gone
        **(extra_env or {}),
    }
    detached: dict[str, Any] = {}
    if log is not None:
        env = {k: v for k, v in env.items() if not k.startswith(("CLAMPDOWN_", "AWS_", "SLACK_"))}
        env.update(extra_env or {})
        detached = {
            "start_new_session": True,
            "stdin": subprocess.DEVNULL,
            "stdout": log,
            "stderr": log,
        }
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
            str(port),
            "--log-level",
            "error",
            "--lifespan",
            "on",
        ],
        env=env,
        **detached,
    )


@contextmanager
def local_api(
    timeout: int = 60, while_starting: Callable[[], object] | None = None
) -> Iterator[str]:
    """The API URL to use: ``PREFECT_API_URL`` if set, else a local server started here.

    The server is registered as Prefect's default ephemeral server, so any
    Prefect code in this process that would start one uses it instead. It requires the
    auth string of :func:`local_auth_string`; this process's clients send it, in every
    thread (see :func:`_process_settings`). Its process is started first: this process
    imports Prefect's server classes, then runs ``while_starting`` (the caller's own
    imports: serve's), while it comes up on the other core.
    """
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL

    configured = PREFECT_API_URL.value()
    if configured:
        if while_starting is not None:
            while_starting()
        yield configured
        return
    auth = local_auth_string(create=True)
    port = free_port()
    process = _start_server_process(port)
    try:
        server_class = local_server_class()
    except BaseException:
        process.kill()
        process.wait()
        raise
    instances = server_class._instances  # Prefect's registry, shared with its base class
    previous = instances.get(None)
    server = server_class(port=port)
    instances[None] = server
    try:
        _start_watched(server, float(timeout), process, while_starting)
        with (
            _process_settings({PREFECT_API_URL: server.api_url, PREFECT_API_AUTH_STRING: auth}),
            watching(server.api_url) as watch,
        ):
            try:
                yield server.api_url
            finally:  # while the clients still send the auth string
                settle(watch)
    finally:
        server.stop()
        instances.pop(server.port, None)
        if previous is None:
            instances.pop(None, None)
        else:
            instances[None] = previous


@contextmanager
def resident_api(
    timeout: int = 120,
    while_starting: Callable[[], object] | None = None,
    early: EarlyServer | None = None,
) -> Iterator[Any]:
    """The API to use, left running for the next command: ``PREFECT_API_URL`` if set, else
    this Prefect home's resident local API (:mod:`clampdown_flows.resident_api`), started
    when none answers.

    Yields a :class:`~clampdown_flows.resident_api.Resident` (``.url``; ``.started`` when
    this call started it), or None when ``PREFECT_API_URL`` is set. ``while_starting`` runs
    while a new server comes up (the caller's own imports). ``early`` is a server process
    the caller started before it imported Prefect (:class:`EarlyServer`): used when it
    became this home's resident. At the end of the block, as :func:`local_api` does, every
    task run this process reported is recorded before the block returns; the server keeps
    running.
    """
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL

    from clampdown_flows.resident_api import ensure

    if PREFECT_API_URL.value():  # an early server reads it too: it exits, home untouched
        if while_starting is not None:
            while_starting()
        yield None
        return
    identity = resident_identity()
    resident = ensure(
        identity,
        _start_server_process,
        timeout=timeout,
        while_starting=while_starting,
        early=early,
    )
    with (
        _process_settings({PREFECT_API_URL: resident.url, PREFECT_API_AUTH_STRING: identity.auth}),
        watching(resident.url) as watch,
    ):
        try:
            yield resident
        finally:
            settle(watch)


def stop_resident_api() -> Any:
    """Stop this Prefect home's resident local API; the one stopped, or None if none ran."""
    from clampdown_flows.resident_api import stop

    return stop(resident_identity())


def find_resident_api() -> Any:
    """This Prefect home's resident local API if one runs and proves itself, else None."""
    from clampdown_flows.resident_api import find

    return find(resident_identity())


@contextmanager
def _process_settings(updates: dict[Any, Any]) -> Iterator[None]:
    """Prefect settings for this block in this context *and* in threads started meanwhile.

    ``temporary_settings`` is a context variable, which threads (a thread pool running
    flows, a test's thread) do not inherit; they read Prefect's process-wide settings
    context instead, so that is replaced too for the duration (what Prefect's own test
    harness does).
    """
    import prefect.context
    from prefect.settings import temporary_settings

    swap = getattr(prefect.context, "_temporary_global_settings_context", None)
    with temporary_settings(updates) as current:
        if swap is None:  # Prefect changed: threads fall back to PREFECT_API_* in the env
            logger.warning("cannot share the local API's settings with threads")
            yield
            return
        context = prefect.context.get_settings_context()
        with swap(prefect.context.SettingsContext(profile=context.profile, settings=current)):
            yield


def client_auth(api_url: str | None) -> str | None:
    """The auth string a client of ``api_url`` sends: ``PREFECT_API_AUTH_STRING`` to the
    API it is configured for (``PREFECT_API_URL``), else the local API's secret for a
    loopback URL (``clampdown approve`` reaching the API that ``clampdown run`` or
    ``serve`` started in another process), else none.

    Why only there: ``api_url`` is read from the run's approval request, a file (or a row
    of the run store) that whoever can write ``CLAMPDOWN_HOME`` or the store can edit;
    pointed at their own server, every approver's ``clampdown approve`` and serve's Slack
    clicks would hand them the Prefect API's auth string."""
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL

    configured = PREFECT_API_AUTH_STRING.value()
    if configured and (api_url is None or _same_api(api_url, PREFECT_API_URL.value())):
        return str(configured)
    if api_url and api_url.startswith(("http://127.0.0.1:", "http://localhost:")):
        return local_auth_string()
    return None


def _same_api(url: str, configured: str | None) -> bool:
    """Whether ``url`` is the configured API URL (scheme, host, port and path; case of the
    scheme and host, and a trailing slash, do not matter)."""
    if not configured:
        return False
    from urllib.parse import urlsplit

    a, b = urlsplit(url.strip()), urlsplit(str(configured).strip())
    return (a.scheme.lower(), a.netloc.lower(), a.path.rstrip("/")) == (
        b.scheme.lower(),
        b.netloc.lower(),
        b.path.rstrip("/"),
    )


def settle(watch: TaskRunWatch | None) -> None:
    """Before the local API stops: queues drained, every reported task run recorded.

    See :mod:`clampdown_flows.prefect_record`: without this, Prefect keeps only the task
    runs its recorder reached before the server stopped.
    """
    flush_to_api()
    wait_for_record(watch)


def flush_to_api(timeout: float = 10) -> None:
    """Ship the logs and events still queued in this process before the server goes away."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=timeout)
    EventsWorker.drain_all(timeout=timeout)


@asynccontextmanager
async def shared_clients() -> AsyncIterator[None]:
    """Reuse one sync and one async Prefect client for every flow run inside this block.

    The async one is a :class:`~clampdown_flows.run_client.RunClient` (unless a client
    context of this loop is already open): it asks the flow's id once and names each flow
    run at creation, two requests less per run (:mod:`clampdown_flows.run_client`). Both
    use the process's one TLS context (:mod:`clampdown_flows.client_tls`).
    """
    from prefect.context import AsyncClientContext, SyncClientContext

    from clampdown_flows.run_client import client_context, sync_client_context

    open_sync = SyncClientContext.get()  # Prefect's get_or_create would reuse it too
    with nullcontext() if open_sync is not None else sync_client_context():
        current = AsyncClientContext.get()
        if current is not None and current.client.loop is asyncio.get_running_loop():
            yield  # Prefect's get_or_create would reuse it too
            return
        async with client_context():
            yield
