"""aws.s3.lock_model_artifacts and aws.sagemaker.freeze_endpoint on moto.

Every scenario runs in-process (``mock_aws``) and against the moto server. Where
moto lacks an API (SageMaker UpdateEndpoint; API Gateway's ``remove`` of a method
setting) the path runs on botocore's Stubber, and the test name says so. Faults
(throttling, AccessDenied) are injected with a ``before-send`` hook: the canned
HTTP response goes through the real client's retry and error parsing.
"""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.parsers import create_parser
from botocore.stub import Stubber
from moto.iam.access_control import PermissionResult
from moto.s3.models import FakeBucket

from clampdown_aws import base, s3_legal_holds, sagemaker_endpoint
from clampdown_aws.base import Aws, AwsAccessDenied, AwsActionError
from clampdown_aws.s3 import LockModelArtifacts, statement_sid
from clampdown_aws.s3_legal_holds import ObjectLockNotEnabled
from clampdown_aws.sagemaker import FreezeEndpoint
from tests.integration.shared_models import shared_service_models  # noqa: F401 - autouse

ACCOUNT = "123456789012"
BUCKET = "model-artifacts"
PREFIX = "models/fraud-v3/"
BREAK_GLASS = f"arn:aws:iam::{ACCOUNT}:role/breakglass"
SERVING = f"arn:aws:iam::{ACCOUNT}:role/serving/model-server"
MOTO_ENGINE = f"arn:aws:sts::{ACCOUNT}:user/moto"  # moto's identity for static keys


def _no_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    """No real sleeping while retrying or polling (every session shares one botocore data
    loader: tests/integration/shared_models.py)."""
    monkeypatch.setattr(sagemaker_endpoint, "POLL_SECONDS", 0.0)
    monkeypatch.setattr(
        "botocore.retries.standard.ExponentialBackoff.delay_amount", lambda self, ctx: 0
    )
    monkeypatch.setattr(base, "_assumed", {})


@pytest.fixture(params=["inprocess", "server"])
def aws(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Main scenarios: moto in-process and the moto server; no real sleeping."""
    request.getfixturevalue("mocked_aws" if request.param == "inprocess" else "aws_endpoint")
    _no_waiting(monkeypatch)
    return request.param


@pytest.fixture
def aws1(mocked_aws: None, monkeypatch: pytest.MonkeyPatch) -> str:
    """Edge cases and faults: moto in-process only (the HTTP path is the same botocore)."""
    _no_waiting(monkeypatch)
    return "inprocess"


def rollback(action: Any, ctx: Any) -> None:
    """What `clampdown rollback` does: the ledger's undo records, newest first."""
    for record in reversed(ctx.undo):
        how = json.loads(json.dumps(record))  # records must survive the JSON ledger
        how.pop("description")
        action.rollback(how, ctx)


class _Raw(io.BytesIO):
    def stream(self, **_: Any):
        yield self.read()


def inject(monkeypatch: pytest.MonkeyPatch, event: str, responses: list[tuple]) -> list[str]:
    """The next len(responses) HTTP sends of ``event`` (e.g. 's3.PutBucketPolicy') get
    these canned (status, headers, body) answers, through the client's retry handling;
    later sends go through. Returns a log of every send of that operation. (In-process,
    moto sees every send too: use it for idempotent calls.)"""
    original = Aws.client
    sent: list[str] = []

    def client(self: Aws, service: str) -> Any:
        made = original(self, service)

        def handler(request: Any, **_: Any) -> AWSResponse | None:
            sent.append(request.url)
            if responses:
                status, headers, body = responses.pop(0)
                return AWSResponse(request.url, status, headers, _Raw(body.encode()))
            return None

        made.meta.events.register_first(f"before-send.{event}", handler)
        return made

    monkeypatch.setattr(Aws, "client", client)
    return sent


def refuse(monkeypatch: pytest.MonkeyPatch, event: str, status: int, body: str) -> None:
    """Every call of ``event`` fails with this HTTP error, parsed by botocore's own parser
    for the service's protocol, and never reaches moto."""
    original = Aws.client

    def client(self: Aws, service: str) -> Any:
        made = original(self, service)

        def handler(model: Any, **_: Any) -> tuple[AWSResponse, dict[str, Any]]:
            parser = create_parser(model.metadata["protocol"])
            raw = {"status_code": status, "headers": {}, "body": body.encode()}
            parsed = parser.parse(raw, model.output_shape)
            return AWSResponse("https://refused.invalid", status, {}, _Raw(b"")), parsed

        made.meta.events.register_first(f"before-call.{event}", handler)
        return made

    monkeypatch.setattr(Aws, "client", client)


# =========================================================================================
# aws.s3.lock_model_artifacts
# =========================================================================================

UNRELATED = {
    "Sid": "AllowAnalyticsRead",
    "Effect": "Allow",
    "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:role/analytics"},
    "Action": "s3:GetObject",
    "Resource": f"arn:aws:s3:::{BUCKET}/reports/*",
}
# formatted the way a human wrote it: rollback must give back these exact bytes
ORIGINAL_POLICY = (
    '{\n  "Version": "2012-10-17",\n  "Id": "team-policy",\n'
    f'  "Statement": [ {json.dumps(UNRELATED)} ]\n}}'
)


def _s3() -> Any:
    return boto3.client("s3", region_name="us-east-1")


def _policy(client: Any) -> str | None:
    try:
        return client.get_bucket_policy(Bucket=BUCKET)["Policy"]
    except client.exceptions.ClientError as exc:
        assert exc.response["Error"]["Code"] == "NoSuchBucketPolicy"
        return None


def _lock(**overrides: Any) -> Any:
    values = {"bucket": BUCKET, "prefix": PREFIX, "allow_principals": [BREAK_GLASS, SERVING]}
    return LockModelArtifacts.Input(**{**values, **overrides})


def test_lock_merges_one_deny_statement_then_noop_then_rollback_restores_bytes(aws, action_ctx):
    client = _s3()
    client.create_bucket(Bucket=BUCKET)
    client.put_bucket_policy(Bucket=BUCKET, Policy=ORIGINAL_POLICY)

    out = LockModelArtifacts().run(_lock(), action_ctx)

    sid = statement_sid(PREFIX)
    assert out.statement_sid == sid and sid.startswith("ClampdownLockModelArtifacts-")
    assert out.policy_changed and out.changed and out.legal_holds_set == 0
    assert out.exempt_principals == [BREAK_GLASS, SERVING, MOTO_ENGINE]
    document = json.loads(_policy(client))
    assert document["Version"] == "2012-10-17" and document["Id"] == "team-policy"
    assert document["Statement"][0] == UNRELATED  # unrelated statement kept as it was
    assert document["Statement"][1] == {
        "Sid": sid,
        "Effect": "Deny",
        "Principal": "*",
        "Action": [
            "s3:GetObject",
            "s3:GetObjectVersion",
            "s3:PutObject",
            "s3:DeleteObject",
            "s3:DeleteObjectVersion",
            "s3:PutBucketPolicy",
            "s3:DeleteBucketPolicy",
            "s3:PutReplicationConfiguration",
            "s3:PutLifecycleConfiguration",
        ],
        "Resource": [f"arn:aws:s3:::{BUCKET}/{PREFIX}*", f"arn:aws:s3:::{BUCKET}"],
        "Condition": {"ArnNotLike": {"aws:PrincipalArn": [BREAK_GLASS, SERVING, MOTO_ENGINE]}},
    }
    assert len(document["Statement"]) == 2
    assert [r["op"] for r in action_ctx.undo] == ["restore_bucket_policy"]

    locked = _policy(client)
    again = LockModelArtifacts().run(_lock(), action_ctx)
    assert not again.changed and not again.policy_changed
    assert len(action_ctx.undo) == 1 and _policy(client) == locked

    rollback(LockModelArtifacts(), action_ctx)
    assert _policy(client) == ORIGINAL_POLICY
    rollback(LockModelArtifacts(), action_ctx)  # a second rollback changes nothing
    assert _policy(client) == ORIGINAL_POLICY


