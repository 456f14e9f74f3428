"""A Prefect home's resident local API, started before the command that needs it has
imported Prefect (``python -m clampdown_flows.resident_server REPORT_FD``).

The command (:class:`clampdown_flows.resident_api.EarlyServer`) starts this process first
thing; it imports Prefect and Prefect's server side (most of a server's start) while the
command checks its runbook and imports Prefect too. Nothing of the Prefect home is touched
until the command writes ``go`` on this process's standard input (an end of input instead:
the command did not need an API, this process exits). Then :func:`claim` decides with
Prefect's own settings, as the command would: an API URL configured anywhere Prefect reads
one, or a resident of this home that proves itself, and this process reports so and exits;
otherwise, under the home's start lock, it binds a loopback port, records itself in the
home's state file, and serves :func:`clampdown_flows.prefect_api.create_app` there with the
home's secret, exactly as a resident started by :func:`clampdown_flows.resident_api.ensure`
would. One JSON line on ``REPORT_FD`` says what it did; the command checks the server's
proof before it uses it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
from typing import Any

from clampdown_flows.frozen_imports import imports_frozen

LOCK_HELD_AT_MOST = 120.0  # seconds: a start that hangs must not block other commands


def main(argv: list[str]) -> int:
    report_fd = int(argv[0])
    with imports_frozen():  # the slow part, before the command needs the server
        import uvicorn
        from prefect.server.api.server import create_app  # noqa: F401

        from clampdown_flows import prefect_api  # noqa: F401
    if sys.stdin.readline().strip() != "go":
        return 0  # the command ended (or failed) before it needed an API
    try:
        serving = claim()
    except Exception as exc:  # the command starts a server the usual way and says why
        _report(report_fd, {"outcome": "failed", "error": f"{type(exc).__name__}: {exc}"})
        return 1
    _report(report_fd, serving.report)
    if serving.socket is None:
        return 0
    config = uvicorn.Config(
        "clampdown_flows.prefect_api:create_app",
        factory=True,
        log_level="error",
        lifespan="on",
    )
    server = uvicorn.Server(config)
    release = threading.Thread(target=_release_when_up, args=(server, serving.lock), daemon=True)
    release.start()
    server.run(sockets=[serving.socket])
    return 0


class Serving:
    """What :func:`claim` decided: the report, and for a server to run its socket and lock."""

    def __init__(
        self, report: dict[str, Any], sock: socket.socket | None = None, lock: int = -1
    ) -> None:
        self.report = report
        self.socket = sock
        self.lock = lock


def claim() -> Serving:
    """Become this Prefect home's resident API, unless it needs none or has one.

    Prefect's settings here are the command's: the same environment, files and working
    folder. Becoming it: the loopback port bound (connections wait in its queue until the
    server is up), the state file naming this process, this process's output in the home's
    log, the home's secret and the idle limit in this process's environment (the app
    factory has Prefect's settings re-read from it:
    :func:`clampdown_flows.prefect_api.settings_follow_environment`).
    """
    from prefect.settings import get_current_settings

    from clampdown_flows.prefect_api import resident_identity
    from clampdown_flows.resident_api import (
        IDLE_ENV,
        IDLE_SECONDS,
        LOG_FILE,
        find,
        hold_start_lock,
        write_state,
    )

    if get_current_settings().api.url:
        return Serving({"outcome": "configured"})
    identity = resident_identity()  # the home's secret, made if it is the first API here
    lock = hold_start_lock(identity.home)
    try:
        if find(identity) is not None:
            os.close(lock)
            return Serving({"outcome": "running"})
        sock = loopback_listener()
        port = int(sock.getsockname()[1])
        write_state(identity.home, port, os.getpid())
    except BaseException:
        os.close(lock)
        raise
    log_path = identity.home / LOG_FILE
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.chmod(log_path, 0o600)
    for target in (1, 2):
        os.dup2(fd, target)
    os.close(fd)
    os.environ["PREFECT_SERVER_API_AUTH_STRING"] = identity.auth
    os.environ[IDLE_ENV] = str(IDLE_SECONDS)
    report = {
        "outcome": "started",
        "port": port,
        "pid": os.getpid(),
        "home": str(identity.home),
        "database": identity.database,
    }
    return Serving(report, sock, lock)


def loopback_listener() -> socket.socket:
    """A listening TCP socket on a free loopback port, for uvicorn to serve on.

    Made with the protocol named (``IPPROTO_TCP``), not left 0: asyncio turns Nagle's
    algorithm off (``TCP_NODELAY``) only on connections whose socket says it is TCP, and
    the accepted connections take the listener's. Without it each answer of the API waited
    for the client's delayed acknowledgement: ~40 ms a request, a warm ``clampdown run``
    0.2 s slower than against a server uvicorn bound itself."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.bind(("127.0.0.1", 0))
        sock.listen(2048)
    except BaseException:
        sock.close()
        raise
    return sock


def _report(fd: int, report: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):  # the command is gone: nobody to tell
        os.write(fd, json.dumps(report).encode() + b"\n")
    with contextlib.suppress(OSError):
        os.close(fd)


def _release_when_up(server: Any, lock: int) -> None:
    """Hold the home's start lock until the server serves (another command starting at the
    same time then finds it instead of starting a second), at most
    :data:`LOCK_HELD_AT_MOST` seconds."""
    deadline = time.monotonic() + LOCK_HELD_AT_MOST
    while not (server.started or server.should_exit) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.close(lock)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
