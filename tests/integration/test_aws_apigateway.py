"""aws.apigateway.disable_api_key and throttle_usage_plan: in-process moto and moto server."""

from __future__ import annotations

import boto3
import pytest

from clampdown.core.actions import ActionContext
from clampdown.core.settings import settings
from clampdown_aws import base
from clampdown_aws.apigateway import DisableApiKey, ThrottleUsagePlan
from clampdown_aws.base import AwsAccessDenied, AwsActionError


@pytest.fixture(params=["in_process", "server"])
def apigw(request):
    """An API Gateway client on moto, in-process or as a real HTTP server."""
    fixture = "mocked_aws" if request.param == "in_process" else "aws_endpoint"
    request.getfixturevalue(fixture)
    return boto3.client("apigateway", region_name="us-east-1")


def ctx() -> ActionContext:
    return ActionContext(
        run_id="run1",
        step_id="step",
        runbook="t",
        home=settings().paths,
        region="us-east-1",
    )


def seed(apigw, throttle=None):
    key = apigw.create_api_key(name="suspect", enabled=True)["id"]
    args = {"throttle": throttle} if throttle else {}
    plan = apigw.create_usage_plan(name="partners", **args)["id"]
    apigw.create_usage_plan_key(usagePlanId=plan, keyId=key, keyType="API_KEY")
    return key, plan


def test_disable_api_key_is_idempotent_and_undo_enables_it(apigw):
    key, _ = seed(apigw)
    action, first = DisableApiKey(), ctx()
    out = action.run(DisableApiKey.Input(api_key_id=key), first)
    assert out.changed and out.key_name == "suspect"
    assert apigw.get_api_key(apiKey=key)["enabled"] is False
    again = ctx()
    assert action.run(DisableApiKey.Input(api_key_id=key), again).changed is False
    assert again.undo == []
    for record in reversed(first.undo):
        action.rollback(record, ctx())
        action.rollback(record, ctx())  # undo is idempotent too
    assert apigw.get_api_key(apiKey=key)["enabled"] is True


def test_unknown_key_says_what_to_check(apigw):
    with pytest.raises(AwsActionError, match="no API Gateway API key with id 'nope123'"):
        DisableApiKey().run(DisableApiKey.Input(api_key_id="nope123"), ctx())


def test_throttle_by_key_then_undo_restores_the_exact_limits(apigw):
    key, plan = seed(apigw, throttle={"rateLimit": 100.0, "burstLimit": 200})
    action, first = ThrottleUsagePlan(), ctx()
    out = action.run(ThrottleUsagePlan.Input(api_key_id=key, rate_limit=1, burst_limit=2), first)
    assert out.changed and out.usage_plans[0].usage_plan_id == plan
    throttle = apigw.get_usage_plan(usagePlanId=plan)["throttle"]
    assert (throttle["rateLimit"], throttle["burstLimit"]) == (1, 2)
    again = ctx()
    assert not action.run(
        ThrottleUsagePlan.Input(usage_plan_id=plan, rate_limit=1, burst_limit=2), again
    ).changed
    assert again.undo == []
    (record,) = first.undo
    action.rollback(record, ctx())
    throttle = apigw.get_usage_plan(usagePlanId=plan)["throttle"]
    assert (throttle["rateLimit"], throttle["burstLimit"]) == (100, 200)


def test_throttle_never_loosens_and_undo_removes_a_throttle_that_was_not_there(apigw):
    _, plan = seed(apigw)
    action, first = ThrottleUsagePlan(), ctx()
    action.run(ThrottleUsagePlan.Input(usage_plan_id=plan, rate_limit=5, burst_limit=5), first)
    looser = ctx()
    assert not action.run(
        ThrottleUsagePlan.Input(usage_plan_id=plan, rate_limit=50, burst_limit=50), looser
    ).changed
    assert apigw.get_usage_plan(usagePlanId=plan)["throttle"]["rateLimit"] == 5
    action.rollback(first.undo[0], ctx())
    assert not apigw.get_usage_plan(usagePlanId=plan).get("throttle")


def test_undo_keeps_limits_someone_changed_since(apigw):
    _, plan = seed(apigw, throttle={"rateLimit": 100.0, "burstLimit": 200})
    action, first = ThrottleUsagePlan(), ctx()
    action.run(ThrottleUsagePlan.Input(usage_plan_id=plan), first)
    apigw.update_usage_plan(
        usagePlanId=plan,
        patchOperations=[{"op": "replace", "path": "/throttle/rateLimit", "value": "3"}],
    )
    action.rollback(first.undo[0], ctx())
    assert apigw.get_usage_plan(usagePlanId=plan)["throttle"]["rateLimit"] == 3


def test_key_in_no_plan_is_a_clear_error(apigw):
    key = apigw.create_api_key(name="lonely", enabled=True)["id"]
    with pytest.raises(AwsActionError, match="belongs to no usage plan"):
        ThrottleUsagePlan().run(ThrottleUsagePlan.Input(api_key_id=key), ctx())


def test_needs_a_target():
    with pytest.raises(ValueError, match="give usage_plan_id or api_key_id"):
        ThrottleUsagePlan.Input()


@pytest.mark.parametrize(
    "message",
    [
        "User: arn:aws:iam::123456789012:role/engine is not authorized to perform: "
        "apigateway:PATCH on resource: arn:aws:apigateway:us-east-1::/apikeys/k",
        "Forbidden",
    ],
)
def test_access_denied_names_the_iam_action(mocked_aws, monkeypatch, message):
    from botocore.exceptions import ClientError

    apigw = boto3.client("apigateway", region_name="us-east-1")
    key, _ = seed(apigw)
    original = base.Aws.client

    def client(self, name):
        made = original(self, name)

        def deny(**kwargs):
            raise ClientError(
                {"Error": {"Code": "AccessDeniedException", "Message": message}}, "UpdateApiKey"
            )

        if name == "apigateway":
            made.update_api_key = deny
        return made

    monkeypatch.setattr(base.Aws, "client", client)
    with pytest.raises(AwsAccessDenied, match="may not call apigateway:PATCH"):
        DisableApiKey().run(DisableApiKey.Input(api_key_id=key), ctx())
    assert apigw.get_api_key(apiKey=key)["enabled"] is True
