"""The part every scaled-mode end-to-end stack shares: real processes, and a Prefect
server on PostgreSQL with the ``respond`` deployment.

tests/e2e/test_scaled_mode.py, test_scaled_separate_homes.py and test_scaled_failures.py
each create a database on the session's throwaway PostgreSQL cluster (tests/pg.py), start
``prefect server start`` on it, wait for it to answer and deploy the repository's
prefect.yaml as ``clampdown deploy`` does: :func:`prefect_on_postgres`. Each file then
adds its own workers, serve and homes.

Each stack's server migrates its own new database at its first start. A template
database migrated once per cluster (``CREATE DATABASE … TEMPLATE``, 0.9 s a copy) was
measured and not built: the migration needs a Python process of its own (importing
Prefect's server side: 11.8 s of the 25.4 s it took at load 7, against 13.6 s of
migration that each later stack would save, 3.6 s of which its server still spends
checking the head), and each xdist worker has a cluster of its own, so a worker rarely
runs two of these files, let alone three.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tests.paths import REPO

PREFECT_SERVER = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1"]


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
    """``prefect server start`` on PostgreSQL, stopped and started again on the same port."""

    def __init__(self, port: int, env: dict[str, str], logs: Path, timeout: float = 90) -> None:
        self.port, self.env, self.logs, self.timeout = port, env, logs, timeout
        self.api_url = f"http://127.0.0.1:{port}/api"
        self.starts = 0
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.starts += 1
        log = self.logs / f"prefect-server-{self.starts}.log"
        with log.open("wb") as out:
            self._proc = subprocess.Popen(
                [*PREFECT_SERVER, "--port", str(self.port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=self.env,
            )
        wait_until(
            lambda: urllib.request.urlopen(f"{self.api_url}/health", timeout=2).status == 200,
            self.timeout,
            "prefect server on PostgreSQL",
            self._proc,
            log,
        )

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the server (and its uvicorn) by ``sig``; once stopped, the port refuses."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        stop_group(proc, sig, 30)
        wait_until(lambda: not answers(self.api_url), 30, "the Prefect port to close")


@contextlib.contextmanager
def prefect_on_postgres(
    postgres_url: str,
    databases: tuple[str, ...],
    root: Path,
    env: dict[str, str],
    timeout: float = 90,
) -> Iterator[PrefectServer]:
    """Create ``databases`` on the cluster of ``postgres_url`` (the first is Prefect's),
    start ``prefect server start`` on the first (its home ``root/prefect-server``, its logs
    in ``root/logs``, started from ``env``), deploy the repository's prefect.yaml on it as
    ``clampdown deploy`` does, and stop the server when the block ends."""
    import psycopg
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from clampdown.app.cli_ops import deploy_from_file

    with psycopg.connect(postgres_url, autocommit=True) as admin:
        for name in databases:
            admin.execute(f"CREATE DATABASE {name}")
    cluster = postgres_url.rsplit("/", 1)[0]
    server_env = env | {
        "PREFECT_API_DATABASE_CONNECTION_URL": f"{cluster}/{databases[0]}".replace(
            "postgresql://", "postgresql+asyncpg://", 1
        ),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_HOME": str(root / "prefect-server"),
    }
    logs = root / "logs"
    logs.mkdir(exist_ok=True)
    server = PrefectServer(free_port(), server_env, logs, timeout)
    try:
        server.start()
        with temporary_settings({PREFECT_API_URL: server.api_url}):
            deploy_from_file(REPO / "prefect.yaml", "clampdown")  # what `clampdown deploy` does
        yield server
    finally:
        server.stop()
