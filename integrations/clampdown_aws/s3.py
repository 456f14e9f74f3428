"""S3 containment: lock a model's artifacts so only named principals can touch them.

``aws.s3.lock_model_artifacts`` merges ONE deny statement into the bucket policy.
It denies reading, writing and deleting objects under the model prefix, and
changing the bucket policy, replication or lifecycle, to every principal
(``"Principal": "*"``) whose ``aws:PrincipalArn`` is not in an exemption list.

Why the engine exempts itself
-----------------------------
The statement also denies ``s3:PutBucketPolicy`` / ``s3:DeleteBucketPolicy``, so
a principal outside the exemption list could never lift the lock again. If the
engine's own role were outside it, ``clampdown rollback`` would be locked out
(only the account's root user could still repair the bucket policy). The action
therefore resolves its own principal with ``sts:GetCallerIdentity`` and always
adds it to the exemption list, next to ``allow_principals``. This grants the
engine nothing new: any principal that may change the bucket policy can remove
the deny anyway. For an assumed role the exemption is the *role* ARN (which is
what ``aws:PrincipalArn`` carries), written as ``role/<name>`` and
``role/*/<name>`` because the caller identity does not show the role's path and
role names are unique in an account, so the wildcard can match no other role.
Rollback must therefore run as the same role, or as one in ``allow_principals``.

Legal holds and the ledger
--------------------------
With ``legal_hold: true`` every object version under the prefix gets an Object
Lock legal hold, before the deny is merged (see ``apply``). The bucket must have
Object Lock; that is checked before anything changes.

A legal hold carries no owner, so rollback cannot tell holds this run placed
from holds that legal or compliance placed later; re-listing the prefix at
rollback would release theirs too. The undo records therefore list the exact
(key, version id) pairs this run turned ON (versions already held are left
alone and not recorded), keys relative to the prefix, in chunks of
``HOLD_CHUNK`` versions per undo record (about 100 bytes per version). A model
prefix usually holds tens to thousands of versions; the ledger grows linearly,
which is the price of a precise rollback.

``describe`` (``clampdown plan --live``) reads what ``apply`` reads (caller identity,
Object Lock setting, the versions under the prefix and their legal holds, the bucket
policy) and lists the holds it would set and the statement it would add or replace.
"""

# No __future__ annotations: pydantic then reads each field's type as written instead of
# compiling its text at class creation (a ForwardRef per field; lint imports this module).

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import Field, field_validator

from clampdown.core.actions import ActionContext, ActionInput, ActionOutput
from clampdown_aws.base import Aws, AwsAction, AwsActionError, changing
from clampdown_aws.s3_legal_holds import (
    check_object_lock,
    count_unheld,
    release_legal_holds,
    set_legal_holds,
)

SID_PREFIX = "ClampdownLockModelArtifacts-"
OBJECT_ACTIONS = (
    "s3:GetObject",
    "s3:GetObjectVersion",
    "s3:PutObject",
    "s3:DeleteObject",
    "s3:DeleteObjectVersion",
)
BUCKET_ACTIONS = (
    "s3:PutBucketPolicy",
    "s3:DeleteBucketPolicy",
    "s3:PutReplicationConfiguration",
    # a lifecycle expiration rule deletes objects without any DeleteObject call
    "s3:PutLifecycleConfiguration",
)

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_PRINCIPAL = re.compile(r"^arn:aws[a-z-]*:(iam|sts)::(\d{12}|\*):\S+$")
_ASSUMED = re.compile(r"^arn:(?P<p>aws[a-z-]*):sts::(?P<acct>\d{12}):assumed-role/(?P<role>[^/]+)/")


