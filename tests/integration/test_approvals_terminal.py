"""Approvals with no Slack at all: groups from CLAMPDOWN_GROUPS, decisions from the terminal."""

from __future__ import annotations

import concurrent.futures
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from clampdown.app.cli import app as cli_app
from clampdown.core.ledger import read
from clampdown.core.members import local_groups_members, members_now
from clampdown.core.settings import settings
from clampdown_flows.approval_store import request_file

RUNBOOK = """\
apiVersion: clampdown/v1
kind: Runbook
metadata: {name: terminal-gate, title: Terminal gate, severity: high}
steps:
  - id: approve
    uses: approval.request
    with: {summary: "Go?", approvers: {groups: [security-oncall]}, timeout: 60s}
  - id: act
    uses: core.log
    needs: [approve]
    with: {message: approved}
"""


@pytest.fixture
def no_slack(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CLAMPDOWN_SLACK_BOT_TOKEN", "CLAMPDOWN_SLACK_CHANNEL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CLAMPDOWN_GROUPS", "security-oncall=U0TERM1, U0TERM2; ir-leads=U0LEAD")


def test_local_groups_define_members_only_for_the_groups_they_name(no_slack: None) -> None:
    assert local_groups_members(["security-oncall"]) == {"U0TERM1", "U0TERM2"}
    assert members_now(["ir-leads", "security-oncall"]) == {"U0LEAD", "U0TERM1", "U0TERM2"}
    assert members_now(["unknown-group"]) is None  # nobody can tell: only listed ids count


def test_a_terminal_team_approves_a_group_gate_without_slack(
    prefect_server: str, no_slack: None, write_runbook: Any
) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from clampdown_flows.respond import run_in_process

    path: Path = write_runbook(RUNBOOK, "terminal-gate.yaml")
    done: dict[str, Any] = {}

    def start() -> None:
        with temporary_settings({PREFECT_API_URL: prefect_server}):
            done["state"] = run_in_process(
                str(path), {}, run_id="terminal0001", trigger={"type": "manual", "user": "U0TERM1"}
            )

    runner = threading.Thread(target=start)
    runner.start()
    deadline = time.monotonic() + 30
    while not request_file("terminal0001", "approve").is_file() and time.monotonic() < deadline:
        time.sleep(0.1)
    request = json.loads(request_file("terminal0001", "approve").read_text())
    assert request["groups"] == ["security-oncall"]

    cli = CliRunner()
    starter = cli.invoke(cli_app, ["approve", "terminal0001", "--as", "U0TERM1"])
    assert starter.exit_code == 1 and "two-person rule" in starter.output
    other = cli.invoke(cli_app, ["approve", "terminal0001", "--as", "U0TERM2"])
    assert other.exit_code == 0, other.output
    runner.join(60)
    records = read(settings().ledger_path("terminal0001"))
    assert records[-1]["type"] == "run.end" and records[-1]["status"] == "succeeded"
    assert [r["approver"] for r in records if r["type"] == "approval.decision"] == ["U0TERM2"]


def test_a_run_paused_at_an_approval_can_be_interrupted(
    prefect_server: str, no_slack: None, write_runbook: Any
) -> None:
    """What the test session does to runs a test left paused (and an embedder may do)."""
    from clampdown.app.serve import InProcessStarter

    starter = InProcessStarter()
    run_id = starter(write_runbook(RUNBOOK, "terminal-gate.yaml"), {}, {"type": "manual"})
    deadline = time.monotonic() + 30
    while not request_file(run_id, "approve").is_file() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert starter.interrupt_running() == [run_id]
    done, _ = concurrent.futures.wait([starter.futures[run_id]], timeout=30)
    assert done, "the worker thread is free again"
    records = read(settings().ledger_path(run_id))
    assert "run.end" not in [r["type"] for r in records]
    assert not any(r["type"] == "step.start" and r.get("step") == "act" for r in records)
    starter.shutdown()