def test_lock_without_prior_policy_rollback_leaves_no_policy(aws, action_ctx):
    client = _s3()
    client.create_bucket(Bucket=BUCKET)
    out = LockModelArtifacts().run(_lock(allow_principals=[BREAK_GLASS]), action_ctx)
    document = json.loads(_policy(client))
    assert out.changed and [s["Sid"] for s in document["Statement"]] == [out.statement_sid]
    assert action_ctx.undo[0]["policy_before"] is None
    rollback(LockModelArtifacts(), action_ctx)
    assert _policy(client) is None


def test_lock_statement_replaced_when_allow_list_changes(aws1, action_ctx):
    client = _s3()
    client.create_bucket(Bucket=BUCKET)
    LockModelArtifacts().run(_lock(allow_principals=[BREAK_GLASS]), action_ctx)
    after_first = _policy(client)
    out = LockModelArtifacts().run(_lock(), action_ctx)  # SERVING added
    document = json.loads(_policy(client))
    assert out.policy_changed and len(document["Statement"]) == 1
    assert SERVING in document["Statement"][0]["Condition"]["ArnNotLike"]["aws:PrincipalArn"]
    # rollback of the second change alone gives back the first lock, then no policy
    LockModelArtifacts().rollback({**action_ctx.undo[1]}, action_ctx)
    assert _policy(client) == after_first
    LockModelArtifacts().rollback({**action_ctx.undo[0]}, action_ctx)
    assert _policy(client) is None


def test_rollback_after_someone_else_changed_policy_removes_only_our_statement(aws1, action_ctx):
    client = _s3()
    client.create_bucket(Bucket=BUCKET)
    client.put_bucket_policy(Bucket=BUCKET, Policy=ORIGINAL_POLICY)
    LockModelArtifacts().run(_lock(), action_ctx)
    document = json.loads(_policy(client))
    added = {**UNRELATED, "Sid": "AddedDuringIncident", "Resource": f"arn:aws:s3:::{BUCKET}/x/*"}
    document["Statement"].append(added)
    client.put_bucket_policy(Bucket=BUCKET, Policy=json.dumps(document))

    rollback(LockModelArtifacts(), action_ctx)
    statements = json.loads(_policy(client))["Statement"]
    assert [s["Sid"] for s in statements] == ["AllowAnalyticsRead", "AddedDuringIncident"]


def test_engine_assumed_role_is_exempted_by_role_arn(aws1, action_ctx):
    client = _s3()
    client.create_bucket(Bucket=BUCKET)
    boto3.client("iam", region_name="us-east-1").create_role(
        RoleName="clampdown-engine", Path="/ir/", AssumeRolePolicyDocument="{}"
    )
    action_ctx.account = f"arn:aws:iam::{ACCOUNT}:role/ir/clampdown-engine"
    out = LockModelArtifacts().run(_lock(allow_principals=[BREAK_GLASS]), action_ctx)
    # aws:PrincipalArn of an assumed role is the role ARN, path included; the identity
    # shows no path, so both spellings are exempt (role names are unique in an account)
    assert out.exempt_principals == [
        BREAK_GLASS,
        f"arn:aws:iam::{ACCOUNT}:role/clampdown-engine",
        f"arn:aws:iam::{ACCOUNT}:role/*/clampdown-engine",
    ]


def _versions(client: Any, prefix: str) -> list[tuple[str, str]]:
    listed = client.list_object_versions(Bucket=BUCKET, Prefix=prefix).get("Versions", [])
    return sorted((v["Key"], v["VersionId"]) for v in listed)


def _hold(client: Any, key: str, version: str) -> str | None:
    held = client.get_object_legal_hold(Bucket=BUCKET, Key=key, VersionId=version)
    return held.get("LegalHold", {}).get("Status")


def test_legal_hold_on_every_version_and_rollback_releases_only_ours(aws, action_ctx, monkeypatch):
    monkeypatch.setattr(s3_legal_holds, "HOLD_CHUNK", 2)  # several undo records
    monkeypatch.setattr(s3_legal_holds, "LIST_PAGE_SIZE", 3)  # several ListObjectVersions pages
    client = _s3()
    client.create_bucket(Bucket=BUCKET, ObjectLockEnabledForBucket=True)
    for key in ("model.safetensors", "tokenizer.json", "config.json"):
        for body in (b"v1", b"v2"):
            client.put_object(Bucket=BUCKET, Key=PREFIX + key, Body=body)
    client.put_object(Bucket=BUCKET, Key="models/other/model.bin", Body=b"x")
    ours = _versions(client, PREFIX)
    legal_key, legal_version = ours[0]  # legal placed this hold before the incident
    client.put_object_legal_hold(
        Bucket=BUCKET, Key=legal_key, VersionId=legal_version, LegalHold={"Status": "ON"}
    )

    out = LockModelArtifacts().run(_lock(legal_hold=True), action_ctx)

    assert len(ours) == 6 and out.legal_holds_set == 5 and out.changed
    # moto checks a bucket policy without the caller's identity, so there the lock also
    # denies GetObjectLegalHold to the engine and this test; AWS exempts them
    # (aws:PrincipalArn). Reads after the lock run with AWS's outcome.
    aws_semantics = monkeypatch.context()
    with aws_semantics as patch:
        patch.setattr(FakeBucket, "get_permission", lambda *_: PermissionResult.NEUTRAL)
        assert all(_hold(client, k, v) == "ON" for k, v in ours)
        other = _versions(client, "models/other/")
        assert _hold(client, *other[0]) in (None, "OFF")
        again = LockModelArtifacts().run(_lock(legal_hold=True), action_ctx)
    assert again.legal_holds_set == 0 and not again.changed
    records = [r for r in action_ctx.undo if r["op"] == "release_legal_holds"]
    recorded = sorted((PREFIX + k, v) for r in records for k, v in r["versions"])
    assert recorded == [kv for kv in ours if kv != (legal_key, legal_version)]
    assert all(len(r["versions"]) <= 2 for r in records)  # keys relative to the prefix
    assert all(not k.startswith(PREFIX) for r in records for k, _ in r["versions"])

    rollback(LockModelArtifacts(), action_ctx)  # unpatched: works on moto as in drills
    assert _policy(client) is None
    assert _hold(client, legal_key, legal_version) == "ON"  # not ours: kept
    assert all(
        _hold(client, k, v) == "OFF" for k, v in ours if k != legal_key or v != legal_version
    )
    assert _policy(client) is None


def test_legal_hold_without_object_lock_fails_before_any_change(aws1, action_ctx):
    client = _s3()
    client.create_bucket(Bucket=BUCKET)
    client.put_bucket_policy(Bucket=BUCKET, Policy=ORIGINAL_POLICY)
    with pytest.raises(ObjectLockNotEnabled) as caught:
        LockModelArtifacts().run(_lock(legal_hold=True), action_ctx)
    assert f"bucket {BUCKET} has no S3 Object Lock" in str(caught.value)
    assert "nothing was changed" in str(caught.value)
    assert _policy(client) == ORIGINAL_POLICY and action_ctx.undo == []


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("prefix", "models/*", "no wildcards"),
        ("prefix", "", "at least 1 character"),
        ("allow_principals", ["breakglass"], "not IAM principal ARNs: breakglass"),
        ("allow_principals", [], "at least 1 item"),
        ("bucket", "Bad_Bucket", "is not an S3 bucket name"),
    ],
)
def test_lock_input_errors(field, value, message):
    with pytest.raises(ValueError, match=message):
        _lock(**{field: value})


def test_list_items_written_as_expressions_pass_lint_validation():
    """`clampdown lint` validates literal with: values; a list item that is still an
    expression is checked once rendered, at run time."""
    assert _lock(allow_principals=["{{ inputs.serving_role }}"]).allow_principals
    assert FreezeEndpoint.Input(endpoint_name=ENDPOINT, caller_roles=["{{ inputs.role }}"])


