"""``aws.iam.block_assume_role``: deny assuming a role, to everyone or to listed principals.

Stolen role *sessions* are cut by ``aws.iam.revoke_credentials`` (the
``aws:TokenIssueTime`` deny); this action stops the thief from simply assuming the
role again. With ``principals`` it denies only those (the attacker's account, a
compromised user or instance role, an OIDC provider) and leaves the role usable by
its legitimate callers; without, it denies every principal, services and federated
ones included.

The deny is one statement (Sid ``ClampdownBlockAssumeRole``) merged into the trust
policy: every other statement is kept, and a Deny always wins over an Allow. A
second run only widens it (the principals are the union), never narrows it: a
repeat must not reopen what an earlier run closed. Rollback restores the trust
policy exactly as it was when nobody has edited it since; after a later edit, it
puts back only its own statement's previous state and keeps the edit.
"""

# No __future__ annotations: pydantic then reads each field's type as written instead of
# compiling its text at class creation (a ForwardRef per field; lint imports this module).

import json
import re
from collections.abc import Mapping
from typing import Any

from pydantic import Field, field_validator

from clampdown.core.actions import ActionContext, ActionInput, ActionOutput
from clampdown_aws.base import Aws, AwsAction, AwsActionError, arn_resources, changing
from clampdown_aws.iam._common import (
    ASSUME_ACTIONS,
    canonical,
    check_same_principal,
    decoded,
    iam_get,
    parse_principal_arn,
    policy_statements,
)

BLOCK_ROLE_SID = "ClampdownBlockAssumeRole"
_AWS_PRINCIPAL = re.compile(
    r"^(\d{12}|arn:aws[a-z-]*:(iam::\d{12}:(root|user/.+|role/.+)|sts::\d{12}:assumed-role/.+))$"
)
_SERVICE = re.compile(r"^[a-z0-9.-]+\.amazonaws\.com(\.cn)?$")
_FEDERATED = re.compile(r"^(arn:aws[a-z-]*:iam::\d{12}:(oidc|saml)-provider/.+|[a-z0-9.-]+\.com)$")


def principal_kind(value: str) -> str:
    """``AWS``, ``Service`` or ``Federated``: where the value goes in ``Principal``."""
    if _AWS_PRINCIPAL.match(value):
        return "AWS"
    if _SERVICE.match(value):
        return "Service"
    if _FEDERATED.match(value):
        return "Federated"
    raise ValueError(
        f"'{value}' is not a principal a trust policy can name: give a 12-digit account id, "
        "an IAM user/role ARN, an STS assumed-role session ARN, a service "
        "(ec2.amazonaws.com) or an identity provider ARN"
    )


def _principal_sets(statement: Mapping[str, Any] | None) -> dict[str, set[str]] | None:
    """The statement's principals by kind; None when it names everyone (``"*"``)."""
    if statement is None:
        return {}
    principal = statement.get("Principal")
    if principal == "*" or (isinstance(principal, dict) and principal.get("AWS") == "*"):
        return None
    sets: dict[str, set[str]] = {}
    for kind, values in (principal or {}).items():
        sets[kind] = {values} if isinstance(values, str) else set(values)
    return sets


def block_statement(principals: dict[str, set[str]] | None) -> dict[str, Any]:
    """The deny; ``None`` principals: everyone (``"*"`` also covers services and federation)."""
    principal: Any = (
        "*"
        if principals is None
        else {kind: sorted(values) for kind, values in sorted(principals.items()) if values}
    )
    return {
        "Sid": BLOCK_ROLE_SID,
        "Effect": "Deny",
        "Principal": principal,
        "Action": list(ASSUME_ACTIONS),
    }


def _wanted(trust: dict[str, Any], principals: list[str]) -> dict[str, Any] | None:
    """The trust policy with the block merged in, or None when it is already there."""
    statements = policy_statements(trust)
    ours = next((s for s in statements if s.get("Sid") == BLOCK_ROLE_SID), None)
    existing = _principal_sets(ours)
    if not principals or existing is None:
        merged: dict[str, set[str]] | None = None  # everyone
    else:
        merged = {kind: set(values) for kind, values in existing.items()}
        for value in principals:
            merged.setdefault(principal_kind(value), set()).add(value)
    wanted = block_statement(merged)
    if ours is not None and canonical(ours) == canonical(wanted):
        return None
    kept = [s for s in statements if s.get("Sid") != BLOCK_ROLE_SID]
    return {**trust, "Statement": [*kept, wanted]}


def _resolve(iam: Any, role_arn: str) -> dict[str, Any]:
    parts = parse_principal_arn(role_arn)
    if parts["kind"] != "role":
        raise AwsActionError(f"{role_arn} is a user; only a role has a trust policy to block")
    role = iam_get(iam, "role", parts["name"], role_arn)
    check_same_principal(role_arn, role["Arn"], "role", parts["name"])
    if str(role.get("Path", "")).startswith("/aws-service-role/"):
        raise AwsActionError(
            f"{role['Arn']} is a service-linked role: AWS does not allow editing its trust "
            "policy; contain the service or resource that uses it"
        )
    return role


