"""SageMaker containment: stop inference on an endpoint without destroying it.

``aws.sagemaker.freeze_endpoint`` never deletes the endpoint, its configs or its
models: they are evidence, and the service must come back after the incident.
It first records DescribeEndpoint and DescribeEndpointConfig (the outputs carry
them for the evidence trail), then applies the measures asked for, fastest and
strongest first:

1. ``caller_roles``: an inline deny policy on each role for InvokeEndpoint,
   InvokeEndpointAsync and InvokeEndpointWithResponseStream on the endpoint ARN.
   This is the only measure that is access control.
2. ``api_gateway``: disable the API key, or throttle the stage to 0 requests/s.
3. ``zero_variant_weights``: every production variant's weight to 0.
4. ``blocked_config``: switch the endpoint to a copy of its config whose variants
   all have weight 0 and the smallest capacity ("<config>-clampdown-blocked").

Weights are traffic shaping, not access control: a caller that names a variant
with ``TargetVariant`` is still routed to it. Use them to drain traffic and
capacity, and rely on the role deny to refuse callers.

``describe`` (``clampdown plan --live``) makes apply's reads (DescribeEndpoint and
-Config, GetRole and GetRolePolicy, GetApiKey or GetStage) and lists each change in
apply's order; it does not wait for an updating endpoint but says apply would. When
apply would stop with an error after earlier changes, the last line says so.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from pydantic import Field, field_validator, model_validator

from clampdown.core.actions import ActionContext, ActionInput, ActionOutput
from clampdown_aws.base import Aws, AwsAction, AwsActionError

INVOKE_ACTIONS = (
    "sagemaker:InvokeEndpoint",
    "sagemaker:InvokeEndpointAsync",
    "sagemaker:InvokeEndpointWithResponseStream",
)
BLOCKED_SUFFIX = "-clampdown-blocked"
CONFIG_NAME_MAX = 63
BUSY = frozenset({"Creating", "Updating", "SystemUpdating", "RollingBack"})
POLL_SECONDS = 15.0  # between DescribeEndpoint calls while the endpoint is updating
WAIT_TIMEOUT_SECONDS = 1800.0

_ROLE_ARN = re.compile(r"^arn:(aws[a-z-]*):iam::(\d{12}):role/(?:[\w+=,.@/-]*/)?([\w+=,.@-]+)$")
_ROLE_NAME = re.compile(r"^[\w+=,.@-]{1,64}$")
_ENDPOINT = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")


class ApiGatewayTarget(ActionInput):
    """The API Gateway REST API stage (and optionally API key) in front of the endpoint."""

    rest_api_id: str = Field(min_length=1)
    stage_name: str = Field(min_length=1)
    api_key_id: str | None = Field(
        None, description="disable this API key instead of throttling the stage"
    )


class FreezeEndpoint(AwsAction):
    """Stop inference on a SageMaker endpoint and keep the endpoint for evidence."""

    name = "aws.sagemaker.freeze_endpoint"
    summary = "Deny callers InvokeEndpoint; optionally drain weights, block config, close the API"
    destructive = True
    reversible = True
    iam_actions = (
        "sagemaker:DescribeEndpoint",
        "sagemaker:DescribeEndpointConfig",
        "iam:GetRole",
        "iam:GetRolePolicy",
        "iam:PutRolePolicy",
        "iam:DeleteRolePolicy",
        "apigateway:GET",
        "apigateway:PATCH",
        "sagemaker:UpdateEndpointWeightsAndCapacities",
        "sagemaker:CreateEndpointConfig",
        "sagemaker:AddTags",
        "sagemaker:UpdateEndpoint",
    )

    class Input(ActionInput):
        endpoint_name: str
        caller_roles: list[str] = Field(
            description="role ARNs or names (in the endpoint's account) denied InvokeEndpoint"
        )
        zero_variant_weights: bool = Field(False, description="set every variant's weight to 0")
        blocked_config: bool = Field(
            False, description="switch to a zero-weight, minimal-capacity copy of the config"
        )
        api_gateway: ApiGatewayTarget | None = None

        @field_validator("endpoint_name")
        @classmethod
        def _endpoint(cls, value: str) -> str:
            if not _ENDPOINT.match(value):
                raise ValueError(f"'{value}' is not a SageMaker endpoint name")
            return value

        @field_validator("caller_roles")
        @classmethod
        def _roles(cls, value: list[str]) -> list[str]:
            bad = [
                r
                for r in value
                if not (_ROLE_ARN.match(r) or _ROLE_NAME.match(r) or _is_expression(r))
            ]
            if bad:
                raise ValueError(
                    f"not IAM role ARNs or names: {', '.join(bad)} "
                    "(expected e.g. arn:aws:iam::123456789012:role/app)"
                )
            return value

        @model_validator(mode="after")
        def _something_to_do(self) -> FreezeEndpoint.Input:
            if not (
                self.caller_roles
                or self.zero_variant_weights
                or self.blocked_config
                or self.api_gateway
            ):
                raise ValueError(
                    "nothing would be frozen: give caller_roles, or set zero_variant_weights, "
                    "blocked_config or api_gateway"
                )
            return self

    class Output(ActionOutput):
        endpoint_arn: str
        description_before: dict[str, Any] = Field(
            description="DescribeEndpoint and DescribeEndpointConfig before any change"
        )
        denied_roles: list[str] = Field(description="role ARNs that carry the deny policy now")
        weights_zeroed: list[str] = Field(description="variants at weight 0 (zero_variant_weights)")
        config_switched_to: str | None = Field(description="the blocked config now in use")
        api_gateway_change: str | None = Field(description="what is closed at API Gateway")
        changed: bool = Field(description="whether this run changed anything")

    @classmethod
    def iam_resources(cls, with_: Mapping[str, Any]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        name = with_.get("endpoint_name")
        if isinstance(name, str) and _ENDPOINT.match(name):
            # SageMaker ARNs carry the endpoint name in lower case
            endpoint = f"arn:aws:sagemaker:*:*:endpoint/{name.lower()}"
            out["sagemaker:DescribeEndpoint"] = [endpoint]
            out["sagemaker:UpdateEndpointWeightsAndCapacities"] = [endpoint]
        roles = with_.get("caller_roles")
        if isinstance(roles, list) and roles and all(isinstance(r, str) for r in roles):
            arns: list[str] = []
            for role in roles:
                if _ROLE_ARN.match(role):
                    arns.append(role)
                elif _ROLE_NAME.match(role):
                    arns += [f"arn:aws:iam::*:role/{role}", f"arn:aws:iam::*:role/*/{role}"]
                else:  # an expression: the role is not known before the run
                    return out
            for action in (
                "iam:GetRole",
                "iam:GetRolePolicy",
                "iam:PutRolePolicy",
                "iam:DeleteRolePolicy",
            ):
                out[action] = arns
        return out

    # --- apply -----------------------------------------------------------------------------

    def apply(self, params: Input, aws: Aws, ctx: ActionContext) -> Output:
        sm = aws.client("sagemaker")
        endpoint = _strip(sm.describe_endpoint(EndpointName=params.endpoint_name))
        config = _strip(
            sm.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
        )
        description_before = json_safe({"endpoint": endpoint, "endpoint_config": config})
        arn = endpoint["EndpointArn"]
        changed = False

        denied, roles_changed = self._deny_roles(params, arn, aws, ctx)
        changed |= roles_changed

        api_change = None
        if params.api_gateway is not None:
            api_change, api_changed = self._close_api(params.api_gateway, aws, ctx)
            changed |= api_changed

        zeroed: list[str] = []
        if params.zero_variant_weights:
            zeroed, weights_changed = self._zero_weights(sm, params.endpoint_name, ctx)
            changed |= weights_changed

        switched_to = None
        if params.blocked_config:
            switched_to, config_changed = self._block_config(
                sm, params.endpoint_name, endpoint, config, ctx
            )
            changed |= config_changed

        return self.Output(
            endpoint_arn=arn,
            description_before=description_before,
            denied_roles=denied,
            weights_zeroed=zeroed,
            config_switched_to=switched_to,
            api_gateway_change=api_change,
            changed=changed,
        )

    def _deny_roles(
        self, params: Input, endpoint_arn: str, aws: Aws, ctx: ActionContext
    ) -> tuple[list[str], bool]:
        if not params.caller_roles:
            return [], False
        iam = aws.client("iam")
        plan = _plan_role_denies(iam, params, endpoint_arn)
        for name, previous in plan.todo:
            iam.put_role_policy(
                RoleName=name,
                PolicyName=plan.policy_name,
                PolicyDocument=json.dumps(plan.document),
            )
            ctx.record_undo(
                f"remove the endpoint deny policy {plan.policy_name} from role {name}"
                if previous is None
                else f"restore the previous {plan.policy_name} policy of role {name}",
                op="restore_role_policy",
                role_name=name,
                policy_name=plan.policy_name,
                previous=previous,
            )
        return plan.arns, bool(plan.todo)

    def _close_api(
        self, target: ApiGatewayTarget, aws: Aws, ctx: ActionContext
    ) -> tuple[str, bool]:
        apigw = aws.client("apigateway")
        if target.api_key_id:
            text = f"API key {target.api_key_id} disabled"
            if not _api_key(apigw, target.api_key_id).get("enabled", False):
                return text, False
            apigw.update_api_key(
                apiKey=target.api_key_id,
                patchOperations=[{"op": "replace", "path": "/enabled", "value": "false"}],
            )
            ctx.record_undo(
                f"re-enable API key {target.api_key_id}",
                op="enable_api_key",
                api_key_id=target.api_key_id,
            )
            return text, True

        plan = _plan_stage_throttling(apigw, target)
        text = (
            f"stage {target.rest_api_id}/{target.stage_name} throttled to 0 requests/s "
            f"({', '.join(plan.paths)})"
        )
        if not plan.operations:
            return text, False
        apigw.update_stage(
            restApiId=target.rest_api_id,
            stageName=target.stage_name,
            patchOperations=plan.operations,
        )
        ctx.record_undo(
            f"restore the throttling of stage {target.rest_api_id}/{target.stage_name}",
            op="restore_stage_throttling",
            rest_api_id=target.rest_api_id,
            stage_name=target.stage_name,
            before=plan.before,
        )
        return text, True

    def _zero_weights(self, sm: Any, name: str, ctx: ActionContext) -> tuple[list[str], bool]:
        endpoint = wait_until_updatable(sm, name)
        old, todo = _weights_to_zero(endpoint)
        if todo:
            sm.update_endpoint_weights_and_capacities(
                EndpointName=name, DesiredWeightsAndCapacities=[_desired(v, 0.0) for v in todo]
            )
            ctx.record_undo(
                f"restore the variant weights of endpoint {name}",
                op="restore_weights",
                endpoint_name=name,
                weights={v["VariantName"]: old[v["VariantName"]] for v in todo},
            )
        return sorted(old), bool(todo)

    def _block_config(
        self,
        sm: Any,
        name: str,
        endpoint: dict[str, Any],
        config: dict[str, Any],
        ctx: ActionContext,
    ) -> tuple[str, bool]:
        current = endpoint["EndpointConfigName"]
        plan = _plan_blocked_config(sm, endpoint, config)
        if plan is None:
            return current, False
        if plan.existing is None:
            sm.create_endpoint_config(
                **plan.wanted,
                Tags=[
                    {"Key": "clampdown:run-id", "Value": ctx.run_id},
                    {"Key": "clampdown:blocked-from", "Value": current},
                ],
            )
        elif plan.foreign:
            raise AwsActionError(plan.foreign)
        wait_until_updatable(sm, name)
        sm.update_endpoint(EndpointName=name, EndpointConfigName=plan.name)
        ctx.record_undo(
            f"switch endpoint {name} back to its config {current}",
            op="restore_endpoint_config",
            endpoint_name=name,
            config_name=current,
            blocked_config=plan.name,
            weights={v["VariantName"]: _weight(v) for v in endpoint.get("ProductionVariants", [])},
        )
        return plan.name, True

    # --- describe (plan --live) ------------------------------------------------------------

    def describe(self, params: Input, aws: Aws, ctx: ActionContext) -> list[str]:
        """What ``apply`` would change now, in the order it would change it.

        Where apply would stop with an error after earlier changes (an endpoint that
        cannot be updated, a foreign config under the blocked name), the last line says so.
        """
        sm = aws.client("sagemaker")
        name = params.endpoint_name
        endpoint = _strip(sm.describe_endpoint(EndpointName=name))
        config = _strip(
            sm.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
        )
        arn = endpoint["EndpointArn"]
        lines: list[str] = []

        if params.caller_roles:
            plan = _plan_role_denies(aws.client("iam"), params, arn)
            for role, previous in plan.todo:
                change = (
                    f"attach inline policy {plan.policy_name} to role {role}"
                    if previous is None
                    else f"replace the inline policy {plan.policy_name} of role {role} "
                    "(it holds another document now)"
                )
                lines.append(
                    f"{change}: deny InvokeEndpoint, InvokeEndpointAsync and "
                    f"InvokeEndpointWithResponseStream on {arn}"
                )

        target = params.api_gateway
        if target is not None:
            apigw = aws.client("apigateway")
            if target.api_key_id:
                key = _api_key(apigw, target.api_key_id)
                if key.get("enabled", False):
                    named = f" ({key['name']})" if key.get("name") else ""
                    lines.append(f"disable API key {target.api_key_id}{named}")
            else:
                stage = _plan_stage_throttling(apigw, target)
                if stage.operations:
                    now = ", ".join(
                        f"{path} (now {_limits(old)})" for path, old in stage.before.items()
                    )
                    lines.append(
                        f"throttle stage {target.rest_api_id}/{target.stage_name} to 0 "
                        f"requests/s at {now}"
                    )

        status = endpoint.get("EndpointStatus")
        wait = f" once the endpoint (now {status}) is InService" if status in BUSY else ""
        stop = (
            f"stop with an error: endpoint {name} is {status}, so its weights and config "
            "cannot be changed (any change above is made first)"
        )
        updatable = status == "InService" or status in BUSY
        if params.zero_variant_weights:
            if not updatable:
                return [*lines, stop]
            old, todo = _weights_to_zero(endpoint)
            if todo:
                weights = ", ".join(f"{v['VariantName']} ({old[v['VariantName']]:g})" for v in todo)
                lines.append(
                    f"set the weight of variant(s) {weights} of endpoint {name} to 0 "
                    f"(capacity kept){wait}"
                )

        if params.blocked_config:
            blocked = _plan_blocked_config(sm, endpoint, config)
            if blocked is not None:
                current = endpoint["EndpointConfigName"]
                if blocked.existing is None:
                    lines.append(
                        f"create endpoint config {blocked.name}: a copy of {current} with every "
                        "variant at weight 0 and the smallest capacity"
                    )
                elif blocked.foreign:
                    return [*lines, f"stop with an error: {blocked.foreign}"]
                if not updatable:
                    return [*lines, stop]
                lines.append(
                    f"switch endpoint {name} from config {current} to {blocked.name}{wait}"
                )
        return lines

    # --- undo ------------------------------------------------------------------------------

    def undo(self, how: dict[str, Any], aws: Aws, ctx: ActionContext) -> None:
        op = how["op"]
        if op == "restore_role_policy":
            _restore_role_policy(aws.client("iam"), how)
        elif op == "enable_api_key":
            apigw = aws.client("apigateway")
            if not apigw.get_api_key(apiKey=how["api_key_id"]).get("enabled", False):
                apigw.update_api_key(
                    apiKey=how["api_key_id"],
                    patchOperations=[{"op": "replace", "path": "/enabled", "value": "true"}],
                )
        elif op == "restore_stage_throttling":
            _restore_stage(aws.client("apigateway"), how)
        elif op == "restore_weights":
            restore_weights(aws.client("sagemaker"), how["endpoint_name"], how["weights"])
        elif op == "restore_endpoint_config":
            _restore_config(aws.client("sagemaker"), how, ctx)
        else:
            raise AwsActionError(f"{self.name}: unknown undo operation '{op}'")


def _is_expression(value: str) -> bool:
    """A list item still written as ``{{ … }}`` (lint): checked again once rendered."""
    return "{{" in value or "{%" in value


# --- IAM ---------------------------------------------------------------------------------


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
class _RoleDenies:
    arns: list[str]  # every caller role's ARN, in the order given
    policy_name: str
    document: dict[str, Any]
    todo: list[tuple[str, dict[str, Any] | None]]  # (role name, its policy of that name now)


def _plan_role_denies(iam: Any, params: FreezeEndpoint.Input, endpoint_arn: str) -> _RoleDenies:
    """Check every caller role (same account, exists) and find those lacking the deny."""
    account = endpoint_arn.split(":")[4]
    names: list[str] = []
    for role in params.caller_roles:
        found = _ROLE_ARN.match(role)
        if found and found[2] != account:
            raise AwsActionError(
                f"role {role} is in account {found[2]} but endpoint {params.endpoint_name} "
                f"is in account {account}; nothing was changed. Callers invoke the endpoint "
                "through roles in its own account: list those"
            )
        names.append(found[3] if found else role)
    # every role must exist before any of them is changed
    arns = [iam.get_role(RoleName=name)["Role"]["Arn"] for name in names]
    policy_name = f"clampdown-freeze-{params.endpoint_name}"
    document = invoke_deny_policy(endpoint_arn)
    todo = []
    for name in dict.fromkeys(names):
        previous = _get_role_policy(iam, name, policy_name)
        if previous is None or not _same(previous, document):
            todo.append((name, previous))
    return _RoleDenies(list(dict.fromkeys(arns)), policy_name, document, todo)


def _get_role_policy(iam: Any, role: str, policy: str) -> dict[str, Any] | None:
    try:
        document = iam.get_role_policy(RoleName=role, PolicyName=policy)["PolicyDocument"]
    except iam.exceptions.NoSuchEntityException:
        return None
    return json.loads(document) if isinstance(document, str) else document


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _restore_role_policy(iam: Any, how: dict[str, Any]) -> None:
    role, policy, previous = how["role_name"], how["policy_name"], how["previous"]
    current = _get_role_policy(iam, role, policy)
    if previous is None:
        if current is not None:
            with contextlib.suppress(iam.exceptions.NoSuchEntityException):
                iam.delete_role_policy(RoleName=role, PolicyName=policy)
    elif current is None or not _same(current, previous):
        iam.put_role_policy(RoleName=role, PolicyName=policy, PolicyDocument=json.dumps(previous))


# --- API Gateway -------------------------------------------------------------------------


def _api_key(apigw: Any, api_key_id: str) -> dict[str, Any]:
    return dict(apigw.get_api_key(apiKey=api_key_id))  # no includeValue: no secret


@dataclass
class _StageThrottling:
    paths: list[str]  # "*/*" (the stage default) and every method setting
    before: dict[str, dict[str, Any] | None]  # the paths to change: their limits now
    operations: list[dict[str, str]]


def _plan_stage_throttling(apigw: Any, target: ApiGatewayTarget) -> _StageThrottling:
    stage = apigw.get_stage(restApiId=target.rest_api_id, stageName=target.stage_name)
    settings = stage.get("methodSettings", {})
    # "*/*" is the stage default; a method's own setting overrides it, so zero those too
    paths = ["*/*", *sorted(k for k in settings if k != "*/*")]
    before: dict[str, dict[str, Any] | None] = {}
    operations = []
    for path in paths:
        current = settings.get(path)
        if current is not None and _throttled(current):
            continue
        before[path] = (
            None
            if current is None
            else {
                "rateLimit": current.get("throttlingRateLimit"),
                "burstLimit": current.get("throttlingBurstLimit"),
            }
        )
        operations += [
            {"op": "replace", "path": f"/{path}/throttling/rateLimit", "value": "0"},
            {"op": "replace", "path": f"/{path}/throttling/burstLimit", "value": "0"},
        ]
    return _StageThrottling(paths, before, operations)


def _limits(old: dict[str, Any] | None) -> str:
    """A method setting's throttling as the stage shows it now."""
    rate, burst = (old or {}).get("rateLimit"), (old or {}).get("burstLimit")
    if rate is None and burst is None:
        return "no method setting" if old is None else "no throttling limit"
    return f"{'-' if rate is None else f'{rate:g}'} requests/s, burst {burst}"


