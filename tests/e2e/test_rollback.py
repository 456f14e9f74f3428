"""Rollback, evidence publishing and ledger verification, end to end on moto server.

The signed cases use moto's KMS (an ECC_NIST_P256 signing key) and an Object Lock
evidence bucket; the attacks are made as someone who can write CLAMPDOWN_HOME (or put
objects in the evidence bucket) would make them (tests/ledger_forgery.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import boto3
import pytest
from typer.testing import CliRunner

from clampdown.app.cli import app
from clampdown.core.actions import Action, ActionContext, ActionInput, ActionOutput, registry
from clampdown.core.ledger import read
from clampdown.core.settings import settings
from clampdown_aws.base import Aws, AwsAction
from tests.ledger_forgery import forge_undo, rewrite

pytestmark = pytest.mark.usefixtures("prefect_server")
runner = CliRunner()


class TagBucket(AwsAction):
    """Test-only containment: set a tag on a bucket, remembering the previous value."""

    name = "test.tag_bucket"
    destructive = True
    reversible = True
    calls: ClassVar[list[str]] = []

    class Input(ActionInput):
        bucket: str
        value: str

    class Output(ActionOutput):
        changed: bool

    def apply(self, params: Input, aws: Aws, ctx: ActionContext) -> Output:
        s3 = aws.client("s3")
        try:
            tags = {
                t["Key"]: t["Value"] for t in s3.get_bucket_tagging(Bucket=params.bucket)["TagSet"]
            }
        except s3.exceptions.ClientError:
            tags = {}
        if tags.get("state") == params.value:
            return self.Output(changed=False)
        ctx.record_undo(
            f"put back state={tags.get('state')} on {params.bucket}",
            op="retag",
            bucket=params.bucket,
            previous=tags.get("state"),
        )
        s3.put_bucket_tagging(
            Bucket=params.bucket, Tagging={"TagSet": [{"Key": "state", "Value": params.value}]}
        )
        return self.Output(changed=True)

    def undo(self, how: dict[str, Any], aws: Aws, ctx: ActionContext) -> None:
        self.calls.append(how["bucket"])
        s3 = aws.client("s3")
        if how["previous"] is None:
            s3.delete_bucket_tagging(Bucket=how["bucket"])
        else:
            s3.put_bucket_tagging(
                Bucket=how["bucket"],
                Tagging={"TagSet": [{"Key": "state", "Value": how["previous"]}]},
            )


registry().register(TagBucket)


class StopAws(Action):
    """Test-only step: AWS goes away here (the moto server the test put in ``servers`` is
    stopped), between the run's steps, whatever the machine's load."""

    name = "test.stop_aws"
    servers: ClassVar[list[Any]] = []

    class Input(ActionInput):
        pass

    class Output(ActionOutput):
        stopped: int

    def run(self, params: Input, ctx: ActionContext) -> Output:
        stopped = 0
        while self.servers:
            self.servers.pop().stop()
            stopped += 1
        return self.Output(stopped=stopped)


registry().register(StopAws)

RUNBOOK = """apiVersion: clampdown/v1
kind: Runbook
metadata: {name: tagger, title: Tagger}
steps:
  - {id: first, uses: test.tag_bucket, with: {bucket: models, value: frozen}}
  - {id: second, uses: test.tag_bucket, needs: [first], with: {bucket: models, value: quarantined}}
  - {id: evidence, uses: core.set_output, with: {note: kept}}
