"""SageMaker containment: stop inference on an endpoint without destroying it.

``aws.sagemaker.freeze_endpoint`` never deletes the endpoint, its configs or its
models: they are evidence, and the service must come back after the incident.
It first records DescribeEndpoint and DescribeEndpointConfig (the outputs carry
them for the evidence trail). What it then does depends on ``mode``, and the
outputs (``still_serves`` above all) say exactly that, because a responder who
reads "frozen" believes no one can query the model:

* ``deny_callers`` (default): an inline deny policy on each of ``caller_roles`` for
  InvokeEndpoint, InvokeEndpointAsync and InvokeEndpointWithResponseStream on the
  endpoint ARN. This is access control, for those roles only: the endpoint stays
  InService at its weights and serves every other caller.
* ``drain``: the same deny for any ``caller_roles`` given, then every production
  variant's weight to 0 (UpdateEndpointWeightsAndCapacities). With ``standin_model``
  (or ``blocked_config``) the endpoint then switches to a copy of its config
  ("<config>-clampdown-blocked": weights 0, one instance per variant) whose variants
  serve the stand-in model: the protected model is off the endpoint, so no caller
  reaches it, with or without ``TargetVariant``.

``api_gateway`` (either mode) disables an API key or throttles a stage to 0 requests/s.

Weights are traffic shaping, not access control: a caller that names a variant
with ``TargetVariant`` is still routed to it. Only the stand-in model takes the
model itself away; rollback (the undo records) switches back and restores the weights.

``describe`` (``clampdown plan --live``) makes apply's reads (DescribeEndpoint and
-Config, GetRole and GetRolePolicy, GetApiKey or GetStage) and lists each change in
apply's order; it does not wait for an updating endpoint but says apply would. When
apply would stop with an error after earlier changes, the last line says so.
"""

# No __future__ annotations: pydantic then reads each field's type as written instead of
# compiling its text at class creation (a ForwardRef per field; lint imports this module).

import json
import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from clampdown.core.actions import ActionContext, ActionInput, ActionOutput
from clampdown_aws.base import Aws, AwsAction, AwsActionError, changing
from clampdown_aws.responses import json_safe, strip_metadata
from clampdown_aws.sagemaker_api_gateway import (
    ApiGatewayTarget,
    limits_text,
    plan_stage_throttling,
    read_api_key,
    restore_stage,
)
from clampdown_aws.sagemaker_endpoint import (
    BUSY,
    desired_weight,
    plan_blocked_config,
    restore_config,
    restore_weights,
    variant_weight,
    wait_until_updatable,
    weights_to_zero,
)
from clampdown_aws.sagemaker_role_deny import (
    ROLE_ARN,
    ROLE_NAME,
    plan_role_denies,
    restore_role_policy,
)

_ENDPOINT = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
_ENDPOINT_GLOB = re.compile(r"^[a-zA-Z0-9*?-]{1,63}$")  # a name, or IAM wildcards for names
ROLE_ACTIONS = ("iam:GetRole", "iam:GetRolePolicy", "iam:PutRolePolicy", "iam:DeleteRolePolicy")


