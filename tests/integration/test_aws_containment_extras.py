"""aws.iam.block_assume_role, aws.sagemaker.deny_invoke, aws.evidence.snapshot_config,
and core.rollback_run's refusals: in-process moto and moto server."""

from __future__ import annotations

import json

import boto3
import pytest

from clampdown.core.actions import ActionContext
from clampdown.core.diagnostics import ClampdownError
from clampdown.core.settings import settings
from clampdown_aws.base import AwsActionError
from clampdown_aws.evidence_config import SnapshotConfig
from clampdown_aws.iam import BlockAssumeRole
from clampdown_aws.sagemaker_invoke import DenyInvoke

ACCOUNT = "123456789012"
TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "ec2.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ],
}


@pytest.fixture(params=["in_process", "server"])
def aws(request):
    request.getfixturevalue("mocked_aws" if request.param == "in_process" else "aws_endpoint")
    return request.param


def ctx() -> ActionContext:
    return ActionContext(
        run_id="run1",
        step_id="step",
        runbook="t",
        home=settings().paths,
        region="us-east-1",
    )


def trust_of(iam, role="ci"):
    return iam.get_role(RoleName=role)["Role"]["AssumeRolePolicyDocument"]


def test_block_assume_role_merges_widens_and_restores_exactly(aws):
    iam = boto3.client("iam", region_name="us-east-1")
    arn = iam.create_role(RoleName="ci", AssumeRolePolicyDocument=json.dumps(TRUST))["Role"]["Arn"]
    action, first = BlockAssumeRole(), ctx()
    out = action.run(BlockAssumeRole.Input(role_arn=arn, principals=["111122223333"]), first)
    assert out.changed and out.denied == ["111122223333"]
    statements = trust_of(iam)["Statement"]
    assert statements[0] == TRUST["Statement"][0]
    assert statements[1]["Effect"] == "Deny" and statements[1]["Principal"] == {
        "AWS": ["111122223333"]
    }
    same = ctx()
    assert not action.run(
        BlockAssumeRole.Input(role_arn=arn, principals=["111122223333"]), same
    ).changed
    assert same.undo == []
    wider = ctx()
    out = action.run(BlockAssumeRole.Input(role_arn=arn), wider)
    assert out.denied == "*" and trust_of(iam)["Statement"][1]["Principal"] == "*"
    for record in [*reversed(wider.undo), *reversed(first.undo)]:  # newest first
        action.rollback(record, ctx())
    assert trust_of(iam) == TRUST


def test_block_assume_role_refuses_a_user_and_bad_principals():
    with pytest.raises(ValueError, match="not an IAM role ARN"):
        BlockAssumeRole.Input(role_arn=f"arn:aws:iam::{ACCOUNT}:user/alice")
    with pytest.raises(ValueError, match="not a principal a trust policy can name"):
        BlockAssumeRole.Input(role_arn=f"arn:aws:iam::{ACCOUNT}:role/ci", principals=["mallory"])


def seed_endpoint(name="fraud"):
    sm = boto3.client("sagemaker", region_name="us-east-1")
    iam = boto3.client("iam", region_name="us-east-1")
    role = iam.create_role(RoleName="sm-exec", AssumeRolePolicyDocument=json.dumps(TRUST))["Role"]
    sm.create_model(
        ModelName="fraud-v3",
        ExecutionRoleArn=role["Arn"],
        PrimaryContainer={"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/m:1"},
    )
    sm.create_endpoint_config(
        EndpointConfigName="fraud-config",
        ProductionVariants=[
            {
                "VariantName": "main",
                "ModelName": "fraud-v3",
                "InitialInstanceCount": 1,
                "InstanceType": "ml.m5.large",
            }
        ],
    )
    return sm.create_endpoint(EndpointName=name, EndpointConfigName="fraud-config")["EndpointArn"]


