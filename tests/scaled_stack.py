"""The part every scaled-mode end-to-end stack shares: real processes, and a Prefect
server on PostgreSQL with the ``respond`` deployment.

tests/e2e/test_scaled_mode.py, test_scaled_separate_homes.py and test_scaled_failures.py
share one ``prefect server start`` per session (:func:`scaled_prefect`), on a database of
the session's throwaway PostgreSQL cluster (tests/pg.py): its start, Prefect's migration
of a new database and the deployment are paid once, not once per file. The three files
are one pytest-xdist scope (tests/conftest.py, ``pytest_xdist_make_scheduler``), so they
run one after the other on one worker, and the server is stopped when the last file that
needs it ends (:meth:`SharedPrefect.serving`).

Isolation: the server holds the repository's prefect.yaml deployment as ``clampdown
deploy`` makes it (``respond/clampdown`` on the ``clampdown`` work pool) and a copy of
it for each other work pool of :data:`POOLS` (``respond/<pool>``). Each file,
or test, starts its runs on a deployment of its own and its workers poll only that pool,
so a run one of them leaves behind (scheduled, paused, crashed) is never picked up by
another's worker. Each file keeps its own clampdown databases, homes, workers and serve,
and checks only its own runs. A file that stops the server (the outage test) starts it
again; if it fails with the server down, the next file's :meth:`SharedPrefect.serving`
starts it again before anything else.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.paths import REPO

PREFECT_SERVER = ["server", "start", "--host", "127.0.0.1"]
"""``prefect server start``'s arguments (without the port)."""
STANDBY = (
    "import runpy, sys; "
    "import prefect.cli, prefect.server.api.server, uvicorn; "
    "sys.stdin.readline() or sys.exit(0); "
    "sys.argv = ['prefect', *sys.argv[1:]]; "
    "runpy.run_module('prefect', run_name='__main__', alter_sys=True)"
)
"""``python -m prefect <args>`` once a line comes on stdin (it exits at EOF without one),
with the modules ``prefect server start`` imports (~5 CPU-s, seconds of wall) imported
before: :meth:`PrefectServer.standby`."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrubbed_env() -> dict[str, str]:
    """This environment without clampdown's, Prefect's API/home/server settings or an AWS
    profile: what a process of a separate machine starts from (the stack adds its own)."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("CLAMPDOWN_", "PREFECT_API", "PREFECT_HOME", "PREFECT_SERVER"))
        and name not in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")
    }
    return env | {"PREFECT_SERVER_ANALYTICS_ENABLED": "false"}


@contextlib.contextmanager
def process(argv: list[str], log: Path, **kwargs: Any) -> Iterator[subprocess.Popen[bytes]]:
    """A subprocess in its own process group, stopped (TERM, then KILL) on exit, whatever happens."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **kwargs
        )
        try:
            yield proc
        finally:
            if proc.stdin is not None:  # started on standby (:func:`go`)
                with contextlib.suppress(OSError):
                    proc.stdin.close()
            stop_group(proc, signal.SIGTERM, 15)


def stop_group(proc: subprocess.Popen[Any], sig: int, grace: float) -> None:
    """Send ``sig`` to ``proc``'s process group and wait ``grace`` seconds for it to end;
    then SIGKILL the group (SIGKILL alone when ``sig`` is SIGKILL) and wait a little more."""
    for each, wait in ((sig, grace), (signal.SIGKILL, 10)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, each)
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def wait_until(
    check: Callable[[], Any],
    timeout: float,
    what: str,
    proc: Any = None,
    log: Path | None = None,
) -> Any:
    """``check()``'s first truthy value (exceptions count as not yet); an AssertionError
    with the log's tail when ``proc`` exits first or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log else ""
            raise AssertionError(f"{what}: process exited with {proc.returncode}\n{tail}")
        with contextlib.suppress(Exception):
            value = check()
            if value:
                return value
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-3000:] if log else ""
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{tail}")


def answers(api_url: str) -> bool:
    """Whether the Prefect API at ``api_url`` answers its health check now."""
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


