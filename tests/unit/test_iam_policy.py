"""clampdown iam-policy: least privilege from the actions' declarations, checked by parliament."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from parliament import analyze_policy_string, iam_definition
from typer.testing import CliRunner

from clampdown.app.cli import app
from clampdown.core.actions import Action, ActionInput, registry
from tests.paths import REPO

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


def test_an_unknown_value_is_passed_as_the_wildcard_star(write_runbook):
    """'{{ inputs.bucket }}' with no enum or pattern can be any bucket: the action builds
    its ARN from "*" (arn:aws:s3:::*); the user actions it cannot narrow stay on "*"."""
    document = generate(write_runbook, '"{{ inputs.bucket }}"')
    found = statements(document)
    assert found['"arn:aws:s3:::*"'] == [
        "s3:DeleteBucketPolicy",
        "s3:GetBucketPolicy",
        "s3:PutBucketPolicy",
    ]
    assert found['"*"'] == ["iam:ListAccessKeys", "iam:UpdateAccessKey"]


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


# --- narrowing by what inputs can be ------------------------------------------------------------

ROLE_ONLY = """apiVersion: clampdown/v1
kind: Runbook
metadata: {name: role-only, title: Role only}
inputs:
  role_arn: {type: string, required: true, pattern: '^arn:aws:iam::\\d{12}:role/.+$'}
steps:
  - id: revoke
    uses: aws.iam.revoke_credentials
    preapproved: test runbook
    with: {principal_arn: "{{ inputs.role_arn }}"}
  - id: trail
    uses: aws.evidence.snapshot_cloudtrail
    with: {principal_arn: "{{ inputs.role_arn }}"}
"""


def invoke(write_runbook, text: str, *args: str) -> tuple[dict[str, Any], str]:
    path = write_runbook(text)
    result = runner.invoke(app, ["iam-policy", str(path), *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), result.stderr


def actions_on(document: dict[str, Any]) -> dict[str, set[str]]:
    """IAM action -> every resource it is granted on."""
    found: dict[str, set[str]] = {}
    for statement in document["Statement"]:
        resources = statement["Resource"]
        for name in statement["Action"]:
            found.setdefault(name, set()).update(
                resources if isinstance(resources, list) else [resources]
            )
    return found


def findings(document: dict[str, Any]) -> list[str]:
    return [
        f.issue
        for f in analyze_policy_string(json.dumps(document)).findings
        if f.issue not in ACCEPTED
    ]


def test_a_role_only_runbook_gets_no_user_actions_and_role_actions_on_roles(
    write_runbook, monkeypatch
):
    monkeypatch.setenv("CLAMPDOWN_EVIDENCE_BUCKET", "ir-evidence")
    document, notes = invoke(write_runbook, ROLE_ONLY)
    granted = actions_on(document)
    assert not [a for a in granted if "AccessKey" in a or "LoginProfile" in a or "User" in a]
    assert granted["iam:PutRolePolicy"] == {"arn:aws:iam::*:role/*"}
    assert granted["iam:UpdateAssumeRolePolicy"] == {"arn:aws:iam::*:role/*"}
    # evidence: writes on the evidence bucket only; trail files read only under AWSLogs/
    assert granted["s3:PutObject"] == {"arn:aws:s3:::ir-evidence/incidents/*"}
    assert granted["s3:GetObject"] == {
        "arn:aws:s3:::ir-evidence/incidents/*",
        "arn:aws:s3:::*/AWSLogs/*",
    }
    # AWS requires "*" for these (no resource-level permissions): granted, and no note
    assert granted["cloudtrail:LookupEvents"] == {"*"}
    assert "snapshot_cloudtrail" not in notes
    assert findings(document) == []


def test_a_user_or_role_pattern_gives_per_kind_statements(write_runbook):
    text = ROLE_ONLY.replace(r"role/.+$", r"(user|role)/.+$")
    document, _ = invoke(write_runbook, text)
    granted = actions_on(document)
    assert granted["iam:UpdateAccessKey"] == {"arn:aws:iam::*:user/*"}
    assert granted["iam:PutRolePolicy"] == {"arn:aws:iam::*:role/*"}
    assert granted["iam:PutUserPolicy"] == {"arn:aws:iam::*:user/*"}
    statements_ = {json.dumps(s["Resource"]): s["Action"] for s in document["Statement"]}
    assert "iam:PutUserPolicy" not in statements_['"arn:aws:iam::*:role/*"']


def test_an_enum_input_gives_exactly_one_arn_per_value(write_runbook):
    text = """apiVersion: clampdown/v1
