"""A Prefect home's resident local API: started by one command, reused by the next.

``clampdown run`` used to start Prefect's server for each run and stop it at exit: the
server's imports and start-up (about 5 s of CPU) were most of a one-step run. Now the
first command that needs a local API leaves one running for its Prefect home, and later
commands find it and use it at once; ``clampdown prefect-api stop`` stops it, and it
stops by itself after :data:`IDLE_SECONDS` without a request or an open connection.

It is protected like the per-command server was: it listens on 127.0.0.1 only and
requires the home's auth string (``clampdown_flows.prefect_api.local_auth_string``), so
whoever can reach the port but not read the Prefect home gets 401. A command does not
trust the port number in the state file: before it sends the auth string or any run data,
it asks the server to prove it holds the same secret and serves the same database
(:func:`proof`: an HMAC of a fresh nonce), so a process that took the port of a dead
server learns nothing. ``stop`` signals only the process id the server itself proved.

Files in the Prefect home: :data:`STATE_FILE` (port and process id, no secret),
:data:`LOCK_FILE` (two commands starting at once start one server), :data:`LOG_FILE`
(the server's own output).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import os
import secrets
import signal
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clampdown.core.diagnostics import ClampdownError

logger = logging.getLogger("clampdown.prefect")

STATE_FILE = "clampdown-api.json"
LOCK_FILE = "clampdown-api.lock"
LOG_FILE = "clampdown-api.log"
PROOF_PATH = "/clampdown/local-api"
IDLE_ENV = "CLAMPDOWN_LOCAL_API_IDLE_SECONDS"  # set by :func:`ensure` for the server only
IDLE_SECONDS = 3600
STOP_PROOF_SECONDS = 120.0  # how long `stop` waits for a live server to prove itself
WATCH_SECONDS = 30.0  # how often a resident server checks it is idle or replaced


@dataclass(frozen=True)
class Resident:
    """A resident local API that proved itself; ``started`` when this process started it."""

    port: int
    pid: int
    started: bool = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"


@dataclass(frozen=True)
class Identity:
    """What a resident API must prove: the home's secret, its database, the versions."""

    home: Path
    auth: str
    database: str
    version: str


def proof(auth: str, nonce: str, database: str, pid: int, version: str) -> str:
    """The server's answer to ``nonce``: only a holder of ``auth`` can compute it."""
    message = "\0".join(["clampdown-local-api", nonce, database, str(pid), version])
    return hmac.new(auth.encode(), message.encode(), hashlib.sha256).hexdigest()