def test_lock_access_denied_names_action_and_principal(aws1, action_ctx, monkeypatch):
    client = _s3()
    client.create_bucket(Bucket=BUCKET)
    who = f"arn:aws:sts::{ACCOUNT}:assumed-role/engine/clampdown-testrun0001"
    text = (
        f"User: {who} is not authorized to perform: s3:PutBucketPolicy on resource: "
        f'"arn:aws:s3:::{BUCKET}" because no identity-based policy allows the '
        "s3:PutBucketPolicy action"
    )
    body = f"<Error><Code>AccessDenied</Code><Message>{text}</Message></Error>"
    refuse(monkeypatch, "s3.PutBucketPolicy", 403, body)
    with pytest.raises(AwsAccessDenied) as caught:
        LockModelArtifacts().run(_lock(), action_ctx)
    assert f"{who} may not call s3:PutBucketPolicy" in str(caught.value)
    assert _policy(client) is None and action_ctx.undo == []


def test_lock_put_bucket_policy_throttled_five_times_is_retried(aws, action_ctx, monkeypatch):
    client = _s3()
    client.create_bucket(Bucket=BUCKET)
    slow = (503, {}, "<Error><Code>SlowDown</Code><Message>Reduce your rate</Message></Error>")
    # 5 throttles: more than botocore's default attempts, fewer than the engine's 8
    sent = inject(monkeypatch, "s3.PutBucketPolicy", [slow] * 5)
    out = LockModelArtifacts().run(_lock(), action_ctx)
    assert out.policy_changed and len(sent) == 6
    assert json.loads(_policy(client))["Statement"][0]["Sid"] == out.statement_sid


def test_lock_iam_resources_narrow_to_bucket_and_prefix():
    narrowed = LockModelArtifacts.iam_resources({"bucket": BUCKET, "prefix": PREFIX})
    assert narrowed["s3:PutBucketPolicy"] == [f"arn:aws:s3:::{BUCKET}"]
    assert narrowed["s3:PutObjectLegalHold"] == [f"arn:aws:s3:::{BUCKET}/{PREFIX}*"]
    assert LockModelArtifacts.iam_resources({"bucket": "{{ inputs.bucket }}"}) == {}
    assert set(narrowed) <= set(LockModelArtifacts.iam_actions)


# =========================================================================================
# aws.sagemaker.freeze_endpoint
# =========================================================================================

ENDPOINT = "fraud-v3"
APP_ROLE = f"arn:aws:iam::{ACCOUNT}:role/apps/fraud-scorer"
BATCH_ROLE = "batch-scorer"  # given by name
POLICY_NAME = f"clampdown-freeze-{ENDPOINT}"
UNRELATED_ROLE_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}],
}


def _endpoint_setup() -> dict[str, Any]:
    sm = boto3.client("sagemaker", region_name="us-east-1")
    iam = boto3.client("iam", region_name="us-east-1")
    sm.create_model(
        ModelName="fraud-model",
        ExecutionRoleArn=f"arn:aws:iam::{ACCOUNT}:role/sm-exec",
        PrimaryContainer={"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/fraud:3"},
    )
    variant = {"ModelName": "fraud-model", "InstanceType": "ml.m5.large"}
    sm.create_endpoint_config(
        EndpointConfigName="fraud-v3-cfg",
        ProductionVariants=[
            {
                **variant,
                "VariantName": "blue",
                "InitialInstanceCount": 2,
                "InitialVariantWeight": 0.7,
            },
            {
                **variant,
                "VariantName": "green",
                "InitialInstanceCount": 1,
                "InitialVariantWeight": 0.3,
            },
        ],
    )
    sm.create_endpoint(EndpointName=ENDPOINT, EndpointConfigName="fraud-v3-cfg")
    iam.create_role(RoleName="fraud-scorer", Path="/apps/", AssumeRolePolicyDocument="{}")
    iam.create_role(RoleName=BATCH_ROLE, AssumeRolePolicyDocument="{}")
    iam.put_role_policy(
        RoleName=BATCH_ROLE, PolicyName="own", PolicyDocument=json.dumps(UNRELATED_ROLE_POLICY)
    )
    return {"sm": sm, "iam": iam, "apigw": boto3.client("apigateway", region_name="us-east-1")}


def _variants(sm: Any) -> dict[str, tuple]:
    described = sm.describe_endpoint(EndpointName=ENDPOINT)["ProductionVariants"]
    return {v["VariantName"]: (v["DesiredWeight"], v["DesiredInstanceCount"]) for v in described}


def _inline(iam: Any, role: str) -> dict[str, Any]:
    names = iam.list_role_policies(RoleName=role)["PolicyNames"]
    return {n: iam.get_role_policy(RoleName=role, PolicyName=n)["PolicyDocument"] for n in names}


def _stage(apigw: Any) -> tuple[str, str]:
    api = apigw.create_rest_api(name="fraud-api")["id"]
    root = apigw.get_resources(restApiId=api)["items"][0]["id"]
    apigw.put_method(restApiId=api, resourceId=root, httpMethod="POST", authorizationType="NONE")
    apigw.put_integration(restApiId=api, resourceId=root, httpMethod="POST", type="MOCK")
    deployment = apigw.create_deployment(restApiId=api)["id"]
    apigw.create_stage(restApiId=api, stageName="prod", deploymentId=deployment)
    return api, "prod"


def _throttling(apigw: Any, api: str) -> dict[str, tuple]:
    settings = apigw.get_stage(restApiId=api, stageName="prod").get("methodSettings", {})
    return {
        k: (v.get("throttlingRateLimit"), v.get("throttlingBurstLimit"))
        for k, v in settings.items()
    }


def _freeze(**overrides: Any) -> Any:
    values = {"endpoint_name": ENDPOINT, "caller_roles": [APP_ROLE, BATCH_ROLE]}
    return FreezeEndpoint.Input(**{**values, **overrides})