class LockModelArtifacts(AwsAction):
    """Deny everyone except named principals access to a model's artifacts in S3."""

    name = "aws.s3.lock_model_artifacts"
    summary = "Deny all but named principals access to a model prefix in S3; optional legal holds"
    destructive = True
    reversible = True
    iam_actions = (
        "sts:GetCallerIdentity",
        "s3:GetBucketPolicy",
        "s3:PutBucketPolicy",
        "s3:DeleteBucketPolicy",
        "s3:GetBucketObjectLockConfiguration",
        "s3:ListBucketVersions",
        "s3:GetObjectLegalHold",
        "s3:PutObjectLegalHold",
    )

    class Input(ActionInput):
        bucket: str = Field(description="bucket holding the model artifacts")
        prefix: str = Field(
            min_length=1, description='model prefix, e.g. "models/fraud-v3/" (no wildcards)'
        )
        allow_principals: list[str] = Field(
            min_length=1,
            description="IAM ARNs (wildcards allowed) that keep access: break-glass, serving role",
        )
        legal_hold: bool = Field(
            False, description="also put an Object Lock legal hold on every version"
        )

        @field_validator("bucket")
        @classmethod
        def _bucket(cls, value: str) -> str:
            if not _BUCKET.match(value):
                raise ValueError(f"'{value}' is not an S3 bucket name")
            return value

        @field_validator("prefix")
        @classmethod
        def _prefix(cls, value: str) -> str:
            if any(c in value for c in "*?") or value.startswith("/"):
                raise ValueError(
                    "prefix is a literal key prefix such as 'models/fraud-v3/': "
                    "no wildcards, no leading '/'"
                )
            return value

        @field_validator("allow_principals")
        @classmethod
        def _principals(cls, value: list[str]) -> list[str]:
            # an item still written as {{ … }} (lint) is checked again once rendered
            bad = [p for p in value if not (_PRINCIPAL.match(p) or "{{" in p or "{%" in p)]
            if bad:
                raise ValueError(
                    f"not IAM principal ARNs: {', '.join(bad)} "
                    "(expected e.g. arn:aws:iam::123456789012:role/breakglass)"
                )
            return value

    class Output(ActionOutput):
        bucket: str
        statement_sid: str
        policy_changed: bool
        legal_holds_set: int
        changed: bool
        exempt_principals: list[str] = Field(
            description="aws:PrincipalArn values the deny does not apply to (includes the engine)"
        )

    @classmethod
    def iam_resources(cls, with_: Mapping[str, Any]) -> dict[str, list[str]]:
        bucket = with_.get("bucket")
        if not isinstance(bucket, str) or not _BUCKET.match(bucket):
            return {}
        prefix = with_.get("prefix")
        objects = (
            f"arn:aws:s3:::{bucket}/{prefix}*"
            if isinstance(prefix, str) and prefix and "{" not in prefix
            else f"arn:aws:s3:::{bucket}/*"
        )
        bucket_arn = f"arn:aws:s3:::{bucket}"
        return {
            "s3:GetBucketPolicy": [bucket_arn],
            "s3:PutBucketPolicy": [bucket_arn],
            "s3:DeleteBucketPolicy": [bucket_arn],
            "s3:GetBucketObjectLockConfiguration": [bucket_arn],
            "s3:ListBucketVersions": [bucket_arn],
            "s3:GetObjectLegalHold": [objects],
            "s3:PutObjectLegalHold": [objects],
        }

    # --- apply -----------------------------------------------------------------------------

    def apply(self, params: Input, aws: Aws, ctx: ActionContext) -> Output:
        s3 = aws.client("s3")
        check_object_lock(s3, params.bucket, params.legal_hold)
        exempt = _exempt(params, aws)
        sid = statement_sid(params.prefix)
        statement = deny_statement(params.bucket, params.prefix, sid, exempt)
        # Holds before the deny: they stop version deletes by everyone, including the
        # principals the deny exempts (one of which may be the compromised one), and moto
        # (drills) applies a bucket policy's object-level denies to every caller, so holds
        # placed after the lock would fail there.
        holds = set_legal_holds(s3, params.bucket, params.prefix, ctx) if params.legal_hold else 0

        plan = _plan_policy(s3, params.bucket, statement)
        if plan.needed:
            written = plan.merged()
            with changing(  # the undo is on record before the policy changes
                ctx,
                f"restore the bucket policy of s3://{params.bucket} as it was before the lock"
                + ("" if plan.before else " (no policy)"),
                op="restore_bucket_policy",
                bucket=params.bucket,
                sid=sid,
                policy_before=plan.before,
                written_sha256=policy_digest(written),
            ):
                s3.put_bucket_policy(Bucket=params.bucket, Policy=written)
            ctx.logger.info("locked s3://%s/%s (statement %s)", params.bucket, params.prefix, sid)

        return self.Output(
            bucket=params.bucket,
            statement_sid=sid,
            policy_changed=plan.needed,
            legal_holds_set=holds,
            changed=plan.needed or holds > 0,
            exempt_principals=exempt,
        )

    # --- describe (plan --live) ------------------------------------------------------------

    def describe(self, params: Input, aws: Aws, ctx: ActionContext) -> list[str]:
        """What ``apply`` would change now: the legal holds it would set, then the policy."""
        s3 = aws.client("s3")
        check_object_lock(s3, params.bucket, params.legal_hold)
        exempt = _exempt(params, aws)
        sid = statement_sid(params.prefix)
        statement = deny_statement(params.bucket, params.prefix, sid, exempt)
        where = f"s3://{params.bucket}/{params.prefix}"
        lines = []
        if params.legal_hold:
            todo, total = count_unheld(s3, params.bucket, params.prefix)
            if todo:
                held = f" ({total - todo} already held)" if total > todo else ""
                lines.append(
                    f"put an Object Lock legal hold on {todo} of {total} object version(s) "
                    f"under {where}{held}"
                )
        plan = _plan_policy(s3, params.bucket, statement)
        if plan.needed:
            kept = len(plan.statements) - (plan.current is not None)
            if plan.before is None:
                change = f"create the policy of bucket {params.bucket} with statement {sid}"
            elif plan.current is None:
                change = (
                    f"add statement {sid} to the policy of bucket {params.bucket} "
                    f"({kept} statement(s) kept)"
                )
            else:
                change = (
                    f"replace statement {sid}, which differs from the lock, in the policy of "
                    f"bucket {params.bucket} ({kept} other statement(s) kept)"
                )
            lines.append(
                f"{change}: deny reading, writing and deleting {where}* and changing the "
                f"bucket policy to all but {', '.join(exempt)}"
            )
        return lines

    # --- undo ------------------------------------------------------------------------------

    def undo(self, how: dict[str, Any], aws: Aws, ctx: ActionContext) -> None:
        s3 = aws.client("s3")
        op = how["op"]
        if op == "restore_bucket_policy":
            _restore_policy(s3, how, ctx)
        elif op == "release_legal_holds":
            release_legal_holds(s3, how)
        else:
            raise AwsActionError(f"{self.name}: unknown undo operation '{op}'")


