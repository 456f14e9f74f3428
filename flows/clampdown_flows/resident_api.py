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

A command that will need the API and finds no resident starts the server's process before
it imports Prefect itself (:class:`EarlyServer`, :mod:`clampdown_flows.resident_server`):
the server's imports, most of its start, overlap the command's own. The command cannot know
this Prefect home without Prefect's settings, so whether to start one is a guess
(:func:`likely_needed`) that only decides how early; what the server does is decided by
the server, with Prefect's own settings, once the command says it needs an API (``go``):
an API URL configured anywhere Prefect reads one, or a resident that proves itself, and it
exits without touching the home. The command then checks the server as it checks any
resident (the proof above) before it sends anything.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import select
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
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
    fd = hold_start_lock(home)
    try:
        yield
    finally:
        os.close(fd)  # closing releases the lock


def hold_start_lock(home: Path) -> int:
    """The home's start lock, held (an open descriptor: closing it, or exiting, releases it)."""
    home.mkdir(parents=True, exist_ok=True)
    fd = os.open(home / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except BaseException:
        os.close(fd)
        raise
    return fd


def ensure(
    identity: Identity,
    spawn: Callable[[int, dict[str, str], Any], Any],
    *,
    timeout: float = 60,
    while_starting: Callable[[], object] | None = None,
    early: EarlyServer | None = None,
) -> Resident:
    """The home's resident API, started (detached, logging to :data:`LOG_FILE`) if none runs.

    ``spawn(port, extra_env, log)`` starts the server process; ``while_starting`` runs while
    it comes up (a caller's own imports). ``early``, a server process this command started
    before it imported Prefect (told ``go``), is used when it became this home's resident.
    Raises :class:`ClampdownError` if the server does not answer within ``timeout`` seconds.
    """
    if early is not None:
        if while_starting is not None:
            while_starting()
            while_starting = None
        resident = early.resident(identity, timeout)
        if resident is not None:
            return resident
    with _start_lock(identity.home):
        found = find(identity)
        if found is None:
            from clampdown_flows.loopback import free_port  # not before a start

            port = free_port()
            log_path = identity.home / LOG_FILE
            with open(log_path, "ab") as log:
                os.chmod(log_path, 0o600)
                process = spawn(port, {IDLE_ENV: str(IDLE_SECONDS)}, log)
            write_state(identity.home, port, process.pid)  # at once: see ProofAndIdle
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


def write_state(home: Path, port: int, pid: int) -> None:
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


EARLY_MODULE = "clampdown_flows.resident_server"
SERVER_ENV = {
    "PREFECT_UI_ENABLED": "0",
    "PREFECT__SERVER_EPHEMERAL": "1",
    "PREFECT__SERVER_FINAL": "1",
}
"""What a local API's process gets on top of the command's environment (as a spawned one)."""
SERVICES_OFF = {"PREFECT_SERVER_SERVICES_TRIGGERS_ENABLED": "false"}
"""Prefect services a local API runs without, unless the command's environment sets them:
the triggers service (automations: every event evaluated against them, their actions, and
a proactive pass every 5 s). clampdown defines no automation and local mode needs none (a
dead run is known by its lock, not by a heartbeat automation); docs/operations.md."""
PRIVATE_PREFIXES = ("CLAMPDOWN_", "AWS_", "SLACK_")  # a Prefect server never needs these
_API_URL_IN_FILE = re.compile(r"PREFECT_API_URL|^\s*\[(tool\.prefect\.)?api\]", re.MULTILINE)


def likely_needed(environ: Mapping[str, str], cwd: Path) -> bool:
    """Whether a command should start a resident API's server before it imports Prefect.

    A guess without Prefect, on the cheap side: no when ``PREFECT_API_URL`` is in the
    environment or written in a file Prefect may read it from (the profiles of the home in
    ``PREFECT_HOME`` or ``~/.prefect``, ``PREFECT_PROFILES_PATH``, ``prefect.toml``, ``.env``
    or ``pyproject.toml`` here), or when that home's state file names a live process (a
    resident is probably up). A wrong guess costs time only: the server itself decides with
    Prefect's settings whether it is needed, and the command checks it.
    """
    if environ.get("PREFECT_API_URL"):
        return False
    home = Path(environ.get("PREFECT_HOME") or "~/.prefect").expanduser()
    files = [home / "profiles.toml", cwd / "prefect.toml", cwd / ".env", cwd / "pyproject.toml"]
    if environ.get("PREFECT_PROFILES_PATH"):
        files.append(Path(environ["PREFECT_PROFILES_PATH"]).expanduser())
    for path in files:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        if _API_URL_IN_FILE.search(text):
            return False
    try:
        pid = int(json.loads((home / STATE_FILE).read_text())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return True
    return not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: not ours, so not our resident
        return False
    return not _zombie(pid)


class EarlyServer:
    """A resident API's server process started before this command imports Prefect.

    It imports Prefect's server side at once (no file of the home touched), then waits for
    :meth:`go`. Told ``go``, it decides with Prefect's own settings
    (:func:`clampdown_flows.resident_server.claim`) and reports one JSON line on a pipe:
    ``started`` (it is the home's resident, coming up on the port it reports), ``running``
    (another resident proved itself), ``configured`` (an API URL is set) or ``failed``.
    Closed without ``go`` (the command failed first), it is stopped; it also exits when
    this process dies, as its standard input then ends.
    """

    def __init__(self, process: Any, report_fd: int) -> None:
        self.process = process
        self.report_fd = report_fd
        self.went = False
        self.outcome: dict[str, Any] | None = None

    @classmethod
    def start(
        cls, environ: Mapping[str, str] | None = None, cwd: Path | None = None
    ) -> EarlyServer | None:
        """Started when :func:`likely_needed`, else None (the usual start applies)."""
        env = dict(os.environ if environ is None else environ)
        if not likely_needed(env, Path.cwd() if cwd is None else cwd):
            return None
        return cls.spawn(env)

    @classmethod
    def spawn(cls, environ: Mapping[str, str]) -> EarlyServer | None:
        """The server process, without the guess; None if it could not be started."""
        env = {k: v for k, v in environ.items() if not k.startswith(PRIVATE_PREFIXES)}
        read, write = os.pipe()
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", EARLY_MODULE, str(write)],
                env=SERVICES_OFF | env | SERVER_ENV,
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                pass_fds=(write,),
                start_new_session=True,  # a Ctrl-C here does not stop the resident it becomes
            )
        except OSError as exc:
            logger.warning("could not start the local Prefect API early: %s", exc)
            os.close(read)
            return None
        finally:
            os.close(write)
        return cls(process, read)

    def go(self) -> None:
        """Tell the server this command needs an API: it decides and reports."""
        if self.went:
            return
        self.went = True
        with contextlib.suppress(OSError):  # it died: its report says nothing, the usual start
            self.process.stdin.write(b"go\n")
            self.process.stdin.close()

    def report(self, timeout: float) -> dict[str, Any] | None:
        """The server's outcome (waiting up to ``timeout`` s); None if it said nothing."""
        if self.outcome is not None or self.report_fd < 0:
            return self.outcome
        deadline = time.monotonic() + timeout
        data = b""
        while not data.endswith(b"\n") and time.monotonic() < deadline:
            ready, _, _ = select.select([self.report_fd], [], [], deadline - time.monotonic())
            chunk = os.read(self.report_fd, 4096) if ready else b""
            if ready and not chunk:
                break  # it exited without a report
            data += chunk
        os.close(self.report_fd)
        self.report_fd = -1
        try:
            answer = json.loads(data)
        except ValueError:
            return None
        self.outcome = answer if isinstance(answer, dict) else None
        return self.outcome

    def resident(self, identity: Identity, timeout: float) -> Resident | None:
        """This home's resident if the server became it and proves itself; None when it did
        not become it (the caller then finds or starts one as usual)."""
        self.go()
        report = self.report(timeout) or {}
        if report.get("outcome") != "started":
            return None
        port = int(report.get("port", 0))
        ours = (self.process.pid, str(identity.home), identity.database)
        if (report.get("pid"), report.get("home"), report.get("database")) != ours:
            logger.warning("the local Prefect API started early is for another home: stopped")
            self.process.terminate()
            return None
        _wait_until_up(identity, port, self.process, timeout, identity.home / LOG_FILE)
        return Resident(port, self.process.pid, started=True)

    def close(self) -> None:
        """Stop the server if it was never told ``go``; let go of the pipe either way."""
        if not self.went and self.process.poll() is None:
            self.process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=5)
        with contextlib.suppress(OSError):
            self.process.stdin.close()
        if self.report_fd >= 0:
            os.close(self.report_fd)
            self.report_fd = -1


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
