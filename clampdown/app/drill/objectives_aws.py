"""Objectives judged on the simulated AWS end state: IAM, KMS and Secrets Manager,
SageMaker and S3, and the evidence manifest (every object re-hashed).

Every checker looks at what is true *now* in the simulated account, never at what
the runbook says it did.
"""

from __future__ import annotations

import fnmatch
import hmac
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from urllib.parse import unquote

from clampdown.app.drill.facts import DrillFacts, ObjectiveCheck
from clampdown.core.drill_model import (
    AccessRestored,
    BucketLocked,
    EndpointFrozen,
    EndpointNotInvocableBy,
    EvidenceManifestComplete,
    KmsKeyRotated,
    NoActiveKeys,
    SecretRotated,
)

INVOKE = "sagemaker:InvokeEndpoint"


# --- IAM --------------------------------------------------------------------------------------


def _masked(key_id: str) -> str:
    return f"{key_id[:4]}…{key_id[-4:]}"


def no_active_keys(o: NoActiveKeys, f: DrillFacts) -> ObjectiveCheck:
    iam = f.client("iam")
    keys = iam.list_access_keys(UserName=o.user)["AccessKeyMetadata"]
    active = [k["AccessKeyId"] for k in keys if k["Status"] == "Active"]
    if active:
        return (
            False,
            f"{len(active)} of {len(keys)} active",
            f"still active: {', '.join(_masked(k) for k in active)}",
        )
    return True, f"0 of {len(keys)} active", "every access key of the user is inactive"


def _policies(iam: Any, kind: str, name: str) -> list[tuple[str, dict[str, Any]]]:
    """Every identity policy document of a user or role: inline and attached."""
    docs: list[tuple[str, dict[str, Any]]] = []
    if kind == "user":
        names = iam.list_user_policies(UserName=name)["PolicyNames"]
        for p in names:
            doc = iam.get_user_policy(UserName=name, PolicyName=p)["PolicyDocument"]
            docs.append((p, _doc(doc)))
        attached = iam.list_attached_user_policies(UserName=name)["AttachedPolicies"]
    else:
        names = iam.list_role_policies(RoleName=name)["PolicyNames"]
        for p in names:
            doc = iam.get_role_policy(RoleName=name, PolicyName=p)["PolicyDocument"]
            docs.append((p, _doc(doc)))
        attached = iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]
    for a in attached:
        version = iam.get_policy(PolicyArn=a["PolicyArn"])["Policy"]["DefaultVersionId"]
        doc = iam.get_policy_version(PolicyArn=a["PolicyArn"], VersionId=version)
        docs.append((a["PolicyName"], _doc(doc["PolicyVersion"]["Document"])))
    return docs


def _doc(document: Any) -> dict[str, Any]:
    if isinstance(document, str):
        return dict(json.loads(unquote(document)))
    return dict(document)


def _listed(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value or [])


def _covers(patterns: Sequence[str], value: str) -> bool:
    return any(fnmatch.fnmatchcase(value.lower(), p.lower()) for p in patterns)


def denies(statement: dict[str, Any], action: str, resource: str, *, session: bool) -> bool:
    """An explicit Deny for ``action`` on ``resource`` that applies to this caller.

    Conditions: none, or only an ``aws:TokenIssueTime`` date condition (the revoke of
    older role sessions), which applies to a stolen ``session``; any other condition
    is not assumed to match.
    """
    if statement.get("Effect") != "Deny":
        return False
    if "Action" in statement and not _covers(_listed(statement["Action"]), action):
        return False
    if "NotAction" in statement and _covers(_listed(statement["NotAction"]), action):
        return False
    if "Resource" in statement and not _covers(_listed(statement["Resource"]), resource):
        return False
    condition = statement.get("Condition") or {}
    if not condition:
        return True
    keys = {k.lower() for block in condition.values() for k in block}
    return session and keys == {"aws:tokenissuetime"}