class FreezeEndpoint(AwsAction):
    """Stop inference on a SageMaker endpoint and keep the endpoint for evidence."""

    name = "aws.sagemaker.freeze_endpoint"
    summary = (
        "Deny caller roles InvokeEndpoint (mode deny_callers), or drain the endpoint: "
        "weights 0, optionally a stand-in model (mode drain)"
    )
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
        mode: Literal["deny_callers", "drain"] = Field(
            "deny_callers",
            description="deny_callers: deny caller_roles InvokeEndpoint, the endpoint serves "
            "everyone else; drain: also every variant's weight to 0 (and with standin_model "
            "the model itself off the endpoint)",
        )
        caller_roles: list[str] = Field(
            default_factory=list,
            description="role ARNs or names (in the endpoint's account) denied InvokeEndpoint",
        )
        blocked_config: bool = Field(
            False,
            description="drain only: switch to a zero-weight, one-instance copy of the config",
        )
        standin_model: str | None = Field(
            None,
            description="drain only: the copy's variants serve this model instead (implies "
            "blocked_config): no caller reaches the protected model",
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
                if not (ROLE_ARN.match(r) or ROLE_NAME.match(r) or _is_expression(r))
            ]
            if bad:
                raise ValueError(
                    f"not IAM role ARNs or names: {', '.join(bad)} "
                    "(expected e.g. arn:aws:iam::123456789012:role/app)"
                )
            return value

        @model_validator(mode="after")
        def _something_to_do(self) -> "FreezeEndpoint.Input":
            if self.mode == "deny_callers" and (self.blocked_config or self.standin_model):
                raise ValueError(
                    "blocked_config and standin_model change the endpoint itself: "
                    "set mode: drain to use them"
                )
            if self.mode == "deny_callers" and not (self.caller_roles or self.api_gateway):
                raise ValueError(
                    "nothing would be frozen: mode deny_callers with no caller_roles denies "
                    "no one; list caller_roles, give api_gateway, or set mode: drain"
                )
            return self

        @property
        def switches_config(self) -> bool:
            return self.mode == "drain" and bool(self.blocked_config or self.standin_model)

    class Output(ActionOutput):
        endpoint_arn: str
        mode: Literal["deny_callers", "drain"]
        still_serves: str = Field(
            description="who can still get answers from the endpoint after this step"
        )
        description_before: dict[str, Any] = Field(
            description="DescribeEndpoint and DescribeEndpointConfig before any change"
        )
        denied_roles: list[str] = Field(description="role ARNs that carry the deny policy now")
        weights_zeroed: list[str] = Field(description="variants at weight 0 (mode drain)")
        config_switched_to: str | None = Field(description="the blocked config now in use")
        standin_model: str | None = Field(
            description="the model the endpoint serves instead of the protected one"
        )
        api_gateway_change: str | None = Field(description="what is closed at API Gateway")
        changed: bool = Field(description="whether this run changed anything")

    @classmethod
    def iam_resources(cls, with_: Mapping[str, Any]) -> dict[str, list[str]]:
        """ARNs per call from the step's values (IAM wildcards allowed, for iam-policy).

        Calls a step cannot make get ``[]``: the role calls without ``caller_roles``, API
        Gateway without ``api_gateway``, weights outside ``mode: drain``, the config switch
        without ``standin_model``/``blocked_config``. The endpoint config's name is found at
        run time, so config calls are on ``endpoint-config/*``.
        """
        out: dict[str, list[str]] = {}
        name = with_.get("endpoint_name")
        endpoint = None
        if isinstance(name, str) and _ENDPOINT_GLOB.match(name):
            # SageMaker ARNs carry the endpoint name in lower case
            endpoint = f"arn:aws:sagemaker:*:*:endpoint/{name.lower()}"
            out["sagemaker:DescribeEndpoint"] = [endpoint]
        configs = "arn:aws:sagemaker:*:*:endpoint-config/*"
        out["sagemaker:DescribeEndpointConfig"] = [configs]
        mode = with_.get("mode", "deny_callers")
        if mode in ("deny_callers", "drain"):
            drain = mode == "drain"
            switch = drain and bool(with_.get("standin_model") or with_.get("blocked_config"))
            if endpoint:
                out["sagemaker:UpdateEndpointWeightsAndCapacities"] = [endpoint] if drain else []
                out["sagemaker:UpdateEndpoint"] = [endpoint, configs] if switch else []
            out["sagemaker:CreateEndpointConfig"] = [configs] if switch else []
            out["sagemaker:AddTags"] = [configs] if switch else []
        if "api_gateway" not in with_ or with_["api_gateway"] is None:
            out["apigateway:GET"] = out["apigateway:PATCH"] = []
        arns = _role_arns(with_.get("caller_roles", []))
        if arns is not None:
            for action in ROLE_ACTIONS:
                out[action] = arns
        return out

    # --- apply -----------------------------------------------------------------------------

    def apply(self, params: Input, aws: Aws, ctx: ActionContext) -> Output:
        sm = aws.client("sagemaker")
        endpoint = strip_metadata(sm.describe_endpoint(EndpointName=params.endpoint_name))
        config = strip_metadata(
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
        if params.mode == "drain":
            zeroed, weights_changed = self._zero_weights(sm, params.endpoint_name, ctx)
            changed |= weights_changed

        switched_to = None
        if params.switches_config:
            switched_to, config_changed = self._block_config(
                sm, params.endpoint_name, endpoint, config, params.standin_model, ctx
            )
            changed |= config_changed

        serves = still_serves(params, denied, config)
        ctx.logger.info(
            "endpoint %s (mode %s): denied %s; still serves %s",
            params.endpoint_name,
            params.mode,
            ", ".join(denied) or "no role",
            serves,
        )
        return self.Output(
            endpoint_arn=arn,
            mode=params.mode,
            still_serves=serves,
            description_before=description_before,
            denied_roles=denied,
            weights_zeroed=zeroed,
            config_switched_to=switched_to,
            standin_model=params.standin_model if switched_to else None,
            api_gateway_change=api_change,
            changed=changed,
        )

    def _deny_roles(
        self, params: Input, endpoint_arn: str, aws: Aws, ctx: ActionContext
    ) -> tuple[list[str], bool]:
        if not params.caller_roles:
            return [], False
        iam = aws.client("iam")
        plan = plan_role_denies(iam, params.caller_roles, params.endpoint_name, endpoint_arn)
        for name, previous in plan.todo:
            with changing(
                ctx,
                f"remove the endpoint deny policy {plan.policy_name} from role {name}"
                if previous is None
                else f"restore the previous {plan.policy_name} policy of role {name}",
                op="restore_role_policy",
                role_name=name,
                policy_name=plan.policy_name,
                previous=previous,
            ):
                iam.put_role_policy(
                    RoleName=name,
                    PolicyName=plan.policy_name,
                    PolicyDocument=json.dumps(plan.document),
                )
        return plan.arns, bool(plan.todo)

    def _close_api(
        self, target: ApiGatewayTarget, aws: Aws, ctx: ActionContext
    ) -> tuple[str, bool]:
        apigw = aws.client("apigateway")
        if target.api_key_id:
            text = f"API key {target.api_key_id} disabled"
            if not read_api_key(apigw, target.api_key_id).get("enabled", False):
                return text, False
            with changing(
                ctx,
                f"re-enable API key {target.api_key_id}",
                op="enable_api_key",
                api_key_id=target.api_key_id,
            ):
                apigw.update_api_key(
                    apiKey=target.api_key_id,
                    patchOperations=[{"op": "replace", "path": "/enabled", "value": "false"}],
                )
            return text, True

        plan = plan_stage_throttling(apigw, target)
        text = (
            f"stage {target.rest_api_id}/{target.stage_name} throttled to 0 requests/s "
            f"({', '.join(plan.paths)})"
        )
        if not plan.operations:
            return text, False
        with changing(
            ctx,
            f"restore the throttling of stage {target.rest_api_id}/{target.stage_name}",
            op="restore_stage_throttling",
            rest_api_id=target.rest_api_id,
            stage_name=target.stage_name,
            before=plan.before,
        ):
            apigw.update_stage(
                restApiId=target.rest_api_id,
                stageName=target.stage_name,
                patchOperations=plan.operations,
            )
        return text, True

    def _zero_weights(self, sm: Any, name: str, ctx: ActionContext) -> tuple[list[str], bool]:
        endpoint = wait_until_updatable(sm, name)
        old, todo = weights_to_zero(endpoint)
        if todo:
            with changing(
                ctx,
                f"restore the variant weights of endpoint {name}",
                op="restore_weights",
                endpoint_name=name,
                weights={v["VariantName"]: old[v["VariantName"]] for v in todo},
            ):
                sm.update_endpoint_weights_and_capacities(
                    EndpointName=name,
                    DesiredWeightsAndCapacities=[desired_weight(v, 0.0) for v in todo],
                )
        return sorted(old), bool(todo)

    def _block_config(
        self,
        sm: Any,
        name: str,
        endpoint: dict[str, Any],
        config: dict[str, Any],
        standin_model: str | None,
        ctx: ActionContext,
    ) -> tuple[str, bool]:
        current = endpoint["EndpointConfigName"]
        plan = plan_blocked_config(sm, endpoint, config, standin_model)
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
        with changing(  # the blocked config itself is kept (evidence), as it always was
            ctx,
            f"switch endpoint {name} back to its config {current}",
            op="restore_endpoint_config",
            endpoint_name=name,
            config_name=current,
            blocked_config=plan.name,
            weights={
                v["VariantName"]: variant_weight(v) for v in endpoint.get("ProductionVariants", [])
            },
        ):
            sm.update_endpoint(EndpointName=name, EndpointConfigName=plan.name)
        return plan.name, True

    # --- describe (plan --live) ------------------------------------------------------------

    def describe(self, params: Input, aws: Aws, ctx: ActionContext) -> list[str]:
        """What ``apply`` would change now, in the order it would change it.

        Where apply would stop with an error after earlier changes (an endpoint that
        cannot be updated, a foreign config under the blocked name), the last line says so.
        """
        sm = aws.client("sagemaker")
        name = params.endpoint_name
        endpoint = strip_metadata(sm.describe_endpoint(EndpointName=name))
        config = strip_metadata(
            sm.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
        )
        lines = _role_deny_lines(params, aws, endpoint["EndpointArn"])
        if params.api_gateway is not None:
            lines += _api_gateway_lines(params.api_gateway, aws)
        return lines + _endpoint_lines(params, sm, endpoint, config)

    # --- undo ------------------------------------------------------------------------------

    def undo(self, how: dict[str, Any], aws: Aws, ctx: ActionContext) -> None:
        """Put one change back; each op leaves alone what is already as it was (the change
        never happened, or was put back already)."""
        op = how["op"]
        if op == "restore_role_policy":
            restore_role_policy(aws.client("iam"), how)
        elif op == "enable_api_key":
            apigw = aws.client("apigateway")
            if not apigw.get_api_key(apiKey=how["api_key_id"]).get("enabled", False):
                apigw.update_api_key(
                    apiKey=how["api_key_id"],
                    patchOperations=[{"op": "replace", "path": "/enabled", "value": "true"}],
                )
        elif op == "restore_stage_throttling":
            restore_stage(aws.client("apigateway"), how)
        elif op == "restore_weights":
            restore_weights(aws.client("sagemaker"), how["endpoint_name"], how["weights"])
        elif op == "restore_endpoint_config":
            restore_config(aws.client("sagemaker"), how, ctx)
        else:
            raise AwsActionError(f"{self.name}: unknown undo operation '{op}'")


def _role_deny_lines(params: FreezeEndpoint.Input, aws: Aws, arn: str) -> list[str]:
    """The inline deny policies ``apply`` would attach or replace."""
    if not params.caller_roles:
        return []
    plan = plan_role_denies(aws.client("iam"), params.caller_roles, params.endpoint_name, arn)
    lines = []
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
    return lines


def _api_gateway_lines(target: ApiGatewayTarget, aws: Aws) -> list[str]:
    """The API key ``apply`` would disable, or the stage it would throttle."""
    apigw = aws.client("apigateway")
    if target.api_key_id:
        key = read_api_key(apigw, target.api_key_id)
        if not key.get("enabled", False):
            return []
        named = f" ({key['name']})" if key.get("name") else ""
        return [f"disable API key {target.api_key_id}{named}"]
    stage = plan_stage_throttling(apigw, target)
    if not stage.operations:
        return []
    now = ", ".join(f"{path} (now {limits_text(old)})" for path, old in stage.before.items())
    return [f"throttle stage {target.rest_api_id}/{target.stage_name} to 0 requests/s at {now}"]


def _endpoint_lines(
    params: FreezeEndpoint.Input, sm: Any, endpoint: dict[str, Any], config: dict[str, Any]
) -> list[str]:
    """The weight and config changes; a last "stop with an error" line where apply would stop."""
    name = params.endpoint_name
    status = endpoint.get("EndpointStatus")
    wait = f" once the endpoint (now {status}) is InService" if status in BUSY else ""
    stop = (
        f"stop with an error: endpoint {name} is {status}, so its weights and config "
        "cannot be changed (any change above is made first)"
    )
    updatable = status == "InService" or status in BUSY
    lines: list[str] = []
    if params.mode == "drain":
        if not updatable:
            return [stop]
        old, todo = weights_to_zero(endpoint)
        if todo:
            weights = ", ".join(f"{v['VariantName']} ({old[v['VariantName']]:g})" for v in todo)
            lines.append(
                f"set the weight of variant(s) {weights} of endpoint {name} to 0 "
                f"(capacity kept){wait}"
            )
    blocked = (
        plan_blocked_config(sm, endpoint, config, params.standin_model)
        if params.switches_config
        else None
    )
    if blocked is None:
        return lines
    current = endpoint["EndpointConfigName"]
    if blocked.existing is None:
        serving = (
            f", every variant serving the stand-in model {params.standin_model}"
            if params.standin_model
            else ""
        )
        lines.append(
            f"create endpoint config {blocked.name}: a copy of {current} with every "
            f"variant at weight 0 and the smallest capacity{serving}"
        )
    elif blocked.foreign:
        return [*lines, f"stop with an error: {blocked.foreign}"]
    if not updatable:
        return [*lines, stop]
    return [*lines, f"switch endpoint {name} from config {current} to {blocked.name}{wait}"]


def still_serves(params: FreezeEndpoint.Input, denied: list[str], config: dict[str, Any]) -> str:
    """Who can still get answers from the endpoint, in words a responder cannot misread."""
    roles = f"the {len(denied)} denied role(s)" if denied else "no role (none was denied)"
    if params.mode == "deny_callers":
        return (
            f"every caller except {roles}: the endpoint stays InService at its weights "
            "(mode deny_callers is not a freeze)"
        )
    if params.standin_model:
        models = sorted({str(v.get("ModelName")) for v in config.get("ProductionVariants", [])})
        return (
            f"no caller reaches model(s) {', '.join(models)}: every variant serves the stand-in "
            f"model {params.standin_model} at weight 0"
        )
    return (
        "callers that name a variant with TargetVariant, except "
        f"{roles}: every variant's weight is 0, but weights are traffic shaping, not access "
        "control (use standin_model to take the model off the endpoint)"
    )


def _role_arns(roles: Any) -> list[str] | None:
    """The role ARNs ``caller_roles`` names (None: not known before the run)."""
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        return None
    arns: list[str] = []
    for role in roles:
        if ROLE_ARN.match(role) or (role.startswith("arn:aws") and ":role/" in role):
            arns.append(role)
        elif ROLE_NAME.match(role):
            arns += [f"arn:aws:iam::*:role/{role}", f"arn:aws:iam::*:role/*/{role}"]
        else:  # an expression: the role is not known before the run
            return None
    return arns


def _is_expression(value: str) -> bool:
    """A list item still written as ``{{ … }}`` (lint): checked again once rendered."""
    return "{{" in value or "{%" in value
