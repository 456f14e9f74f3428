"""``aws.iam.revoke_credentials``: cut an IAM user or role off from AWS, reversibly."""

# No __future__ annotations: pydantic then reads each field's type as written instead of
# compiling its text at class creation (a ForwardRef per field; lint imports this module).

import json
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, field_validator

from clampdown.core.actions import ActionContext, ActionInput, ActionOutput
from clampdown_aws.base import Aws, AwsAction, AwsActionError, arn_resources, changing
from clampdown_aws.iam._common import (
    ASSUME_ACTIONS,
    BLOCK_SID,
    IAM_NAME,
    QUARANTINE_SID,
    REVOKE_POLICY,
    REVOKE_SID,
    canonical,
    check_same_principal,
    decoded,
    delete_inline_policy,
    error_code,
    get_inline_policy,
    iam_get,
    list_access_keys,
    now_iso,
    parse_principal_arn,
    policy_statements,
    put_inline_policy,
    random_password,
    resolve_user,
    set_key_status,
)

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
        cutoff = policy_statements(document)[0]["Condition"]["DateLessThan"]["aws:TokenIssueTime"]
    except (IndexError, KeyError, TypeError):
        return False
    return isinstance(cutoff, str) and canonical(document) == canonical(
        revoke_sessions_document(cutoff)
    )


def block_assume_statement() -> dict[str, Any]:
    # Principal "*" (not {"AWS": "*"}): it also covers service and federated principals,
    # e.g. ec2.amazonaws.com handing the role to an instance the attacker controls.
    return {"Sid": BLOCK_SID, "Effect": "Deny", "Principal": "*", "Action": list(ASSUME_ACTIONS)}


# What revoke_credentials needs to do, read with Get/List calls only: ``apply`` acts on
# these answers step by step, ``describe`` (``clampdown plan --live``) only reports them.


def _quarantine_needed(iam: Any, user: str, policy_name: str) -> tuple[bool, dict | None]:
    """(whether the quarantine policy must be written, the inline policy of that name now)."""
    previous = get_inline_policy(iam, "user", user, policy_name)
    return previous is None or canonical(previous) != canonical(quarantine_document()), previous


def _active_key_ids(iam: Any, user: str) -> list[str]:
    return [k["AccessKeyId"] for k in list_access_keys(iam, user) if k.get("Status") == "Active"]


def _has_login_profile(iam: Any, user: str) -> bool:
    try:
        iam.get_login_profile(UserName=user)
    except Exception as exc:
        if error_code(exc) != "NoSuchEntity":
            raise
        return False
    return True


def _resolve_role(iam: Any, principal_arn: str, role: str) -> dict[str, Any]:
    """GetRole, checked to be the role asked for and one whose sessions can be revoked."""
    found = iam_get(iam, "role", role, principal_arn)
    check_same_principal(principal_arn, found["Arn"], "role", role)
    if str(found.get("Path", "")).startswith("/aws-service-role/"):
        raise AwsActionError(
            f"{found['Arn']} is a service-linked role: AWS does not allow revoking its "
            "sessions or changing its policies; contain the service or resource that uses it"
        )
    return found


