"""Whole runs on moto server: a run's steps share its boto3 clients, another run gets its own,
and every run's clients are released when it ends, whether it succeeded or failed."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import boto3
import pytest

from clampdown.core.ledger import new_run_id, read
from clampdown.core.settings import settings
from clampdown_aws import base

pytestmark = pytest.mark.usefixtures("prefect_server", "clampdown_home", "aws_endpoint")

RUNBOOK = """apiVersion: clampdown/v1
kind: Runbook
metadata: {name: two-aws-steps, title: Two AWS steps}
inputs:
  second: {type: string, default: bob}
defaults: {retries: 0}
steps:
  - id: first
    uses: aws.iam.revoke_credentials
    with: {principal_arn: "arn:aws:iam::123456789012:user/alice"}
  - id: second
    uses: aws.iam.revoke_credentials
    needs: [first]
    with: {principal_arn: "arn:aws:iam::123456789012:user/{{ inputs.second }}"}
"""


@pytest.fixture
def handed(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, Any]]:
    """(run id, step id, client) for every client a step was handed (kept alive: no id reuse)."""
    seen: list[tuple[str, str, Any]] = []
    original = base.Aws.client

    def client(self: base.Aws, service: str) -> Any:
        made = original(self, service)
        seen.append((self.ctx.run_id, self.ctx.step_id, made))
        return made

    monkeypatch.setattr(base.Aws, "client", client)
    iam = boto3.client("iam", region_name="us-east-1")
    for user in ("alice", "bob"):
        iam.create_user(UserName=user)
        iam.create_access_key(UserName=user)
    return seen


def _run(path: Path, inputs: dict[str, Any]) -> tuple[str, str]:
    from clampdown_flows.respond import respond

    run_id = new_run_id()
    asyncio.run(respond(str(path), inputs, run_id=run_id, return_state=True))
    end = [r for r in read(settings().ledger_path(run_id)) if r["type"] == "run.end"]
    return run_id, end[-1]["status"]


def _kept(run_id: str) -> list[tuple[str, str]]:
    return [run for run in base.CLIENTS.runs() if run[1] == run_id]


def test_a_runs_steps_share_its_clients_and_it_releases_them_at_its_end(
    handed: list[tuple[str, str, Any]], write_runbook: Any
) -> None:
    path = write_runbook(RUNBOOK)
    run_a, status_a = _run(path, {})
    run_b, status_b = _run(path, {})
    assert (status_a, status_b) == ("succeeded", "succeeded")

    by_run = {run: [c for r, _, c in handed if r == run] for run in (run_a, run_b)}
    steps_a = {step for r, step, _ in handed if r == run_a}
    assert steps_a == {"first", "second"}
    assert len({id(c) for c in by_run[run_a]}) == 1  # both steps, one IAM client
    assert len({id(c) for c in by_run[run_b]}) == 1
    assert by_run[run_a][0] is not by_run[run_b][0]  # never across runs
    assert _kept(run_a) == [] and _kept(run_b) == []  # released at each run's end


def test_a_failed_run_releases_its_clients_too(
    handed: list[tuple[str, str, Any]], write_runbook: Any
) -> None:
    path = write_runbook(RUNBOOK)
    run_id, status = _run(path, {"second": "nobody"})  # no such user: the second step fails
    assert status == "failed"
    assert {r for r, _, _ in handed} == {run_id}
    assert {step for _, step, _ in handed} == {"first", "second"}
    assert _kept(run_id) == []
