"""``CLAMPDOWN_DRILL=true`` on the command line: a run it starts is a drill in its record,
and its evidence is locked as a drill's; resume and rollback keep to what the run's record
says, whatever the next process's ``CLAMPDOWN_DRILL``. Also: a ledger KMS key with no AWS
region is an error, not a traceback, for ``clampdown run`` and for a run's flow.

The evidence lock mode is read where the run's flow builds its evidence sinks (the
respond flow's ``evidence_sinks``, watched here): no bucket is needed to see it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from clampdown.app.cli import app
from clampdown.core.ledger import read
from clampdown.core.settings import Settings

runner = CliRunner()
FAST = ["-i", "settle_time=1ms"]


@pytest.fixture
def lock_modes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The evidence lock mode of each run's settings, as its flow builds its sinks."""
    import clampdown_flows.respond as respond

    seen: list[str] = []

    def sinks(conf: Settings) -> list[Any]:
        seen.append(conf.evidence_lock_mode)
        return []

    monkeypatch.setattr(respond, "evidence_sinks", sinks)
    return seen


def started(output: str) -> tuple[str, Path]:
    """The run id and ledger a ``run`` printed."""
    ledger = Path(output.split("ledger: ")[1].split()[0])
    return ledger.parent.name, ledger


def stopped_after_start(ledger: Path) -> None:
    """What a process killed just after ``run.start`` leaves: that record alone."""
    ledger.write_bytes(ledger.read_bytes().splitlines(keepends=True)[0])


def signing_keys(ledger: Path) -> set[str]:
    return {r["sig"]["key_id"] for r in read(ledger) if isinstance(r.get("sig"), dict)}


@pytest.mark.usefixtures("prefect_server")
def test_a_run_with_clampdown_drill_set_is_a_drill_and_stays_one_when_resumed(
    clampdown_home: Path, monkeypatch: pytest.MonkeyPatch, lock_modes: list[str]
) -> None:
    monkeypatch.setenv("CLAMPDOWN_DRILL", "true")
    result = runner.invoke(app, ["run", "engine-self-check", *FAST])
    assert result.exit_code == 0, result.output
    assert "(a drill: CLAMPDOWN_DRILL is set)" in result.output
    run_id, ledger = started(result.output)
    assert read(ledger)[0]["run"]["drill"] is True
    start = json.loads((ledger.parent / "start.json").read_text())
    assert start["drill"] is True
    assert lock_modes == ["GOVERNANCE"]  # locked as a drill's, and recorded as one
    drill_key = signing_keys(ledger)
    assert len(drill_key) == 1 and next(iter(drill_key)).startswith("ed25519:")

    # its process died after run.start; the next one has no CLAMPDOWN_DRILL
    stopped_after_start(ledger)
    monkeypatch.delenv("CLAMPDOWN_DRILL")
    resumed = runner.invoke(app, ["resume", run_id])
    assert resumed.exit_code == 0, resumed.output
    assert f"run {run_id} of engine-self-check (a drill) — resuming" in resumed.output
    records = read(ledger)
    assert [r["type"] for r in records].count("run.resumed") == 1
    assert records[-1]["type"] == "run.end" and records[-1]["status"] == "succeeded"
    assert lock_modes[-1] == "GOVERNANCE"  # the run's flag, not this process's
    assert signing_keys(ledger) == drill_key  # checked and signed with the drill's key

    refused = runner.invoke(app, ["rollback", run_id, "--plan"])
    assert refused.exit_code == 1
    assert f"run '{run_id}' is a drill and CLAMPDOWN_DRILL is not set" in refused.output
    assert f"CLAMPDOWN_DRILL=true clampdown rollback {run_id}" in refused.output
    monkeypatch.setenv("CLAMPDOWN_DRILL", "true")
    plan = runner.invoke(app, ["rollback", run_id, "--plan"])
    assert plan.exit_code == 0, plan.output
    assert "ledger intact" in plan.output


@pytest.mark.usefixtures("prefect_server")
def test_a_real_run_resumed_by_a_drills_process_keeps_its_evidence_undeletable(
    clampdown_home: Path, monkeypatch: pytest.MonkeyPatch, lock_modes: list[str]
) -> None:
    monkeypatch.delenv("CLAMPDOWN_DRILL", raising=False)
    result = runner.invoke(app, ["run", "engine-self-check", *FAST])
    assert result.exit_code == 0, result.output
    run_id, ledger = started(result.output)
    assert read(ledger)[0]["run"]["drill"] is False and lock_modes == ["COMPLIANCE"]

    stopped_after_start(ledger)
    monkeypatch.setenv("CLAMPDOWN_DRILL", "true")
    resumed = runner.invoke(app, ["resume", run_id])
    assert resumed.exit_code == 0, resumed.output
    assert "(a drill)" not in resumed.output
    assert read(ledger)[-1]["status"] == "succeeded"
    assert lock_modes[-1] == "COMPLIANCE"
    assert signing_keys(ledger) == set()  # unsigned as it began, no drill key picked up

    refused = runner.invoke(app, ["rollback", run_id, "--plan"])
    assert refused.exit_code == 1
    assert f"run '{run_id}' is not a drill but CLAMPDOWN_DRILL is set" in refused.output


@pytest.fixture
def no_aws_region(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A KMS ledger key configured, and no AWS region anywhere (no endpoint is reached)."""
    import boto3

    for name in ("AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance metadata asked
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # a session made now, not cached
    monkeypatch.setenv("CLAMPDOWN_LEDGER_KMS_KEY_ID", "alias/x")


@pytest.mark.usefixtures("prefect_server", "no_aws_region")
def test_run_with_a_kms_key_and_no_region_is_an_error_before_anything_runs(
    clampdown_home: Path,
) -> None:
    result = runner.invoke(app, ["run", "engine-self-check", *FAST])
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)  # not botocore's NoRegionError
    assert (
        "error: CLAMPDOWN_LEDGER_KMS_KEY_ID alias/x: cannot make a KMS client: "
        "You must specify a region." in result.output
    )
    assert "hint: set AWS_REGION (or AWS_DEFAULT_REGION) to the key's region" in result.output
    assert not list((clampdown_home / "runs").glob("*/ledger.jsonl"))


@pytest.mark.usefixtures("prefect_server", "no_aws_region")
def test_a_runs_flow_with_a_kms_key_and_no_region_fails_saying_what_to_set(
    clampdown_home: Path,
) -> None:
    """What serve's runs (and a worker's) do: the flow fails with the same message."""
    from clampdown_flows.respond import run_in_process

    state = run_in_process("engine-self-check", {}, run_id="kmsnoregion01")
    assert state.is_failed()
    assert "CLAMPDOWN_LEDGER_KMS_KEY_ID alias/x: cannot make a KMS client" in str(state.message)
