"""API Gateway containment for extraction through the inference API.

A model stolen through its inference API (MITRE ATLAS AML.T0024, AML.T0024.002) is
queried through an API key: the targeted measure is to disable *that* key, which
stops only the suspect; throttling the key's usage plan slows every key in the plan
(including legitimate clients), so it is the blunter second measure. Both only read
key metadata (never the key's value) and record an undo for each change they make.

API Gateway's AccessDenied messages usually say ``apigateway:GET`` / ``apigateway:PATCH``
already; when they do not, the operation is mapped to the IAM action here, so the
responder is always told which permission to grant.
"""

# No __future__ annotations: pydantic then reads each field's type as written instead of
# compiling its text at class creation (a ForwardRef per field; lint imports this module).

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, Field, model_validator

from clampdown.core.actions import ActionContext, ActionInput, ActionOutput
from clampdown_aws.base import (
    ACCESS_DENIED,
    Aws,
    AwsAccessDenied,
    AwsAction,
    AwsActionError,
    changing,
    translate,
)

KEY_ID = r"^[A-Za-z0-9]{1,64}$"
PLAN_ID = r"^[A-Za-z0-9]{1,64}$"
# API Gateway's IAM actions are HTTP verbs on resource paths.
_IAM_ACTION = {
    "GetApiKey": "apigateway:GET",
    "GetUsagePlan": "apigateway:GET",
    "GetUsagePlans": "apigateway:GET",
    "UpdateApiKey": "apigateway:PATCH",
    "UpdateUsagePlan": "apigateway:PATCH",
}


def _error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    return str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""


def explain(exc: Exception, aws: Aws) -> Exception:
    """Like :func:`~clampdown_aws.base.translate`, naming ``apigateway:*`` on a bare 403."""
    translated = translate(exc, aws)
    operation = getattr(exc, "operation_name", "")
    if (
        isinstance(translated, AwsAccessDenied)
        and f"the permission behind {operation}" in str(translated)
        and operation in _IAM_ACTION
    ):
        return AwsAccessDenied(
            str(translated).replace(f"the permission behind {operation}", _IAM_ACTION[operation])
        )
    if _error_code(exc) in ACCESS_DENIED and not isinstance(translated, AwsAccessDenied):
        return AwsAccessDenied(f"AccessDenied: {aws.principal()} may not call {operation}")
    return translated


class ApiGatewayAction(AwsAction):
    """AwsAction whose errors name the ``apigateway:`` IAM action behind each operation."""

    def run(self, params: Any, ctx: ActionContext) -> Any:
        aws = Aws(ctx)
        try:
            return self.apply(params, aws, ctx)
        except Exception as exc:
            raise explain(exc, aws) from None

    def rollback(self, how: dict[str, Any], ctx: ActionContext) -> None:
        aws = Aws(ctx)
        try:
            self.undo(how, aws, ctx)
        except Exception as exc:
            raise explain(exc, aws) from None


def _key_arn(key_id: str) -> str:
    return f"arn:aws:apigateway:*::/apikeys/{key_id}"


def _plan_arn(plan_id: str) -> str:
    return f"arn:aws:apigateway:*::/usageplans/{plan_id}"


def _get_key(apigw: Any, key_id: str) -> dict[str, Any]:
    """The key's metadata (no ``includeValue``: the key itself is a secret we never read)."""
    try:
        return dict(apigw.get_api_key(apiKey=key_id))
    except Exception as exc:
        if _error_code(exc) != "NotFoundException":
            raise
    raise AwsActionError(
        f"no API Gateway API key with id '{key_id}' in this account and region; check the id "
        "(aws apigateway get-api-keys --name-query …) and the step's region:/account:"
    )


def _set_key_enabled(apigw: Any, key_id: str, enabled: bool) -> None:
    apigw.update_api_key(
        apiKey=key_id,
        patchOperations=[{"op": "replace", "path": "/enabled", "value": str(enabled).lower()}],
    )


# --- aws.apigateway.disable_api_key -----------------------------------------------------------


