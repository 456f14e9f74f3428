"""IAM containment: revoke a principal's credentials, rotate a service user's access key.

``aws.iam.revoke_credentials`` cuts an IAM user or role off: for a user it attaches
a deny-all quarantine policy, deactivates (never deletes) every active access key
and deletes the console login profile; for a role it revokes every session issued
before now (the ``aws:TokenIssueTime`` deny pattern of the IAM console's "Revoke
active sessions") and, on request, denies ``sts:AssumeRole*`` in the trust policy.

``aws.iam.rotate_access_key`` creates a new access key for a service user, stores it
in Secrets Manager, then deactivates the old key(s).

Both also ``describe`` (for ``clampdown plan --live``) what they would change now, with
the same read helpers ``apply`` uses and read-only calls only.

Both record one undo record per change they actually make (nothing when the state
is already as wanted) and never write a secret (secret access key, password) to a
log, an output or an undo record. botocore itself writes request and response
bodies at DEBUG level; :mod:`integrations.aws.base` scrubs those records.
"""

from __future__ import annotations

import json
import re
import secrets
import string
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import Field, field_validator

from clampdown.actions import ActionContext, ActionInput, ActionOutput
from integrations.aws.base import Aws, AwsAction, AwsActionError, arn_resources

QUARANTINE_SID = "ClampdownQuarantine"
REVOKE_POLICY = "clampdown-revoke-older-sessions"
REVOKE_SID = "ClampdownRevokeOlderSessions"
BLOCK_SID = "ClampdownBlockAssume"
ASSUME_ACTIONS = ["sts:AssumeRole", "sts:AssumeRoleWithSAML", "sts:AssumeRoleWithWebIdentity"]
IAM_NAME = r"[\w+=,.@-]{1,128}"

_PRINCIPAL_ARN = re.compile(
    r"^arn:(?P<partition>aws[a-z-]*):iam::(?P<account>\d{12}):(?P<kind>user|role)"
    r"/(?P<path>(?:[\w+=,.@-]+/)*)(?P<name>[\w+=,.@-]{1,128})$"
)
_STS_SESSION_ARN = re.compile(
    r"^arn:aws[a-z-]*:sts::(?P<account>\d{12}):assumed-role/(?P<role>[\w+=,.@-]+)/.+$"
)
_ACCESS_KEY_ID = re.compile(r"^[A-Z0-9]{16,128}$")


# --- shared helpers --------------------------------------------------------------------------


def _error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def _canonical(document: Any) -> str:
    return json.dumps(document, sort_keys=True, separators=(",", ":"))


def _decoded(document: Any) -> dict[str, Any]:
    """A policy document as a dict (botocore decodes them; be safe if it did not)."""
    if isinstance(document, str):
        from urllib.parse import unquote

        return json.loads(unquote(document))
    return dict(document)


def _statements(document: dict[str, Any]) -> list[dict[str, Any]]:
    statements = document.get("Statement", [])
    return [statements] if isinstance(statements, dict) else list(statements)


def _now_iso() -> str:
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


def _check_same_principal(wanted: str, actual: str, kind: str, name: str) -> None:
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


def _list_access_keys(iam: Any, user_name: str) -> list[dict[str, Any]]:
    keys: list[dict[str, Any]] = []
    for page in iam.get_paginator("list_access_keys").paginate(UserName=user_name):
        keys.extend(page.get("AccessKeyMetadata", []))
    return keys


def _set_key_status(iam: Any, how: dict[str, Any], status: str, ctx: ActionContext) -> None:
    try:
        iam.update_access_key(
            UserName=how["user_name"], AccessKeyId=how["access_key_id"], Status=status
        )
    except Exception as exc:
        if _error_code(exc) != "NoSuchEntity":
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


def _get_inline_policy(iam: Any, kind: str, owner: str, policy_name: str) -> dict | None:
    try:
        if kind == "user":
            response = iam.get_user_policy(UserName=owner, PolicyName=policy_name)
        else:
            response = iam.get_role_policy(RoleName=owner, PolicyName=policy_name)
    except Exception as exc:
        if _error_code(exc) == "NoSuchEntity":
            return None
        raise
    return _decoded(response["PolicyDocument"])


def _put_inline_policy(iam: Any, kind: str, owner: str, policy_name: str, document: dict) -> None:
    text = json.dumps(document)
    if kind == "user":
        iam.put_user_policy(UserName=owner, PolicyName=policy_name, PolicyDocument=text)
    else:
        iam.put_role_policy(RoleName=owner, PolicyName=policy_name, PolicyDocument=text)


def _delete_inline_policy(iam: Any, kind: str, owner: str, policy_name: str) -> bool:
    try:
        if kind == "user":
            iam.delete_user_policy(UserName=owner, PolicyName=policy_name)
        else:
            iam.delete_role_policy(RoleName=owner, PolicyName=policy_name)
    except Exception as exc:
        if _error_code(exc) == "NoSuchEntity":
            return False
        raise
    return True


