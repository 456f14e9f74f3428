"""What the serve benchmarks share: moto's server, serve's app on loopback, signed generic
alerts, child processes, and the small measuring helpers.

A module beside the scripts (``python benchmarks/x.py`` puts this folder on the path), so
``alert_to_containment.py``, ``serve_throughput.py`` and ``paused_runs.py`` start their
servers, sign their alerts and read their ledgers the same way. moto is started by
:mod:`moto_server` (which the AWS-only benchmarks use alone).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from moto_server import start_moto

# local_api()'s start timeout: its default 60 s ran out at load 13-16 on this 2-core machine
API_START_TIMEOUT = 300
AWS_ENV = {  # moto takes any credentials; these never reach AWS
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    check: Callable[[], Any],
    timeout: float,
    what: str,
    every: float = 0.02,
    log: Path | None = None,
) -> Any:
    """``check()``'s first true value (exceptions count as not yet); exit with ``what``
    (and the end of ``log``) when ``timeout`` seconds pass first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if value := check():
                return value
        time.sleep(every)
    tail = log.read_text(errors="replace")[-2000:] if log else ""
    raise SystemExit(f"timed out waiting for {what}\n{tail}".rstrip())


@contextlib.contextmanager
def subprocess_of(argv: list[str], **kwargs: Any) -> Iterator[subprocess.Popen[Any]]:
    """A child in its own process group (its pipes in text mode unless ``text=False``),
    stopped with what it started on exit."""
    proc = subprocess.Popen(argv, start_new_session=True, **{"text": True, **kwargs})
    try:
        yield proc
    finally:
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue


@contextlib.contextmanager
def logged_process(argv: list[str], log: Path, **kwargs: Any) -> Iterator[subprocess.Popen[Any]]:
    """:func:`subprocess_of` with its output (stdout and stderr) in ``log``."""
    with (
        log.open("wb") as out,
        subprocess_of(argv, stdout=out, stderr=subprocess.STDOUT, **kwargs) as proc,
    ):
        yield proc


@contextlib.contextmanager
def moto(log: Path | None = None) -> Iterator[tuple[str, int]]:
    """moto's server in a process of its own for the block: its URL and process id."""
    server, endpoint = start_moto(log)
    try:
        yield endpoint, server.pid
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@contextlib.contextmanager
def on_loopback(app: Any, name: str = "uvicorn") -> Iterator[str]:
    """An ASGI app on uvicorn in a thread of this process, on a free loopback port."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", access_log=False)
    )
    thread = threading.Thread(target=server.run, name=name, daemon=True)
    thread.start()
    wait_until(lambda: server.started, 30, f"{name} on port {port}")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


@contextlib.contextmanager
def serve_app(starter: Any) -> Iterator[tuple[str, Any]]:
    """serve's real app (``create_app``, settings from the environment now) in front of
    ``starter``, on loopback: its base URL and the app. Its alert state store is closed
    at the end."""
    from clampdown.app.serve import create_app

    app = create_app(start_run=starter)
    try:
        with on_loopback(app) as url:  # thread "uvicorn", as serve_throughput's profile names it
            yield url, app
    finally:
        app.state.store.close()


def generic_alert(
    secret: str, alert_id: str, principal: str, title: str
) -> tuple[bytes, dict[str, str]]:
    """A generic alert signed as documented (docs/alerts: HMAC-SHA256 over
    ``v1:{timestamp}:{body}``): the body and headers of ``POST /alerts/generic``."""
    body = json.dumps(
        {"id": alert_id, "title": title, "severity": "critical", "principal": principal}
    ).encode()
    stamp = str(int(time.time()))
    mac = hmac.new(secret.encode(), b"v1:" + stamp.encode() + b":" + body, hashlib.sha256)
    headers = {
        "Content-Type": "application/json",
        "X-Clampdown-Timestamp": stamp,
        "X-Clampdown-Signature": f"v1={mac.hexdigest()}",
    }
    return body, headers


def cpu_seconds(pid: int | str = "self") -> float:
    """utime + stime of a process (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def ledger_ts(record: dict[str, Any]) -> float:
    """A ledger record's time as a Unix timestamp."""
    return datetime.fromisoformat(record["ts"].replace("Z", "+00:00")).timestamp()


def ledger(home: Path, run_id: str) -> list[dict[str, Any]]:
    """The records of run ``run_id`` in ``home`` (lines being written are left out)."""
    path = home / "runs" / run_id / "ledger.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