"""


def tag(s3: Any) -> str | None:
    try:
        return s3.get_bucket_tagging(Bucket="models")["TagSet"][0]["Value"]
    except s3.exceptions.ClientError:
        return None


def run(path: Any) -> str:
    """Run the runbook here as `clampdown run` does (its Prefect clients, and their one TLS
    context, shared: calling ``respond`` bare made Prefect build three clients a run)."""
    from clampdown.core.ledger import new_run_id
    from clampdown_flows.respond import run_in_process

    run_id = new_run_id()
    run_in_process(str(path), {}, run_id=run_id)
    return run_id


@pytest.fixture
def signed(aws_endpoint, monkeypatch) -> Any:
    """A KMS signing key and an Object Lock evidence bucket on moto server, configured."""
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="models")
    s3.put_bucket_tagging(
        Bucket="models", Tagging={"TagSet": [{"Key": "state", "Value": "serving"}]}
    )
    s3.create_bucket(Bucket="evidence", ObjectLockEnabledForBucket=True)
    kms = boto3.client("kms", region_name="us-east-1")
    key = kms.create_key(KeyUsage="SIGN_VERIFY", KeySpec="ECC_NIST_P256")["KeyMetadata"]
    monkeypatch.setenv("CLAMPDOWN_EVIDENCE_BUCKET", "evidence")
    monkeypatch.setenv("CLAMPDOWN_EVIDENCE_LOCK_MODE", "GOVERNANCE")  # moto buckets get cleaned
    monkeypatch.setenv("CLAMPDOWN_LEDGER_KMS_KEY_ID", key["KeyId"])
    return s3


def test_rollback_restores_in_reverse_order_and_keeps_evidence(signed, write_runbook):
    s3 = signed
    run_id = run(write_runbook(RUNBOOK))
    assert tag(s3) == "quarantined"

    checked = runner.invoke(app, ["verify", run_id])
    assert checked.exit_code == 0, checked.output
    assert "result   OK: intact, signed, anchored" in checked.output
    assert "S3 copy identical" in checked.output and "arn:aws:kms:" in checked.output

    uri = f"s3://evidence/incidents/{run_id}/manifest.json"
    verified = runner.invoke(app, ["verify", uri])
    assert verified.exit_code == 0, verified.output
    assert f"pinned   incidents/{run_id}/manifest.json version" in verified.output

    planned = runner.invoke(app, ["rollback", run_id, "--plan"])
    assert planned.exit_code == 0, planned.output
    assert planned.output.index("put back state=frozen") < planned.output.index(
        "put back state=serving"
    )
    assert '"op": "retag"' in planned.output and "ledger intact" in planned.output

    done = runner.invoke(app, ["rollback", run_id, "--yes"])
    assert done.exit_code == 0, done.output
    assert tag(s3) == "serving"
    rollback_id = done.output.split("ledger: ")[1].split()[0].split("/")[-2]
    records = read(settings().ledger_path(rollback_id))
    assert records[0]["rollback_of"] == run_id and records[0]["source"]["status"] == "intact"
    assert [r["status"] for r in records if r["type"] == "undo.end"] == ["succeeded", "succeeded"]
    assert all("sig" in r for r in records), "the rollback's own ledger is signed"
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="evidence")["Contents"]]
    assert f"incidents/{run_id}/ledger.jsonl" in keys, "rollback never deletes evidence"
    assert f"incidents/{rollback_id}/ledger.jsonl" in keys
    assert runner.invoke(app, ["verify", rollback_id]).exit_code == 0

    twice = runner.invoke(app, ["rollback", run_id, "--yes"])
    assert twice.exit_code == 1 and "already rolled back" in twice.output
    again = runner.invoke(app, ["rollback", run_id, "--yes", "--again"])
    assert again.exit_code == 0 and tag(s3) == "serving", "undo is idempotent"


def test_a_forged_undo_record_is_refused_and_the_refusal_recorded(signed, write_runbook):
    s3 = signed
    run_id = run(write_runbook(RUNBOOK))
    path = settings().ledger_path(run_id)
    # the disguise keeps the description; the chain is recomputed; nobody can re-sign
    rewrite(path, forge_undo("second", {"op": "retag", "bucket": "models", "previous": "OPEN"}))
    plan = runner.invoke(app, ["rollback", run_id, "--plan"])
    assert plan.exit_code == 1 and "TAMPERED at record" in plan.output
    done = runner.invoke(app, ["rollback", run_id, "--yes"])
    assert done.exit_code == 1 and "refusal recorded in" in done.output
    assert tag(s3) == "quarantined", "nothing was undone"
    refusal = done.output.split("refusal recorded in ")[1].split()[0]
    records = read(Path(refusal))
    assert [r["type"] for r in records] == ["run.start", "rollback.refused", "run.end"]
    assert "TAMPERED at record" in records[1]["reason"]
    verdict = runner.invoke(app, ["verify", run_id])
    assert verdict.exit_code == 1 and "TAMPERED at record" in verdict.output
    assert "S3 COPY DIFFERS" in verdict.output


def test_a_truncated_ledger_shows_against_the_signed_heads_in_s3(signed, write_runbook):
    run_id = run(write_runbook(RUNBOOK))
    path = settings().ledger_path(run_id)
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-3]))  # the last step's end and run.end gone
    result = runner.invoke(app, ["verify", run_id])
    assert result.exit_code == 1, result.output
    assert f"cut short after signed record {len(lines) - 4}" in result.output
    assert f"TRUNCATED: the evidence bucket holds signed record {len(lines) - 1} (run.end)" in (
        result.output
    )


def test_a_rewritten_run_start_fails_its_signature(signed, write_runbook):
    run_id = run(write_runbook(RUNBOOK))

    def edit(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        records[0]["run"]["trigger"] = {"type": "manual", "user": "someone-else"}
        return records

    rewrite(settings().ledger_path(run_id), edit)
    result = runner.invoke(app, ["verify", run_id])
    assert result.exit_code == 1
    assert "TAMPERED at record 0 (run.start): its signature does not verify" in result.output


def test_a_local_ledger_that_differs_from_its_s3_copy_is_reported(signed, write_runbook):
    s3 = signed
    run_id = run(write_runbook(RUNBOOK))
    key = f"incidents/{run_id}/ledger.jsonl"
    body = s3.get_object(Bucket="evidence", Key=key)["Body"].read()
    s3.put_object(Bucket="evidence", Key=key, Body=body.replace(b"frozen", b"thawed"))
    result = runner.invoke(app, ["verify", run_id])
    assert result.exit_code == 1
    assert "S3 COPY DIFFERS from the local ledger at record" in result.output
    s3.delete_objects(
        Bucket="evidence",
        Delete={
            "Objects": [
                {"Key": o["Key"]}
                for o in s3.list_objects_v2(Bucket="evidence", Prefix=f"incidents/{run_id}/")[
                    "Contents"
                ]
            ]
        },
    )
    gone = runner.invoke(app, ["verify", run_id])
    assert gone.exit_code == 1 and "S3 COPY MISSING" in gone.output


def test_a_forged_newer_manifest_version_is_not_trusted(signed, write_runbook):
    s3 = signed
    run_id = run(write_runbook(RUNBOOK))
    key = f"incidents/{run_id}/manifest.json"
    forged = {"run_prefix": "x", "algorithm": "sha256", "objects": []}
    s3.put_object(Bucket="evidence", Key=key, Body=json.dumps(forged).encode())
    result = runner.invoke(app, ["verify", f"s3://evidence/{key}"])
    assert result.exit_code == 1, result.output
    assert f"NEWER    {key} version" in result.output and "not trusted" in result.output
    assert "TAMPERED" in result.output


def test_rollback_refuses_a_tampered_ledger(aws_endpoint, write_runbook):
    boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="models")
    run_id = run(write_runbook(RUNBOOK))
    path = settings().ledger_path(run_id)
    path.write_bytes(path.read_bytes().replace(b"frozen", b"FROZEN", 1))
    result = runner.invoke(app, ["rollback", run_id, "--plan"])
    assert result.exit_code == 1
    assert "fails verification" in result.output and "altered" in result.output


def test_rollback_needs_confirmation_outside_a_terminal(aws_endpoint, write_runbook):
    boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="models")
    run_id = run(write_runbook(RUNBOOK))
    result = runner.invoke(app, ["rollback", run_id])
    assert result.exit_code == 1 and "confirmation needed" in result.output


def test_aws_going_away_mid_run_fails_cleanly_and_a_rerun_completes(
    aws_credentials, write_runbook, monkeypatch
):
    """AWS goes away between two steps (the run's own ``test.stop_aws`` step stops the moto
    server: a thread watching the ledger for a 1 s wait step could come too late on a
    loaded machine); the step after fails cleanly, and a rerun once AWS is back completes."""
    import socket

    from moto.server import ThreadedMotoServer

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="models")
    path = write_runbook("""apiVersion: clampdown/v1
kind: Runbook
metadata: {name: outage, title: Outage}
steps:
  - {id: first, uses: test.tag_bucket, with: {bucket: models, value: frozen}}
  - {id: outage, uses: test.stop_aws, needs: [first]}
  - {id: second, uses: test.tag_bucket, needs: [outage], with: {bucket: models, value: quarantined}}
""")
    from clampdown.core.ledger import new_run_id
    from clampdown_flows.respond import run_in_process

    run_id = new_run_id()
    ledger = settings().ledger_path(run_id)
    StopAws.servers[:] = [server]
    state = run_in_process(str(path), {}, run_id=run_id)
    assert state.is_failed()
    assert StopAws.servers == []  # the outage step stopped it
    first = next(r for r in read(ledger) if r["type"] == "step.end" and r["step"] == "first")
    assert first["status"] == "succeeded"  # AWS answered before it went away
    second = next(r for r in read(ledger) if r["type"] == "step.end" and r["step"] == "second")
    assert second["status"] == "failed" and "Could not connect" in second["error"]

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        rerun = run(path)
        final = read(settings().ledger_path(rerun))[-1]
        assert final["status"] == "succeeded" and tag(s3) == "quarantined"
    finally:
        server.stop()