# --- policy helpers ----------------------------------------------------------------------


def statement_sid(prefix: str) -> str:
    return SID_PREFIX + hashlib.sha256(prefix.encode()).hexdigest()[:12]


def deny_statement(bucket: str, prefix: str, sid: str, exempt: list[str]) -> dict[str, Any]:
    return {
        "Sid": sid,
        "Effect": "Deny",
        "Principal": "*",
        "Action": [*OBJECT_ACTIONS, *BUCKET_ACTIONS],
        "Resource": [f"arn:aws:s3:::{bucket}/{prefix}*", f"arn:aws:s3:::{bucket}"],
        "Condition": {"ArnNotLike": {"aws:PrincipalArn": exempt}},
    }


def canonical(value: Any) -> Any:
    """A policy fragment in a form where order and one-item lists do not matter."""
    if isinstance(value, dict):
        return {k: canonical(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        items = [canonical(v) for v in value]
        if len(items) == 1:
            return items[0]
        return sorted(items, key=lambda v: json.dumps(v, sort_keys=True))
    return value


def policy_digest(text: str | None) -> str | None:
    if text is None:
        return None
    return hashlib.sha256(json.dumps(canonical(json.loads(text))).encode()).hexdigest()


@dataclass
class _PolicyPlan:
    """The bucket policy now, and whether the lock statement must be written."""

    before: str | None
    document: dict[str, Any]
    statements: list[dict[str, Any]]
    statement: dict[str, Any]
    current: dict[str, Any] | None

    @property
    def needed(self) -> bool:
        return self.current is None or canonical(self.current) != canonical(self.statement)

    def merged(self) -> str:
        """The policy with our statement added or replaced, every other one kept."""
        sid = self.statement["Sid"]
        merged = [s for s in self.statements if s.get("Sid") != sid] + [self.statement]
        return json.dumps({**self.document, "Statement": merged}, indent=2)


def _plan_policy(s3: Any, bucket: str, statement: dict[str, Any]) -> _PolicyPlan:
    before = _get_policy(s3, bucket)
    document = json.loads(before) if before else {"Version": "2012-10-17"}
    statements = document.get("Statement", [])
    if isinstance(statements, dict):
        statements = [statements]
    current = next((s for s in statements if s.get("Sid") == statement["Sid"]), None)
    return _PolicyPlan(before, document, statements, statement, current)


def _get_policy(s3: Any, bucket: str) -> str | None:
    try:
        return str(s3.get_bucket_policy(Bucket=bucket)["Policy"])
    except s3.exceptions.ClientError as exc:
        if exc.response["Error"]["Code"] == "NoSuchBucketPolicy":
            return None
        raise


def _restore_policy(s3: Any, how: dict[str, Any], ctx: ActionContext) -> None:
    """Put the saved policy back; if someone changed the policy since, remove only ours.

    A policy still as it was (the lock never happened, or was put back) is left alone.
    """
    bucket, before, sid = how["bucket"], how["policy_before"], how["sid"]
    current = _get_policy(s3, bucket)
    if policy_digest(current) == policy_digest(before):
        return  # already as before (also: a second rollback)
    if policy_digest(current) == how["written_sha256"]:
        if before is None:
            s3.delete_bucket_policy(Bucket=bucket)
        else:
            s3.put_bucket_policy(Bucket=bucket, Policy=before)
        return
    if current is None:
        return
    document = json.loads(current)
    statements = document.get("Statement", [])
    if isinstance(statements, dict):
        statements = [statements]
    kept = [s for s in statements if s.get("Sid") != sid]
    if len(kept) == len(statements):
        return  # our statement is gone already
    ctx.logger.warning(
        "bucket policy of s3://%s changed after the lock: removing only statement %s",
        bucket,
        sid,
    )
    if kept:
        s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps({**document, "Statement": kept}))
    else:
        s3.delete_bucket_policy(Bucket=bucket)


def _engine_patterns(aws: Aws) -> list[str]:
    """aws:PrincipalArn pattern(s) matching the engine's own principal."""
    arn = str(aws.client("sts").get_caller_identity()["Arn"])
    found = _ASSUMED.match(arn)
    if found:
        base = f"arn:{found['p']}:iam::{found['acct']}:role"
        return [f"{base}/{found['role']}", f"{base}/*/{found['role']}"]
    return [arn]


def _exempt(params: LockModelArtifacts.Input, aws: Aws) -> list[str]:
    """allow_principals and the engine itself: the principals the deny does not apply to."""
    return _dedupe([*params.allow_principals, *_engine_patterns(aws)])


def _dedupe(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))
