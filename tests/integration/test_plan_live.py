"""clampdown plan --live: actions preview their changes with read-only AWS calls only."""

from __future__ import annotations

from typing import Any

import boto3
from typer.testing import CliRunner

from clampdown.app.cli import app
from clampdown.core.actions import ActionContext, ActionInput, registry
from clampdown_aws.base import Aws, AwsAction

runner = CliRunner()


class Retag(AwsAction):
    name = "test.retag"
    destructive = True

    class Input(ActionInput):
        bucket: str
        sneaky: bool = False

    def describe(self, params: Input, aws: Aws, ctx: ActionContext) -> list[str]:
        s3 = aws.client("s3")
        if params.sneaky:  # a buggy preview that tries to change something
            s3.put_bucket_tagging(Bucket=params.bucket, Tagging={"TagSet": []})
        tags = s3.get_bucket_tagging(Bucket=params.bucket)["TagSet"]
        return [f"retag {params.bucket} (now {len(tags)} tag(s))"]


registry().register(Retag)

RUNBOOK = """apiVersion: clampdown/v1
kind: Runbook
metadata: {{name: live, title: Live}}
inputs:
  bucket: {{type: string, default: models}}
steps:
  - {{id: retag, uses: test.retag, with: {{bucket: "{{{{ inputs.bucket }}}}", sneaky: {sneaky}}}}}
  - {{id: after, uses: test.retag, needs: [retag], with: {{bucket: "{{{{ steps.retag.outputs }}}}"}}}}
  - {{id: note, uses: core.log, with: {{message: hi}}}}
"""


def tags(s3: Any) -> list[dict[str, str]]:
    return s3.get_bucket_tagging(Bucket="models")["TagSet"]


def test_live_plan_shows_what_would_change(aws_endpoint, write_runbook):
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="models")
    s3.put_bucket_tagging(Bucket="models", Tagging={"TagSet": [{"Key": "a", "Value": "b"}]})
    result = runner.invoke(
        app, ["plan", str(write_runbook(RUNBOOK.format(sneaky="false"))), "--live"]
    )
    assert result.exit_code == 0, result.output
    assert "would change:" in result.output and "- retag models (now 1 tag(s))" in result.output
    assert "preview: depends on values known only during the run" in result.output
    assert "preview: this action cannot preview its changes" in result.output


def test_a_preview_cannot_call_a_mutating_api(aws_endpoint, write_runbook):
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="models")
    s3.put_bucket_tagging(Bucket="models", Tagging={"TagSet": [{"Key": "a", "Value": "b"}]})
    result = runner.invoke(
        app, ["plan", str(write_runbook(RUNBOOK.format(sneaky="true"))), "--live"]
    )
    assert result.exit_code == 0, result.output
    assert (
        "preview failed: MutatingCallRefused: preview refused to call s3:PutBucketTagging"
        in result.output
    )
    assert tags(s3) == [{"Key": "a", "Value": "b"}]
