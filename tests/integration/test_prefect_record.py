"""Prefect's record of a local run is complete when the command returns (issue 15).

Prefect's client reports task-run states as events, which the server's task-run recorder
writes to its database some time later. A command that stopped its local Prefect API as
soon as its flow returned left Prefect holding a fraction of the run (11 of 100 task runs
after a 100-step chain). These tests run the real command in a fresh process on a Prefect
home of its own, then open that home's API again and read what Prefect kept.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.paths import REPO

STEPS = 30

# Reads a Prefect home's flow runs and their task runs through a local API started on it.
READ_RECORD = """
import json, sys
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from clampdown_flows.prefect_api import local_api

with local_api():
    with get_client(sync_client=True) as client:
        record = {}
        for flow_run in client.read_flow_runs():
            tasks = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id]))
            )
            record[flow_run.name] = {
                "state": flow_run.state_type.value,
                "tasks": sorted(f"{t.name}={t.state_type.value}" for t in tasks),
            }
print(json.dumps(record))
"""

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


@pytest.fixture
def prefect_home(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The environment of a fresh process on a Prefect home of its own (no API URL set);
    the local API `clampdown run` leaves running there is stopped after the test."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API_")}
    env["PREFECT_HOME"] = str(tmp_path / "prefect")
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    env["PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"] = "CRITICAL"
    yield env
    python(env, "-m", "clampdown.app.cli", "prefect-api", "stop")


def python(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def prefect_record(env: dict[str, str]) -> dict[str, dict[str, object]]:
    lines = python(env, "-c", READ_RECORD).stdout.strip().splitlines()
    return json.loads(lines[-1])


def test_clampdown_run_returns_with_every_task_run_recorded_completed(
    prefect_home: dict[str, str], write_runbook
) -> None:
    path = write_runbook(chain(STEPS))
    python(prefect_home, "-m", "clampdown.app.cli", "run", str(path))

    record = prefect_record(prefect_home)
    assert len(record) == 1, record
    (flow_run,) = record.values()
    assert flow_run["state"] == "COMPLETED"
    assert flow_run["tasks"] == sorted(f"s{i}=COMPLETED" for i in range(STEPS))


def test_a_plain_flow_in_local_api_is_fully_recorded_when_the_block_ends(
    prefect_home: dict[str, str],
) -> None:
    """``rollback`` and drills run their flows inside ``local_api()`` the same way."""
    python(prefect_home, "-c", STOCK_FLOW, str(STEPS))

    record = prefect_record(prefect_home)
    (flow_run,) = record.values()
    assert flow_run["tasks"] == sorted(f"t{i}=COMPLETED" for i in range(STEPS))