def _random_password() -> str:
    """128 characters from every class IAM password policies can require; never logged."""
    symbols = "!@#$%^&*()_+-=[]{}|'"
    classes = (string.ascii_uppercase, string.ascii_lowercase, string.digits, symbols)
    alphabet = "".join(classes)
    chars = [secrets.choice(c) for c in classes]
    chars += [secrets.choice(alphabet) for _ in range(128 - len(chars))]
    secrets.SystemRandom().shuffle(chars)
    return "".join(chars)


# --- aws.iam.revoke_credentials -------------------------------------------------------------


def quarantine_document() -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [{"Sid": QUARANTINE_SID, "Effect": "Deny", "Action": "*", "Resource": "*"}],
    }


def revoke_sessions_document(cutoff: str) -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": REVOKE_SID,
                "Effect": "Deny",
                "Action": "*",
                "Resource": "*",
                "Condition": {"DateLessThan": {"aws:TokenIssueTime": cutoff}},
            }
        ],
    }


def _is_own_revoke_policy(document: dict[str, Any]) -> bool:
    """True for a revoke-older-sessions policy clampdown wrote (whatever its cutoff)."""
    try:
        cutoff = _statements(document)[0]["Condition"]["DateLessThan"]["aws:TokenIssueTime"]
    except (IndexError, KeyError, TypeError):
        return False
    return isinstance(cutoff, str) and _canonical(document) == _canonical(
        revoke_sessions_document(cutoff)
    )


def block_assume_statement() -> dict[str, Any]:
    # Principal "*" (not {"AWS": "*"}): it also covers service and federated principals,
    # e.g. ec2.amazonaws.com handing the role to an instance the attacker controls.
    return {"Sid": BLOCK_SID, "Effect": "Deny", "Principal": "*", "Action": list(ASSUME_ACTIONS)}


# What revoke_credentials needs to do, read with Get/List calls only: ``apply`` acts on
# these answers step by step, ``describe`` (``clampdown plan --live``) only reports them.


def _resolve_user(iam: Any, principal_arn: str, user: str) -> str:
    """The user's ARN, after checking the name resolves to the principal asked for."""
    arn = str(iam_get(iam, "user", user, principal_arn)["Arn"])
    _check_same_principal(principal_arn, arn, "user", user)
    return arn


def _quarantine_needed(iam: Any, user: str, policy_name: str) -> tuple[bool, dict | None]:
    """(whether the quarantine policy must be written, the inline policy of that name now)."""
    previous = _get_inline_policy(iam, "user", user, policy_name)
    return previous is None or _canonical(previous) != _canonical(quarantine_document()), previous


def _active_key_ids(iam: Any, user: str) -> list[str]:
    return [k["AccessKeyId"] for k in _list_access_keys(iam, user) if k.get("Status") == "Active"]


def _has_login_profile(iam: Any, user: str) -> bool:
    try:
        iam.get_login_profile(UserName=user)
    except Exception as exc:
        if _error_code(exc) != "NoSuchEntity":
            raise
        return False
    return True


def _resolve_role(iam: Any, principal_arn: str, role: str) -> dict[str, Any]:
    """GetRole, checked to be the role asked for and one whose sessions can be revoked."""
    found = iam_get(iam, "role", role, principal_arn)
    _check_same_principal(principal_arn, found["Arn"], "role", role)
    if str(found.get("Path", "")).startswith("/aws-service-role/"):
        raise AwsActionError(
            f"{found['Arn']} is a service-linked role: AWS does not allow revoking its "
            "sessions or changing its policies; contain the service or resource that uses it"
        )
    return found


