"""`clampdown iam-policy --read-only` covers every call `clampdown plan --live` makes.

Each library runbook is previewed on moto (in-process) against a seeded account while
every AWS call the actions make is recorded; each call's IAM action must be in the
read-only policy printed for that runbook, and none may be a write or a data read
(one known exception, said below).
"""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from typer.testing import CliRunner

from clampdown.app.cli import app
from clampdown_aws.base import _IAM_ACTION, Aws
from tests.integration.shared_models import shared_service_models  # noqa: F401 - autouse
from tests.paths import REPO

runner = CliRunner()
ACCOUNT = "123456789012"
USER = f"arn:aws:iam::{ACCOUNT}:user/mallory"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/ci"
# S3 and API Gateway name their IAM actions differently from their operations
_OPERATION_ACTION = {
    **{f"s3:{op}": action for op, action in _IAM_ACTION.items()},
    "s3:GetBucketReplication": "s3:GetReplicationConfiguration",
    "s3:GetPublicAccessBlock": "s3:GetBucketPublicAccessBlock",
}
PREVIEWS = {
    "contain-iam-user": [f"principal_arn={USER}"],
    "contain-role-session": [f"role_arn={ROLE}", "block_assume=true"],
    "contain-model-theft": [
        f"principal_arn={USER}",
        "bucket=models",
        "prefix=fraud/",
        f'allow_principals=["{ROLE}"]',
        "endpoint_name=fraud",
        "kms_key_id=alias/models",
        "secret_id=prod/inference",
    ],
    "preserve-evidence": [f"principal_arn={USER}", "endpoint_name=fraud", 'buckets=["models"]'],
    "lock-model-artifacts": ["bucket=models", "prefix=fraud/", f'allow_principals=["{ROLE}"]'],
    "rotate-model-secrets": ["kms_key_id=alias/models", "secret_id=prod/inference"],
    "contain-inference-extraction": ["endpoint_name=fraud", f'suspect_principals=["{ROLE}"]'],
}


def iam_action(service: str, operation: str) -> str:
    if service == "apigateway":
        return "apigateway:GET" if operation.startswith("Get") else "apigateway:PATCH"
    name = f"{service}:{operation}"
    return _OPERATION_ACTION.get(name, name)


@pytest.fixture
def seeded(mocked_aws: None, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A small account: user, role, model bucket, trail, evidence bucket, endpoint, key,
    secret. Returns the log of IAM actions behind every call an action's client makes."""
    monkeypatch.setenv("CLAMPDOWN_EVIDENCE_BUCKET", "evidence")
    iam = boto3.client("iam", region_name="us-east-1")
    iam.create_user(UserName="mallory")
    iam.create_role(RoleName="ci", AssumeRolePolicyDocument=json.dumps({"Statement": []}))
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="evidence", ObjectLockEnabledForBucket=True)
    s3.create_bucket(Bucket="models")
    s3.create_bucket(Bucket="trail")
    boto3.client("cloudtrail", region_name="us-east-1").create_trail(
        Name="main", S3BucketName="trail"
    )
    sm = boto3.client("sagemaker", region_name="us-east-1")
    sm.create_model(
        ModelName="fraud-model",
        ExecutionRoleArn=ROLE,
        PrimaryContainer={"Image": f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/fraud:1"},
    )
    sm.create_endpoint_config(
        EndpointConfigName="fraud-cfg",
        ProductionVariants=[
            {
                "VariantName": "main",
                "ModelName": "fraud-model",
                "InstanceType": "ml.m5.large",
                "InitialInstanceCount": 1,
            }
        ],
    )
    sm.create_endpoint(EndpointName="fraud", EndpointConfigName="fraud-cfg")
    kms = boto3.client("kms", region_name="us-east-1")
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName="alias/models", TargetKeyId=key)
    boto3.client("secretsmanager", region_name="us-east-1").create_secret(
        Name="prod/inference", SecretString="not-a-real-secret"
    )

    calls: list[str] = []
    original = Aws.client

    def client(self: Aws, service: str) -> Any:
        made = original(self, service)

        def record(model: Any, **_: Any) -> None:
            calls.append(iam_action(made.meta.service_model.signing_name, model.name))

        made.meta.events.register("before-call", record)
        return made

    monkeypatch.setattr(Aws, "client", client)
    return calls


@pytest.mark.parametrize("name", sorted(PREVIEWS))
def test_the_read_only_policy_covers_every_call_of_plan_live(seeded, name, write_runbook):
    path = REPO / "runbooks" / f"{name}.yaml"
    args = [x for pair in PREVIEWS[name] for x in ("-i", pair)]
    planned = runner.invoke(app, ["plan", str(path), "--live", *args])
    assert planned.exit_code == 0, planned.output
    assert seeded, f"plan --live of {name} made no AWS call:\n{planned.output}"

    result = runner.invoke(app, ["iam-policy", "--read-only", str(path)])
    assert result.exit_code == 0, result.output
    granted = {a for s in json.loads(result.stdout)["Statement"] for a in s["Action"]}
    missing = set(seeded) - granted
    # Left out by design: aws.secrets.rotate_secret's preview reads the secret's current
    # value (to foresee a refusal of a binary or odd JSON value); a read-only role must
    # not read secret values, so that one preview reports AccessDenied under this policy.
    assert sorted(missing - {"secretsmanager:GetSecretValue"}) == [], (
        f"plan --live called {sorted(missing)}, not in the read-only policy"
    )
    for data in ("s3:GetObject", "secretsmanager:GetSecretValue", "cloudtrail:LookupEvents"):
        assert data not in granted
