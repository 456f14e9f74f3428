"""A resident local API started before the command imports Prefect (issue 15's first run on
a new home): :class:`clampdown_flows.resident_api.EarlyServer` and
:mod:`clampdown_flows.resident_server`. Real server processes on Prefect homes of their own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from clampdown_flows.resident_api import STATE_FILE, EarlyServer, stop
from tests.integration.test_resident_api import (
    ONE_STEP,
    STARTED,
    clampdown,
    command_line,
    identity,
)
from tests.paths import REPO
from tests.prefect_homes import seed_prefect_home

# An early server started although the home has a resident (a wrong guess), then Prefect
# imported and the resident API asked for, as `clampdown run` does after `go`.
FORCED_EARLY = """
import json, os
from clampdown_flows.resident_api import EarlyServer

early = EarlyServer.spawn(dict(os.environ))
early.go()
from clampdown_flows.prefect_api import resident_api

with resident_api(early=early) as api:
    pass
early.process.wait(timeout=60) if api.pid != early.process.pid else None
print(json.dumps({
    "report": early.outcome, "pid": api.pid, "started": api.started,
    "early_exit": early.process.poll(),
}))
early.close()
"""

# The console script's main with EarlyServer.start recorded: whether Typer and Prefect were
# imported yet.
CONSOLE_SCRIPT = """
import json, sys
from clampdown_flows import resident_api

calls = []
start = resident_api.EarlyServer.start.__func__

def recorded(cls, *args, **kwargs):
    calls.append({"typer": "typer" in sys.modules, "prefect": "prefect" in sys.modules})
    return start(cls, *args, **kwargs)

resident_api.EarlyServer.start = classmethod(recorded)
sys.argv = ["clampdown", *sys.argv[2:]]
from clampdown.app import entry

try:
    entry.main()
finally:
    with open(__import__("os").environ["CALLS_FILE"], "w") as f:
        json.dump(calls, f)
"""
FIRST_THING = [{"typer": False, "prefect": False}]  # one start, before Typer and Prefect


@pytest.fixture
def prefect_home(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    """A fresh Prefect home (seeded from the session's template on first start) and the
    environment of commands on it; its resident stopped after."""
    home = seed_prefect_home(tmp_path / "prefect")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API_")}
    env.update(
        PREFECT_HOME=str(home),
        CLAMPDOWN_HOME=str(tmp_path / "clampdown"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL="CRITICAL",
    )
    yield home, env
    auth = home / "clampdown-api-auth"
    if (home / STATE_FILE).exists() and auth.exists():
        stop(identity(home, auth.read_text().strip()))


def python(env: dict[str, str], code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def console_script(
    env: dict[str, str], calls: Path, *args: str
) -> tuple[subprocess.CompletedProcess[str], object]:
    """``clampdown *args`` through the console script; its EarlyServer.start calls."""
    done = python({**env, "CALLS_FILE": str(calls)}, CONSOLE_SCRIPT, "-", *args)
    return done, json.loads(calls.read_text()) if calls.exists() else None


def test_the_server_started_before_prefect_becomes_the_resident_and_is_reused(
    prefect_home: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    """``clampdown run`` on a new home: the console script starts the server first thing,
    the command uses it as the home's resident, and it stays for the next command."""
    home, env = prefect_home
    runbook = tmp_path / "one.yaml"
    runbook.write_text(ONE_STEP)
    run, calls = console_script(env, tmp_path / "calls.json", "run", str(runbook))
    assert run.returncode == 0, run.stdout + run.stderr
    assert calls == FIRST_THING
    # the command's API is the server started then: the resident, which the command started
    state = json.loads((home / STATE_FILE).read_text())
    pid = state["pid"]
    said = " ".join(run.stderr.split())  # as Rich wrapped it
    assert f"{STARTED}{state['port']}/api (pid {pid})" in said, run.stderr
    assert "clampdown_flows.resident_server" in command_line(pid)
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    names = {item.split(b"=", 1)[0] for item in environ}
    assert b"PREFECT_HOME" in names and b"CLAMPDOWN_HOME" not in names
    # it requires the home's secret, which it read after Prefect's settings were loaded
    url = f"http://127.0.0.1:{state['port']}/api/flow_runs/filter"
    assert httpx.post(url, json={}).status_code == 401
    user, secret = (home / "clampdown-api-auth").read_text().strip().split(":", 1)
    assert httpx.post(url, json={}, auth=(user, secret)).status_code == 200

    # an early server started anyway (a wrong guess) finds the resident and exits; the
    # command reuses the resident (`clampdown run` finding it by its state file, with no
    # early server: test_resident_api.py's second run)
    done = python(env, FORCED_EARLY)
    assert done.returncode == 0, done.stderr[-3000:]
    forced = json.loads(done.stdout.splitlines()[-1])
    assert forced["report"] == {"outcome": "running"}
    assert forced["pid"] == pid and forced["started"] is False
    assert forced["early_exit"] == 0
    assert json.loads((home / STATE_FILE).read_text())["pid"] == pid


def test_a_command_line_that_never_needs_the_api_stops_the_one_the_script_started(
    prefect_home: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    home, env = prefect_home
    helped, calls = console_script(env, tmp_path / "calls.json", "run", "--help")
    assert helped.returncode == 0 and "Usage" in helped.stdout, helped.stderr
    assert calls == FIRST_THING  # the guess started one (a new home)
    assert _processes_of(home) == []  # stopped
    assert sorted(p.name for p in home.iterdir()) == []  # never told go: home untouched


def test_a_command_failing_before_it_needs_an_api_leaves_the_home_untouched(
    prefect_home: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    home, env = prefect_home
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: clampdown/v1\nkind: Runbook\nsteps: 3\n")
    run = clampdown(env, "run", str(bad))
    assert run.returncode == 2, run.stdout + run.stderr
    assert sorted(p.name for p in home.iterdir()) == []  # no secret, state, lock, database
    assert not any("resident_server" in command_line(pid) for pid in _processes_of(home))


def test_an_early_server_told_nothing_exits_without_touching_the_home(
    prefect_home: tuple[Path, dict[str, str]],
) -> None:
    home, env = prefect_home
    early = EarlyServer.spawn(env)
    assert early is not None
    early.process.stdin.close()  # the command died before it needed an API
    assert early.process.wait(timeout=300) == 0
    assert early.report(5) is None
    early.close()
    assert sorted(p.name for p in home.iterdir()) == []


def test_an_api_url_only_in_the_profile_is_found_by_the_server_which_exits(
    prefect_home: tuple[Path, dict[str, str]],
) -> None:
    home, env = prefect_home
    (home / "profiles.toml").write_text(
        'active = "remote"\n[profiles.remote]\nPREFECT_API_URL = "http://127.0.0.1:9/api"\n'
    )
    early = EarlyServer.spawn(env)  # the guess would not start it; the server decides too
    assert early is not None
    early.go()
    assert early.report(300) == {"outcome": "configured"}
    assert early.process.wait(timeout=60) == 0
    early.close()
    assert sorted(p.name for p in home.iterdir()) == ["profiles.toml"]


def _processes_of(home: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                environ = (entry / "environ").read_bytes()
            except OSError:
                continue
            if f"PREFECT_HOME={home}".encode() in environ.split(b"\0"):
                found.append(int(entry.name))
    return found