class BlockAssumeRole(AwsAction):
    """Deny ``sts:AssumeRole*`` on a role to everyone, or to listed principals, reversibly."""

    name = "aws.iam.block_assume_role"
    summary = "Deny assuming a role (to everyone or listed principals) in its trust policy"
    destructive = True
    reversible = True
    iam_actions = ("iam:GetRole", "iam:UpdateAssumeRolePolicy")

    class Input(ActionInput):
        role_arn: str = Field(description="the role, e.g. arn:aws:iam::123456789012:role/app")
        principals: list[str] = Field(
            default_factory=list,
            max_length=100,
            description="deny only these (account ids, user/role/session ARNs, services, "
            "identity providers); empty: deny every principal",
        )

        @field_validator("role_arn")
        @classmethod
        def _role(cls, value: str) -> str:
            if parse_principal_arn(value)["kind"] != "role":
                raise ValueError(f"'{value}' is not an IAM role ARN")
            return value.strip()

        @field_validator("principals")
        @classmethod
        def _principals(cls, values: list[str]) -> list[str]:
            cleaned = [v.strip() for v in values if v.strip()]
            for value in cleaned:
                if "{{" not in value:  # an expression is checked once rendered
                    principal_kind(value)
            return cleaned

    class Output(ActionOutput):
        role_arn: str
        denied: list[str] | str = Field(description='"*" (everyone) or the denied principals')
        changed: bool

    @classmethod
    def iam_resources(cls, with_: Mapping[str, Any]) -> dict[str, list[str]]:
        return arn_resources(cls.iam_actions, with_.get("role_arn"), ":role/", "iam")

    def apply(self, params: Input, aws: Aws, ctx: ActionContext) -> Output:
        iam = aws.client("iam")
        role = _resolve(iam, params.role_arn)
        trust = decoded(role["AssumeRolePolicyDocument"])
        applied = _wanted(trust, params.principals)
        if applied is not None:
            with changing(  # the undo is on record before the trust policy changes
                ctx,
                f"restore the trust policy of role {role['RoleName']} (drop the "
                f"{BLOCK_ROLE_SID} deny)",
                op="restore_trust_policy",
                role_name=role["RoleName"],
                previous_document=trust,
                applied_document=applied,
            ):
                iam.update_assume_role_policy(
                    RoleName=role["RoleName"], PolicyDocument=json.dumps(applied)
                )
            ctx.logger.info("trust policy of role %s now denies assume", role["RoleName"])
        final = applied or trust
        ours = next(s for s in policy_statements(final) if s.get("Sid") == BLOCK_ROLE_SID)
        sets = _principal_sets(ours)
        denied: list[str] | str = (
            "*" if sets is None else sorted(v for values in sets.values() for v in values)
        )
        return self.Output(role_arn=role["Arn"], denied=denied, changed=applied is not None)

    def describe(self, params: Input, aws: Aws, ctx: ActionContext) -> list[str]:
        role = _resolve(aws.client("iam"), params.role_arn)
        applied = _wanted(decoded(role["AssumeRolePolicyDocument"]), params.principals)
        if applied is None:
            return []
        who = ", ".join(params.principals) if params.principals else "every principal"
        return [
            f"add statement {BLOCK_ROLE_SID} to the trust policy of role {role['RoleName']}: "
            f"deny sts:AssumeRole* to {who} (other statements kept)"
        ]

    def undo(self, how: dict[str, Any], aws: Aws, ctx: ActionContext) -> None:
        """Restore the trust policy; one still as it was (the change never happened, or was
        put back already) is left alone."""
        if how.get("op") != "restore_trust_policy":
            raise AwsActionError(f"{self.name} cannot undo unknown operation {how.get('op')!r}")
        iam = aws.client("iam")
        role = how["role_name"]
        current = decoded(iam.get_role(RoleName=role)["Role"]["AssumeRolePolicyDocument"])
        previous = how["previous_document"]
        if canonical(current) == canonical(previous):
            return
        if canonical(current) == canonical(how["applied_document"]):
            restored = previous
        else:
            ctx.logger.warning(
                "the trust policy of role %s was edited after clampdown blocked it: restoring "
                "only the %s statement's earlier state and keeping the other edits",
                role,
                BLOCK_ROLE_SID,
            )
            before = next(
                (s for s in policy_statements(previous) if s.get("Sid") == BLOCK_ROLE_SID), None
            )
            kept = [s for s in policy_statements(current) if s.get("Sid") != BLOCK_ROLE_SID]
            restored = {**current, "Statement": kept + ([before] if before else [])}
        iam.update_assume_role_policy(RoleName=role, PolicyDocument=json.dumps(restored))
        ctx.logger.info("rollback: trust policy of role %s restored", role)
