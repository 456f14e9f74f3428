"""Rollback and evidence publishing, end to end: respond on moto server, then rollback."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import boto3
import pytest
from typer.testing import CliRunner

from clampdown.app.cli import app
from clampdown.core.actions import ActionContext, ActionInput, ActionOutput, registry
from clampdown.core.ledger import read
from clampdown.core.settings import settings
from clampdown_aws.base import Aws, AwsAction

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
    from clampdown.core.ledger import new_run_id
    from clampdown_flows.respond import respond

    run_id = new_run_id()
    asyncio.run(respond(str(path), {}, run_id=run_id))
    return run_id


def test_rollback_restores_in_reverse_order_and_keeps_evidence(
    aws_endpoint, write_runbook, monkeypatch
):
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="models")
    s3.put_bucket_tagging(
        Bucket="models", Tagging={"TagSet": [{"Key": "state", "Value": "serving"}]}
    )
    s3.create_bucket(Bucket="evidence", ObjectLockEnabledForBucket=True)
    monkeypatch.setenv("CLAMPDOWN_EVIDENCE_BUCKET", "evidence")
    run_id = run(write_runbook(RUNBOOK))
    assert tag(s3) == "quarantined"

    uri = f"s3://evidence/incidents/{run_id}/manifest.json"
    verified = runner.invoke(app, ["verify", uri])
    assert verified.exit_code == 0, verified.output
    assert f"incidents/{run_id}/ledger.jsonl" in verified.output

    planned = runner.invoke(app, ["rollback", run_id, "--plan"])
    assert planned.exit_code == 0, planned.output
    assert planned.output.index("put back state=frozen") < planned.output.index(
        "put back state=serving"
    )

    done = runner.invoke(app, ["rollback", run_id, "--yes"])
    assert done.exit_code == 0, done.output
    assert tag(s3) == "serving"
    rollback_ledger = settings().ledger_path(
        done.output.split("ledger: ")[1].split()[0].split("/")[-2]
    )
    records = read(rollback_ledger)
    assert records[0]["rollback_of"] == run_id
    assert [r["status"] for r in records if r["type"] == "undo.end"] == ["succeeded", "succeeded"]
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="evidence")["Contents"]]
    assert f"incidents/{run_id}/ledger.jsonl" in keys, "rollback never deletes evidence"

    twice = runner.invoke(app, ["rollback", run_id, "--yes"])
    assert twice.exit_code == 1 and "already rolled back" in twice.output
    again = runner.invoke(app, ["rollback", run_id, "--yes", "--again"])
    assert again.exit_code == 0 and tag(s3) == "serving", "undo is idempotent"


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


def test_verify_reports_a_changed_evidence_object(aws_endpoint, write_runbook, monkeypatch):
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="models")
    s3.create_bucket(Bucket="evidence")
    monkeypatch.setenv("CLAMPDOWN_EVIDENCE_BUCKET", "evidence")
    run_id = run(write_runbook(RUNBOOK))
    s3.put_object(Bucket="evidence", Key=f"incidents/{run_id}/ledger.jsonl", Body=b"{}")
    result = runner.invoke(app, ["verify", f"s3://evidence/incidents/{run_id}/manifest.json"])
    assert result.exit_code == 1
    assert (
        f"CHANGED  incidents/{run_id}/ledger.jsonl" in result.output and "TAMPERED" in result.output
    )


def test_aws_going_away_mid_run_fails_cleanly_and_a_rerun_completes(
    aws_credentials, write_runbook, monkeypatch
):
    import socket
    import threading
    import time

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
  - {id: pause, uses: core.wait, needs: [first], with: {duration: 1s}}
  - {id: second, uses: test.tag_bucket, needs: [pause], with: {bucket: models, value: quarantined}}
""")
    from clampdown.core.ledger import new_run_id
    from clampdown_flows.respond import respond

    run_id = new_run_id()
    ledger = settings().ledger_path(run_id)

    def stop_during_pause() -> None:
        for _ in range(200):
            if ledger.exists() and b'"step": "pause"' in ledger.read_bytes():
                server.stop()
                return
            time.sleep(0.05)

    stopper = threading.Thread(target=stop_during_pause)
    stopper.start()
    state = asyncio.run(respond(str(path), {}, run_id=run_id, return_state=True))
    stopper.join()
    assert state.is_failed()
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
