"""The SageMaker endpoint side of ``aws.sagemaker.freeze_endpoint``: wait until the endpoint
can be updated, set variant weights (and put them back), and build the blocked config
("<config>-clampdown-blocked": every variant at weight 0 and the smallest capacity)."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

from clampdown.core.actions import ActionContext
from clampdown_aws.base import AwsActionError
from clampdown_aws.responses import strip_metadata

BLOCKED_SUFFIX = "-clampdown-blocked"
CONFIG_NAME_MAX = 63
BUSY = frozenset({"Creating", "Updating", "SystemUpdating", "RollingBack"})
POLL_SECONDS = 15.0  # between DescribeEndpoint calls while the endpoint is updating
WAIT_TIMEOUT_SECONDS = 1800.0


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


def weights_to_zero(
    endpoint: dict[str, Any],
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """(every variant's weight now, the variants whose weight is not 0 yet)."""
    variants = endpoint.get("ProductionVariants", [])
    return {v["VariantName"]: variant_weight(v) for v in variants}, [
        v for v in variants if variant_weight(v) != 0
    ]


def variant_weight(variant: dict[str, Any]) -> float:
    return float(variant.get("DesiredWeight", variant.get("CurrentWeight", 1.0)))


def desired_weight(variant: dict[str, Any], weight: float) -> dict[str, Any]:
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
        desired_weight(variants[variant], weight)
        for variant, weight in weights.items()
        if variant in variants and variant_weight(variants[variant]) != weight
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


def blocked_config_request(
    sm: Any, config: dict[str, Any], name: str, standin_model: str | None = None
) -> dict[str, Any]:
    """CreateEndpointConfig arguments: the same config, every variant at weight 0 and the
    smallest capacity (1 instance; serverless: concurrency 1, none provisioned); with
    ``standin_model``, every variant serves that model instead of its own."""
    members = sm.meta.service_model.operation_model("CreateEndpointConfig").input_shape.members
    # an empty block (moto describes a config without data capture as DataCaptureConfig: {})
    # would fail CreateEndpointConfig's validation: leave it out, as AWS does
    request = {
        k: v for k, v in config.items() if k in members and k != "Tags" and v not in ({}, [])
    }
    request["EndpointConfigName"] = name
    variants = []
    for variant in config.get("ProductionVariants", []):
        blocked = {**variant, "InitialVariantWeight": 0.0}
        if standin_model:
            blocked["ModelName"] = standin_model
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
class BlockedConfig:
    name: str
    wanted: dict[str, Any]  # CreateEndpointConfig arguments (without tags)
    existing: dict[str, Any] | None  # a config of that name now
    foreign: str | None  # why the existing one cannot be used, if it cannot


def plan_blocked_config(
    sm: Any, endpoint: dict[str, Any], config: dict[str, Any], standin_model: str | None = None
) -> BlockedConfig | None:
    """The blocked config to switch to; None when the endpoint uses one already."""
    current = endpoint["EndpointConfigName"]
    if current.endswith(BLOCKED_SUFFIX):
        return None
    name = blocked_config_name(current)
    wanted = blocked_config_request(sm, config, name, standin_model)
    existing = _describe_config(sm, name)
    foreign = None
    if existing is not None and _variant_summary(existing) != _variant_summary(wanted):
        foreign = (
            f"endpoint config {name} exists but is not a blocked copy of {current}; "
            "nothing was switched. Delete or rename it, then run again"
        )
    return BlockedConfig(name, wanted, existing, foreign)


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
        return strip_metadata(sm.describe_endpoint_config(EndpointConfigName=name))
    except sm.exceptions.ClientError as exc:
        if exc.response["Error"]["Code"] == "ValidationException" and "Could not find" in str(
            exc.response["Error"].get("Message", "")
        ):
            return None
        raise


def restore_config(sm: Any, how: dict[str, Any], ctx: ActionContext) -> None:
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