def _blocked_trust(role: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(trust policy now, trust policy with the assume block) or None: already blocked."""
    trust = decoded(role["AssumeRolePolicyDocument"])
    statements = policy_statements(trust)
    wanted = block_assume_statement()
    if any(canonical(s) == canonical(wanted) for s in statements):
        return None
    applied = {
        **trust,
        "Statement": [s for s in statements if s.get("Sid") != BLOCK_SID] + [wanted],
    }
    return trust, applied


def _revoke_policy_state(iam: Any, role: str) -> tuple[Literal["missing", "foreign", "own"], Any]:
    """Whether the role has no revoke policy, someone else's of that name, or clampdown's
    own from an earlier run (which a new run only moves forward: not a change), and it."""
    previous = get_inline_policy(iam, "role", role, REVOKE_POLICY)
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
            resolve_user(iam, params.principal_arn, name)
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
            before = policy_statements(blocked[0])
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
        arn = resolve_user(iam, params.principal_arn, user)
        if params.block_assume:
            ctx.logger.info("block_assume applies to roles only; %s is a user", arn)
        out = self.Output(principal_type="user")

        # 1. The quarantine policy first: it denies everything at once, including sessions
        #    the user already holds (GetSessionToken/GetFederationToken credentials).
        # Each undo is declared before its call (``changing``): a run killed between the
        # call and the step's end still leaves rollback able to put the change back.
        name = params.quarantine_policy_name
        needed, previous = _quarantine_needed(iam, user, name)
        if needed:
            undo = (
                (
                    f"Delete the quarantine policy {name} from user {user}",
                    {"op": "delete_user_policy", "user_name": user, "policy_name": name},
                )
                if previous is None
                else (
                    f"Restore the previous document of inline policy {name} of user {user}",
                    {
                        "op": "restore_user_policy",
                        "user_name": user,
                        "policy_name": name,
                        "previous_document": previous,
                    },
                )
            )
            with changing(ctx, undo[0], **undo[1]):
                put_inline_policy(iam, "user", user, name, quarantine_document())
            out.policies_attached.append(name)
            ctx.logger.info("attached deny-all policy %s to user %s", name, user)

        # 2. Access keys: deactivate, never delete (the key id stays for the investigation).
        for key_id in _active_key_ids(iam, user):
            with changing(
                ctx,
                f"Re-activate access key {key_id} of user {user}",
                op="activate_access_key",
                user_name=user,
                access_key_id=key_id,
            ):
                iam.update_access_key(UserName=user, AccessKeyId=key_id, Status="Inactive")
            out.deactivated_keys.append(key_id)
            ctx.logger.info("deactivated access key %s of user %s", key_id, user)

        # 3. Console password.
        if _has_login_profile(iam, user) and self._delete_login_profile(iam, user, ctx):
            out.login_profile_deleted = True
            ctx.logger.info("deleted the console login profile of user %s", user)
        return out

    @staticmethod
    def _delete_login_profile(iam: Any, user: str, ctx: ActionContext) -> bool:
        """Delete the console password; False when it was gone already (nothing to undo)."""
        with changing(
            ctx,
            f"Recreate the console login profile of user {user}. The old password "
            "cannot be restored: it gets a random password nobody knows, with "
            "PasswordResetRequired; an administrator must set a temporary password "
            f"(aws iam update-login-profile --user-name {user} --password-reset-required"
            " --password ...) and hand it to the user",
            op="recreate_login_profile",
            user_name=user,
        ) as change:
            try:
                iam.delete_login_profile(UserName=user)
            except Exception as exc:  # deleted in between: the state is as wanted
                if error_code(exc) != "NoSuchEntity":
                    raise
                change.not_made()
                return False
        return True

    # roles ---------------------------------------------------------------------------------

    def _revoke_role(self, iam: Any, params: Input, role: str, ctx: ActionContext) -> Output:
        found = _resolve_role(iam, params.principal_arn, role)
        out = self.Output(principal_type="role")

        # 1. Block new sessions first, so none appears between the cutoff and the block.
        blocked = _blocked_trust(found) if params.block_assume else None
        if blocked is not None:
            trust, applied = blocked
            with changing(
                ctx,
                f"Remove the {BLOCK_SID} deny from the trust policy of role {role} "
                "(restores the saved trust policy if nobody has edited it since)",
                op="restore_trust_policy",
                role_name=role,
                previous_document=trust,
                applied_document=applied,
            ):
                iam.update_assume_role_policy(RoleName=role, PolicyDocument=json.dumps(applied))
            out.trust_policy_changed = True
            ctx.logger.info("trust policy of role %s now denies sts:AssumeRole*", role)

        # 2. Revoke every session issued before now.
        state, previous = _revoke_policy_state(iam, role)
        cutoff = now_iso()
        document = revoke_sessions_document(cutoff)
        if state == "own":  # clampdown's own policy from an earlier run: only the cutoff moves
            put_inline_policy(iam, "role", role, REVOKE_POLICY, document)
        else:
            undo = (
                (
                    f"Delete the {REVOKE_POLICY} policy from role {role} (sessions issued "
                    f"before {cutoff} work again if they have not expired)",
                    {"op": "delete_role_policy", "role_name": role, "policy_name": REVOKE_POLICY},
                )
                if state == "missing"
                else (
                    f"Restore the previous document of inline policy {REVOKE_POLICY} of "
                    f"role {role}",
                    {
                        "op": "restore_role_policy",
                        "role_name": role,
                        "policy_name": REVOKE_POLICY,
                        "previous_document": previous,
                    },
                )
            )
            with changing(ctx, undo[0], **undo[1]):
                put_inline_policy(iam, "role", role, REVOKE_POLICY, document)
            out.policies_attached.append(REVOKE_POLICY)
        out.sessions_revoked_before = cutoff
        ctx.logger.info("revoked sessions of role %s issued before %s", role, cutoff)
        return out

    # rollback ------------------------------------------------------------------------------

    def undo(self, how: dict[str, Any], aws: Aws, ctx: ActionContext) -> None:
        """Put one change back; a change that never happened or is already undone is left
        as it is (a key already Active, a policy already gone or already the saved one, a
        login profile that exists, a trust policy without the deny)."""
        iam = aws.client("iam")
        op = how.get("op")
        if op == "activate_access_key":
            set_key_status(iam, how, "Active", ctx)
        elif op == "recreate_login_profile":
            self._recreate_login_profile(iam, how["user_name"], ctx)
        elif op in ("delete_user_policy", "delete_role_policy"):
            kind = "user" if op == "delete_user_policy" else "role"
            owner = how["user_name"] if kind == "user" else how["role_name"]
            if delete_inline_policy(iam, kind, owner, how["policy_name"]):
                ctx.logger.info("rollback: deleted policy %s of %s", how["policy_name"], owner)
        elif op in ("restore_user_policy", "restore_role_policy"):
            kind = "user" if op == "restore_user_policy" else "role"
            owner = how["user_name"] if kind == "user" else how["role_name"]
            put_inline_policy(iam, kind, owner, how["policy_name"], how["previous_document"])
            ctx.logger.info("rollback: restored policy %s of %s", how["policy_name"], owner)
        elif op == "restore_trust_policy":
            self._restore_trust_policy(iam, how, ctx)
        else:
            raise AwsActionError(f"{self.name} cannot undo unknown operation {op!r}")

    @staticmethod
    def _recreate_login_profile(iam: Any, user: str, ctx: ActionContext) -> None:
        try:
            iam.create_login_profile(
                UserName=user, Password=random_password(), PasswordResetRequired=True
            )
        except Exception as exc:
            code = error_code(exc)
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
        current = decoded(iam.get_role(RoleName=role)["Role"]["AssumeRolePolicyDocument"])
        if canonical(current) == canonical(how["applied_document"]):
            restored = how["previous_document"]
        else:
            statements = policy_statements(current)
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
