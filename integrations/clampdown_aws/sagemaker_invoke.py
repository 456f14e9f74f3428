"""``aws.sagemaker.deny_invoke``: refuse listed suspects InvokeEndpoint on one endpoint.

Why an identity-policy deny on the suspects, and not "deny everyone but the app":
SageMaker endpoints have **no resource policy**, so IAM offers no place to write
"deny InvokeEndpoint on this endpoint to every principal except the app's roles"
for one account. The ways to say "everyone except" all live elsewhere and are out
of a responder's reach or too broad: a service control policy (needs the
Organizations management account, and applies to the whole account), a VPC endpoint
policy (only covers callers that come through that VPC endpoint), or an inline deny
on every user and role in the account (thousands of writes, and it would also hit
break-glass and automation roles). So the action denies the principals the alert
names, which is exact, reversible and quick, and guards the app: a suspect that is
one of ``app_roles`` is refused, because denying the app's own role is a freeze
(``aws.sagemaker.freeze_endpoint``, a separate and heavier decision).

Each suspect (an IAM user or role in the endpoint's account) gets the inline policy
``clampdown-deny-invoke-<endpoint>``: Deny ``InvokeEndpoint``, ``InvokeEndpointAsync``
and ``InvokeEndpointWithResponseStream`` on the endpoint's ARN. An explicit Deny beats
any Allow, including ``AmazonSageMakerFullAccess``. Rollback deletes the policy, or puts
back a previous policy of the same name.
"""

# No __future__ annotations: pydantic then reads each field's type as written instead of
# compiling its text at class creation (a ForwardRef per field; lint imports this module).

from collections.abc import Mapping
from typing import Any

from pydantic import Field, field_validator

from clampdown.core.actions import ActionContext, ActionInput, ActionOutput
from clampdown_aws.base import Aws, AwsAction, AwsActionError, changing
from clampdown_aws.iam._common import (
    canonical,
    check_same_principal,
    delete_inline_policy,
    get_inline_policy,
    iam_get,
    parse_principal_arn,
    put_inline_policy,
)
from clampdown_aws.sagemaker_role_deny import INVOKE_ACTIONS

_ENDPOINT = r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$"


def deny_document(endpoint_arn: str) -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ClampdownDenyInvoke",
                "Effect": "Deny",
                "Action": list(INVOKE_ACTIONS),
                "Resource": endpoint_arn,
            }
        ],
    }


def policy_name(endpoint_name: str) -> str:
    return f"clampdown-deny-invoke-{endpoint_name}"[:128]


def _is_expression(value: str) -> bool:
    return "{{" in value or "{%" in value