def find(identity: Identity, timeout: float = 15.0) -> Resident | None:
    """The home's resident API if its state file names one that proves itself, else None.

    A dead server refuses the connection at once; ``timeout`` only matters for a live one
    slow to answer (a loaded machine), which is better waited for than started twice.
    """
    try:
        state = json.loads((identity.home / STATE_FILE).read_text())
        port, pid = int(state["port"]), int(state["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return Resident(port, pid) if _proves(identity, port, pid, timeout) else None


def _proves(identity: Identity, port: int, pid: int, timeout: float) -> bool:
    nonce = secrets.token_hex(16)
    url = f"http://127.0.0.1:{port}{PROOF_PATH}?nonce={nonce}"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy
    try:
        with opener.open(url, timeout=timeout) as response:
            answer = json.loads(response.read(4096))
    except (OSError, ValueError):
        return False
    if not isinstance(answer, dict):
        return False
    expected = proof(identity.auth, nonce, identity.database, pid, identity.version)
    return hmac.compare_digest(str(answer.get("proof", "")), expected)


@contextlib.contextmanager
def _start_lock(home: Path) -> Iterator[None]:
    home.mkdir(parents=True, exist_ok=True)
    fd = os.open(home / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def ensure(
    identity: Identity,
    spawn: Callable[[int, dict[str, str], Any], Any],
    *,
    timeout: float = 60,
    while_starting: Callable[[], object] | None = None,
) -> Resident:
    """The home's resident API, started (detached, logging to :data:`LOG_FILE`) if none runs.

    ``spawn(port, extra_env, log)`` starts the server process; ``while_starting`` runs while
    it comes up (a caller's own imports). Raises :class:`ClampdownError` if it does not
    answer within ``timeout`` seconds.
    """
    with _start_lock(identity.home):
        found = find(identity)
        if found is None:
            port = _free_port()
            log_path = identity.home / LOG_FILE
            with open(log_path, "ab") as log:
                os.chmod(log_path, 0o600)
                process = spawn(port, {IDLE_ENV: str(IDLE_SECONDS)}, log)
            _write_state(identity.home, port, process.pid)  # at once: see ProofAndIdle
            if while_starting is not None:
                while_starting()
            _wait_until_up(identity, port, process, timeout, log_path)
            return Resident(port, process.pid, started=True)
    if while_starting is not None:
        while_starting()
    return found


def _wait_until_up(identity: Identity, port: int, process: Any, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ClampdownError(
                f"the local Prefect API exited at start (code {process.returncode})",
                f"its output is in {log}",
            )
        if _proves(identity, port, process.pid, timeout=2.0):
            return
        time.sleep(0.1)
    process.terminate()
    raise ClampdownError(
        f"the local Prefect API did not answer within {timeout:.0f} s",
        f"its output is in {log}; a busy machine may need a second try",
    )


def _write_state(home: Path, port: int, pid: int) -> None:
    path = home / STATE_FILE
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"port": port, "pid": pid, "started": time.time()}, handle)
    os.replace(temporary, path)


def stop(identity: Identity, timeout: float = 15.0) -> Resident | None:
    """Stop the home's resident API (the process it proved to be); None if none runs.

    It waits longer for the proof than a command does: on a saturated machine a busy
    server can take more than ``find``'s 15 s to answer, and ``stop`` must not give up.
    """
    with _start_lock(identity.home):
        found = find(identity, timeout=STOP_PROOF_SECONDS)
        if found is None:
            return None
        os.kill(found.pid, signal.SIGTERM)
        if not _wait_gone(found.pid, timeout):
            os.kill(found.pid, signal.SIGKILL)
            _wait_gone(found.pid, 5.0)
        with contextlib.suppress(FileNotFoundError):
            (identity.home / STATE_FILE).unlink()
        return found


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):  # reap it if it is our own child
            os.waitpid(pid, os.WNOHANG)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        if _zombie(pid):  # exited; its parent (init, once the starter exited) reaps it
            return True
        time.sleep(0.05)
    return False


def _zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[:1] == ["Z"]


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ProofAndIdle:
    """The resident server's ASGI wrapper: answers :data:`PROOF_PATH`, stops when idle.

    Every other request goes to Prefect's app unchanged (its auth applies). With ``idle``
    (a resident server) the process ends itself (SIGTERM: uvicorn's orderly shutdown)
    after ``idle`` seconds with no request and no open connection, and as soon as its
    home's state file no longer names it (stopped, replaced by a server of a newer
    version, a starter killed before the server was up, the home deleted), so no resident
    outlives its record; 0 (a command's own server) never does.
    """

    def __init__(self, app: Any, identity: Identity, idle: float) -> None:
        self.app = app
        self.identity = identity
        self.active = 0
        self.last = time.monotonic()
        if idle > 0:
            threading.Thread(target=self._watch, args=(idle,), daemon=True).start()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == PROOF_PATH:
            await self._answer(scope, send)
            return
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        self.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1
            self.last = time.monotonic()

    async def _answer(self, scope: Any, send: Any) -> None:
        from urllib.parse import parse_qs

        nonce = parse_qs(scope.get("query_string", b"").decode()).get("nonce", [""])[0][:64]
        identity = self.identity
        body = json.dumps(
            {"proof": proof(identity.auth, nonce, identity.database, os.getpid(), identity.version)}
        ).encode()
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _watch(self, idle: float) -> None:
        while True:
            time.sleep(min(idle, WATCH_SECONDS))
            quiet = self.active == 0 and time.monotonic() - self.last > idle
            if quiet or not self._recorded():
                logger.warning("local Prefect API %s: stopping", "idle" if quiet else "replaced")
                os.kill(os.getpid(), signal.SIGTERM)
                return

    def _recorded(self) -> bool:
        """Whether the home's state file still names this process."""
        try:
            state = json.loads((self.identity.home / STATE_FILE).read_text())
        except (OSError, ValueError):
            return False
        return isinstance(state, dict) and state.get("pid") == os.getpid()