class DisableApiKey(ApiGatewayAction):
    """Disable one API Gateway API key: the suspect's client is refused (403) at once.

    The key is disabled, never deleted: its id, name and usage records stay for the
    investigation, and rollback enables it again. Only methods that require an API key
    are closed by this; a method without ``apiKeyRequired`` is not.
    """

    name = "aws.apigateway.disable_api_key"
    summary = "Disable an API Gateway API key (reversible)"
    destructive = True
    reversible = True
    iam_actions = ("apigateway:GET", "apigateway:PATCH")

    class Input(ActionInput):
        api_key_id: str = Field(pattern=KEY_ID, description="the API key's id (not its value)")

    class Output(ActionOutput):
        api_key_id: str
        key_name: str | None = None
        enabled: bool = Field(description="the key's state now (false once contained)")
        changed: bool

    @classmethod
    def iam_resources(cls, with_: Mapping[str, Any]) -> dict[str, list[str]]:
        key = with_.get("api_key_id")
        if not (isinstance(key, str) and "{" not in key):
            return {}
        return {action: [_key_arn(key)] for action in cls.iam_actions}

    def apply(self, params: Input, aws: Aws, ctx: ActionContext) -> Output:
        apigw = aws.client("apigateway")
        key = _get_key(apigw, params.api_key_id)
        changed = bool(key.get("enabled", False))
        if changed:
            with changing(  # the undo is on record before the key changes
                ctx,
                f"enable API key {params.api_key_id} ({key.get('name')}) again",
                op="enable_api_key",
                api_key_id=params.api_key_id,
            ):
                _set_key_enabled(apigw, params.api_key_id, False)
            ctx.logger.info("disabled API key %s (%s)", params.api_key_id, key.get("name"))
        return self.Output(
            api_key_id=params.api_key_id, key_name=key.get("name"), enabled=False, changed=changed
        )

    def describe(self, params: Input, aws: Aws, ctx: ActionContext) -> list[str]:
        key = _get_key(aws.client("apigateway"), params.api_key_id)
        if not key.get("enabled", False):
            return []
        return [f"disable API key {params.api_key_id} ({key.get('name')}); it is not deleted"]

    def undo(self, how: dict[str, Any], aws: Aws, ctx: ActionContext) -> None:
        """Enable the key; one enabled already (never disabled, or put back) or gone is left."""
        if how.get("op") != "enable_api_key":
            raise AwsActionError(f"{self.name} cannot undo unknown operation {how.get('op')!r}")
        apigw = aws.client("apigateway")
        try:
            key = apigw.get_api_key(apiKey=how["api_key_id"])
        except Exception as exc:
            if _error_code(exc) != "NotFoundException":
                raise
            ctx.logger.warning("API key %s no longer exists; nothing to enable", how["api_key_id"])
            return
        if not key.get("enabled", False):
            _set_key_enabled(apigw, how["api_key_id"], True)
            ctx.logger.info("rollback: API key %s is enabled again", how["api_key_id"])


# --- aws.apigateway.throttle_usage_plan -------------------------------------------------------


class Limits(BaseModel):
    """A usage plan's throttle: steady requests per second and burst size."""

    rateLimit: float | None = None  # API Gateway's own field names
    burstLimit: int | None = None


class PlanChange(BaseModel):
    usage_plan_id: str
    name: str | None = None
    before: Limits | None = Field(description="the plan's throttle before (null: none)")
    after: Limits