def endpoint_not_invocable_by(o: EndpointNotInvocableBy, f: DrillFacts) -> ObjectiveCheck:
    iam = f.client("iam")
    endpoint_arn = f.seeded.endpoints[o.endpoint]["arn"]
    kind = "user" if o.principal in f.seeded.users else "role"
    for name, doc in _policies(iam, kind, o.principal):
        for statement in _listed_statements(doc):
            if denies(statement, INVOKE, endpoint_arn, session=kind == "role"):
                sid = statement.get("Sid") or "a statement"
                return True, "explicit deny", f"{sid} of policy {name} denies {INVOKE}"
    if kind == "user":
        keys = iam.list_access_keys(UserName=o.principal)["AccessKeyMetadata"]
        active = [k for k in keys if k["Status"] == "Active"]
        if not active:
            return True, "no credentials", "no deny, but the user has no active access key"
        return False, "invocable", f"no deny on {INVOKE} and {len(active)} active key(s)"
    return False, "invocable", f"no deny on {INVOKE} for role {o.principal} or its sessions"


def _listed_statements(doc: dict[str, Any]) -> list[dict[str, Any]]:
    statements = doc.get("Statement", [])
    return [statements] if isinstance(statements, dict) else list(statements)


def access_restored(o: AccessRestored, f: DrillFacts) -> ObjectiveCheck:
    """Every key of the user is active again and no policy of the user denies it all."""
    iam = f.client("iam")
    keys = iam.list_access_keys(UserName=o.user)["AccessKeyMetadata"]
    inactive = [k["AccessKeyId"] for k in keys if k["Status"] != "Active"]
    if not keys:
        return False, "no keys", f"user {o.user} has no access key"
    if inactive:
        return (
            False,
            f"{len(keys) - len(inactive)} of {len(keys)} active",
            f"still inactive: {', '.join(_masked(k) for k in inactive)}",
        )
    for name, doc in _policies(iam, "user", o.user):
        for statement in _listed_statements(doc):
            if statement.get("Effect") == "Deny" and "*" in _listed(statement.get("Action")):
                sid = statement.get("Sid") or "a statement"
                return False, "denied", f"{sid} of policy {name} still denies everything"
    return True, f"{len(keys)} of {len(keys)} active", "keys active, no deny-all policy left"


# --- KMS and Secrets Manager --------------------------------------------------------------------


def kms_key_rotated(o: KmsKeyRotated, f: DrillFacts) -> ObjectiveCheck:
    """New key material since the alert (an on-demand rotation), and the key still usable."""
    kms = f.client("kms")
    key_id = f.seeded.kms_keys[o.key]["id"]
    meta = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    rotations = kms.list_key_rotations(KeyId=key_id).get("Rotations", [])
    since = [
        r
        for r in rotations
        if r.get("RotationType") == "ON_DEMAND" and _when(r.get("RotationDate")) >= f.alert_epoch
    ]
    if not since:
        return False, "not rotated", f"no on-demand rotation of alias/{o.key} after the alert"
    if meta.get("KeyState") != "Enabled":
        return False, str(meta.get("KeyState")), f"rotated, but the key is {meta.get('KeyState')}"
    took = _when(since[-1].get("RotationDate")) - f.alert_epoch
    return True, f"T+{took:.1f} s", f"{len(since)} on-demand rotation(s); key enabled"


def _when(value: Any) -> float:
    if isinstance(value, datetime):
        return value.timestamp()
    return float(value or 0)