def test_freeze_denies_roles_zeroes_weights_throttles_stage_then_noop_then_rollback(
    aws, action_ctx
):
    c = _endpoint_setup()
    api, stage = _stage(c["apigw"])
    c["apigw"].update_stage(  # the team's own limits, and a per-method override
        restApiId=api,
        stageName=stage,
        patchOperations=[
            {"op": "replace", "path": "/*/*/throttling/rateLimit", "value": "100"},
            {"op": "replace", "path": "/*/*/throttling/burstLimit", "value": "50"},
            {"op": "replace", "path": "/~1/POST/throttling/rateLimit", "value": "500"},
            {"op": "replace", "path": "/~1/POST/throttling/burstLimit", "value": "250"},
        ],
    )
    throttling_before = _throttling(c["apigw"], api)
    endpoint_arn = c["sm"].describe_endpoint(EndpointName=ENDPOINT)["EndpointArn"]

    out = FreezeEndpoint().run(
        _freeze(mode="drain", api_gateway={"rest_api_id": api, "stage_name": stage}),
        action_ctx,
    )

    assert out.changed and out.endpoint_arn == endpoint_arn
    before = out.description_before
    json.dumps(before)  # JSON-safe for the evidence trail
    assert before["endpoint"]["EndpointConfigName"] == "fraud-v3-cfg"
    assert before["endpoint"]["ProductionVariants"][0]["CurrentWeight"] == 0.7
    assert isinstance(before["endpoint"]["CreationTime"], str)
    assert before["endpoint_config"]["ProductionVariants"][1]["VariantName"] == "green"
    assert out.denied_roles == [APP_ROLE, f"arn:aws:iam::{ACCOUNT}:role/{BATCH_ROLE}"]
    # moto has no SimulatePrincipalPolicy: the deny is checked by its exact document
    deny = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ClampdownFreezeEndpoint",
                "Effect": "Deny",
                "Action": [
                    "sagemaker:InvokeEndpoint",
                    "sagemaker:InvokeEndpointAsync",
                    "sagemaker:InvokeEndpointWithResponseStream",
                ],
                "Resource": endpoint_arn,
            }
        ],
    }
    assert _inline(c["iam"], "fraud-scorer") == {POLICY_NAME: deny}
    assert _inline(c["iam"], BATCH_ROLE) == {"own": UNRELATED_ROLE_POLICY, POLICY_NAME: deny}
    assert out.weights_zeroed == ["blue", "green"]
    assert _variants(c["sm"]) == {"blue": (0.0, 2), "green": (0.0, 1)}  # capacity kept
    assert _throttling(c["apigw"], api) == {"*/*": (0.0, 0), "~1/POST": (0.0, 0)}
    assert out.api_gateway_change == f"stage {api}/prod throttled to 0 requests/s (*/*, ~1/POST)"
    assert out.config_switched_to is None
    ops = [r["op"] for r in action_ctx.undo]
    assert ops == [
        "restore_role_policy",
        "restore_role_policy",
        "restore_stage_throttling",
        "restore_weights",
    ]

    again = FreezeEndpoint().run(
        _freeze(mode="drain", api_gateway={"rest_api_id": api, "stage_name": stage}),
        action_ctx,
    )
    assert not again.changed and len(action_ctx.undo) == 4
    assert again.denied_roles == out.denied_roles and again.weights_zeroed == ["blue", "green"]

    rollback(FreezeEndpoint(), action_ctx)
    assert _inline(c["iam"], "fraud-scorer") == {}
    assert _inline(c["iam"], BATCH_ROLE) == {"own": UNRELATED_ROLE_POLICY}
    assert _variants(c["sm"]) == {"blue": (0.7, 2), "green": (0.3, 1)}
    assert _throttling(c["apigw"], api) == throttling_before
    rollback(FreezeEndpoint(), action_ctx)  # idempotent
    assert _variants(c["sm"]) == {"blue": (0.7, 2), "green": (0.3, 1)}
    assert _inline(c["iam"], BATCH_ROLE) == {"own": UNRELATED_ROLE_POLICY}


def test_freeze_disables_api_key_and_rollback_enables_it(aws, action_ctx):
    c = _endpoint_setup()
    api, stage = _stage(c["apigw"])
    key = c["apigw"].create_api_key(name="partner", enabled=True)["id"]
    target = {"rest_api_id": api, "stage_name": stage, "api_key_id": key}
    out = FreezeEndpoint().run(_freeze(caller_roles=[], api_gateway=target), action_ctx)
    assert out.changed and out.api_gateway_change == f"API key {key} disabled"
    assert c["apigw"].get_api_key(apiKey=key)["enabled"] is False
    assert out.denied_roles == [] and _throttling(c["apigw"], api) == {}  # stage untouched
    assert "value" not in json.dumps(action_ctx.undo)  # never the key's secret
    assert (
        not FreezeEndpoint().run(_freeze(caller_roles=[], api_gateway=target), action_ctx).changed
    )
    rollback(FreezeEndpoint(), action_ctx)
    assert c["apigw"].get_api_key(apiKey=key)["enabled"] is True


def test_freeze_restores_a_previous_policy_of_the_same_name(aws1, action_ctx):
    c = _endpoint_setup()
    stale = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Deny", "Action": "s3:*", "Resource": "*"}],
    }
    c["iam"].put_role_policy(
        RoleName=BATCH_ROLE, PolicyName=POLICY_NAME, PolicyDocument=json.dumps(stale)
    )
    FreezeEndpoint().run(_freeze(caller_roles=[BATCH_ROLE]), action_ctx)
    assert (
        _inline(c["iam"], BATCH_ROLE)[POLICY_NAME]["Statement"][0]["Sid"]
        == "ClampdownFreezeEndpoint"
    )
    rollback(FreezeEndpoint(), action_ctx)
    assert _inline(c["iam"], BATCH_ROLE) == {"own": UNRELATED_ROLE_POLICY, POLICY_NAME: stale}


def test_freeze_role_in_other_account_fails_before_any_change(aws1, action_ctx):
    c = _endpoint_setup()
    other = "arn:aws:iam::999999999999:role/fraud-scorer"
    with pytest.raises(AwsActionError) as caught:
        FreezeEndpoint().run(_freeze(caller_roles=[BATCH_ROLE, other]), action_ctx)
    assert f"role {other} is in account 999999999999 but endpoint {ENDPOINT}" in str(caught.value)
    assert _inline(c["iam"], BATCH_ROLE) == {"own": UNRELATED_ROLE_POLICY}
    assert action_ctx.undo == []


def test_freeze_missing_role_fails_before_any_change(aws1, action_ctx):
    c = _endpoint_setup()
    with pytest.raises(AwsActionError) as caught:
        FreezeEndpoint().run(_freeze(caller_roles=[BATCH_ROLE, "no-such-role"]), action_ctx)
    assert "GetRole failed: NoSuchEntity" in str(caught.value)
    assert "no-such-role" in str(caught.value)
    assert _inline(c["iam"], BATCH_ROLE) == {"own": UNRELATED_ROLE_POLICY}
    assert action_ctx.undo == []


def test_freeze_unknown_endpoint_message(aws1, action_ctx):
    with pytest.raises(AwsActionError, match=r"DescribeEndpoint failed: .*Could not find endpoint"):
        FreezeEndpoint().run(_freeze(endpoint_name="nope"), action_ctx)


def test_freeze_access_denied_names_action_and_principal(aws1, action_ctx, monkeypatch):
    c = _endpoint_setup()
    who = f"arn:aws:sts::{ACCOUNT}:assumed-role/engine/clampdown-testrun0001"
    text = (
        f"User: {who} is not authorized to perform: iam:PutRolePolicy on resource: role "
        f"{BATCH_ROLE} because no identity-based policy allows the iam:PutRolePolicy action"
    )
    body = (
        '<ErrorResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/"><Error>'
        f"<Type>Sender</Type><Code>AccessDenied</Code><Message>{text}</Message></Error>"
        "<RequestId>r1</RequestId></ErrorResponse>"
    )
    refuse(monkeypatch, "iam.PutRolePolicy", 403, body)
    with pytest.raises(AwsAccessDenied) as caught:
        FreezeEndpoint().run(_freeze(caller_roles=[BATCH_ROLE]), action_ctx)
    assert f"{who} may not call iam:PutRolePolicy" in str(caught.value)
    assert _inline(c["iam"], BATCH_ROLE) == {"own": UNRELATED_ROLE_POLICY}


def test_freeze_describe_endpoint_throttled_five_times_is_retried(aws, action_ctx, monkeypatch):
    _endpoint_setup()
    throttled = (
        400,
        {"Content-Type": "application/x-amz-json-1.1"},
        '{"__type": "ThrottlingException", "message": "Rate exceeded"}',
    )
    sent = inject(monkeypatch, "sagemaker.DescribeEndpoint", [throttled] * 5)
    out = FreezeEndpoint().run(_freeze(caller_roles=[BATCH_ROLE]), action_ctx)
    assert out.changed and len(sent) == 6


def test_freeze_needs_at_least_one_measure():
    with pytest.raises(ValueError, match="nothing would be frozen: mode deny_callers with no"):
        FreezeEndpoint.Input(endpoint_name=ENDPOINT, caller_roles=[])
    with pytest.raises(ValueError, match="nothing would be frozen"):
        FreezeEndpoint.Input(endpoint_name=ENDPOINT)
    with pytest.raises(ValueError, match="standin_model change the endpoint itself: set mode"):
        FreezeEndpoint.Input(endpoint_name=ENDPOINT, caller_roles=["a"], standin_model="m")
    with pytest.raises(ValueError, match="Input should be 'deny_callers' or 'drain'"):
        FreezeEndpoint.Input(endpoint_name=ENDPOINT, caller_roles=["a"], mode="freeze")
    assert FreezeEndpoint.Input(endpoint_name=ENDPOINT, mode="drain").caller_roles == []
    with pytest.raises(ValueError, match="not IAM role ARNs or names: arn:aws:iam::1:user/x"):
        FreezeEndpoint.Input(endpoint_name=ENDPOINT, caller_roles=["arn:aws:iam::1:user/x"])