def _throttled(setting: dict[str, Any]) -> bool:
    return setting.get("throttlingRateLimit") == 0 and setting.get("throttlingBurstLimit") == 0


def _restore_stage(apigw: Any, how: dict[str, Any]) -> None:
    stage = apigw.get_stage(restApiId=how["rest_api_id"], stageName=how["stage_name"])
    settings = stage.get("methodSettings", {})
    operations = []
    for path, old in how["before"].items():
        current = settings.get(path)
        if old is None:
            if current is not None:  # the stage had no such setting: remove ours
                operations.append({"op": "remove", "path": f"/{path}"})
            continue
        for field, key in (
            ("rateLimit", "throttlingRateLimit"),
            ("burstLimit", "throttlingBurstLimit"),
        ):
            value = old.get(field)
            if value is not None and (current or {}).get(key) != value:
                operations.append(
                    {"op": "replace", "path": f"/{path}/throttling/{field}", "value": str(value)}
                )
    if operations:
        apigw.update_stage(
            restApiId=how["rest_api_id"], stageName=how["stage_name"], patchOperations=operations
        )


# --- SageMaker ---------------------------------------------------------------------------


def wait_until_updatable(sm: Any, name: str) -> dict[str, Any]:
    """DescribeEndpoint until the endpoint is InService (weights and configs can change)."""
    deadline = time.monotonic() + WAIT_TIMEOUT_SECONDS
    while True:
        endpoint = sm.describe_endpoint(EndpointName=name)
        status = endpoint.get("EndpointStatus")
        if status == "InService":
            return endpoint
        if status not in BUSY:
            raise AwsActionError(
                f"endpoint {name} is {status}: its weights and config cannot be changed "
                "(the role deny, if asked for, is in place)"
            )
        if time.monotonic() >= deadline:
            raise AwsActionError(
                f"endpoint {name} stayed {status} for {WAIT_TIMEOUT_SECONDS:.0f}s; run the step "
                "again once it is InService"
            )
        time.sleep(POLL_SECONDS)


