"""Seed simulated AWS (moto server) with a drill's world.

:func:`seed` builds the account a drill starts from: IAM users with access keys,
roles (with open sessions when the story needs stolen session credentials), the
model bucket and its artifacts, the SageMaker model, endpoint config and
endpoint, a CloudTrail trail whose bucket holds log files in CloudTrail's own
delivery layout and format, CloudWatch log events (:mod:`clampdown_aws.testing.trail`),
the model's customer managed KMS keys and Secrets Manager secrets, and the evidence
bucket with Object Lock. It returns :class:`Seeded`, the facts (key ids, ARNs) that
alert payloads and objectives refer to.

What moto server does not simulate (LookupEvents, throttling, refusing any other
host) is :class:`clampdown_aws.testing.simulated.SimulatedAws`.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from clampdown.core.drill_model import Seed
from clampdown_aws.testing.seeded import Seeded
from clampdown_aws.testing.trail import write_log_groups, write_trail

__all__ = ["ClientFactory", "Seeded", "seed"]

ClientFactory = Callable[[str], Any]
IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.1.0-cpu-py310"


def seed(spec: Seed, alert_time: datetime, client: ClientFactory) -> Seeded:
    """Create the drill's world in the simulated account (``client(service)`` gives clients)."""
    out = Seeded(spec.account, spec.region, spec.evidence_bucket)
    s3, iam = client("s3"), client("iam")
    _bucket(s3, spec.evidence_bucket, spec.region, object_lock=True)
    _users(spec, iam, out)
    _roles(spec, iam, client("sts"), out)
    _buckets(spec, s3, out)
    if spec.endpoints:
        _endpoints(spec, client("sagemaker"), out)
    if spec.kms_keys:
        _kms_keys(spec, client("kms"), out)
    if spec.secrets:
        _secrets(spec, client("secretsmanager"), out)
    if spec.trail is not None:
        _bucket(s3, spec.trail.bucket, spec.region, object_lock=False)
        write_trail(spec, client("cloudtrail"), s3, alert_time, out)
    if spec.log_groups:
        write_log_groups(spec, client("logs"), alert_time, out)
    return out


def _users(spec: Seed, iam: Any, out: Seeded) -> None:
    for user in spec.users:
        made = iam.create_user(UserName=user.name)["User"]
        if user.policy:
            iam.put_user_policy(
                UserName=user.name,
                PolicyName="drill-access",
                PolicyDocument=json.dumps(user.policy),
            )
        keys = [
            iam.create_access_key(UserName=user.name)["AccessKey"]["AccessKeyId"]
            for _ in range(user.access_keys)
        ]
        if user.console:
            iam.create_login_profile(UserName=user.name, Password=uuid.uuid4().hex + "Aa1!")
        out.users[user.name] = {
            "name": user.name,
            "arn": made["Arn"],
            "id": made["UserId"],
            "access_keys": keys,
        }


def _roles(spec: Seed, iam: Any, sts: Any, out: Seeded) -> None:
    for role in spec.roles:
        principals: dict[str, Any] = {"AWS": f"arn:aws:iam::{spec.account}:root"}
        if role.service:
            principals["Service"] = role.service
        trust = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Principal": principals, "Action": "sts:AssumeRole"}],
        }
        made = iam.create_role(RoleName=role.name, AssumeRolePolicyDocument=json.dumps(trust))[
            "Role"
        ]
        if role.policy:
            iam.put_role_policy(
                RoleName=role.name,
                PolicyName="drill-access",
                PolicyDocument=json.dumps(role.policy),
            )
        sessions = []
        for i in range(role.sessions):
            creds = sts.assume_role(RoleArn=made["Arn"], RoleSessionName=f"i-0a1b2c3d4e5f6071{i}")[
                "Credentials"
            ]
            sessions.append(creds["AccessKeyId"])
            out.session_credentials[creds["AccessKeyId"]] = {
                "aws_access_key_id": creds["AccessKeyId"],
                "aws_secret_access_key": creds["SecretAccessKey"],
                "aws_session_token": creds["SessionToken"],
            }
        out.roles[role.name] = {
            "name": role.name,
            "arn": made["Arn"],
            "id": made["RoleId"],
            "sessions": sessions,
        }


def _buckets(spec: Seed, s3: Any, out: Seeded) -> None:
    for bucket in spec.buckets:
        _bucket(s3, bucket.name, spec.region, object_lock=bucket.object_lock)
        for key, body in bucket.objects.items():
            s3.put_object(Bucket=bucket.name, Key=key, Body=_object_bytes(key, body))
        out.buckets[bucket.name] = {"name": bucket.name, "arn": f"arn:aws:s3:::{bucket.name}"}


def _bucket(s3: Any, name: str, region: str, *, object_lock: bool) -> None:
    args: dict[str, Any] = {"Bucket": name}
    if region != "us-east-1":
        args["CreateBucketConfiguration"] = {"LocationConstraint": region}
    if object_lock:
        args["ObjectLockEnabledForBucket"] = True
    s3.create_bucket(**args)


def _object_bytes(key: str, body: int | str) -> bytes:
    """Text as given; a size becomes that many deterministic bytes (same drill, same hashes)."""
    if isinstance(body, str):
        return body.encode()
    block = hashlib.sha256(key.encode()).digest()
    return (block * (body // len(block) + 1))[:body]


def _endpoints(spec: Seed, sagemaker: Any, out: Seeded) -> None:
    for endpoint in spec.endpoints:
        role_arn = out.roles[endpoint.role]["arn"]
        sagemaker.create_model(
            ModelName=endpoint.name,
            ExecutionRoleArn=role_arn,
            PrimaryContainer={"Image": IMAGE, "ModelDataUrl": endpoint.model_data},
        )
        config = f"{endpoint.name}-config"
        sagemaker.create_endpoint_config(
            EndpointConfigName=config,
            ProductionVariants=[
                {
                    "VariantName": "AllTraffic",
                    "ModelName": endpoint.name,
                    "InitialInstanceCount": 1,
                    "InstanceType": endpoint.instance_type,
                    "InitialVariantWeight": 1.0,
                }
            ],
        )
        arn = sagemaker.create_endpoint(EndpointName=endpoint.name, EndpointConfigName=config)[
            "EndpointArn"
        ]
        out.endpoints[endpoint.name] = {"name": endpoint.name, "arn": arn, "config": config}


def _kms_keys(spec: Seed, kms: Any, out: Seeded) -> None:
    for key in spec.kms_keys:
        meta = kms.create_key(
            Description=key.description or f"drill key {key.alias}",
            KeyUsage="ENCRYPT_DECRYPT",
            KeySpec="SYMMETRIC_DEFAULT",
        )["KeyMetadata"]
        kms.create_alias(AliasName=f"alias/{key.alias}", TargetKeyId=meta["KeyId"])
        out.kms_keys[key.alias] = {
            "alias": key.alias,
            "name": f"alias/{key.alias}",
            "arn": meta["Arn"],
            "id": meta["KeyId"],
        }


def _secrets(spec: Seed, sm: Any, out: Seeded) -> None:
    for secret in spec.secrets:
        value = secret.value if isinstance(secret.value, str) else json.dumps(secret.value)
        made = sm.create_secret(Name=secret.name, SecretString=value)
        out.secrets[secret.name] = {"name": secret.name, "arn": made["ARN"]}
        out.secret_versions[secret.name] = made["VersionId"]