def _blocked_trust(role: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(trust policy now, trust policy with the assume block) or None: already blocked."""
    trust = _decoded(role["AssumeRolePolicyDocument"])
    statements = _statements(trust)
    wanted = block_assume_statement()
    if any(_canonical(s) == _canonical(wanted) for s in statements):
        return None
    applied = {
        **trust,
        "Statement": [s for s in statements if s.get("Sid") != BLOCK_SID] + [wanted],
    }
    return trust, applied


def _revoke_policy_state(iam: Any, role: str) -> tuple[Literal["missing", "foreign", "own"], Any]:
    """Whether the role has no revoke policy, someone else's of that name, or clampdown's
    own from an earlier run (which a new run only moves forward: not a change), and it."""
    previous = _get_inline_policy(iam, "role", role, REVOKE_POLICY)
    if previous is None:
        return "missing", None
    return ("own" if _is_own_revoke_policy(previous) else "foreign"), previous


class RevokeCredentials(AwsAction):
    """Cut an IAM user or role off from AWS, reversibly.

    User: attach a deny-all inline quarantine policy (first, so it also stops sessions
    the user already obtained with GetSessionToken), deactivate every active access key,
    delete the console login profile. Role: optionally deny ``sts:AssumeRole*`` to every
    principal in the trust policy (first, so no new session appears while revoking), then
    deny everything to sessions issued before now (``aws:TokenIssueTime``).

    Re-running on a role refreshes the session cutoff to the new "now" (sessions issued
    since the first run are revoked too); that refresh records no undo and does not count
    as ``changed``: rollback of the first run removes the policy.
    """

    name = "aws.iam.revoke_credentials"
    summary = "Revoke an IAM user's or role's credentials and sessions (reversible)"
    destructive = True
    reversible = True
    iam_actions = (
        "iam:GetUser",
        "iam:ListAccessKeys",
        "iam:UpdateAccessKey",
        "iam:GetLoginProfile",
        "iam:DeleteLoginProfile",
        "iam:CreateLoginProfile",
        "iam:GetUserPolicy",
        "iam:PutUserPolicy",
        "iam:DeleteUserPolicy",
        "iam:GetRole",
        "iam:GetRolePolicy",
        "iam:PutRolePolicy",
        "iam:DeleteRolePolicy",
        "iam:UpdateAssumeRolePolicy",
    )

    @classmethod
    def iam_resources(cls, with_: Mapping[str, Any]) -> dict[str, list[str]]:
        """A literal user ARN needs only the user calls on that user (roles alike)."""
        narrowed = arn_resources(cls.iam_actions, with_.get("principal_arn"), ":iam::", "iam")
        if not narrowed:
            return {}
        is_role = ":role/" in str(with_["principal_arn"])
        return {
            name: arns if ("Role" in name) == is_role else [] for name, arns in narrowed.items()
        }

    class Input(ActionInput):
        principal_arn: str = Field(
            description="ARN of the IAM user or role, e.g. arn:aws:iam::123456789012:user/alice"
        )
        block_assume: bool = Field(
            False,
            description="role only: also deny sts:AssumeRole* to everyone in its trust policy",
        )
        quarantine_policy_name: str = Field(
            "clampdown-quarantine",
            pattern=f"^{IAM_NAME}$",
            description="user only: name of the inline deny-all policy",
        )

        @field_validator("principal_arn")
        @classmethod
        def _valid_arn(cls, value: str) -> str:
            parse_principal_arn(value)
            return value.strip()

    class Output(ActionOutput):
        principal_type: Literal["user", "role"]
        deactivated_keys: list[str] = Field(default_factory=list)
        login_profile_deleted: bool = False
        policies_attached: list[str] = Field(default_factory=list)
        trust_policy_changed: bool = False
        sessions_revoked_before: str | None = None
        changed: bool = False

    def apply(self, params: Input, aws: Aws, ctx: ActionContext) -> Output:
        parts = parse_principal_arn(params.principal_arn)
        iam = aws.client("iam")
        undo_before = len(ctx.undo)
        if parts["kind"] == "user":
            out = self._revoke_user(iam, params, parts["name"], ctx)
        else:
            out = self._revoke_role(iam, params, parts["name"], ctx)
        out.changed = len(ctx.undo) > undo_before
        return out

    def describe(self, params: Input, aws: Aws, ctx: ActionContext) -> list[str]:
        """What ``apply`` would change now, in the order it would change it.

        A role that already carries clampdown's revoke policy shows no change: a new run
        only moves the cutoff forward, which ``apply`` does not count as a change either.
        """
        parts = parse_principal_arn(params.principal_arn)
        iam, name = aws.client("iam"), parts["name"]
        changes: list[str] = []
        if parts["kind"] == "user":
            _resolve_user(iam, params.principal_arn, name)
            policy = params.quarantine_policy_name
            needed, previous = _quarantine_needed(iam, name, policy)
            if needed and previous is None:
                changes.append(f"attach inline deny-all policy {policy} to user {name}")
            elif needed:
                changes.append(
                    f"replace the document of inline policy {policy} of user {name} with "
                    "deny-all (the current document is kept for rollback)"
                )
            changes += [
                f"deactivate (not delete) access key {key_id} of user {name}"
                for key_id in _active_key_ids(iam, name)
            ]
            if _has_login_profile(iam, name):
                changes.append(
                    f"delete the console login profile of user {name} (rollback cannot restore "
                    "the password: it recreates the profile with a new one)"
                )
            return changes

        found = _resolve_role(iam, params.principal_arn, name)
        blocked = _blocked_trust(found) if params.block_assume else None
        if blocked is not None:
            before = _statements(blocked[0])
            kept = [s for s in before if s.get("Sid") != BLOCK_SID]
            verb = "add" if len(kept) == len(before) else "replace"
            changes.append(
                f"{verb} statement {BLOCK_SID} (deny sts:AssumeRole* to every principal) in "
                f"the trust policy of role {name} ({len(kept)} statement(s) kept)"
            )
        state, _ = _revoke_policy_state(iam, name)
        deny = (
            "deny everything to sessions issued before the step runs (aws:TokenIssueTime; "
            "the exact cutoff is known only then)"
        )
        if state == "missing":
            changes.append(f"attach inline policy {REVOKE_POLICY} to role {name}: {deny}")
        elif state == "foreign":
            changes.append(
                f"replace inline policy {REVOKE_POLICY} of role {name}, which clampdown did not "
                f"write (its document is kept for rollback), with clampdown's: {deny}"
            )
        return changes

    # users ---------------------------------------------------------------------------------

    def _revoke_user(self, iam: Any, params: Input, user: str, ctx: ActionContext) -> Output:
        arn = _resolve_user(iam, params.principal_arn, user)
        if params.block_assume:
            ctx.logger.info("block_assume applies to roles only; %s is a user", arn)
        out = self.Output(principal_type="user")

        # 1. The quarantine policy first: it denies everything at once, including sessions
        #    the user already holds (GetSessionToken/GetFederationToken credentials).
        name = params.quarantine_policy_name
        needed, previous = _quarantine_needed(iam, user, name)
        if needed:
            _put_inline_policy(iam, "user", user, name, quarantine_document())
            out.policies_attached.append(name)
            ctx.logger.info("attached deny-all policy %s to user %s", name, user)
            if previous is None:
                ctx.record_undo(
                    f"Delete the quarantine policy {name} from user {user}",
                    op="delete_user_policy",
                    user_name=user,
                    policy_name=name,
                )
            else:
                ctx.record_undo(
                    f"Restore the previous document of inline policy {name} of user {user}",
                    op="restore_user_policy",
                    user_name=user,
                    policy_name=name,
                    previous_document=previous,
                )

        # 2. Access keys: deactivate, never delete (the key id stays for the investigation).
        for key_id in _active_key_ids(iam, user):
            iam.update_access_key(UserName=user, AccessKeyId=key_id, Status="Inactive")
            out.deactivated_keys.append(key_id)
            ctx.logger.info("deactivated access key %s of user %s", key_id, user)
            ctx.record_undo(
                f"Re-activate access key {key_id} of user {user}",
                op="activate_access_key",
                user_name=user,
                access_key_id=key_id,
            )

        # 3. Console password.
        if _has_login_profile(iam, user):
            try:
                iam.delete_login_profile(UserName=user)
                deleted = True
            except Exception as exc:  # deleted in between: the state is as wanted
                if _error_code(exc) != "NoSuchEntity":
                    raise
                deleted = False
            if deleted:
                out.login_profile_deleted = True
                ctx.logger.info("deleted the console login profile of user %s", user)
                ctx.record_undo(
                    f"Recreate the console login profile of user {user}. The old password "
                    "cannot be restored: it gets a random password nobody knows, with "
                    "PasswordResetRequired; an administrator must set a temporary password "
                    f"(aws iam update-login-profile --user-name {user} --password-reset-required"
                    " --password ...) and hand it to the user",
                    op="recreate_login_profile",
                    user_name=user,
                )
        return out

    # roles ---------------------------------------------------------------------------------

    def _revoke_role(self, iam: Any, params: Input, role: str, ctx: ActionContext) -> Output:
        found = _resolve_role(iam, params.principal_arn, role)
        out = self.Output(principal_type="role")

        # 1. Block new sessions first, so none appears between the cutoff and the block.
        blocked = _blocked_trust(found) if params.block_assume else None
        if blocked is not None:
            trust, applied = blocked
            iam.update_assume_role_policy(RoleName=role, PolicyDocument=json.dumps(applied))
            out.trust_policy_changed = True
            ctx.logger.info("trust policy of role %s now denies sts:AssumeRole*", role)
            ctx.record_undo(
                f"Remove the {BLOCK_SID} deny from the trust policy of role {role} "
                "(restores the saved trust policy if nobody has edited it since)",
                op="restore_trust_policy",
                role_name=role,
                previous_document=trust,
                applied_document=applied,
            )

        # 2. Revoke every session issued before now.
        state, previous = _revoke_policy_state(iam, role)
        cutoff = _now_iso()
        _put_inline_policy(iam, "role", role, REVOKE_POLICY, revoke_sessions_document(cutoff))
        out.sessions_revoked_before = cutoff
        ctx.logger.info("revoked sessions of role %s issued before %s", role, cutoff)
        if state == "missing":
            out.policies_attached.append(REVOKE_POLICY)
            ctx.record_undo(
                f"Delete the {REVOKE_POLICY} policy from role {role} (sessions issued before "
                f"{cutoff} work again if they have not expired)",
                op="delete_role_policy",
                role_name=role,
                policy_name=REVOKE_POLICY,
            )
        elif state == "foreign":
            out.policies_attached.append(REVOKE_POLICY)
            ctx.record_undo(
                f"Restore the previous document of inline policy {REVOKE_POLICY} of role {role}",
                op="restore_role_policy",
                role_name=role,
                policy_name=REVOKE_POLICY,
                previous_document=previous,
            )
        # else: clampdown's own policy from an earlier run, only its cutoff moved forward.
        return out

    # rollback ------------------------------------------------------------------------------

    def undo(self, how: dict[str, Any], aws: Aws, ctx: ActionContext) -> None:
        iam = aws.client("iam")
        op = how.get("op")
        if op == "activate_access_key":
            _set_key_status(iam, how, "Active", ctx)
        elif op == "recreate_login_profile":
            self._recreate_login_profile(iam, how["user_name"], ctx)
        elif op in ("delete_user_policy", "delete_role_policy"):
            kind = "user" if op == "delete_user_policy" else "role"
            owner = how["user_name"] if kind == "user" else how["role_name"]
            if _delete_inline_policy(iam, kind, owner, how["policy_name"]):
                ctx.logger.info("rollback: deleted policy %s of %s", how["policy_name"], owner)
        elif op in ("restore_user_policy", "restore_role_policy"):
            kind = "user" if op == "restore_user_policy" else "role"
            owner = how["user_name"] if kind == "user" else how["role_name"]
            _put_inline_policy(iam, kind, owner, how["policy_name"], how["previous_document"])
            ctx.logger.info("rollback: restored policy %s of %s", how["policy_name"], owner)
        elif op == "restore_trust_policy":
            self._restore_trust_policy(iam, how, ctx)
        else:
            raise AwsActionError(f"{self.name} cannot undo unknown operation {op!r}")

    @staticmethod
    def _recreate_login_profile(iam: Any, user: str, ctx: ActionContext) -> None:
        try:
            iam.create_login_profile(
                UserName=user, Password=_random_password(), PasswordResetRequired=True
            )
        except Exception as exc:
            code = _error_code(exc)
            if code == "EntityAlreadyExists":
                return
            if code == "NoSuchEntity":
                ctx.logger.warning("user %s no longer exists; no login profile to recreate", user)
                return
            raise
        ctx.logger.info(
            "rollback: recreated the login profile of user %s with a random password and "
            "PasswordResetRequired; an administrator must set a temporary password for them",
            user,
        )

    @staticmethod
    def _restore_trust_policy(iam: Any, how: dict[str, Any], ctx: ActionContext) -> None:
        role = how["role_name"]
        current = _decoded(iam.get_role(RoleName=role)["Role"]["AssumeRolePolicyDocument"])
        if _canonical(current) == _canonical(how["applied_document"]):
            restored = how["previous_document"]
        else:
            statements = _statements(current)
            kept = [s for s in statements if s.get("Sid") != BLOCK_SID]
            if len(kept) == len(statements):
                return  # our deny is gone already
            ctx.logger.warning(
                "the trust policy of role %s was edited after clampdown blocked it: removing "
                "only the %s statement and keeping the other edits",
                role,
                BLOCK_SID,
            )
            restored = {**current, "Statement": kept}
        iam.update_assume_role_policy(RoleName=role, PolicyDocument=json.dumps(restored))
        ctx.logger.info("rollback: trust policy of role %s no longer denies assume", role)


def iam_get(iam: Any, kind: str, name: str, arn: str) -> dict[str, Any]:
    """GetUser / GetRole with a clear message when the principal does not exist."""
    try:
        if kind == "user":
            return iam.get_user(UserName=name)["User"]
        return iam.get_role(RoleName=name)["Role"]
    except Exception as exc:
        if _error_code(exc) != "NoSuchEntity":
            raise
    raise AwsActionError(
        f"no IAM {kind} named '{name}' in the account this step runs in ({arn} was asked for); "
        "check the ARN, and the step's `account:` for a principal in another account"
    )


# --- aws.iam.rotate_access_key --------------------------------------------------------------

_ROTATION_NAMESPACE = uuid.UUID("6f1c7d2e-1b1a-4c55-9a61-2c0d3a8f1e42")


def _stored_key_id(sm: Any, secret_id: str, version_id: str) -> str | None:
    """The AccessKeyId in one version of the secret; the secret itself is dropped at once."""
    text = sm.get_secret_value(SecretId=secret_id, VersionId=version_id).get("SecretString")
    key_id: str | None = None
    try:
        value = json.loads(text) if text else None
        if isinstance(value, dict) and isinstance(value.get("AccessKeyId"), str):
            key_id = value["AccessKeyId"]
    except ValueError:
        key_id = None
    finally:
        text = value = None  # drop the secret as soon as possible
    return key_id


@dataclass
class _Rotation:
    """What a rotation found before changing anything."""

    user: str
    keys: list[dict[str, Any]]
    status: dict[str, str | None]  # access key id -> Active / Inactive
    version_id: str  # the secret version this rotation writes (from its rotation token)
    secret: dict[str, Any] | None  # DescribeSecret; None: the secret does not exist yet
    current_version: str | None
    current_key: str | None  # the access key id the secret's current version holds
    done_key: str | None  # the new key already in place (this rotation ran); None: create one

    @property
    def secret_arn(self) -> str:
        return str((self.secret or {}).get("ARN", ""))


def _keys_to_deactivate(
    status: dict[str, str | None], old: str | None, new_id: str | None
) -> list[str]:
    """The active keys a rotation retires: ``old``, or every key but the new one."""
    targets = [old] if old is not None else [k for k in status if k != new_id]
    return [k for k in targets if k != new_id and status.get(k) == "Active"]


class RotateAccessKey(AwsAction):
    """Give a service user a new access key, stored in Secrets Manager, and retire the old.

    A rotation is identified by ``rotation_token`` (default: run id + step id). Running the
    same rotation again finishes it if it was interrupted and otherwise changes nothing.
    With ``old_access_key_id``, a run also changes nothing when the secret already holds
    another active key of the user and the old key is inactive.
    """

    name = "aws.iam.rotate_access_key"
    summary = "Rotate an IAM user's access key into a Secrets Manager secret (reversible)"
    destructive = True
    reversible = True
    iam_actions = (
        "iam:GetUser",
        "iam:ListAccessKeys",
        "iam:CreateAccessKey",
        "iam:UpdateAccessKey",
        "iam:DeleteAccessKey",
        "secretsmanager:DescribeSecret",
        "secretsmanager:GetSecretValue",
        "secretsmanager:CreateSecret",
        "secretsmanager:PutSecretValue",
        "secretsmanager:UpdateSecretVersionStage",
    )

    @classmethod
    def iam_resources(cls, with_: Mapping[str, Any]) -> dict[str, list[str]]:
        return arn_resources(cls.iam_actions, with_.get("user_name"), ":user/", "iam")

    class Input(ActionInput):
        user_name: str = Field(
            description="IAM user name, or its ARN (then the account and path are checked too)"
        )
        secret_id: str = Field(
            min_length=1,
            max_length=2048,
            description="Secrets Manager secret name or ARN; a name that does not exist is created",
        )
        old_access_key_id: str | None = Field(
            None, description="the key to retire; default: every other active key of the user"
        )
        rotation_token: str | None = Field(
            None,
            min_length=1,
            max_length=256,
            description="identifies this rotation for idempotency; default: run id + step id",
        )
        delete_inactive_key: bool = Field(
            False,
            description="when the user already has 2 keys, delete an inactive one (not "
            "old_access_key_id) to make room; cannot be undone",
        )

        @field_validator("user_name")
        @classmethod
        def _valid_user(cls, value: str) -> str:
            value = value.strip()
            if value.startswith("arn:"):
                if parse_principal_arn(value)["kind"] != "user":
                    raise ValueError(f"'{value}' is a role; access keys belong to IAM users")
            elif not re.fullmatch(r"[\w+=,.@-]{1,64}", value):
                raise ValueError(f"'{value}' is not an IAM user name or user ARN")
            return value

        @field_validator("old_access_key_id")
        @classmethod
        def _valid_key_id(cls, value: str | None) -> str | None:
            if value is not None and not _ACCESS_KEY_ID.match(value):
                raise ValueError(f"'{value}' is not an access key id (like AKIA...)")
            return value

    class Output(ActionOutput):
        new_access_key_id: str
        secret_arn: str
        deactivated_keys: list[str] = Field(default_factory=list)
        deleted_keys: list[str] = Field(default_factory=list)
        changed: bool = False

    def apply(self, params: Input, aws: Aws, ctx: ActionContext) -> Output:
        iam, sm = aws.client("iam"), aws.client("secretsmanager")
        found = self._assess(iam, sm, params, ctx)
        user = found.user
        out_deleted: list[str] = []
        if found.done_key is not None:  # this rotation, or an earlier one away from `old`
            new_id, secret_arn = found.done_key, found.secret_arn
        else:
            victim = self._room_to_make(user, found.keys, params)
            if victim is not None:
                iam.delete_access_key(UserName=user, AccessKeyId=victim)
                out_deleted.append(victim)
                ctx.logger.warning(
                    "deleted inactive access key %s of user %s to make room "
                    "(delete_inactive_key); this cannot be undone",
                    victim,
                    user,
                )
            new_id, secret_arn = self._create_and_store(
                iam, sm, user, params.secret_id, found.secret, found.version_id, ctx
            )
            ctx.record_undo(
                f"Deactivate (not delete) the new access key {new_id} of user {user}",
                op="deactivate_access_key",
                user_name=user,
                access_key_id=new_id,
            )
            if found.current_version is not None:
                ctx.record_undo(
                    f"Point the secret {secret_arn} back at its previous version "
                    f"{found.current_version} (the key it held is re-activated too); the new "
                    "version is kept",
                    op="restore_secret_current",
                    secret_arn=secret_arn,
                    version_id=found.version_id,
                    previous_version_id=found.current_version,
                )

        deactivated: list[str] = []
        for key_id in _keys_to_deactivate(found.status, params.old_access_key_id, new_id):
            iam.update_access_key(UserName=user, AccessKeyId=key_id, Status="Inactive")
            deactivated.append(key_id)
            ctx.logger.info("deactivated old access key %s of user %s", key_id, user)
            ctx.record_undo(
                f"Re-activate the old access key {key_id} of user {user}",
                op="activate_access_key",
                user_name=user,
                access_key_id=key_id,
            )
        return self.Output(
            new_access_key_id=new_id,
            secret_arn=secret_arn,
            deactivated_keys=deactivated,
            deleted_keys=out_deleted,
            changed=bool(deactivated or out_deleted or new_id not in found.status),
        )

    def describe(self, params: Input, aws: Aws, ctx: ActionContext) -> list[str]:
        """What ``apply`` would change now, in the order it would change it.

        It reads the secret's current version (GetSecretValue) to learn which key it holds,
        as ``apply`` does, and drops the value at once. Without ``rotation_token`` a preview
        stands for a new run, which rotates again (the token defaults to the run id).
        """
        iam, sm = aws.client("iam"), aws.client("secretsmanager")
        found = self._assess(iam, sm, params, ctx)
        user = found.user
        changes: list[str] = []
        if found.done_key is None:
            victim = self._room_to_make(user, found.keys, params)
            if victim is not None:
                changes.append(
                    f"delete inactive access key {victim} of user {user} to make room for the "
                    "new one (delete_inactive_key; cannot be undone)"
                )
            changes.append(
                f"create a new access key for user {user} (its id is known only once created)"
            )
            if found.secret is None:
                changes.append(f"create secret {params.secret_id} holding the new key")
            else:
                held = (
                    f" (the version holding key {found.current_key} becomes AWSPREVIOUS)"
                    if found.current_key
                    else ""
                )
                changes.append(
                    f"store the new key as the current version of secret {found.secret_arn}{held}"
                )
        changes += [
            f"deactivate (not delete) old access key {key_id} of user {user}"
            for key_id in _keys_to_deactivate(
                found.status, params.old_access_key_id, found.done_key
            )
        ]
        return changes

    def _assess(self, iam: Any, sm: Any, params: Input, ctx: ActionContext) -> _Rotation:
        """Everything a rotation needs to know, read before anything changes (Get/List/
        Describe only); raises when the rotation cannot go ahead."""
        user = params.user_name
        if user.startswith("arn:"):
            user = parse_principal_arn(params.user_name)["name"]
            _resolve_user(iam, params.user_name, user)
        try:
            keys = _list_access_keys(iam, user)
        except Exception as exc:
            if _error_code(exc) != "NoSuchEntity":
                raise
            raise AwsActionError(
                f"no IAM user named '{user}' in the account this step runs in"
            ) from None
        status = {k["AccessKeyId"]: k.get("Status") for k in keys}
        old = params.old_access_key_id
        if old is not None and old not in status:
            raise AwsActionError(
                f"access key {old} is not a key of user {user} (its keys: "
                f"{_describe_keys(keys) or 'none'}); check old_access_key_id"
            )

        token = params.rotation_token or f"{ctx.run_id}/{ctx.step_id}"
        version_id = str(uuid.uuid5(_ROTATION_NAMESPACE, f"{user}\n{params.secret_id}\n{token}"))
        secret = self._describe_secret(sm, params.secret_id)
        stages: dict[str, list[str]] = (secret or {}).get("VersionIdsToStages") or {}
        current_version = next((v for v, s in stages.items() if "AWSCURRENT" in s), None)
        current_key = None
        if current_version is not None:
            current_key = _stored_key_id(sm, secret["ARN"], current_version)
            if current_key is None:
                raise AwsActionError(
                    f"secret {params.secret_id} holds something other than an access key "
                    "(expected JSON with AccessKeyId and SecretAccessKey); clampdown will not "
                    "overwrite it: choose another secret_id"
                )
        found = _Rotation(
            user, keys, status, version_id, secret, current_version, current_key, None
        )

        if version_id in stages:  # this rotation stored its key already: finish it
            new_id = (
                current_key
                if current_version == version_id
                else _stored_key_id(sm, secret["ARN"], version_id)
            )
            if current_version != version_id or status.get(new_id) != "Active":
                raise AwsActionError(
                    f"rotation '{token}' of user {user} already ran and was since rolled back or "
                    f"superseded (key {new_id} is {status.get(new_id, 'deleted')}, the secret's "
                    f"current version is {current_version}); pass a new rotation_token to rotate "
                    "again"
                )
            found.done_key = new_id
        elif (
            old is not None
            and current_key not in (None, old)
            and status.get(current_key) == ("Active")
        ):
            found.done_key = current_key  # already rotated away from `old`
        return found

    @staticmethod
    def _describe_secret(sm: Any, secret_id: str) -> dict[str, Any] | None:
        try:
            secret = sm.describe_secret(SecretId=secret_id)
        except Exception as exc:
            if _error_code(exc) != "ResourceNotFoundException":
                raise
            if secret_id.startswith("arn:"):
                raise AwsActionError(
                    f"secret {secret_id} does not exist; give a secret name (not an ARN) to "
                    "have it created"
                ) from None
            return None
        if secret.get("DeletedDate"):
            raise AwsActionError(
                f"secret {secret_id} is scheduled for deletion; restore it first "
                f"(aws secretsmanager restore-secret --secret-id {secret_id}) or choose another"
            )
        return secret

    @staticmethod
    def _room_to_make(user: str, keys: list[dict[str, Any]], params: Input) -> str | None:
        """IAM allows 2 keys per user: the inactive key to delete (only when asked to), or
        None when there is room; raises when there is none."""
        if len(keys) < 2:
            return None
        candidates = sorted(
            (
                k
                for k in keys
                if k.get("Status") == "Inactive" and k["AccessKeyId"] != params.old_access_key_id
            ),
            key=lambda k: str(k.get("CreateDate", "")),
        )
        if not (params.delete_inactive_key and candidates):
            hint = (
                f"delete the inactive key you no longer need (aws iam delete-access-key "
                f"--user-name {user} --access-key-id {candidates[0]['AccessKeyId']}) or set "
                "delete_inactive_key: true, then run again"
                if candidates
                else f"deactivate and delete a key you no longer need (aws iam update-access-key "
                f"--status Inactive, then aws iam delete-access-key --user-name {user} "
                "--access-key-id ...), then run again"
            )
            raise AwsActionError(
                f"user {user} already has 2 access keys ({_describe_keys(keys)}), the most IAM "
                f"allows, so no new key can be created; clampdown does not delete keys on its "
                f"own: {hint}"
            )
        return str(candidates[0]["AccessKeyId"])

    @staticmethod
    def _create_and_store(
        iam: Any,
        sm: Any,
        user: str,
        secret_id: str,
        secret: dict[str, Any] | None,
        version_id: str,
        ctx: ActionContext,
    ) -> tuple[str, str]:
        created = iam.create_access_key(UserName=user)["AccessKey"]
        new_id = created["AccessKeyId"]
        payload = json.dumps(
            {"AccessKeyId": new_id, "SecretAccessKey": created.pop("SecretAccessKey")}
        )
        created = None
        try:
            if secret is None:
                secret_arn = sm.create_secret(
                    Name=secret_id,
                    SecretString=payload,
                    ClientRequestToken=version_id,
                    Description=f"AWS access key of IAM user {user} (rotated by clampdown)",
                )["ARN"]
            else:
                secret_arn = secret["ARN"]
                sm.put_secret_value(
                    SecretId=secret_arn, SecretString=payload, ClientRequestToken=version_id
                )
        except BaseException:
            payload = ""
            if _version_exists(sm, secret_id, version_id):
                # Stored after all (only the answer was lost): keep the key, a re-run of
                # this rotation finds the version and finishes.
                raise
            # Nobody else ever saw this key's secret: remove it so no live credential
            # exists outside the secret store.
            try:
                iam.delete_access_key(UserName=user, AccessKeyId=new_id)
                ctx.logger.warning(
                    "could not store new access key %s of user %s; deleted it again", new_id, user
                )
            except Exception:
                ctx.logger.error(
                    "could not store new access key %s of user %s, nor delete it: delete it "
                    "by hand (aws iam delete-access-key --user-name %s --access-key-id %s)",
                    new_id,
                    user,
                    user,
                    new_id,
                )
            raise
        payload = ""
        ctx.logger.info(
            "created access key %s for user %s and stored it in %s", new_id, user, secret_arn
        )
        return new_id, secret_arn

    def undo(self, how: dict[str, Any], aws: Aws, ctx: ActionContext) -> None:
        op = how.get("op")
        if op == "activate_access_key":
            _set_key_status(aws.client("iam"), how, "Active", ctx)
        elif op == "deactivate_access_key":
            _set_key_status(aws.client("iam"), how, "Inactive", ctx)
        elif op == "restore_secret_current":
            self._restore_secret_current(aws.client("secretsmanager"), how, ctx)
        else:
            raise AwsActionError(f"{self.name} cannot undo unknown operation {op!r}")

    @staticmethod
    def _restore_secret_current(sm: Any, how: dict[str, Any], ctx: ActionContext) -> None:
        secret_arn, ours, previous = (
            how["secret_arn"],
            how["version_id"],
            how["previous_version_id"],
        )
        stages = sm.describe_secret(SecretId=secret_arn).get("VersionIdsToStages") or {}
        if "AWSCURRENT" not in stages.get(ours, []):
            if "AWSCURRENT" not in stages.get(previous, []):
                ctx.logger.warning(
                    "secret %s has moved on since the rotation (its current version is neither "
                    "the rotated nor the previous one); left as it is",
                    secret_arn,
                )
            return
        if previous not in stages:
            ctx.logger.warning(
                "secret %s no longer has version %s; it keeps the rotated key", secret_arn, previous
            )
            return
        sm.update_secret_version_stage(
            SecretId=secret_arn,
            VersionStage="AWSCURRENT",
            MoveToVersionId=previous,
            RemoveFromVersionId=ours,
        )
        ctx.logger.info("rollback: secret %s points at version %s again", secret_arn, previous)


def _version_exists(sm: Any, secret_id: str, version_id: str) -> bool:
    try:
        stages = sm.describe_secret(SecretId=secret_id).get("VersionIdsToStages") or {}
    except Exception:
        return False
    return version_id in stages


def _describe_keys(keys: list[dict[str, Any]]) -> str:
    return ", ".join(f"{k['AccessKeyId']} {k.get('Status', '?')}" for k in keys)
