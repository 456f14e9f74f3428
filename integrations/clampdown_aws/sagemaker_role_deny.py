"""The access control of ``aws.sagemaker.freeze_endpoint``: an inline policy on each caller
role that denies invoking the endpoint, planned before any role changes, and undone."""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass
from typing import Any

from clampdown_aws.base import AwsActionError

INVOKE_ACTIONS = (
    "sagemaker:InvokeEndpoint",
    "sagemaker:InvokeEndpointAsync",
    "sagemaker:InvokeEndpointWithResponseStream",
)
ROLE_ARN = re.compile(r"^arn:(aws[a-z-]*):iam::(\d{12}):role/(?:[\w+=,.@/-]*/)?([\w+=,.@-]+)$")
ROLE_NAME = re.compile(r"^[\w+=,.@-]{1,64}$")


def invoke_deny_policy(endpoint_arn: str) -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ClampdownFreezeEndpoint",
                "Effect": "Deny",
                "Action": list(INVOKE_ACTIONS),
                "Resource": endpoint_arn,
            }
        ],
    }


@dataclass
class RoleDenies:
    arns: list[str]  # every caller role's ARN, in the order given
    policy_name: str
    document: dict[str, Any]
    todo: list[tuple[str, dict[str, Any] | None]]  # (role name, its policy of that name now)


def plan_role_denies(
    iam: Any, caller_roles: list[str], endpoint_name: str, endpoint_arn: str
) -> RoleDenies:
    """Check every caller role (same account, exists) and find those lacking the deny."""
    account = endpoint_arn.split(":")[4]
    names: list[str] = []
    for role in caller_roles:
        found = ROLE_ARN.match(role)
        if found and found[2] != account:
            raise AwsActionError(
                f"role {role} is in account {found[2]} but endpoint {endpoint_name} "
                f"is in account {account}; nothing was changed. Callers invoke the endpoint "
                "through roles in its own account: list those"
            )
        names.append(found[3] if found else role)
    # every role must exist before any of them is changed
    arns = [iam.get_role(RoleName=name)["Role"]["Arn"] for name in names]
    policy_name = f"clampdown-freeze-{endpoint_name}"
    document = invoke_deny_policy(endpoint_arn)
    todo = []
    for name in dict.fromkeys(names):
        previous = _get_role_policy(iam, name, policy_name)
        if previous is None or not _same(previous, document):
            todo.append((name, previous))
    return RoleDenies(list(dict.fromkeys(arns)), policy_name, document, todo)


def _get_role_policy(iam: Any, role: str, policy: str) -> dict[str, Any] | None:
    try:
        document = iam.get_role_policy(RoleName=role, PolicyName=policy)["PolicyDocument"]
    except iam.exceptions.NoSuchEntityException:
        return None
    return json.loads(document) if isinstance(document, str) else document


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def restore_role_policy(iam: Any, how: dict[str, Any]) -> None:
    role, policy, previous = how["role_name"], how["policy_name"], how["previous"]
    current = _get_role_policy(iam, role, policy)
    if previous is None:
        if current is not None:
            with contextlib.suppress(iam.exceptions.NoSuchEntityException):
                iam.delete_role_policy(RoleName=role, PolicyName=policy)
    elif current is None or not _same(current, previous):
        iam.put_role_policy(RoleName=role, PolicyName=policy, PolicyDocument=json.dumps(previous))
