"""The API Gateway in front of a frozen SageMaker endpoint: read its API key, throttle its
stage to 0 requests/s (every method setting too), and put the throttling back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import Field

from clampdown.core.actions import ActionInput


class ApiGatewayTarget(ActionInput):
    """The API Gateway REST API stage (and optionally API key) in front of the endpoint."""

    rest_api_id: str = Field(min_length=1)
    stage_name: str = Field(min_length=1)
    api_key_id: str | None = Field(
        None, description="disable this API key instead of throttling the stage"
    )


def read_api_key(apigw: Any, api_key_id: str) -> dict[str, Any]:
    return dict(apigw.get_api_key(apiKey=api_key_id))  # no includeValue: no secret


@dataclass
class StageThrottling:
    paths: list[str]  # "*/*" (the stage default) and every method setting
    before: dict[str, dict[str, Any] | None]  # the paths to change: their limits now
    operations: list[dict[str, str]]


def plan_stage_throttling(apigw: Any, target: ApiGatewayTarget) -> StageThrottling:
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
    return StageThrottling(paths, before, operations)


def limits_text(old: dict[str, Any] | None) -> str:
    """A method setting's throttling as the stage shows it now."""
    rate, burst = (old or {}).get("rateLimit"), (old or {}).get("burstLimit")
    if rate is None and burst is None:
        return "no method setting" if old is None else "no throttling limit"
    return f"{'-' if rate is None else f'{rate:g}'} requests/s, burst {burst}"


def _throttled(setting: dict[str, Any]) -> bool:
    return setting.get("throttlingRateLimit") == 0 and setting.get("throttlingBurstLimit") == 0


def restore_stage(apigw: Any, how: dict[str, Any]) -> None:
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