class DenyInvoke(AwsAction):
    """Deny InvokeEndpoint on one SageMaker endpoint to listed suspect users and roles."""

    name = "aws.sagemaker.deny_invoke"
    summary = "Deny listed suspects InvokeEndpoint on an endpoint (inline deny, reversible)"
    destructive = True
    reversible = True
    iam_actions = (
        "sagemaker:DescribeEndpoint",
        "iam:GetUser",
        "iam:GetRole",
        "iam:GetUserPolicy",
        "iam:GetRolePolicy",
        "iam:PutUserPolicy",
        "iam:PutRolePolicy",
        "iam:DeleteUserPolicy",
        "iam:DeleteRolePolicy",
    )

    class Input(ActionInput):
        endpoint_name: str = Field(pattern=_ENDPOINT)
        principals: list[str] = Field(
            min_length=1,
            max_length=50,
            description="IAM user or role ARNs (the suspects) denied invoke",
        )
        app_roles: list[str] = Field(
            default_factory=list,
            description="the app's own roles: never denied (a suspect among them is refused)",
        )

        @field_validator("principals", "app_roles")
        @classmethod
        def _arns(cls, values: list[str]) -> list[str]:
            cleaned = [v.strip() for v in values if v.strip()]
            for value in cleaned:
                if not _is_expression(value):
                    parse_principal_arn(value)
            return cleaned

    class Output(ActionOutput):
        endpoint_arn: str
        denied: list[str] = Field(description="principals that now carry the deny")
        policy_name: str
        changed: bool

    @classmethod
    def iam_resources(cls, with_: Mapping[str, Any]) -> dict[str, list[str]]:
        """The endpoint, and the user calls on the listed users, the role calls on the roles.

        Values may be IAM wildcards (``clampdown iam-policy``); a list not known before
        the run leaves the IAM calls on ``"*"``.
        """
        out: dict[str, list[str]] = {}
        name = with_.get("endpoint_name")
        if isinstance(name, str) and not _is_expression(name):
            out["sagemaker:DescribeEndpoint"] = [f"arn:aws:sagemaker:*:*:endpoint/{name.lower()}"]
        principals = with_.get("principals")
        if not (isinstance(principals, list) and all(isinstance(p, str) for p in principals)):
            return out
        kinds: dict[str, list[str]] = {"user": [], "role": []}
        for arn in principals:
            kind = "user" if ":user/" in arn else "role" if ":role/" in arn else None
            if kind is None or not arn.startswith("arn:aws"):
                return out
            kinds[kind].append(arn)
        for action in cls.iam_actions:
            if action.startswith("iam:"):
                out[action] = kinds["role" if "Role" in action else "user"]
        return out

    def _plan(self, params: Input, aws: Aws) -> tuple[str, list[tuple[str, str, str, dict | None]]]:
        """(endpoint ARN, [(kind, name, arn, its policy of that name now)]) after every check:
        nothing is changed unless every suspect is valid."""
        app = {a.lower() for a in params.app_roles}
        for arn in params.principals:
            if arn.lower() in app:
                raise AwsActionError(
                    f"{arn} is one of the app's roles (app_roles): denying it would take the "
                    "endpoint down for the app itself; nothing was changed. Remove it from "
                    "principals, or freeze the endpoint (aws.sagemaker.freeze_endpoint) instead"
                )
        endpoint = aws.client("sagemaker").describe_endpoint(EndpointName=params.endpoint_name)
        endpoint_arn = str(endpoint["EndpointArn"])
        account = endpoint_arn.split(":")[4]
        iam = aws.client("iam")
        todo = []
        name = policy_name(params.endpoint_name)
        for arn in dict.fromkeys(params.principals):
            parts = parse_principal_arn(arn)
            if parts["account"] != account:
                raise AwsActionError(
                    f"{arn} is in account {parts['account']}, but endpoint "
                    f"{params.endpoint_name} is in account {account}; nothing was changed. "
                    "A caller from another account invokes through a role in the endpoint's "
                    "account: list that role"
                )
            found = iam_get(iam, parts["kind"], parts["name"], arn)
            check_same_principal(arn, found["Arn"], parts["kind"], parts["name"])
            previous = get_inline_policy(iam, parts["kind"], parts["name"], name)
            todo.append((parts["kind"], parts["name"], str(found["Arn"]), previous))
        return endpoint_arn, todo

    def apply(self, params: Input, aws: Aws, ctx: ActionContext) -> Output:
        endpoint_arn, todo = self._plan(params, aws)
        iam, name = aws.client("iam"), policy_name(params.endpoint_name)
        document = deny_document(endpoint_arn)
        changed = False
        for kind, owner, _, previous in todo:
            if previous is not None and canonical(previous) == canonical(document):
                continue
            with changing(  # the undo is on record before the policy changes
                ctx,
                f"remove the invoke deny {name} from {kind} {owner}"
                if previous is None
                else f"restore the previous {name} policy of {kind} {owner}",
                op="restore_policy",
                kind=kind,
                owner=owner,
                policy_name=name,
                previous=previous,
            ):
                put_inline_policy(iam, kind, owner, name, document)
            changed = True
            ctx.logger.info("%s %s may no longer invoke %s", kind, owner, endpoint_arn)
        return self.Output(
            endpoint_arn=endpoint_arn,
            denied=[arn for _, _, arn, _ in todo],
            policy_name=name,
            changed=changed,
        )

    def describe(self, params: Input, aws: Aws, ctx: ActionContext) -> list[str]:
        endpoint_arn, todo = self._plan(params, aws)
        document, name = deny_document(endpoint_arn), policy_name(params.endpoint_name)
        return [
            f"attach inline policy {name} to {kind} {owner}: deny sagemaker:InvokeEndpoint* on "
            f"{endpoint_arn}" + ("" if previous is None else " (replacing one of that name)")
            for kind, owner, _, previous in todo
            if previous is None or canonical(previous) != canonical(document)
        ]

    def undo(self, how: dict[str, Any], aws: Aws, ctx: ActionContext) -> None:
        """Delete the deny or put the previous policy back; idempotent (no policy to delete
        and an unchanged previous one are fine)."""
        if how.get("op") != "restore_policy":
            raise AwsActionError(f"{self.name} cannot undo unknown operation {how.get('op')!r}")
        iam = aws.client("iam")
        kind, owner, name = how["kind"], how["owner"], how["policy_name"]
        if how["previous"] is None:
            if delete_inline_policy(iam, kind, owner, name):
                ctx.logger.info("rollback: removed %s from %s %s", name, kind, owner)
            return
        put_inline_policy(iam, kind, owner, name, how["previous"])
        ctx.logger.info("rollback: restored %s of %s %s", name, kind, owner)
