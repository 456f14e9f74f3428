"""``aws.evidence.snapshot_config``: how things were set up, recorded before anyone changes it.

Containment changes bucket policies, trust policies and endpoint configs; the
investigation later needs to know how they were *before* (was the bucket policy
open? which policies did the suspect hold? which model served the endpoint?). This
action writes one JSON description per resource under
``incidents/<run-id>/<step-id>/config/`` through the run's
:class:`~clampdown_aws.evidence_store.EvidenceStore`: hashed, locked when the
bucket has Object Lock, and listed in the manifest.

* ``endpoint_name``: DescribeEndpoint, DescribeEndpointConfig, and DescribeModel of
  every model its production variants serve;
* ``buckets``: each bucket's policy, policy status, public access block, versioning,
  Object Lock configuration and replication (``null`` when the bucket has none);
* ``principal_arn``: the user or role, its attached managed policies (with the
  default version's document), inline policies, groups (users), access key metadata
  (ids and status, never a secret) and login profile (users); the trust policy (roles).

Evidence only adds, so the action records no undo. A read it is not allowed to make
(or that fails) does not stop the others: the document says what is missing and
``gaps`` lists it, naming the IAM action to grant, so one missing permission never
costs the rest of the evidence.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from pydantic import Field, field_validator, model_validator

from clampdown.core.actions import ActionContext, ActionInput, ActionOutput
from clampdown_aws.base import Aws, AwsAccessDenied, AwsAction, translate
from clampdown_aws.evidence import S3_WRITE, EvidenceRef, checked_store, to_ref
from clampdown_aws.iam._common import parse_principal_arn
from clampdown_aws.responses import json_safe

# Error codes that mean "this resource has no such setting": recorded as null.
_ABSENT = frozenset(
    {
        "NoSuchBucketPolicy",
        "NoSuchPublicAccessBlockConfiguration",
        "ObjectLockConfigurationNotFoundError",
        "ReplicationConfigurationNotFoundError",
        "NoSuchEntity",
    }
)


class SnapshotConfig(AwsAction):
    """Describe the endpoint, the model buckets and the suspect into the evidence bucket."""

    name = "aws.evidence.snapshot_config"
    summary = "Write JSON descriptions of the endpoint, buckets and suspect to the evidence bucket"
    iam_actions = (
        "sagemaker:DescribeEndpoint",
        "sagemaker:DescribeEndpointConfig",
        "sagemaker:DescribeModel",
        "s3:GetBucketPolicy",
        "s3:GetBucketPolicyStatus",
        "s3:GetBucketPublicAccessBlock",
        "s3:GetBucketVersioning",
        "s3:GetReplicationConfiguration",
        "iam:GetUser",
        "iam:GetRole",
        "iam:ListAttachedUserPolicies",
        "iam:ListAttachedRolePolicies",
        "iam:ListUserPolicies",
        "iam:ListRolePolicies",
        "iam:GetUserPolicy",
        "iam:GetRolePolicy",
        "iam:GetPolicy",
        "iam:GetPolicyVersion",
        "iam:ListGroupsForUser",
        "iam:ListAccessKeys",
        "iam:GetLoginProfile",
        *S3_WRITE,
    )

    class Input(ActionInput):
        endpoint_name: str | None = Field(None, description="SageMaker endpoint to describe")
        buckets: list[str] = Field(
            default_factory=list, max_length=20, description="model buckets to describe"
        )
        principal_arn: str | None = Field(None, description="the suspect IAM user or role")
        bucket: str | None = Field(
            None, description="evidence bucket (default CLAMPDOWN_EVIDENCE_BUCKET)"
        )

        @field_validator("endpoint_name", "principal_arn", mode="before")
        @classmethod
        def _blank_is_none(cls, value: Any) -> Any:
            """An optional runbook input renders as "" or "None": nothing to describe."""
            return None if value in ("", "None") else value

        @field_validator("buckets", mode="before")
        @classmethod
        def _no_blanks(cls, value: Any) -> Any:
            if isinstance(value, list):
                return [v for v in value if v not in (None, "", "None")]
            return value

        @field_validator("principal_arn")
        @classmethod
        def _principal(cls, value: str | None) -> str | None:
            if value is not None and "{{" not in value:
                parse_principal_arn(value)
            return value

        @model_validator(mode="after")
        def _something(self) -> SnapshotConfig.Input:
            if not (self.endpoint_name or self.buckets or self.principal_arn):
                raise ValueError("give at least one of endpoint_name, buckets, principal_arn")
            return self

    class Output(ActionOutput):
        manifest_uri: str
        objects: list[EvidenceRef]
        gaps: list[str] = Field(description="reads that failed; the evidence says so too")

    def apply(self, params: Input, aws: Aws, ctx: ActionContext) -> Output:
        store = checked_store(aws, ctx, params.bucket)
        reader = _Reader(aws)
        documents: dict[str, Any] = {}
        if params.endpoint_name:
            documents[f"sagemaker/{params.endpoint_name}.json"] = _endpoint(
                reader, params.endpoint_name
            )
        for bucket in dict.fromkeys(params.buckets):
            documents[f"s3/{bucket}.json"] = _bucket(reader, bucket)
        if params.principal_arn:
            parts = parse_principal_arn(params.principal_arn)
            documents[f"iam/{parts['kind']}-{parts['name']}.json"] = _principal(
                reader, params.principal_arn
            )
        objects = []
        for name, document in documents.items():
            body = json.dumps(json_safe(document), indent=2, sort_keys=True).encode()
            objects.append(store.put(f"{ctx.step_id}/config/{name}", [body], "application/json"))
        manifest = store.write_manifest()
        for gap in reader.gaps:
            ctx.logger.warning("configuration evidence incomplete: %s", gap)
        return self.Output(
            manifest_uri=f"s3://{store.bucket}/{manifest.key}",
            objects=[to_ref(o) for o in objects],
            gaps=reader.gaps,
        )

    def describe(self, params: Input, aws: Aws, ctx: ActionContext) -> list[str]:
        what = []
        if params.endpoint_name:
            what.append(f"endpoint {params.endpoint_name} (its config and models)")
        what += [
            f"bucket {b} (policy, public access, versioning, lock, replication)"
            for b in params.buckets
        ]
        if params.principal_arn:
            what.append(f"{params.principal_arn} (its policies, keys and trust)")
        return [f"write a JSON description of {item} to the evidence bucket" for item in what]


class _Reader:
    """Make one read; an absent setting is None, a failure is a gap (not an exception)."""

    def __init__(self, aws: Aws) -> None:
        self.aws = aws
        self.gaps: list[str] = []
        self._clients: dict[str, Any] = {}

    def client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = self.aws.client(service)
        return self._clients[service]

    def read(self, what: str, call: Callable[[], Any]) -> Any:
        from botocore.exceptions import ClientError

        try:
            response = call()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _ABSENT:
                return None
            problem = translate(exc, self.aws)
            text = str(problem)
            if isinstance(problem, AwsAccessDenied):
                text = text.split(" — ")[0]
            self.gaps.append(f"{what}: {text}")
            return {"clampdown_gap": text}
        if isinstance(response, dict):
            response.pop("ResponseMetadata", None)
        return response


def _endpoint(reader: _Reader, name: str) -> dict[str, Any]:
    sm = reader.client("sagemaker")
    endpoint = reader.read(f"endpoint {name}", lambda: sm.describe_endpoint(EndpointName=name))
    document: dict[str, Any] = {"endpoint": endpoint, "endpoint_config": None, "models": {}}
    config_name = (endpoint or {}).get("EndpointConfigName")
    if not config_name:
        return document
    config = reader.read(
        f"endpoint config {config_name}",
        lambda: sm.describe_endpoint_config(EndpointConfigName=config_name),
    )
    document["endpoint_config"] = config
    for variant in (config or {}).get("ProductionVariants", []):
        model = variant.get("ModelName")
        if model and model not in document["models"]:
            document["models"][model] = reader.read(
                f"model {model}", lambda model=model: sm.describe_model(ModelName=model)
            )
    return document


def _bucket(reader: _Reader, bucket: str) -> dict[str, Any]:
    s3 = reader.client("s3")
    policy = reader.read(f"bucket {bucket} policy", lambda: s3.get_bucket_policy(Bucket=bucket))
    if isinstance(policy, dict) and "Policy" in policy:
        policy = {"Policy": json.loads(policy["Policy"])}
    return {
        "bucket": bucket,
        "policy": policy,
        "policy_status": reader.read(
            f"bucket {bucket} policy status", lambda: s3.get_bucket_policy_status(Bucket=bucket)
        ),
        "public_access_block": reader.read(
            f"bucket {bucket} public access block",
            lambda: s3.get_public_access_block(Bucket=bucket),
        ),
        "versioning": reader.read(
            f"bucket {bucket} versioning", lambda: s3.get_bucket_versioning(Bucket=bucket)
        ),
        "object_lock": reader.read(
            f"bucket {bucket} object lock",
            lambda: s3.get_object_lock_configuration(Bucket=bucket),
        ),
        "replication": reader.read(
            f"bucket {bucket} replication", lambda: s3.get_bucket_replication(Bucket=bucket)
        ),
    }


def _principal(reader: _Reader, arn: str) -> dict[str, Any]:
    iam = reader.client("iam")
    parts = parse_principal_arn(arn)
    name, is_user = parts["name"], parts["kind"] == "user"
    kind = "User" if is_user else "Role"
    key = {"UserName": name} if is_user else {"RoleName": name}
    snake = "user" if is_user else "role"
    document: dict[str, Any] = {"principal_arn": arn}
    found = reader.read(f"{snake} {name}", lambda: getattr(iam, f"get_{snake}")(**key))
    document[snake] = (found or {}).get(kind, found)
    attached = reader.read(
        f"{snake} {name} attached policies",
        lambda: getattr(iam, f"list_attached_{snake}_policies")(**key),
    )
    document["attached_policies"] = [
        _managed_policy(reader, p["PolicyArn"])
        for p in (attached or {}).get("AttachedPolicies", [])
    ]
    inline = reader.read(
        f"{snake} {name} inline policies", lambda: getattr(iam, f"list_{snake}_policies")(**key)
    )
    document["inline_policies"] = {
        policy: (
            reader.read(
                f"{snake} {name} inline policy {policy}",
                lambda policy=policy: getattr(iam, f"get_{snake}_policy")(**key, PolicyName=policy),
            )
            or {}
        ).get("PolicyDocument")
        for policy in (inline or {}).get("PolicyNames", [])
    }
    if is_user:
        groups = reader.read(f"user {name} groups", lambda: iam.list_groups_for_user(UserName=name))
        document["groups"] = [g["GroupName"] for g in (groups or {}).get("Groups", [])]
        keys = reader.read(f"user {name} access keys", lambda: iam.list_access_keys(UserName=name))
        document["access_keys"] = (keys or {}).get("AccessKeyMetadata", keys)
        profile = reader.read(
            f"user {name} login profile", lambda: iam.get_login_profile(UserName=name)
        )
        document["login_profile"] = (profile or {}).get("LoginProfile", profile)
    return document


def _managed_policy(reader: _Reader, policy_arn: str) -> dict[str, Any]:
    iam = reader.client("iam")
    policy = reader.read(f"policy {policy_arn}", lambda: iam.get_policy(PolicyArn=policy_arn))
    version = ((policy or {}).get("Policy") or {}).get("DefaultVersionId")
    document = None
    if version:
        found = reader.read(
            f"policy {policy_arn} version {version}",
            lambda: iam.get_policy_version(PolicyArn=policy_arn, VersionId=version),
        )
        document = ((found or {}).get("PolicyVersion") or {}).get("Document")
    return {"arn": policy_arn, "default_version": version, "document": document}
