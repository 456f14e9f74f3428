"""What the IAM actions share: ARN parsing, access keys, inline policies."""

from __future__ import annotations

import json
import re
import secrets
import string
from datetime import UTC, datetime
from typing import Any

from clampdown.core.actions import ActionContext
from clampdown_aws.base import AwsActionError

QUARANTINE_SID = "ClampdownQuarantine"
REVOKE_POLICY = "clampdown-revoke-older-sessions"
REVOKE_SID = "ClampdownRevokeOlderSessions"
BLOCK_SID = "ClampdownBlockAssume"
ASSUME_ACTIONS = ["sts:AssumeRole", "sts:AssumeRoleWithSAML", "sts:AssumeRoleWithWebIdentity"]
IAM_NAME = r"[A-Za-z0-9_+=,.@-]{1,128}"  # IAM allows these ASCII characters only

_PRINCIPAL_ARN = re.compile(
    r"^arn:(?P<partition>aws[a-z-]*):iam::(?P<account>\d{12}):(?P<kind>user|role)"
    r"/(?P<path>(?:[A-Za-z0-9_+=,.@-]+/)*)(?P<name>[A-Za-z0-9_+=,.@-]{1,128})$"
)
_STS_SESSION_ARN = re.compile(
    r"^arn:aws[a-z-]*:sts::(?P<account>\d{12}):assumed-role/(?P<role>[A-Za-z0-9_+=,.@-]+)/.+$"
)
ACCESS_KEY_ID = re.compile(r"^[A-Z0-9]{16,128}$")


# --- shared helpers --------------------------------------------------------------------------


def error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def canonical(document: Any) -> str:
    return json.dumps(document, sort_keys=True, separators=(",", ":"))


def decoded(document: Any) -> dict[str, Any]:
    """A policy document as a dict (botocore decodes them; be safe if it did not)."""
    if isinstance(document, str):
        from urllib.parse import unquote

        return json.loads(unquote(document))
    return dict(document)


def policy_statements(document: dict[str, Any]) -> list[dict[str, Any]]:
    statements = document.get("Statement", [])
    return [statements] if isinstance(statements, dict) else list(statements)


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_principal_arn(arn: str) -> dict[str, str]:
    """The parts of an IAM user or role ARN, or ValueError with what to pass instead."""
    found = _PRINCIPAL_ARN.match(arn.strip())
    if found:
        return found.groupdict()
    session = _STS_SESSION_ARN.match(arn.strip())
    if session:
        raise ValueError(
            f"'{arn}' is an STS session (assumed-role) ARN, not a principal; pass the role's "
            f"ARN instead: arn:aws:iam::{session['account']}:role/{session['role']} "
            "(with the role's path, if it has one)"
        )
    if re.match(r"^arn:aws[a-z-]*:iam::\d{12}:root$", arn.strip()):
        raise ValueError(
            f"'{arn}' is an account root user: its credentials cannot be revoked through IAM "
            "(use the root user's security credentials page, and an SCP to contain it)"
        )
    raise ValueError(
        f"'{arn}' is not an IAM user or role ARN; expected "
        "arn:aws:iam::<12-digit account>:user/<name> or arn:aws:iam::<account>:role/<path/><name>"
    )


def check_same_principal(wanted: str, actual: str, kind: str, name: str) -> None:
    """IAM addresses users and roles by name: make sure the name resolves to the ARN asked
    for (same account and path), so a same-named principal elsewhere is never touched."""
    if wanted.lower() == actual.lower():
        return
    want, got = parse_principal_arn(wanted), parse_principal_arn(actual)
    if want["account"] != got["account"]:
        raise AwsActionError(
            f"{wanted} is in account {want['account']}, but this step's credentials are for "
            f"account {got['account']} (where {kind} '{name}' is {actual}); set the step's "
            f"`account:` to a role in account {want['account']}"
        )
    raise AwsActionError(
        f"{kind} '{name}' is {actual}, not {wanted}; check the ARN (path and partition)"
    )


def list_access_keys(iam: Any, user_name: str) -> list[dict[str, Any]]:
    keys: list[dict[str, Any]] = []
    for page in iam.get_paginator("list_access_keys").paginate(UserName=user_name):
        keys.extend(page.get("AccessKeyMetadata", []))
    return keys


def set_key_status(iam: Any, how: dict[str, Any], status: str, ctx: ActionContext) -> None:
    try:
        iam.update_access_key(
            UserName=how["user_name"], AccessKeyId=how["access_key_id"], Status=status
        )
    except Exception as exc:
        if error_code(exc) != "NoSuchEntity":
            raise
        ctx.logger.warning(
            "access key %s of user %s no longer exists; nothing to set %s",
            how["access_key_id"],
            how["user_name"],
            status,
        )
        return
    ctx.logger.info(
        "rollback: access key %s of %s is %s", how["access_key_id"], how["user_name"], status
    )


def get_inline_policy(iam: Any, kind: str, owner: str, policy_name: str) -> dict | None:
    try:
        if kind == "user":
            response = iam.get_user_policy(UserName=owner, PolicyName=policy_name)
        else:
            response = iam.get_role_policy(RoleName=owner, PolicyName=policy_name)
    except Exception as exc:
        if error_code(exc) == "NoSuchEntity":
            return None
        raise
    return decoded(response["PolicyDocument"])


def put_inline_policy(iam: Any, kind: str, owner: str, policy_name: str, document: dict) -> None:
    text = json.dumps(document)
    if kind == "user":
        iam.put_user_policy(UserName=owner, PolicyName=policy_name, PolicyDocument=text)
    else:
        iam.put_role_policy(RoleName=owner, PolicyName=policy_name, PolicyDocument=text)


def delete_inline_policy(iam: Any, kind: str, owner: str, policy_name: str) -> bool:
    try:
        if kind == "user":
            iam.delete_user_policy(UserName=owner, PolicyName=policy_name)
        else:
            iam.delete_role_policy(RoleName=owner, PolicyName=policy_name)
    except Exception as exc:
        if error_code(exc) == "NoSuchEntity":
            return False
        raise
    return True


def random_password() -> str:
    """128 characters from every class IAM password policies can require; never logged."""
    symbols = "!@#$%^&*()_+-=[]{}|'"
    classes = (string.ascii_uppercase, string.ascii_lowercase, string.digits, symbols)
    alphabet = "".join(classes)
    chars = [secrets.choice(c) for c in classes]
    chars += [secrets.choice(alphabet) for _ in range(128 - len(chars))]
    secrets.SystemRandom().shuffle(chars)
    return "".join(chars)


def iam_get(iam: Any, kind: str, name: str, arn: str) -> dict[str, Any]:
    """GetUser / GetRole with a clear message when the principal does not exist."""
    try:
        if kind == "user":
            return iam.get_user(UserName=name)["User"]
        return iam.get_role(RoleName=name)["Role"]
    except Exception as exc:
        if error_code(exc) != "NoSuchEntity":
            raise
    raise AwsActionError(
        f"no IAM {kind} named '{name}' in the account this step runs in ({arn} was asked for); "
        "check the ARN, and the step's `account:` for a principal in another account"
    )


def resolve_user(iam: Any, principal_arn: str, user: str) -> str:
    """The user's ARN, after checking the name resolves to the principal asked for."""
    arn = str(iam_get(iam, "user", user, principal_arn)["Arn"])
    check_same_principal(principal_arn, arn, "user", user)
    return arn
