"""The resident local Prefect API (issue 15): started by the first ``clampdown run`` of a
Prefect home, reused by the next, protected like the per-command server, stopped by
``clampdown prefect-api stop``. Commands run as real processes on a Prefect home of their own.
"""

from __future__ import annotations

import http.server
import json
import os
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import httpx
import pytest

from clampdown_flows.resident_api import STATE_FILE, Identity, find, stop
from tests.paths import REPO
from tests.prefect_homes import seed_prefect_home

ONE_STEP = """apiVersion: clampdown/v1
kind: Runbook
metadata: {name: one-step, title: One step, severity: low}
steps:
  - {id: s0, uses: core.set_output, with: {value: 1}}
"""
STARTED = "started a local Prefect API at http://127.0.0.1:"


@pytest.fixture
def prefect_home(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    """A fresh Prefect home and the environment of commands on it; its resident stopped after.

    The home starts with a copy of the session's migrated database (tests/prefect_homes.py)
    and no other file: the first command makes the secret, the state file and the server.
    """
    home = seed_prefect_home(tmp_path / "prefect")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API_")}
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL="CRITICAL",
    )
    yield home, env
    auth = home / "clampdown-api-auth"  # a test that failed midway: its resident stopped here
    if (home / STATE_FILE).exists() and auth.exists():
        stop(identity(home, auth.read_text().strip()))


def clampdown(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clampdown.app.cli", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def command_line(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def identity(home: Path, auth: str) -> Identity:
    from importlib.metadata import version

    return Identity(
        home=home,
        auth=auth,
        database=f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        version=f"prefect {version('prefect')}, clampdown {version('clampdown')}",
    )


def test_the_first_run_starts_it_the_next_reuses_it_and_stop_stops_it(
    prefect_home: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    home, env = prefect_home
    runbook = tmp_path / "one.yaml"
    runbook.write_text(ONE_STEP)

    first = clampdown(env, "run", str(runbook))
    assert first.returncode == 0, first.stdout + first.stderr
    assert STARTED in first.stderr and "clampdown prefect-api stop" in first.stderr
    state = json.loads((home / STATE_FILE).read_text())
    assert stat.S_IMODE((home / STATE_FILE).stat().st_mode) == 0o600
    # the server it started stays as the home's resident (the early server's process)
    assert "clampdown_flows.resident_server" in command_line(state["pid"])
    url = f"http://127.0.0.1:{state['port']}/api"
    status = clampdown(env, "prefect-api", "status")
    assert f"local Prefect API running at {url} (pid {state['pid']})" in status.stdout

    second = clampdown(env, "run", str(runbook))
    assert second.returncode == 0, second.stdout + second.stderr
    assert STARTED not in second.stderr
    assert json.loads((home / STATE_FILE).read_text())["pid"] == state["pid"]

    # protected as before: the home's auth string or 401; no clampdown/AWS secrets inherited
    assert httpx.post(f"{url}/flow_runs/filter", json={}).status_code == 401
    auth = (home / "clampdown-api-auth").read_text().strip()
    user, secret = auth.split(":", 1)
    runs = httpx.post(f"{url}/flow_runs/filter", json={}, auth=(user, secret))
    assert runs.status_code == 200 and len(runs.json()) == 2
    environ = Path(f"/proc/{state['pid']}/environ")
    if environ.exists():
        names = {item.split(b"=", 1)[0] for item in environ.read_bytes().split(b"\0")}
        assert b"PREFECT_HOME" in names and b"CLAMPDOWN_HOME" not in names

    # it proves itself only to a holder of the home's secret
    assert find(identity(home, auth)) is not None
    assert find(identity(home, "clampdown:not-the-secret")) is None

    stopped = clampdown(env, "prefect-api", "stop")
    assert f"stopped the local Prefect API at {url} (pid {state['pid']})" in stopped.stdout
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/health")
    assert not (home / STATE_FILE).exists()  # what `status` and `stop` read: none runs now
    # (their answers on a home with no state file, none running: test_drill_resident_api.py)


class Recording(http.server.BaseHTTPRequestHandler):
    """Whatever answers on a port a state file names: it records what it was sent."""

    seen: ClassVar[list[tuple[str, dict[str, str]]]] = []

    def do_GET(self) -> None:
        self.seen.append((self.path, dict(self.headers)))
        body = json.dumps({"proof": "0" * 64}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_process_on_the_recorded_port_is_not_trusted_nor_sent_the_secret(
    tmp_path: Path,
) -> None:
    """A server that died and whose port another process took: the next command must not
    send that process the auth string or any run data, and starts its own server."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recording)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        home = tmp_path / "prefect"
        home.mkdir()
        port = server.server_address[1]
        (home / STATE_FILE).write_text(json.dumps({"port": port, "pid": os.getpid()}))
        secret = "clampdown:the-home-secret"

        assert find(identity(home, secret)) is None
    finally:
        server.shutdown()
        server.server_close()
    assert Recording.seen, "the impostor was asked to prove itself"
    for path, headers in Recording.seen:
        assert path.startswith("/clampdown/local-api?nonce=")
        assert "authorization" not in {name.lower() for name in headers}
        assert "the-home-secret" not in path + json.dumps(headers)
