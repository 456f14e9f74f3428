"""Prefect's record of a local run is complete when the command returns (issue 15).

Prefect's client reports task-run states as events, which the server's task-run recorder
writes to its database some time later. A command that stopped its local Prefect API as
soon as its flow returned left Prefect holding a fraction of the run (11 of 100 task runs
after a 100-step chain). These tests run the real command in a fresh process on a Prefect
home of their own, and the moment it returns read what Prefect's database holds (SQLite,
read directly): for ``clampdown run`` the resident API it leaves running is killed first
(SIGKILL: no shutdown that could flush late records), so the record is the one the
command returned with. The two tests share the home, which starts with a copy of the
session's migrated database (tests/prefect_homes.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from clampdown_flows.resident_api import STATE_FILE
from tests.leftovers import stop
from tests.paths import REPO
from tests.prefect_homes import seed_prefect_home

STEPS = 30

# A stock Prefect flow of STEPS tasks run inside local_api(): what `rollback` and drills do.
STOCK_FLOW = """
import sys
from prefect import flow, task
from clampdown_flows.prefect_api import local_api

@task(task_run_name="t{i}")
def one(i: int) -> int:
    return i

@flow(name="stock")
def many(n: int) -> int:
    return sum(one(i) for i in range(n))

with local_api():
    many(int(sys.argv[1]))
"""


def chain(steps: int) -> str:
    lines = ["apiVersion: clampdown/v1", "kind: Runbook"]
    lines.append("metadata: {name: record-chain, title: Record chain, severity: low}")
    lines.append("steps:")
    for i in range(steps):
        needs = f", needs: [s{i - 1}]" if i else ""
        lines.append(f"  - {{id: s{i}, uses: core.set_output{needs}, with: {{value: {i}}}}}")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def prefect_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The environment of a fresh process on a Prefect home of its own (no API URL set)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API_")}
    home = seed_prefect_home(tmp_path_factory.mktemp("prefect-record") / "prefect")
    env["PREFECT_HOME"] = str(home)
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    env["PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"] = "CRITICAL"
    yield env
    kill_resident(env)


def kill_resident(env: dict[str, str]) -> None:
    """SIGKILL the home's resident API if its state file names a live one of ours."""
    with contextlib.suppress(OSError, ValueError, KeyError):
        pid = int(json.loads((Path(env["PREFECT_HOME"]) / STATE_FILE).read_text())["pid"])
        if b"clampdown_flows.prefect_api" in Path(f"/proc/{pid}/cmdline").read_bytes():
            os.kill(pid, signal.SIGKILL)
            stop([pid], timeout=10)  # waits until it is gone


def python(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def prefect_record(env: dict[str, str]) -> dict[str, dict[str, object]]:
    """Flow run id -> its state and its task runs (name=state), from the home's database."""
    database = Path(env["PREFECT_HOME"]) / "prefect.db"
    if not database.exists():
        return {}
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        return {
            run_id: {
                "state": state,
                "tasks": sorted(
                    f"{task}={task_state}"
                    for task, task_state in db.execute(
                        "SELECT name, state_type FROM task_run WHERE flow_run_id = ?", (run_id,)
                    )
                ),
            }
            for run_id, state in db.execute("SELECT id, state_type FROM flow_run").fetchall()
        }


def new_flow_runs(env: dict[str, str], before: dict[str, object]) -> list[dict[str, object]]:
    return [run for run_id, run in prefect_record(env).items() if run_id not in before]


def test_clampdown_run_returns_with_every_task_run_recorded_completed(
    prefect_home: dict[str, str], write_runbook
) -> None:
    path = write_runbook(chain(STEPS))
    before = prefect_record(prefect_home)
    python(prefect_home, "-m", "clampdown.app.cli", "run", str(path))
    kill_resident(prefect_home)  # at once: what Prefect holds is what the command returned with

    (flow_run,) = new_flow_runs(prefect_home, before)
    assert flow_run["state"] == "COMPLETED"
    assert flow_run["tasks"] == sorted(f"s{i}=COMPLETED" for i in range(STEPS))


def test_a_plain_flow_in_local_api_is_fully_recorded_when_the_block_ends(
    prefect_home: dict[str, str],
) -> None:
    """``rollback`` and drills run their flows inside ``local_api()`` the same way."""
    before = prefect_record(prefect_home)
    python(prefect_home, "-c", STOCK_FLOW, str(STEPS))

    (flow_run,) = new_flow_runs(prefect_home, before)
    assert flow_run["tasks"] == sorted(f"t{i}=COMPLETED" for i in range(STEPS))