def test_deny_invoke_denies_suspects_only_and_rolls_back(aws):
    iam = boto3.client("iam", region_name="us-east-1")
    endpoint_arn = seed_endpoint()
    user = iam.create_user(UserName="mallory")["User"]["Arn"]
    app = iam.create_role(RoleName="app", AssumeRolePolicyDocument=json.dumps(TRUST))["Role"]["Arn"]
    action, first = DenyInvoke(), ctx()
    out = action.run(
        DenyInvoke.Input(endpoint_name="fraud", principals=[user], app_roles=[app]), first
    )
    assert out.changed and out.denied == [user]
    document = iam.get_user_policy(UserName="mallory", PolicyName=out.policy_name)["PolicyDocument"]
    assert document["Statement"][0]["Resource"] == endpoint_arn
    assert document["Statement"][0]["Effect"] == "Deny"
    assert iam.list_role_policies(RoleName="app")["PolicyNames"] == []
    again = ctx()
    assert not action.run(DenyInvoke.Input(endpoint_name="fraud", principals=[user]), again).changed
    action.rollback(first.undo[0], ctx())
    action.rollback(first.undo[0], ctx())
    assert iam.list_user_policies(UserName="mallory")["PolicyNames"] == []


def test_deny_invoke_refuses_an_app_role_before_any_change(mocked_aws):
    iam = boto3.client("iam", region_name="us-east-1")
    seed_endpoint()
    app = iam.create_role(RoleName="app", AssumeRolePolicyDocument=json.dumps(TRUST))["Role"]["Arn"]
    with pytest.raises(AwsActionError, match="one of the app's roles"):
        DenyInvoke().run(
            DenyInvoke.Input(endpoint_name="fraud", principals=[app], app_roles=[app]), ctx()
        )
    assert iam.list_role_policies(RoleName="app")["PolicyNames"] == []


def test_snapshot_config_writes_descriptions_and_reports_gaps(aws, monkeypatch):
    s3 = boto3.client("s3", region_name="us-east-1")
    iam = boto3.client("iam", region_name="us-east-1")
    s3.create_bucket(Bucket="evidence")
    s3.create_bucket(Bucket="models")
    s3.put_bucket_policy(
        Bucket="models",
        Policy=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": "*",
                        "Action": "s3:GetObject",
                        "Resource": "arn:aws:s3:::models/*",
                    }
                ],
            }
        ),
    )
    seed_endpoint()
    user = iam.create_user(UserName="mallory")["User"]["Arn"]
    iam.put_user_policy(
        UserName="mallory",
        PolicyName="p",
        PolicyDocument=json.dumps(
            TRUST | {"Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
        ),
    )
    iam.create_access_key(UserName="mallory")
    monkeypatch.setenv("CLAMPDOWN_EVIDENCE_BUCKET", "evidence")
    out = SnapshotConfig().run(
        SnapshotConfig.Input(endpoint_name="fraud", buckets=["models"], principal_arn=user), ctx()
    )
    keys = sorted(o.key.split("/config/")[1] for o in out.objects)
    assert keys == ["iam/user-mallory.json", "s3/models.json", "sagemaker/fraud.json"]

    def body(name: str) -> dict:
        key = f"incidents/run1/step/config/{name}"
        return json.loads(s3.get_object(Bucket="evidence", Key=key)["Body"].read())

    assert body("s3/models.json")["policy"]["Policy"]["Statement"][0]["Principal"] == "*"
    assert "fraud-v3" in body("sagemaker/fraud.json")["models"]
    suspect = body("iam/user-mallory.json")
    assert list(suspect["inline_policies"]) == ["p"]
    assert "SecretAccessKey" not in json.dumps(suspect)
    assert out.manifest_uri == "s3://evidence/incidents/run1/manifest.json"


def test_snapshot_config_needs_something_to_describe():
    with pytest.raises(ValueError, match="give at least one"):
        SnapshotConfig.Input(principal_arn="None", buckets=[""])


def test_rollback_run_refuses_unknown_and_unfinished_runs(clampdown_home):
    from clampdown.core.ledger import Ledger
    from clampdown.core.undo import RollbackRun

    action = RollbackRun()
    with pytest.raises(ClampdownError, match="no run 'nosuchrun'"):
        action.run(RollbackRun.Input(run_id="nosuchrun"), ctx())
    ledger = Ledger(settings().ledger_path("halfway"))
    ledger.append("run.start", run={"id": "halfway"})
    ledger.close()
    with pytest.raises(ClampdownError, match="has not finished"):
        action.run(RollbackRun.Input(run_id="halfway"), ctx())
    with pytest.raises(ClampdownError, match="cannot roll itself back"):
        action.run(RollbackRun.Input(run_id="run1"), ctx())