class PrefectServer:
    """``prefect server start`` on PostgreSQL, stopped and started again on the same port.

    Each start is a new process: :meth:`standby` starts it ahead, importing what the
    command imports, and :meth:`start` tells it to go on as ``prefect server start`` (the
    same command, in that process; without a standby it makes one and tells it at once).
    A test that stops the server and starts it again (an outage) makes the standby while
    the server still runs or is down: its imports are then not part of the outage, whose
    length the test sets by when it calls :meth:`start`."""

    def __init__(self, port: int, env: dict[str, str], logs: Path, timeout: float = 90) -> None:
        self.port, self.env, self.logs, self.timeout = port, env, logs, timeout
        self.api_url = f"http://127.0.0.1:{port}/api"
        self.starts = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._standby: tuple[subprocess.Popen[bytes], Path] | None = None

    def standby(self) -> None:
        """The next start's process, importing and then waiting to be told to start (on
        stdin); nothing when there is one already."""
        if self._standby is not None:
            return
        log = self.logs / f"prefect-server-{self.starts + 1}.log"
        argv = [sys.executable, "-c", STANDBY, *PREFECT_SERVER, "--port", str(self.port)]
        with log.open("wb") as out:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=self.env,
            )
        self._standby = (proc, log)

    def start(self) -> None:
        """``prefect server start`` (the standby's process, told to go on), answering."""
        self.standby()
        assert self._standby is not None
        (proc, log), self._standby = self._standby, None
        self.starts += 1
        self._proc = proc
        go(proc)
        wait_until(
            lambda: urllib.request.urlopen(f"{self.api_url}/health", timeout=2).status == 200,
            self.timeout,
            "prefect server on PostgreSQL",
            proc,
            log,
        )

    @property
    def running(self) -> bool:
        """Whether this object's server process is alive (started and not stopped)."""
        return self._proc is not None and self._proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the server (and its uvicorn) by ``sig``; once stopped, the port refuses."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        stop_group(proc, sig, 30)
        wait_until(lambda: not answers(self.api_url), 30, "the Prefect port to close")

    def close(self) -> None:
        """Stop the server and a standby that was never started (it exits at EOF)."""
        self.stop()
        standby, self._standby = self._standby, None
        if standby is not None:
            proc = standby[0]
            if proc.stdin is not None:
                proc.stdin.close()
            stop_group(proc, signal.SIGTERM, 15)


SHIPPED_POOL = "clampdown"  # prefect.yaml's deployment name and work pool
POOLS = (
    SHIPPED_POOL,  # test_scaled_mode: `clampdown worker`s
    "scaled-stock",  # test_scaled_mode: the stock `prefect worker`
    "scaled-gated",  # test_scaled_mode: the worker killed while its run waits, and the next
    "scaled-idle",  # polled by no worker: runs made only to read Prefect's record
    "scaled-failures",  # test_scaled_failures
    "separate-homes",  # test_scaled_separate_homes
)
"""The work pools of the shared server, each with the deployment ``respond/<pool>``."""
FIXTURE = "scaled_prefect"


def deployment(pool: str) -> str:
    """The deployment (``<flow>/<name>``) whose runs go to ``pool``."""
    assert pool in POOLS, pool
    return f"respond/{pool}"


POLL = 2.0
"""Seconds between a test worker's polls of its pool (``clampdown worker --poll``; the
command's default is 0.5). Each poll costs the Prefect server ~20 ms of CPU: at 0.5 s an
idle worker kept ~0.04 of a core busy on the server, ~20 CPU-s over the scaled files'
~500 worker-seconds; at 2 s a quarter of that, for at most 1.5 s more before a run is
picked up (the tests wait for the run, not for the clock)."""


WORKER_IMPORTS = "clampdown.app.deployment, clampdown_flows.respond, prefect.workers.process"
"""What ``clampdown worker`` imports before it polls (its run_worker imports the flow
module up front), imported by a standby worker before it waits (:func:`clampdown_worker`)."""


def clampdown_worker(
    pool: str, resume_every: float | None = None, standby: bool = False
) -> list[str]:
    """``clampdown worker --pool <pool>`` (the command as clampdown/app/cli.py registers it).

    ``resume_every``: how often the worker looks for stopped runs of its run store to
    continue (``clampdown.app.deployment.run_worker``'s argument; the command leaves it at
    its default, 30 s). A test whose worker must find a run another worker left sets it
    short and waits for the run, not for the clock.

    ``standby``: the process imports what the command imports, then waits for a line on
    its stdin (:func:`go`) before it runs the command (it exits at EOF without one). A
    test that needs a worker later (the next worker, once one was killed) starts it on
    standby early: the seconds of imports pass while the test waits for something else,
    and what the worker does (its first look for stopped runs, its first poll) begins
    when the test says go, as a worker started then would."""
    setup = ""
    if resume_every is not None:
        setup = (
            "import functools, clampdown.app.deployment as d; "
            f"d.run_worker = functools.partial(d.run_worker, resume_every={resume_every!r}); "
        )
    if standby:
        setup = f"import sys, {WORKER_IMPORTS}; {setup}sys.stdin.readline() or sys.exit(0); "
    code = (
        f"import typer; {setup}from clampdown.app.cli_ops import register; "
        "app = typer.Typer(); register(app); app()"
    )
    return [sys.executable, "-c", code, "worker", "--pool", pool, "--poll", str(POLL)]