def _weights_to_zero(
    endpoint: dict[str, Any],
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """(every variant's weight now, the variants whose weight is not 0 yet)."""
    variants = endpoint.get("ProductionVariants", [])
    return {v["VariantName"]: _weight(v) for v in variants}, [
        v for v in variants if _weight(v) != 0
    ]


def _weight(variant: dict[str, Any]) -> float:
    return float(variant.get("DesiredWeight", variant.get("CurrentWeight", 1.0)))


def _desired(variant: dict[str, Any], weight: float) -> dict[str, Any]:
    """One DesiredWeightAndCapacity entry that changes the weight only.

    The current instance count is sent unchanged: AWS treats it as no change, and
    moto would otherwise clear the count.
    """
    entry: dict[str, Any] = {"VariantName": variant["VariantName"], "DesiredWeight": weight}
    count = variant.get("CurrentInstanceCount")
    if count is not None and "CurrentServerlessConfig" not in variant:
        entry["DesiredInstanceCount"] = count
    return entry


def restore_weights(sm: Any, name: str, weights: dict[str, float]) -> None:
    endpoint = wait_until_updatable(sm, name)
    variants = {v["VariantName"]: v for v in endpoint.get("ProductionVariants", [])}
    todo = [
        _desired(variants[variant], weight)
        for variant, weight in weights.items()
        if variant in variants and _weight(variants[variant]) != weight
    ]
    if todo:
        sm.update_endpoint_weights_and_capacities(
            EndpointName=name, DesiredWeightsAndCapacities=todo
        )


def blocked_config_name(config_name: str) -> str:
    name = config_name + BLOCKED_SUFFIX
    if len(name) <= CONFIG_NAME_MAX:
        return name
    digest = hashlib.sha256(config_name.encode()).hexdigest()[:6]
    keep = CONFIG_NAME_MAX - len(BLOCKED_SUFFIX) - len(digest) - 1
    return f"{config_name[:keep].rstrip('-')}-{digest}{BLOCKED_SUFFIX}"


def blocked_config_request(sm: Any, config: dict[str, Any], name: str) -> dict[str, Any]:
    """CreateEndpointConfig arguments: the same config, every variant at weight 0 and the
    smallest capacity (1 instance; serverless: concurrency 1, none provisioned)."""
    members = sm.meta.service_model.operation_model("CreateEndpointConfig").input_shape.members
    request = {k: v for k, v in config.items() if k in members and k != "Tags"}
    request["EndpointConfigName"] = name
    variants = []
    for variant in config.get("ProductionVariants", []):
        blocked = {**variant, "InitialVariantWeight": 0.0}
        if "InitialInstanceCount" in blocked:
            blocked["InitialInstanceCount"] = 1
        if "ServerlessConfig" in blocked:
            serverless = {**blocked["ServerlessConfig"], "MaxConcurrency": 1}
            serverless.pop("ProvisionedConcurrency", None)
            blocked["ServerlessConfig"] = serverless
        variants.append(blocked)
    request["ProductionVariants"] = variants
    return request


@dataclass
class _BlockedConfig:
    name: str
    wanted: dict[str, Any]  # CreateEndpointConfig arguments (without tags)
    existing: dict[str, Any] | None  # a config of that name now
    foreign: str | None  # why the existing one cannot be used, if it cannot


def _plan_blocked_config(
    sm: Any, endpoint: dict[str, Any], config: dict[str, Any]
) -> _BlockedConfig | None:
    """The blocked config to switch to; None when the endpoint uses one already."""
    current = endpoint["EndpointConfigName"]
    if current.endswith(BLOCKED_SUFFIX):
        return None
    name = blocked_config_name(current)
    wanted = blocked_config_request(sm, config, name)
    existing = _describe_config(sm, name)
    foreign = None
    if existing is not None and _variant_summary(existing) != _variant_summary(wanted):
        foreign = (
            f"endpoint config {name} exists but is not a blocked copy of {current}; "
            "nothing was switched. Delete or rename it, then run again"
        )
    return _BlockedConfig(name, wanted, existing, foreign)


def _variant_summary(config: dict[str, Any]) -> list[tuple[Any, ...]]:
    return sorted(
        (
            v.get("VariantName"),
            v.get("ModelName"),
            v.get("InstanceType"),
            float(v.get("InitialVariantWeight", 1.0)),
        )
        for v in config.get("ProductionVariants", [])
    )


def _describe_config(sm: Any, name: str) -> dict[str, Any] | None:
    try:
        return _strip(sm.describe_endpoint_config(EndpointConfigName=name))
    except sm.exceptions.ClientError as exc:
        if exc.response["Error"]["Code"] == "ValidationException" and "Could not find" in str(
            exc.response["Error"].get("Message", "")
        ):
            return None
        raise


def _restore_config(sm: Any, how: dict[str, Any], ctx: ActionContext) -> None:
    name, original = how["endpoint_name"], how["config_name"]
    current = sm.describe_endpoint(EndpointName=name)["EndpointConfigName"]
    if current == how["blocked_config"]:
        wait_until_updatable(sm, name)
        sm.update_endpoint(EndpointName=name, EndpointConfigName=original)
    elif current != original:
        ctx.logger.warning(
            "endpoint %s now uses config %s (neither %s nor %s): left as it is",
            name,
            current,
            original,
            how["blocked_config"],
        )
        return
    # the original config brings its initial weights; put back the ones in use before
    restore_weights(sm, name, how["weights"])


# --- evidence ----------------------------------------------------------------------------


def _strip(response: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in response.items() if k != "ResponseMetadata"}


def json_safe(value: Any) -> Any:
    """A boto3 response as plain JSON values (datetimes as ISO 8601)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray)):
        return value.decode("utf-8", "replace")
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)