def test_freeze_iam_resources():
    narrowed = FreezeEndpoint.iam_resources(
        {"endpoint_name": "Fraud-V3", "caller_roles": [APP_ROLE, BATCH_ROLE]}
    )
    assert narrowed["sagemaker:DescribeEndpoint"] == ["arn:aws:sagemaker:*:*:endpoint/fraud-v3"]
    assert narrowed["iam:PutRolePolicy"] == [
        APP_ROLE,
        f"arn:aws:iam::*:role/{BATCH_ROLE}",
        f"arn:aws:iam::*:role/*/{BATCH_ROLE}",
    ]
    assert "iam:PutRolePolicy" not in FreezeEndpoint.iam_resources(
        {"endpoint_name": ENDPOINT, "caller_roles": ["{{ inputs.role }}"]}
    )
    assert set(narrowed) <= set(FreezeEndpoint.iam_actions)


def test_freeze_deny_callers_says_the_endpoint_still_serves_everyone_else(aws, action_ctx, caplog):
    c = _endpoint_setup()
    with caplog.at_level("INFO", logger="clampdown.action"):
        out = FreezeEndpoint().run(_freeze(), action_ctx)
    assert (
        f"endpoint {ENDPOINT} (mode deny_callers): denied {APP_ROLE}, "
        f"arn:aws:iam::{ACCOUNT}:role/{BATCH_ROLE}; still serves every caller except"
    ) in caplog.text
    assert out.mode == "deny_callers" and out.changed
    assert out.still_serves == (
        "every caller except the 2 denied role(s): the endpoint stays InService at its "
        "weights (mode deny_callers is not a freeze)"
    )
    assert _variants(c["sm"]) == {"blue": (0.7, 2), "green": (0.3, 1)}  # untouched
    assert out.weights_zeroed == [] and out.config_switched_to is None
    assert "frozen" not in FreezeEndpoint.Output.model_fields
    rollback(FreezeEndpoint(), action_ctx)
    assert _inline(c["iam"], "fraud-scorer") == {}


def test_freeze_drain_zeroes_every_weight_and_says_targetvariant_still_reaches(aws, action_ctx):
    c = _endpoint_setup()
    out = FreezeEndpoint().run(_freeze(caller_roles=[], mode="drain"), action_ctx)
    assert out.mode == "drain" and out.weights_zeroed == ["blue", "green"]
    assert _variants(c["sm"]) == {"blue": (0.0, 2), "green": (0.0, 1)}
    assert out.still_serves.startswith(
        "callers that name a variant with TargetVariant, except no role (none was denied)"
    )
    assert "use standin_model to take the model off the endpoint" in out.still_serves
    rollback(FreezeEndpoint(), action_ctx)
    assert _variants(c["sm"]) == {"blue": (0.7, 2), "green": (0.3, 1)}