def go(proc: subprocess.Popen[bytes]) -> None:
    """Tell a process started on standby (``stdin=subprocess.PIPE``) to go on."""
    assert proc.stdin is not None, "not started on standby (stdin=subprocess.PIPE)"
    proc.stdin.write(b"go\n")
    proc.stdin.close()


def cli_here(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``clampdown <args>`` in this process with ``env`` as its whole environment, against
    ``env``'s Prefect API (the shared server): the commands a responder types (approve,
    rollback, runs, verify), whose process is not what these tests are about. As processes
    of their own each imported Prefect and boto3 again (~2-3 CPU-s); what they do, against
    which home, run store and API, is the same (``cli_in_process`` in
    tests/e2e/test_serve_restart.py: the environment exactly while the command runs)."""
    from prefect.logging.handlers import APILogWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tests.e2e.test_serve_restart import cli_in_process

    with temporary_settings({PREFECT_API_URL: env["PREFECT_API_URL"]}):
        try:
            return cli_in_process(env, *args)
        finally:  # its flow's logs sent now, while their server answers (not at exit)
            APILogWorker.drain_all(timeout=5)


def create_databases(postgres_url: str, names: tuple[str, ...]) -> dict[str, str]:
    """Create ``names`` on the cluster of ``postgres_url``; their URLs (for psycopg)."""
    import psycopg

    with psycopg.connect(postgres_url, autocommit=True) as admin:
        for name in names:
            admin.execute(f"CREATE DATABASE {name}")
    cluster = postgres_url.rsplit("/", 1)[0]
    return {name: f"{cluster}/{name}" for name in names}


def _deployment_file(folder: Path) -> Path:
    """The repository's prefect.yaml, copied into ``folder`` (``prefect deploy`` runs there)."""
    project = (REPO / "prefect.yaml").read_text()
    path = folder / "prefect.yaml"
    path.write_text(project)
    return path


def _copy_deployment(pools: tuple[str, ...]) -> None:
    """The shipped deployment (as ``prefect deploy`` made it from prefect.yaml) copied once
    for each of ``pools``: named after the pool, on that pool, every other field the same.
    (Before, prefect.yaml's entry was copied for each pool and all deployed by ``prefect
    deploy``: ~1.5 CPU-s more of its process and ~1.3 of the server's, for the same
    records.)"""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        shipped = client.read_deployment_by_name(deployment(SHIPPED_POOL))
        assert shipped.work_pool_name == SHIPPED_POOL, shipped.work_pool_name
        assert shipped.global_concurrency_limit is None  # prefect.yaml: none to copy
        for pool in pools:
            client.create_deployment(
                flow_id=shipped.flow_id,
                name=pool,
                work_pool_name=pool,
                work_queue_name=shipped.work_queue_name,
                version=shipped.version,
                description=shipped.description,
                tags=shipped.tags,
                parameters=shipped.parameters,
                entrypoint=shipped.entrypoint,
                path=shipped.path,
                pull_steps=shipped.pull_steps,
                parameter_openapi_schema=shipped.parameter_openapi_schema,
                enforce_parameter_schema=shipped.enforce_parameter_schema,
                job_variables=shipped.job_variables,
                paused=shipped.paused,
            )