kind: Runbook
metadata: {name: enum-policy, title: Enum}
inputs:
  endpoint: {type: string, enum: [fraud-v3, Churn-V1], required: true}
steps:
  - id: freeze
    uses: aws.sagemaker.freeze_endpoint
    preapproved: test runbook
    with: {endpoint_name: "{{ inputs.endpoint }}", mode: drain, caller_roles: [app]}
"""
    document, _ = invoke(write_runbook, text)
    granted = actions_on(document)
    endpoints = {
        "arn:aws:sagemaker:*:*:endpoint/fraud-v3",
        "arn:aws:sagemaker:*:*:endpoint/churn-v1",
    }
    assert granted["sagemaker:DescribeEndpoint"] == endpoints
    assert granted["sagemaker:UpdateEndpointWeightsAndCapacities"] == endpoints
    assert granted["iam:PutRolePolicy"] == {"arn:aws:iam::*:role/app", "arn:aws:iam::*:role/*/app"}
    # no stand-in model and no API Gateway target: those calls are not granted at all
    assert "sagemaker:UpdateEndpoint" not in granted and "apigateway:PATCH" not in granted
    assert findings(document) == []


def test_a_pattern_inside_text_is_rendered_into_the_arn(write_runbook):
    text = """apiVersion: clampdown/v1
kind: Runbook
metadata: {name: text-policy, title: Text}
inputs:
  user: {type: string, required: true, pattern: '^ml-[a-z]+$'}
steps:
  - id: revoke
    uses: aws.iam.revoke_credentials
    preapproved: test runbook
    with: {principal_arn: "arn:aws:iam::123456789012:user/{{ inputs.user }}"}
"""
    document, _ = invoke(write_runbook, text)
    assert actions_on(document)["iam:UpdateAccessKey"] == {"arn:aws:iam::123456789012:user/ml-*"}


def test_an_input_without_pattern_falls_back_to_one_wildcard_per_kind_with_a_note(
    write_runbook,
):
    """revoke_credentials' principal_arn takes IAM user or role ARNs only (the generator
    probes its input model): a role_arn input with no pattern still gives per-kind ARNs."""
    text = ROLE_ONLY.replace(", pattern: '^arn:aws:iam::\\d{12}:role/.+$'", "")
    assert "pattern" not in text
    document, notes = invoke(write_runbook, text)
    granted = actions_on(document)
    assert granted["iam:UpdateAccessKey"] == {"arn:aws:iam::*:user/*"}
    assert granted["iam:PutRolePolicy"] == {"arn:aws:iam::*:role/*"}
    assert (
        "with.principal_arn is '{{ inputs.role_arn }}' and input role_arn has no enum or "
        "pattern clampdown can read (one wildcard per IAM kind)" in notes
    )


def test_a_field_that_takes_more_than_principals_falls_back_to_star_with_a_note(write_runbook):
    text = """apiVersion: clampdown/v1
kind: Runbook
metadata: {name: key-policy, title: Key}
inputs:
  key: {type: string, required: true}
steps:
  - id: rotate
    uses: aws.kms.rotate_key
    preapproved: test runbook
    with: {key_id: "{{ inputs.key }}"}