def _number(value: float) -> str:
    """A patch value as API Gateway (and moto, which wants integers) reads it: 5, 0.5."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _limits(plan: Mapping[str, Any]) -> Limits | None:
    throttle = plan.get("throttle") or {}
    if not throttle:
        return None
    rate, burst = throttle.get("rateLimit"), throttle.get("burstLimit")
    return Limits(
        rateLimit=None if rate is None else float(rate),
        burstLimit=None if burst is None else int(burst),
    )


def _tightened(before: Limits | None, rate: float, burst: int) -> Limits:
    """Each limit at the stricter of now and wanted: containment never loosens a limit."""
    now = before or Limits()
    return Limits(
        rateLimit=rate if now.rateLimit is None else min(now.rateLimit, rate),
        burstLimit=burst if now.burstLimit is None else min(now.burstLimit, burst),
    )


def _patch(limits: Limits) -> list[dict[str, str]]:
    return [
        {"op": "replace", "path": f"/throttle/{field}", "value": _number(value)}
        for field, value in limits.model_dump().items()
        if value is not None
    ]


class ThrottleUsagePlan(ApiGatewayAction):
    """Throttle a usage plan (or every plan an API key belongs to) to a trickle.

    Slows model extraction through the API without taking the API down: the plan's
    steady rate and burst are lowered to ``rate_limit`` / ``burst_limit`` (a limit that
    is already stricter is kept). Every key in the plan is slowed, legitimate clients
    too: disable the suspect's key (``aws.apigateway.disable_api_key``) for a targeted
    cut. Per-method throttles inside a plan's API stages are not changed. Rollback puts
    the previous limits back exactly (or removes the throttle the plan did not have),
    unless someone changed them since: then it keeps their values and says so.
    """

    name = "aws.apigateway.throttle_usage_plan"
    summary = "Lower an API Gateway usage plan's rate and burst limits (reversible)"
    destructive = True
    reversible = True
    iam_actions = ("apigateway:GET", "apigateway:PATCH")

    class Input(ActionInput):
        usage_plan_id: str | None = Field(None, pattern=PLAN_ID, description="the plan to throttle")
        api_key_id: str | None = Field(
            None, pattern=KEY_ID, description="throttle every plan this key belongs to"
        )
        rate_limit: float = Field(1.0, ge=0, le=10_000, description="requests per second")
        burst_limit: int = Field(1, ge=0, le=5_000, description="burst size")

        @model_validator(mode="after")
        def _one_target(self) -> "ThrottleUsagePlan.Input":
            if not (self.usage_plan_id or self.api_key_id):
                raise ValueError("give usage_plan_id or api_key_id (the plans of that key)")
            return self

    class Output(ActionOutput):
        usage_plans: list[PlanChange]
        changed: bool

    @classmethod
    def iam_resources(cls, with_: Mapping[str, Any]) -> dict[str, list[str]]:
        plan = with_.get("usage_plan_id")
        if with_.get("api_key_id") or not (isinstance(plan, str) and "{" not in plan):
            return {}
        return {action: [_plan_arn(plan)] for action in cls.iam_actions}

    def _plans(self, apigw: Any, params: Input) -> list[dict[str, Any]]:
        if params.usage_plan_id:
            try:
                return [dict(apigw.get_usage_plan(usagePlanId=params.usage_plan_id))]
            except Exception as exc:
                if _error_code(exc) != "NotFoundException":
                    raise
            raise AwsActionError(
                f"no usage plan with id '{params.usage_plan_id}' in this account and region; "
                "check the id (aws apigateway get-usage-plans) and the step's region:/account:"
            )
        assert params.api_key_id is not None
        _get_key(apigw, params.api_key_id)  # a clear error for an unknown key
        plans: list[dict[str, Any]] = []
        for page in apigw.get_paginator("get_usage_plans").paginate(keyId=params.api_key_id):
            plans.extend(page.get("items", []))
        if not plans:
            raise AwsActionError(
                f"API key {params.api_key_id} belongs to no usage plan, so there is nothing to "
                "throttle; disable the key with aws.apigateway.disable_api_key instead"
            )
        return plans

    def apply(self, params: Input, aws: Aws, ctx: ActionContext) -> Output:
        apigw = aws.client("apigateway")
        changes: list[PlanChange] = []
        changed = False
        for plan in self._plans(apigw, params):
            before = _limits(plan)
            after = _tightened(before, params.rate_limit, params.burst_limit)
            if before != after:
                with changing(  # the undo is on record before the plan changes
                    ctx,
                    f"restore the throttle of usage plan {plan['id']} ({plan.get('name')})",
                    op="restore_usage_plan_throttle",
                    usage_plan_id=plan["id"],
                    before=None if before is None else before.model_dump(),
                    applied=after.model_dump(),
                ):
                    apigw.update_usage_plan(usagePlanId=plan["id"], patchOperations=_patch(after))
                changed = True
                ctx.logger.info(
                    "usage plan %s throttled to %s requests/s, burst %s",
                    plan["id"],
                    _number(after.rateLimit or 0),
                    after.burstLimit,
                )
            changes.append(
                PlanChange(
                    usage_plan_id=plan["id"], name=plan.get("name"), before=before, after=after
                )
            )
        return self.Output(usage_plans=changes, changed=changed)

    def describe(self, params: Input, aws: Aws, ctx: ActionContext) -> list[str]:
        lines = []
        for plan in self._plans(aws.client("apigateway"), params):
            before = _limits(plan)
            after = _tightened(before, params.rate_limit, params.burst_limit)
            if before != after:
                was = (
                    "no throttle"
                    if before is None
                    else f"{before.rateLimit} requests/s, burst {before.burstLimit}"
                )
                lines.append(
                    f"throttle usage plan {plan['id']} ({plan.get('name')}) to "
                    f"{_number(after.rateLimit or 0)} requests/s, burst {after.burstLimit} "
                    f"(now {was}); every key in the plan is slowed"
                )
        return lines

    def undo(self, how: dict[str, Any], aws: Aws, ctx: ActionContext) -> None:
        """Restore the limits; a plan at its limits from before (never throttled, or put
        back) or gone is left as it is."""
        if how.get("op") != "restore_usage_plan_throttle":
            raise AwsActionError(f"{self.name} cannot undo unknown operation {how.get('op')!r}")
        apigw = aws.client("apigateway")
        plan_id = how["usage_plan_id"]
        try:
            current = _limits(apigw.get_usage_plan(usagePlanId=plan_id))
        except Exception as exc:
            if _error_code(exc) != "NotFoundException":
                raise
            ctx.logger.warning("usage plan %s no longer exists; nothing to restore", plan_id)
            return
        before = None if how["before"] is None else Limits(**how["before"])
        if current == before:
            return  # already as it was
        if current != Limits(**how["applied"]):
            ctx.logger.warning(
                "usage plan %s was re-throttled after clampdown changed it (now %s); "
                "keeping those limits, not restoring %s",
                plan_id,
                current,
                before,
            )
            return
        # A limit the plan did not have is removed with the whole throttle, then the
        # limits it did have are put back (one patch request, applied in order).
        operations = (
            []
            if before and None not in before.model_dump().values()
            else [{"op": "remove", "path": "/throttle"}]
        )
        operations += _patch(before) if before else []
        apigw.update_usage_plan(usagePlanId=plan_id, patchOperations=operations)
        ctx.logger.info("rollback: usage plan %s throttle restored to %s", plan_id, before)