def _emulate_update_endpoint(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """moto 5.2 lacks UpdateEndpoint: answer it by switching moto's endpoint to the config
    (its variants, weights and counts), as AWS does once the update completes."""
    from moto.sagemaker.models import sagemaker_backends

    original = Aws.client
    switched: list[str] = []

    def update_endpoint(params: dict[str, Any], **_: Any) -> tuple[Any, dict[str, Any]]:
        body = json.loads(params["body"])
        backend = sagemaker_backends[ACCOUNT]["us-east-1"]
        endpoint = backend.endpoints[body["EndpointName"]]
        config = backend.endpoint_configs[body["EndpointConfigName"]]
        endpoint.endpoint_config_name = config.endpoint_config_name
        endpoint.production_variants = endpoint._process_production_variants(
            config.production_variants
        )
        for variant, wanted in zip(
            endpoint.production_variants, config.production_variants, strict=True
        ):  # moto drops a weight of 0.0 (falsy) here; AWS reports it
            weight = float(wanted.get("InitialVariantWeight", 1.0))
            variant["CurrentWeight"] = variant["DesiredWeight"] = weight
        switched.append(config.endpoint_config_name)
        return AWSResponse("", 200, {}, None), {"EndpointArn": endpoint.arn}

    def client(self: Aws, service: str) -> Any:
        made = original(self, service)
        if service == "sagemaker":
            made.meta.events.register("before-call.sagemaker.UpdateEndpoint", update_endpoint)
        return made

    monkeypatch.setattr(Aws, "client", client)
    return switched


def test_freeze_drain_with_a_standin_model_takes_the_model_off_then_rollback_puts_it_back(
    aws1, action_ctx, monkeypatch
):
    """CreateEndpointConfig and UpdateEndpointWeightsAndCapacities on moto; UpdateEndpoint
    (not in moto 5.2) emulated on moto's own endpoint state."""
    c = _endpoint_setup()
    switched = _emulate_update_endpoint(monkeypatch)
    c["sm"].create_model(
        ModelName="maintenance",
        ExecutionRoleArn=f"arn:aws:iam::{ACCOUNT}:role/sm-exec",
        PrimaryContainer={"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/503:1"},
    )
    blocked = "fraud-v3-cfg-clampdown-blocked"
    params = _freeze(caller_roles=[APP_ROLE], mode="drain", standin_model="maintenance")

    out = FreezeEndpoint().run(params, action_ctx)

    assert switched == [blocked] and out.config_switched_to == blocked
    described = c["sm"].describe_endpoint(EndpointName=ENDPOINT)
    assert described["EndpointConfigName"] == blocked
    config = c["sm"].describe_endpoint_config(EndpointConfigName=blocked)
    assert {v["ModelName"] for v in config["ProductionVariants"]} == {"maintenance"}
    assert {v["InitialInstanceCount"] for v in config["ProductionVariants"]} == {1}
    assert out.standin_model == "maintenance" and out.denied_roles == [APP_ROLE]
    assert out.still_serves == (
        "no caller reaches model(s) fraud-model: every variant serves the stand-in model "
        "maintenance at weight 0"
    )
    assert [r["op"] for r in action_ctx.undo] == [
        "restore_role_policy",
        "restore_weights",
        "restore_endpoint_config",
    ]
    again = FreezeEndpoint().run(params, action_ctx)  # idempotent: already on the stand-in
    assert not again.changed and len(action_ctx.undo) == 3

    rollback(FreezeEndpoint(), action_ctx)
    assert switched == [blocked, "fraud-v3-cfg"]
    assert c["sm"].describe_endpoint(EndpointName=ENDPOINT)["EndpointConfigName"] == (
        "fraud-v3-cfg"
    )
    assert _variants(c["sm"]) == {"blue": (0.7, 2), "green": (0.3, 1)}
    assert _inline(c["iam"], "fraud-scorer") == {}


def test_freeze_describe_drain_with_a_standin_model(aws1, action_ctx):
    _endpoint_setup()
    lines = FreezeEndpoint().preview(
        _freeze(caller_roles=[], mode="drain", standin_model="maintenance"), action_ctx
    )
    assert lines[1] == (
        "create endpoint config fraud-v3-cfg-clampdown-blocked: a copy of fraud-v3-cfg with "
        "every variant at weight 0 and the smallest capacity, every variant serving the "
        "stand-in model maintenance"
    )


# --- paths moto does not implement: botocore Stubber -------------------------------------

NOW = datetime(2026, 1, 1, tzinfo=UTC)
EP_ARN = f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:endpoint/{ENDPOINT}"


def _described(config: str, status: str, weights: tuple[float, float]) -> dict[str, Any]:
    return {
        "EndpointName": ENDPOINT,
        "EndpointArn": EP_ARN,
        "EndpointConfigName": config,
        "EndpointStatus": status,
        "CreationTime": NOW,
        "LastModifiedTime": NOW,
        "ProductionVariants": [
            {
                "VariantName": "blue",
                "CurrentWeight": weights[0],
                "DesiredWeight": weights[0],
                "CurrentInstanceCount": 2,
                "DesiredInstanceCount": 2,
            },
            {
                "VariantName": "green",
                "CurrentWeight": weights[1],
                "DesiredWeight": weights[1],
                "CurrentInstanceCount": 1,
                "DesiredInstanceCount": 1,
            },
        ],
    }


def _config(name: str, weight: float, counts: tuple[int, int]) -> dict[str, Any]:
    variant = {"ModelName": "fraud-model", "InstanceType": "ml.m5.large"}
    return {
        "EndpointConfigName": name,
        "EndpointConfigArn": f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:endpoint-config/{name}",
        "ProductionVariants": [
            {
                **variant,
                "VariantName": "blue",
                "InitialInstanceCount": counts[0],
                "InitialVariantWeight": weight,
            },
            {
                **variant,
                "VariantName": "green",
                "InitialInstanceCount": counts[1],
                "InitialVariantWeight": weight,
            },
        ],
        "DataCaptureConfig": {
            "InitialSamplingPercentage": 100,
            "DestinationS3Uri": "s3://capture/fraud",
            "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
        },
        "KmsKeyId": "alias/models",
        "CreationTime": NOW,
    }


def _weights(blue: float, green: float) -> dict[str, Any]:
    return {
        "EndpointName": ENDPOINT,
        "DesiredWeightsAndCapacities": [
            {"VariantName": "blue", "DesiredWeight": blue, "DesiredInstanceCount": 2},
            {"VariantName": "green", "DesiredWeight": green, "DesiredInstanceCount": 1},
        ],
    }


@pytest.fixture
def stubbed(monkeypatch: pytest.MonkeyPatch, aws_credentials: None):
    """Aws.client(service) returns one Stubber-backed client per service."""
    monkeypatch.setattr(sagemaker_endpoint, "POLL_SECONDS", 0.0)
    made: dict[str, tuple[Any, Stubber]] = {}

    def get(service: str) -> Stubber:
        if service not in made:
            client = boto3.client(service, region_name="us-east-1")
            made[service] = (client, Stubber(client))
            made[service][1].activate()
        return made[service][1]

    def client(self: Aws, service: str) -> Any:
        get(service)
        return made[service][0]

    monkeypatch.setattr(Aws, "client", client)
    yield get
    for _, stub in made.values():
        stub.assert_no_pending_responses()


def test_freeze_blocked_config_and_rollback_stubbed_update_endpoint(stubbed, action_ctx):
    sm = stubbed("sagemaker")
    blocked = "fraud-v3-cfg-clampdown-blocked"
    # the endpoint's weights were tuned (0.7/0.3) away from its config's initial 0.5/0.5
    sm.add_response(
        "describe_endpoint",
        _described("fraud-v3-cfg", "InService", (0.7, 0.3)),
        {"EndpointName": ENDPOINT},
    )
    sm.add_response(
        "describe_endpoint_config",
        _config("fraud-v3-cfg", 0.5, (2, 1)),
        {"EndpointConfigName": "fraud-v3-cfg"},
    )
    # the weights first: they take effect in seconds
    sm.add_response(
        "describe_endpoint",
        _described("fraud-v3-cfg", "InService", (0.7, 0.3)),
        {"EndpointName": ENDPOINT},
    )
    sm.add_response(
        "update_endpoint_weights_and_capacities", {"EndpointArn": EP_ARN}, _weights(0.0, 0.0)
    )
    # then the blocked copy: weights 0, one instance per variant, data capture kept
    sm.add_client_error(
        "describe_endpoint_config",
        "ValidationException",
        f"Could not find endpoint configuration '{blocked}'.",
        expected_params={"EndpointConfigName": blocked},
    )
    wanted = _config(blocked, 0.0, (1, 1))
    del wanted["EndpointConfigArn"], wanted["CreationTime"]
    sm.add_response(
        "create_endpoint_config",
        {"EndpointConfigArn": f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:endpoint-config/{blocked}"},
        {
            **wanted,
            "Tags": [
                {"Key": "clampdown:run-id", "Value": "testrun0001"},
                {"Key": "clampdown:blocked-from", "Value": "fraud-v3-cfg"},
            ],
        },
    )
    # the weight change is still rolling out: wait for InService before UpdateEndpoint
    sm.add_response(
        "describe_endpoint",
        _described("fraud-v3-cfg", "Updating", (0.0, 0.0)),
        {"EndpointName": ENDPOINT},
    )
    sm.add_response(
        "describe_endpoint",
        _described("fraud-v3-cfg", "InService", (0.0, 0.0)),
        {"EndpointName": ENDPOINT},
    )
    sm.add_response(
        "update_endpoint",
        {"EndpointArn": EP_ARN},
        {"EndpointName": ENDPOINT, "EndpointConfigName": blocked},
    )

    out = FreezeEndpoint().run(
        _freeze(caller_roles=[], mode="drain", blocked_config=True), action_ctx
    )
    assert out.changed and out.config_switched_to == blocked
    assert out.weights_zeroed == ["blue", "green"]
    assert out.description_before["endpoint_config"]["KmsKeyId"] == "alias/models"
    assert [r["op"] for r in action_ctx.undo] == ["restore_weights", "restore_endpoint_config"]
    assert action_ctx.undo[1]["weights"] == {"blue": 0.7, "green": 0.3}

    # rollback, newest first: the original config, then the tuned weights
    sm.add_response(
        "describe_endpoint",
        _described(blocked, "InService", (0.0, 0.0)),
        {"EndpointName": ENDPOINT},
    )
    sm.add_response(
        "describe_endpoint",
        _described(blocked, "InService", (0.0, 0.0)),
        {"EndpointName": ENDPOINT},
    )
    sm.add_response(
        "update_endpoint",
        {"EndpointArn": EP_ARN},
        {"EndpointName": ENDPOINT, "EndpointConfigName": "fraud-v3-cfg"},
    )
    sm.add_response(
        "describe_endpoint",
        _described("fraud-v3-cfg", "Updating", (0.5, 0.5)),
        {"EndpointName": ENDPOINT},
    )
    sm.add_response(
        "describe_endpoint",
        _described("fraud-v3-cfg", "InService", (0.5, 0.5)),
        {"EndpointName": ENDPOINT},
    )
    sm.add_response(
        "update_endpoint_weights_and_capacities", {"EndpointArn": EP_ARN}, _weights(0.7, 0.3)
    )
    # the weights record finds them restored already: no call
    sm.add_response(
        "describe_endpoint",
        _described("fraud-v3-cfg", "InService", (0.7, 0.3)),
        {"EndpointName": ENDPOINT},
    )
    rollback(FreezeEndpoint(), action_ctx)


def test_freeze_blocked_config_second_run_changes_nothing_stubbed_update_endpoint(
    stubbed, action_ctx
):
    sm = stubbed("sagemaker")
    blocked = "fraud-v3-cfg-clampdown-blocked"
    sm.add_response("describe_endpoint", _described(blocked, "InService", (0.0, 0.0)))
    sm.add_response("describe_endpoint_config", _config(blocked, 0.0, (1, 1)))
    sm.add_response("describe_endpoint", _described(blocked, "InService", (0.0, 0.0)))
    out = FreezeEndpoint().run(
        _freeze(caller_roles=[], mode="drain", blocked_config=True), action_ctx
    )
    assert not out.changed and out.config_switched_to == blocked and action_ctx.undo == []


def test_freeze_refuses_foreign_config_with_blocked_name_stubbed_update_endpoint(
    stubbed, action_ctx
):
    sm = stubbed("sagemaker")
    blocked = "fraud-v3-cfg-clampdown-blocked"
    sm.add_response("describe_endpoint", _described("fraud-v3-cfg", "InService", (0.7, 0.3)))
    sm.add_response("describe_endpoint_config", _config("fraud-v3-cfg", 0.5, (2, 1)))
    # mode drain: the weights go to 0 first (seconds), then the config switch is refused
    sm.add_response("describe_endpoint", _described("fraud-v3-cfg", "InService", (0.7, 0.3)))
    sm.add_response(
        "update_endpoint_weights_and_capacities", {"EndpointArn": EP_ARN}, _weights(0.0, 0.0)
    )
    sm.add_response("describe_endpoint_config", _config(blocked, 0.5, (2, 1)))  # not blocked
    with pytest.raises(AwsActionError, match=f"{blocked} exists but is not a blocked copy"):
        FreezeEndpoint().run(
            _freeze(caller_roles=[], mode="drain", blocked_config=True), action_ctx
        )
    assert [r["op"] for r in action_ctx.undo] == ["restore_weights"]  # nothing switched


def test_blocked_config_name_fits_the_63_character_limit():
    long = "c" * 60
    name = sagemaker_endpoint.blocked_config_name(long)
    assert len(name) <= 63 and name.endswith("-clampdown-blocked")
    assert sagemaker_endpoint.blocked_config_name(long) == name  # stable across runs
    assert sagemaker_endpoint.blocked_config_name("cfg") == "cfg-clampdown-blocked"


def test_stage_without_method_settings_rollback_removes_ours_stubbed_update_stage(
    stubbed, action_ctx
):
    """moto ignores UpdateStage's `remove` of a method setting; AWS supports it."""
    sm, apigw = stubbed("sagemaker"), stubbed("apigateway")
    sm.add_response("describe_endpoint", _described("fraud-v3-cfg", "InService", (0.7, 0.3)))
    sm.add_response("describe_endpoint_config", _config("fraud-v3-cfg", 0.5, (2, 1)))
    apigw.add_response(
        "get_stage",
        {"stageName": "prod", "methodSettings": {}},
        {"restApiId": "api1", "stageName": "prod"},
    )
    apigw.add_response(
        "update_stage",
        {},
        {
            "restApiId": "api1",
            "stageName": "prod",
            "patchOperations": [
                {"op": "replace", "path": "/*/*/throttling/rateLimit", "value": "0"},
                {"op": "replace", "path": "/*/*/throttling/burstLimit", "value": "0"},
            ],
        },
    )
    target = {"rest_api_id": "api1", "stage_name": "prod"}
    out = FreezeEndpoint().run(_freeze(caller_roles=[], api_gateway=target), action_ctx)
    assert out.changed and action_ctx.undo[0]["before"] == {"*/*": None}

    zeroed = {"*/*": {"throttlingRateLimit": 0.0, "throttlingBurstLimit": 0}}
    apigw.add_response("get_stage", {"stageName": "prod", "methodSettings": zeroed})
    apigw.add_response(
        "update_stage",
        {},
        {
            "restApiId": "api1",
            "stageName": "prod",
            "patchOperations": [{"op": "remove", "path": "/*/*"}],
        },
    )
    rollback(FreezeEndpoint(), action_ctx)


# =========================================================================================
# describe (clampdown plan --live): what apply would change, with read-only calls only
# =========================================================================================


def _s3_state(client: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Every bucket's policy and object versions with their legal holds (read with AWS's
    outcome for the engine: moto would deny GetObjectLegalHold under the lock)."""
    with monkeypatch.context() as patch:
        patch.setattr(FakeBucket, "get_permission", lambda *_: PermissionResult.NEUTRAL)
        state = {}
        for bucket in sorted(b["Name"] for b in client.list_buckets()["Buckets"]):
            listed = client.list_object_versions(Bucket=bucket)
            versions = sorted((v["Key"], v["VersionId"]) for v in listed.get("Versions", []))
            try:
                policy = client.get_bucket_policy(Bucket=bucket)["Policy"]
            except client.exceptions.ClientError:
                policy = None
            holds = (
                {kv: _hold(client, *kv) for kv in versions}
                if client.get_object_lock_configuration(Bucket=bucket)
                .get("ObjectLockConfiguration", {})
                .get("ObjectLockEnabled")
                else {}
            )
            state[bucket] = {
                "policy": policy,
                "versions": versions,
                "markers": listed.get("DeleteMarkers", []),
                "holds": holds,
            }
        return state


def _preview_as_aws_would(action: Any, params: Any, ctx: Any, patch: pytest.MonkeyPatch) -> Any:
    """preview after the lock, where moto (unlike AWS) would deny the engine's reads."""
    with patch.context() as aws_semantics:
        aws_semantics.setattr(FakeBucket, "get_permission", lambda *_: PermissionResult.NEUTRAL)
        return action.preview(params, ctx)


def _lock_statement_line(verb: str, exempt: list[str]) -> str:
    return (
        f"{verb}: deny reading, writing and deleting s3://{BUCKET}/{PREFIX}* and changing "
        f"the bucket policy to all but {', '.join(exempt)}"
    )


def test_lock_describe_lists_holds_and_statement_then_nothing_after_apply(
    aws, action_ctx, monkeypatch
):
    client = _s3()
    client.create_bucket(Bucket=BUCKET, ObjectLockEnabledForBucket=True)
    client.put_bucket_policy(Bucket=BUCKET, Policy=ORIGINAL_POLICY)
    for key in ("model.safetensors", "config.json"):
        for body in (b"v1", b"v2"):
            client.put_object(Bucket=BUCKET, Key=PREFIX + key, Body=body)
    client.put_object(Bucket=BUCKET, Key="models/other/model.bin", Body=b"x")
    held = _versions(client, PREFIX)[0]
    client.put_object_legal_hold(
        Bucket=BUCKET, Key=held[0], VersionId=held[1], LegalHold={"Status": "ON"}
    )
    params = _lock(legal_hold=True)
    before = _s3_state(client, monkeypatch)

    lines = LockModelArtifacts().preview(params, action_ctx)

    sid = statement_sid(PREFIX)
    assert lines == [
        f"put an Object Lock legal hold on 3 of 4 object version(s) under s3://{BUCKET}/{PREFIX} "
        "(1 already held)",
        _lock_statement_line(
            f"add statement {sid} to the policy of bucket {BUCKET} (1 statement(s) kept)",
            [BREAK_GLASS, SERVING, MOTO_ENGINE],
        ),
    ]
    assert _s3_state(client, monkeypatch) == before  # the preview changed nothing

    out = LockModelArtifacts().run(params, action_ctx)
    assert out.changed and out.legal_holds_set == 3
    locked = _s3_state(client, monkeypatch)
    assert _preview_as_aws_would(LockModelArtifacts(), params, action_ctx, monkeypatch) == []
    assert _s3_state(client, monkeypatch) == locked


def test_lock_describe_new_policy_and_replaced_statement(aws1, action_ctx, monkeypatch):
    client = _s3()
    client.create_bucket(Bucket=BUCKET)
    sid = statement_sid(PREFIX)
    first = _lock(allow_principals=[BREAK_GLASS])
    assert LockModelArtifacts().preview(first, action_ctx) == [
        _lock_statement_line(
            f"create the policy of bucket {BUCKET} with statement {sid}",
            [BREAK_GLASS, MOTO_ENGINE],
        )
    ]
    assert _policy(client) is None
    LockModelArtifacts().run(first, action_ctx)
    assert LockModelArtifacts().preview(first, action_ctx) == []
    # the allow list grew: apply would replace our statement, so the preview says so
    wider = _lock()
    assert LockModelArtifacts().preview(wider, action_ctx) == [
        _lock_statement_line(
            f"replace statement {sid}, which differs from the lock, in the policy of bucket "
            f"{BUCKET} (0 other statement(s) kept)",
            [BREAK_GLASS, SERVING, MOTO_ENGINE],
        )
    ]
    assert SERVING not in _policy(client)


def test_lock_describe_legal_hold_without_object_lock_fails_like_apply(aws1, action_ctx):
    _s3().create_bucket(Bucket=BUCKET)
    with pytest.raises(ObjectLockNotEnabled, match=f"bucket {BUCKET} has no S3 Object Lock"):
        LockModelArtifacts().preview(_lock(legal_hold=True), action_ctx)


def test_lock_describe_access_denied_names_action_and_principal(aws1, action_ctx, monkeypatch):
    _s3().create_bucket(Bucket=BUCKET)
    who = f"arn:aws:sts::{ACCOUNT}:assumed-role/engine/clampdown-plan"
    text = f"User: {who} is not authorized to perform: s3:GetBucketPolicy on resource: x"
    body = f"<Error><Code>AccessDenied</Code><Message>{text}</Message></Error>"
    refuse(monkeypatch, "s3.GetBucketPolicy", 403, body)
    with pytest.raises(AwsAccessDenied, match=f"{who} may not call s3:GetBucketPolicy"):
        LockModelArtifacts().preview(_lock(), action_ctx)


def _freeze_state(c: dict[str, Any], api: str | None = None) -> dict[str, Any]:
    sm = c["sm"]
    return {
        "endpoint": _without_metadata(sm.describe_endpoint(EndpointName=ENDPOINT)),
        "configs": sorted(
            x["EndpointConfigName"] for x in sm.list_endpoint_configs()["EndpointConfigs"]
        ),
        "roles": {r: _inline(c["iam"], r) for r in ("fraud-scorer", BATCH_ROLE)},
        "stage": _throttling(c["apigw"], api) if api else None,
        "keys": {k["id"]: k["enabled"] for k in c["apigw"].get_api_keys()["items"]},
    }


def _without_metadata(described: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in described.items() if k not in ("ResponseMetadata",)}


def test_freeze_describe_lists_changes_then_nothing_after_apply(aws, action_ctx):
    c = _endpoint_setup()
    api, stage = _stage(c["apigw"])
    c["apigw"].update_stage(
        restApiId=api,
        stageName=stage,
        patchOperations=[
            {"op": "replace", "path": "/*/*/throttling/rateLimit", "value": "100"},
            {"op": "replace", "path": "/*/*/throttling/burstLimit", "value": "50"},
        ],
    )
    arn = c["sm"].describe_endpoint(EndpointName=ENDPOINT)["EndpointArn"]
    params = _freeze(mode="drain", api_gateway={"rest_api_id": api, "stage_name": stage})
    before = _freeze_state(c, api)

    lines = FreezeEndpoint().preview(params, action_ctx)

    deny = (
        f": deny InvokeEndpoint, InvokeEndpointAsync and InvokeEndpointWithResponseStream on {arn}"
    )
    assert lines == [
        f"attach inline policy {POLICY_NAME} to role fraud-scorer{deny}",
        f"attach inline policy {POLICY_NAME} to role {BATCH_ROLE}{deny}",
        f"throttle stage {api}/prod to 0 requests/s at */* (now 100 requests/s, burst 50)",
        f"set the weight of variant(s) blue (0.7), green (0.3) of endpoint {ENDPOINT} to 0 "
        "(capacity kept)",
    ]
    assert _freeze_state(c, api) == before

    assert FreezeEndpoint().run(params, action_ctx).changed
    frozen = _freeze_state(c, api)
    assert FreezeEndpoint().preview(params, action_ctx) == []
    assert _freeze_state(c, api) == frozen


def test_freeze_describe_api_key_and_a_stale_policy_of_the_same_name(aws1, action_ctx):
    c = _endpoint_setup()
    api, stage = _stage(c["apigw"])
    key = c["apigw"].create_api_key(name="partner", enabled=True)["id"]
    stale = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Deny", "Action": "s3:*", "Resource": "*"}],
    }
    c["iam"].put_role_policy(
        RoleName=BATCH_ROLE, PolicyName=POLICY_NAME, PolicyDocument=json.dumps(stale)
    )
    params = _freeze(
        caller_roles=[BATCH_ROLE],
        api_gateway={"rest_api_id": api, "stage_name": stage, "api_key_id": key},
    )
    before = _freeze_state(c)
    lines = FreezeEndpoint().preview(params, action_ctx)
    assert lines[0].startswith(
        f"replace the inline policy {POLICY_NAME} of role {BATCH_ROLE} "
        "(it holds another document now): deny InvokeEndpoint"
    )
    assert lines[1:] == [f"disable API key {key} (partner)"]
    assert _freeze_state(c) == before
    FreezeEndpoint().run(params, action_ctx)
    assert FreezeEndpoint().preview(params, action_ctx) == []
    # a role that does not exist fails the preview as it would fail the run
    with pytest.raises(AwsActionError, match="GetRole failed: NoSuchEntity"):
        FreezeEndpoint().preview(_freeze(caller_roles=["no-such-role"]), action_ctx)


def test_freeze_describe_blocked_config_and_a_foreign_config_of_that_name(aws1, action_ctx):
    c = _endpoint_setup()
    blocked = "fraud-v3-cfg-clampdown-blocked"
    params = _freeze(caller_roles=[], mode="drain", blocked_config=True)
    before = _freeze_state(c)
    assert FreezeEndpoint().preview(params, action_ctx) == [
        f"set the weight of variant(s) blue (0.7), green (0.3) of endpoint {ENDPOINT} to 0 "
        "(capacity kept)",
        f"create endpoint config {blocked}: a copy of fraud-v3-cfg with every variant at "
        "weight 0 and the smallest capacity",
        f"switch endpoint {ENDPOINT} from config fraud-v3-cfg to {blocked}",
    ]
    assert _freeze_state(c) == before  # no config created, no weight changed
    c["sm"].create_endpoint_config(  # someone else's config under the blocked name
        EndpointConfigName=blocked,
        ProductionVariants=[
            {"VariantName": "blue", "ModelName": "fraud-model", "InstanceType": "ml.m5.large"}
        ],
    )
    lines = FreezeEndpoint().preview(params, action_ctx)
    assert lines[1] == (
        f"stop with an error: endpoint config {blocked} exists but is not a blocked copy of "
        "fraud-v3-cfg; nothing was switched. Delete or rename it, then run again"
    )
    assert len(lines) == 2


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (
            "Updating",
            [
                f"set the weight of variant(s) blue (0.7), green (0.3) of endpoint {ENDPOINT} "
                "to 0 (capacity kept) once the endpoint (now Updating) is InService"
            ],
        ),
        (
            "Failed",
            [
                f"stop with an error: endpoint {ENDPOINT} is Failed, so its weights and config "
                "cannot be changed (any change above is made first)"
            ],
        ),
    ],
)
def test_freeze_describe_endpoint_not_in_service(aws1, action_ctx, status, expected):
    from moto.sagemaker.models import sagemaker_backends

    _endpoint_setup()
    sagemaker_backends[ACCOUNT]["us-east-1"].endpoints[ENDPOINT].endpoint_status = status
    params = _freeze(caller_roles=[], mode="drain")
    assert FreezeEndpoint().preview(params, action_ctx) == expected


def test_freeze_describe_after_blocked_config_is_empty_stubbed_update_endpoint(stubbed, action_ctx):
    """The frozen state (blocked config, weights 0) as AWS shows it after apply."""
    sm = stubbed("sagemaker")
    blocked = "fraud-v3-cfg-clampdown-blocked"
    sm.add_response("describe_endpoint", _described(blocked, "InService", (0.0, 0.0)))
    sm.add_response("describe_endpoint_config", _config(blocked, 0.0, (1, 1)))
    params = _freeze(caller_roles=[], mode="drain", blocked_config=True)
    assert FreezeEndpoint().preview(params, action_ctx) == []