"""
    document, notes = invoke(write_runbook, text)
    assert actions_on(document)["kms:RotateKeyOnDemand"] == {"*"}
    assert "note: key-policy: step rotate (aws.kms.rotate_key): " in notes
    assert "input key has no enum or pattern clampdown can read" in notes


def test_no_library_runbook_grants_reading_objects_outside_evidence_and_trail_files(
    monkeypatch,
):
    monkeypatch.setenv("CLAMPDOWN_EVIDENCE_BUCKET", "ir-evidence")
    library = sorted(p for p in (REPO / "runbooks").glob("*.yaml") if p.stem != "triggers")
    result = runner.invoke(app, ["iam-policy", *map(str, library)])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    granted = actions_on(document)
    assert granted["s3:GetObject"] == {
        "arn:aws:s3:::ir-evidence/incidents/*",
        "arn:aws:s3:::*/AWSLogs/*",
    }
    assert "*" not in granted["s3:PutObject"]
    assert findings(document) == []
    # every action left on "*" either has no resource-level permissions in AWS, or a note
    resourceless = {
        f"{service['prefix']}:{p['privilege']}"
        for service in iam_definition
        for p in service["privileges"]
        if all(r["resource_type"] == "" for r in p["resource_types"])
    }
    starred = {a for a, resources in granted.items() if "*" in resources}
    unexplained = sorted(a for a in starred - resourceless if a not in result.stderr)
    assert unexplained == []


def test_read_only_policy_for_plan_live_reads_configuration_only(write_runbook, monkeypatch):
    monkeypatch.setenv("CLAMPDOWN_EVIDENCE_BUCKET", "ir-evidence")
    library = sorted(p for p in (REPO / "runbooks").glob("*.yaml") if p.stem != "triggers")
    result = runner.invoke(app, ["iam-policy", "--read-only", *map(str, library)])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    granted = actions_on(document)
    levels = {
        f"{service['prefix']}:{p['privilege']}": p["access_level"]
        for service in iam_definition
        for p in service["privileges"]
    }
    assert {a: levels[a] for a in granted if levels[a] not in ("Read", "List")} == {}
    for data in ("s3:GetObject", "secretsmanager:GetSecretValue", "cloudtrail:LookupEvents"):
        assert data not in granted
    assert "iam:GetRole" in granted and "sagemaker:DescribeEndpoint" in granted
    assert findings(document) == []


def test_deny_invoke_on_listed_suspects_gets_user_calls_on_users_and_role_calls_on_roles(
    write_runbook,
):
    text = """apiVersion: clampdown/v1
kind: Runbook
metadata: {name: invoke-policy, title: Invoke}
steps:
  - id: deny
    uses: aws.sagemaker.deny_invoke
    preapproved: test runbook
    with:
      endpoint_name: fraud-v3
      principals: ["arn:aws:iam::123456789012:user/mallory"]
"""
    document, _ = invoke(write_runbook, text)
    granted = actions_on(document)
    assert granted["iam:PutUserPolicy"] == {"arn:aws:iam::123456789012:user/mallory"}
    assert not [a for a in granted if "Role" in a]
    assert granted["sagemaker:DescribeEndpoint"] == {"arn:aws:sagemaker:*:*:endpoint/fraud-v3"}


def test_a_list_item_from_a_user_or_role_pattern_gives_both_kinds(write_runbook):
    text = """apiVersion: clampdown/v1
kind: Runbook
metadata: {name: list-policy, title: List}
inputs:
  suspect: {type: string, required: true, pattern: '^arn:aws:iam::\\d{12}:(user|role)/.+$'}
steps:
  - id: deny
    uses: aws.sagemaker.deny_invoke
    preapproved: test runbook
    with: {endpoint_name: fraud-v3, principals: ["{{ inputs.suspect }}"]}
"""
    document, notes = invoke(write_runbook, text)
    granted = actions_on(document)
    assert granted["iam:PutUserPolicy"] == {"arn:aws:iam::*:user/*"}
    assert granted["iam:PutRolePolicy"] == {"arn:aws:iam::*:role/*"}
    assert "deny_invoke" not in notes