def secret_rotated(o: SecretRotated, f: DrillFacts) -> ObjectiveCheck:
    """AWSCURRENT is a new version with a new value; the seeded one is AWSPREVIOUS."""
    sm = f.client("secretsmanager")
    seeded = f.seeded.secret_versions[o.secret]
    stages = sm.describe_secret(SecretId=o.secret).get("VersionIdsToStages", {})
    current = next((v for v, s in stages.items() if "AWSCURRENT" in s), None)
    if current is None or current == seeded:
        return False, "not rotated", "AWSCURRENT is still the version the secret was seeded with"
    new = sm.get_secret_value(SecretId=o.secret, VersionId=current)["SecretString"]
    old = sm.get_secret_value(SecretId=o.secret, VersionId=seeded)["SecretString"]
    if hmac.compare_digest(new.encode(), old.encode()):  # values compared, never shown
        return False, "same value", f"version {current} holds the value it replaced"
    if "AWSPREVIOUS" not in stages.get(seeded, []):
        return False, "rotated", "the seeded version is not AWSPREVIOUS (rollback could not use it)"
    return True, "rotated", f"AWSCURRENT is version {current}, with a new value"


# --- SageMaker and S3 ----------------------------------------------------------------------------


def endpoint_frozen(o: EndpointFrozen, f: DrillFacts) -> ObjectiveCheck:
    sagemaker = f.client("sagemaker")
    endpoint = sagemaker.describe_endpoint(EndpointName=o.endpoint)
    config = endpoint.get("EndpointConfigName", "")
    weights = [v.get("CurrentWeight", 1.0) for v in endpoint.get("ProductionVariants", [])]
    if config.endswith("-clampdown-blocked"):
        return True, config, "the endpoint serves the blocked config"
    if weights and all(w == 0 for w in weights):
        return True, "weights 0", "every production variant has weight 0"
    return False, endpoint.get("EndpointStatus", "?"), f"serving {config} with weights {weights}"


def bucket_locked(o: BucketLocked, f: DrillFacts) -> ObjectiveCheck:
    s3 = f.client("s3")
    try:
        policy = json.loads(s3.get_bucket_policy(Bucket=o.bucket)["Policy"])
    except Exception as exc:
        if "NoSuchBucketPolicy" in str(exc):
            return False, "no policy", f"bucket {o.bucket} has no bucket policy"
        raise
    target = f"arn:aws:s3:::{o.bucket}/{o.prefix}model.tar.gz"
    for statement in _listed_statements(policy):
        if statement.get("Effect") != "Deny" or statement.get("Principal") not in (
            "*",
            {"AWS": "*"},
        ):
            continue
        if _covers(_listed(statement.get("Action")), "s3:GetObject") and _covers(
            _listed(statement.get("Resource")), target
        ):
            return True, statement.get("Sid", "deny"), f"deny of s3:GetObject on {o.prefix}*"
    return False, "readable", f"no deny of s3:GetObject on s3://{o.bucket}/{o.prefix}"


# --- evidence ---------------------------------------------------------------------------------

_REQUIRED = {
    "cloudtrail": lambda key: "/cloudtrail" in key,
    "ledger": lambda key: key.endswith("/ledger.jsonl"),
    "logs": lambda key: "/logs/" in key or "/export-task.json" in key,
    "describe": lambda key: "describe" in key.rsplit("/", 1)[-1] or "/describe" in key,
}


def evidence_manifest_complete(o: EvidenceManifestComplete, f: DrillFacts) -> ObjectiveCheck:
    if f.run_id is None:
        return False, "no run", "no run, so no evidence"
    try:
        back = f.read_evidence()  # the manifest, then every object it lists read and hashed
    except Exception as exc:
        if "NoSuchKey" in str(exc):
            where = f"s3://{f.seeded.evidence_bucket}/incidents/{f.run_id}/manifest.json"
            return False, "no manifest", f"{where} was never written"
        raise
    entries = back.entries
    digests = back.digests()
    changed = [
        e["key"] for e, got in zip(entries, digests, strict=True) if got.sha256 != e["sha256"]
    ]
    missing = [r for r in o.require if not any(_REQUIRED[r](e["key"]) for e in entries)]
    measured = f"{len(entries)} objects"
    if changed:
        return False, measured, f"hash mismatch: {', '.join(changed)}"
    if missing:
        return False, measured, f"no {', '.join(missing)} evidence in the manifest"
    return True, measured, f"every object re-hashed; has {', '.join(o.require)}"