class SharedPrefect:
    """The session's ``prefect server start`` on PostgreSQL with the deployments of
    :data:`POOLS`; started on first use, stopped when no later test needs it."""

    def __init__(self, postgres_url: str, root: Path, timeout: float = 90) -> None:
        self.postgres_url, self.root, self.timeout = postgres_url, root, timeout
        self.database_url = ""  # Prefect's database, for psycopg (set at the first start)
        self.server: PrefectServer | None = None
        self._env: dict[str, str] = {}
        self._deploying: threading.Thread | None = None
        self._deploy_error: BaseException | None = None

    def _first_start(self) -> PrefectServer:
        """Create Prefect's database, start the server on it (it migrates the new
        database), make the work pools of :data:`POOLS` and start deploying as ``clampdown
        deploy`` does (:meth:`deployed` waits for it)."""
        from prefect.settings import PREFECT_API_URL, temporary_settings

        from clampdown.app.cli_ops import ensure_work_pool

        self.database_url = create_databases(self.postgres_url, ("prefect_scaled",))[
            "prefect_scaled"
        ]
        self._env = scrubbed_env() | {
            "PREFECT_API_DATABASE_CONNECTION_URL": self.database_url.replace(
                "postgresql://", "postgresql+asyncpg://", 1
            ),
            "PREFECT_UI_ENABLED": "false",
            "PREFECT_HOME": str(self.root / "prefect-server"),
        }
        logs = self.root / "logs"
        logs.mkdir(exist_ok=True)
        server = PrefectServer(free_port(), self._env, logs, self.timeout)
        server.start()
        try:
            with temporary_settings({PREFECT_API_URL: server.api_url}):
                for pool in POOLS:
                    ensure_work_pool(pool)
        except BaseException:
            server.close()
            raise
        self._deploying = threading.Thread(
            target=self._deploy, args=(server.api_url,), name="scaled-deploy", daemon=True
        )
        self._deploying.start()
        return server

    def _deploy(self, api_url: str) -> None:
        """``clampdown deploy``'s ``prefect deploy`` of prefect.yaml, then its deployment
        copied for the other pools; in a thread: the first file starts its workers and
        serve meanwhile (they need the pools, not the deployments, until a run starts)."""
        from prefect.settings import PREFECT_API_URL, temporary_settings

        from clampdown.app.cli_ops import deploy_from_file

        try:
            with temporary_settings({PREFECT_API_URL: api_url}):
                deploy_from_file(_deployment_file(self.root), SHIPPED_POOL)
                _copy_deployment(POOLS[1:])
        except BaseException as exc:  # raised by deployed(), in the test that waits
            self._deploy_error = exc

    def deployed(self) -> None:
        """Wait until the deployments of :data:`POOLS` exist (before a file starts a run)."""
        if self._deploying is not None:
            self._deploying.join(self.timeout)
            assert not self._deploying.is_alive(), f"deploying took over {self.timeout} s"
        if self._deploy_error is not None:
            raise AssertionError("deploying to the scaled Prefect server failed") from (
                self._deploy_error
            )

    def running(self) -> PrefectServer:
        """The server, answering: started (the first time: database, migration, deploy),
        or started again on the same database when a test or an earlier file left it
        stopped."""
        if self.server is None:
            self.server = self._first_start()
        elif not self.server.running:
            self.server.start()
        return self.server

    def close(self) -> None:
        """Stop the server (the database stays: a later start needs no migration)."""
        if self.server is not None:
            self.server.close()

    @contextlib.contextmanager
    def serving(self, module: pytest.Module) -> Iterator[PrefectServer]:
        """The running server for the tests of ``module``; when they are done, stopped
        unless a test after them in the session needs it (the next scaled file): an idle
        server polls its services, on the cores the rest of the suite needs."""
        server = self.running()
        try:
            yield server
        finally:
            if not _needed_after(module):
                self.close()


def _needed_after(module: pytest.Module) -> bool:
    """Whether a test after ``module``'s in the session's order uses :data:`FIXTURE`.
    (On an xdist worker the session's items are the whole collection: tests of another
    scope may run on another worker; the server then waits for the session's end.)"""
    items = module.session.items
    mine = [i for i, item in enumerate(items) if item.getparent(pytest.Module) is module]
    later = items[max(mine) + 1 :] if mine else []
    return any(FIXTURE in getattr(item, "fixturenames", ()) for item in later)


_SESSION_PREFECT = pytest.StashKey[SharedPrefect]()


@pytest.fixture(scope="session")
def scaled_prefect(
    tmp_path_factory: pytest.TempPathFactory, postgres_url: str, request: pytest.FixtureRequest
) -> Iterator[SharedPrefect]:
    """The session's :class:`SharedPrefect` (import into each scaled file with
    ``postgres_url``). Each importing module gets a session fixture of its own (pytest
    registers an imported fixture per module): the first makes it, the others share it,
    and the first, torn down last, stops its server."""
    shared = request.session.stash.get(_SESSION_PREFECT, None)
    if shared is not None:
        yield shared
        return
    shared = SharedPrefect(postgres_url, tmp_path_factory.mktemp("scaled-prefect"))
    request.session.stash[_SESSION_PREFECT] = shared
    try:
        yield shared
    finally:
        del request.session.stash[_SESSION_PREFECT]
        shared.close()
