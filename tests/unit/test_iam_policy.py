"""clampdown iam-policy: least privilege from the actions' declarations, checked by parliament."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from parliament import analyze_policy_string
from typer.testing import CliRunner

from clampdown.app.cli import app
from clampdown.core.actions import Action, ActionInput, registry

runner = CliRunner()
# parliament findings a containment engine accepts by design: actions whose resources are
# only known at run time get "*", and locking artifacts means rewriting a bucket policy
# (which parliament rightly notes could grant object access). Anything else is a bug.
ACCEPTED = {"RESOURCE_STAR", "RESOURCE_POLICY_PRIVILEGE_ESCALATION"}


class Quarantine(Action):
    name = "test.quarantine_bucket"
    iam_actions = ("s3:GetBucketPolicy", "s3:PutBucketPolicy", "s3:DeleteBucketPolicy")

    class Input(ActionInput):
        bucket: str

    @classmethod
    def iam_resources(cls, with_: Mapping[str, Any]) -> dict[str, list[str]]:
        if "bucket" not in with_:
            return {}
        arn = f"arn:aws:s3:::{with_['bucket']}"
        return {name: [arn] for name in cls.iam_actions}


class Revoke(Action):
    name = "test.revoke_keys"
    iam_actions = ("iam:ListAccessKeys", "iam:UpdateAccessKey")

    class Input(ActionInput):
        user: str


registry().register(Quarantine)
registry().register(Revoke)

RUNBOOK = """apiVersion: clampdown/v1
kind: Runbook
metadata: {{name: policy-test, title: Policy test}}
inputs:
  bucket: {{type: string, default: other}}
steps:
  - {{id: lock, uses: test.quarantine_bucket, with: {{bucket: {bucket}}}}}
  - {{id: revoke, uses: test.revoke_keys, account: "arn:aws:iam::210987654321:role/responder",
     with: {{user: mallory}}}}
"""


def generate(write_runbook, bucket: str, *env: str) -> dict[str, Any]:
    path = write_runbook(RUNBOOK.format(bucket=bucket))
    result = runner.invoke(app, ["iam-policy", str(path)])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def statements(document: dict[str, Any]) -> dict[str, Any]:
    return {json.dumps(s["Resource"]): sorted(s["Action"]) for s in document["Statement"]}


def test_literal_values_narrow_resources_and_roles_add_assume_role(write_runbook):
    document = generate(write_runbook, "models-prod")
    assert statements(document) == {
        '"arn:aws:iam::210987654321:role/responder"': ["sts:AssumeRole"],
        '"arn:aws:s3:::models-prod"': [
            "s3:DeleteBucketPolicy",
            "s3:GetBucketPolicy",
            "s3:PutBucketPolicy",
        ],
        '"*"': ["iam:ListAccessKeys", "iam:UpdateAccessKey"],
    }
    findings = analyze_policy_string(json.dumps(document)).findings
    assert [f.issue for f in findings if f.issue not in ACCEPTED] == []


def test_expression_values_fall_back_to_star_for_that_action_only(write_runbook):
    document = generate(write_runbook, '"{{ inputs.bucket }}"')
    assert statements(document)['"*"'] == [
        "iam:ListAccessKeys",
        "iam:UpdateAccessKey",
        "s3:DeleteBucketPolicy",
        "s3:GetBucketPolicy",
        "s3:PutBucketPolicy",
    ]


def test_evidence_bucket_adds_the_engine_s3_calls(write_runbook, monkeypatch):
    monkeypatch.setenv("CLAMPDOWN_EVIDENCE_BUCKET", "ir-evidence")
    document = generate(write_runbook, "models-prod")
    found = statements(document)
    assert found['"arn:aws:s3:::ir-evidence/incidents/*"'] == [
        "s3:GetObject",
        "s3:PutObject",
        "s3:PutObjectRetention",
    ]
    assert found['"arn:aws:s3:::ir-evidence"'] == [
        "s3:GetBucketObjectLockConfiguration",
        "s3:ListBucket",
    ]
    findings = analyze_policy_string(json.dumps(document)).findings
    assert [f.issue for f in findings if f.issue not in ACCEPTED] == []


def test_every_installed_action_declares_iam_actions_that_exist():
    loaded, broken = registry().load_all()
    assert broken == []
    declared = sorted({name for action in loaded for name in action.iam_actions})
    document = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": declared or ["s3:ListBucket"], "Resource": "*"}
        ],
    }
    findings = analyze_policy_string(json.dumps(document)).findings
    assert [(f.issue, f.detail) for f in findings if f.issue.startswith("UNKNOWN")] == []


def test_aws_actions_narrow_to_literal_arns(write_runbook):
    path = write_runbook("""apiVersion: clampdown/v1
kind: Runbook
metadata: {name: narrow, title: Narrow}
steps:
  - id: revoke
    uses: aws.iam.revoke_credentials
    preapproved: test runbook, literal values only
    with: {principal_arn: "arn:aws:iam::123456789012:user/mallory"}
  - id: key
    uses: aws.kms.rotate_key
    preapproved: test runbook, literal values only
    with: {key_id: "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"}
  - id: lock
    uses: aws.s3.lock_model_artifacts
    preapproved: test runbook, literal values only
    with: {bucket: models, prefix: fraud/, allow_principals: ["arn:aws:iam::123456789012:role/serving"]}
""")
    result = runner.invoke(app, ["iam-policy", str(path)])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    by_resource = statements(document)
    assert "iam:UpdateAccessKey" in by_resource['"arn:aws:iam::123456789012:user/mallory"']
    assert (
        "kms:RotateKeyOnDemand"
        in by_resource[
            '"arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"'
        ]
    )
    assert "s3:PutBucketPolicy" in by_resource['"arn:aws:s3:::models"']
    assert "iam:UpdateAccessKey" not in by_resource.get('"*"', [])
    assert not [a for s in document["Statement"] for a in s["Action"] if "Role" in a], (
        "a user's containment needs no role permissions"
    )
    findings = analyze_policy_string(json.dumps(document)).findings
    assert [f.issue for f in findings if f.issue not in ACCEPTED] == []
