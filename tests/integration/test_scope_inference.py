"""aws.forensics.scope_inference_extraction on moto: API Gateway access logs in CloudWatch
Logs (the JSON access-log format AWS documents, $context variables) and the endpoint's
AWS/SageMaker Invocations metric. An extraction burst by one key among normal traffic is
found with its count, rate and multiple of its own baseline; a key with no requests is an
explicit zero; access logging off is a blind spot, not "nothing"; malformed lines are
reported and skipped; the API key's value never reaches the outputs."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from pydantic import ValidationError

from clampdown_aws.forensics import ScopeInferenceExtraction
from tests.integration.shared_models import shared_service_models  # noqa: F401 - autouse

NOW = datetime.now(UTC).replace(microsecond=0)
END = NOW - timedelta(minutes=1)
START = END - timedelta(hours=2)  # the window: 2 h
BASELINE_HOURS = 24
GROUP = "API-Gateway-Execution-Logs_fraud/prod-access"
ENDPOINT = "fraud-detector-v3"
NORMAL, THIEF, QUIET = "normalkey01", "thiefkey001", "quietkey001"
SECRET_VALUE = "Xy7SecretApiKeyValue0123456789abcdefGHIJ"


def access_line(key: str, at: datetime, n: int, *, length: int = 512, **extra: Any) -> str:
    """One access-log line as the stage writes it with AWS's documented JSON format."""
    line = {
        "requestId": f"{key}-{int(at.timestamp())}-{n}",
        "ip": "203.0.113.66" if key == THIEF else "10.0.1.5",
        "caller": "-",
        "user": "-",
        "apiKeyId": key,
        "requestTime": at.strftime("%d/%b/%Y:%H:%M:%S +0000"),
        "requestTimeEpoch": str(int(at.timestamp() * 1000)),
        "httpMethod": "POST",
        "resourcePath": "/predict",
        "status": "200",
        "protocol": "HTTP/1.1",
        "responseLength": str(length),
    }
    line.update(extra)
    return json.dumps(line)


def put(logs: Any, lines: list[tuple[datetime, str]]) -> None:
    events = sorted(
        ({"timestamp": int(at.timestamp() * 1000), "message": m} for at, m in lines),
        key=lambda e: e["timestamp"],
    )
    for i in range(0, len(events), 5000):
        logs.put_log_events(logGroupName=GROUP, logStreamName="s", logEvents=events[i : i + 5000])


def traffic() -> list[tuple[datetime, str]]:
    """Baseline day: NORMAL 12/h, THIEF 1/h. Window: NORMAL as usual, THIEF 600 requests."""
    out = []
    base = START - timedelta(hours=BASELINE_HOURS)
    for m in range(0, BASELINE_HOURS * 60, 5):  # every 5 min: NORMAL 12/h
        at = base + timedelta(minutes=m)
        out.append((at, access_line(NORMAL, at, 0)))
        if m % 60 == 0:
            out.append((at, access_line(THIEF, at, 0)))
    for m in range(0, 120, 5):
        at = START + timedelta(minutes=m, seconds=10)
        out.append((at, access_line(NORMAL, at, 1)))
    burst = START + timedelta(minutes=30)
    for i in range(600):  # 10 per second for a minute: the probe grid
        at = burst + timedelta(milliseconds=100 * i)
        out.append((at, access_line(THIEF, at, i, length=2048)))
    return out


@pytest.fixture
def world(mocked_aws: None) -> dict[str, Any]:
    """The stage with access logging to GROUP (created a month ago), the endpoint's metric."""
    from moto.logs.models import logs_backends

    logs = boto3.client("logs", region_name="us-east-1")
    logs.create_log_group(logGroupName=GROUP)
    logs.create_log_stream(logGroupName=GROUP, logStreamName="s")
    group = logs_backends["123456789012"]["us-east-1"].groups[GROUP]
    group.creation_time = (NOW - timedelta(days=30)).replace(tzinfo=None)
    apigw = boto3.client("apigateway", region_name="us-east-1")
    api = apigw.create_rest_api(name="fraud")["id"]
    root = apigw.get_resources(restApiId=api)["items"][0]["id"]
    apigw.put_method(restApiId=api, resourceId=root, httpMethod="POST", authorizationType="NONE")
    apigw.put_integration(restApiId=api, resourceId=root, httpMethod="POST", type="MOCK")
    apigw.create_deployment(restApiId=api, stageName="prod")
    apigw.create_deployment(restApiId=api, stageName="dark")  # no access logging
    apigw.update_stage(
        restApiId=api,
        stageName="prod",
        patchOperations=[
            {
                "op": "replace",
                "path": "/accessLogSettings/destinationArn",
                "value": f"arn:aws:logs:us-east-1:123456789012:log-group:{GROUP}",
            },
            {"op": "replace", "path": "/accessLogSettings/format", "value": "{}"},
        ],
    )
    return {"logs": logs, "api": api, "cloudwatch": boto3.client("cloudwatch", "us-east-1")}


def invocations(cloudwatch: Any, count: int, at: datetime) -> None:
    dims = [{"Name": "EndpointName", "Value": ENDPOINT}, {"Name": "VariantName", "Value": "A"}]
    cloudwatch.put_metric_data(
        Namespace="AWS/SageMaker",
        MetricData=[
            {"MetricName": "Invocations", "Dimensions": dims, "Value": count, "Timestamp": at}
        ],
    )


def scope(action_ctx: Any, **with_: Any) -> Any:
    action = ScopeInferenceExtraction()
    params = action.Input(start=START, end=END, baseline_hours=BASELINE_HOURS, **with_)
    return action.run(params, action_ctx)


def test_an_extraction_burst_is_found_against_the_keys_own_baseline(world, action_ctx):
    put(world["logs"], traffic())
    invocations(world["cloudwatch"], 624, START + timedelta(minutes=30))
    out = scope(
        action_ctx, rest_api_id=world["api"], stage="prod", api_key_id=THIEF, endpoint_name=ENDPOINT
    )
    assert out.blind_spots == [] and out.confidence == "high"
    assert out.log_group == GROUP
    s = out.suspect
    assert (s.api_key_id, s.requests, s.baseline_requests) == (THIEF, 600, 24)
    assert s.rate_per_hour == 300.0 and s.baseline_rate_per_hour == 1.0
    assert s.multiple_of_baseline == 300.0
    assert s.requests_over_baseline == 598  # 600 less the 2 its baseline rate predicts
    assert s.bytes_out == 600 * 2048
    assert s.share_of_invocations == round(600 / 624, 4)
    assert s.source_ips == ["203.0.113.66"] and s.resource_paths == ["/predict"]
    assert s.first_request == (START + timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert s.last_request == (START + timedelta(minutes=30, seconds=59)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    normal = next(c for c in out.callers if c.api_key_id == NORMAL)
    assert (normal.requests, normal.multiple_of_baseline) == (24, 1.0)
    assert normal.requests_over_baseline == 0
    assert [c.api_key_id for c in out.callers] == [THIEF, NORMAL]  # most requests first
    assert out.totals.requests == 624 and out.totals.endpoint_invocations == 624
    assert "300x its baseline rate" in out.summary and "96.2%" in out.summary
    assert out.principal == THIEF and out.window_start == START.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_a_key_with_no_requests_is_an_explicit_zero(world, action_ctx):
    put(world["logs"], traffic())
    out = scope(action_ctx, log_group=GROUP, api_key_id=QUIET)
    assert out.suspect is not None
    assert (out.suspect.requests, out.suspect.baseline_requests, out.suspect.bytes_out) == (0, 0, 0)
    assert out.suspect.first_request is None
    assert out.summary.startswith(f"no requests by API key {QUIET} in the window")
    assert out.confidence == "high" and out.totals.requests == 624  # the others still counted


def test_access_logging_off_is_a_blind_spot_not_nothing(world, action_ctx):
    out = scope(action_ctx, rest_api_id=world["api"], stage="dark", api_key_id=THIEF)
    assert [b.kind for b in out.blind_spots] == ["access_logging_off"]
    assert "stage dark" in out.blind_spots[0].detail
    assert out.confidence == "low" and "does not mean" in out.confidence_reason
    assert out.suspect.requests == 0 and out.log_group is None


def test_an_empty_or_missing_log_group_and_missing_metrics_are_blind_spots(world, action_ctx):
    out = scope(action_ctx, log_group=GROUP, endpoint_name=ENDPOINT)
    kinds = [b.kind for b in out.blind_spots]
    assert kinds == ["no_access_logs", "metrics_unavailable"] and out.confidence == "low"
    out = scope(action_ctx, log_group="no-such-group")
    assert [b.kind for b in out.blind_spots] == ["log_group_missing"]


def test_logs_that_start_late_leave_the_window_partly_uncovered(world, action_ctx):
    late = START + timedelta(minutes=90)
    put(world["logs"], [(late, access_line(THIEF, late, 0))])
    out = scope(action_ctx, log_group=GROUP, api_key_id=THIEF)
    assert [b.kind for b in out.blind_spots] == ["window_not_covered"]
    assert out.suspect.requests == 1 and out.suspect.multiple_of_baseline is None
    assert "no baseline" in out.summary


def test_malformed_lines_are_reported_and_skipped(world, action_ctx):
    at = START + timedelta(minutes=10)
    lines = [
        (at, access_line(THIEF, at, 1)),
        (at, "not json at all"),
        (at, '{"truncated": "line'),
        (at, json.dumps(["a", "list"])),
        (at, json.dumps({"ip": "10.0.0.1"})),  # JSON, but no requestId: not an access log
        (at, access_line(THIEF, at, 2)),
    ]
    put(world["logs"], lines)
    out = scope(action_ctx, log_group=GROUP, api_key_id=THIEF)
    assert out.suspect.requests == 2 and out.malformed_lines == 4 and out.log_lines == 6
    spots = [b for b in out.blind_spots if b.kind == "malformed_lines"]
    assert len(spots) == 1 and "4 of 6 access-log lines" in spots[0].detail
    assert out.confidence == "medium"


def test_the_api_key_value_is_never_output(world, action_ctx):
    at = START + timedelta(minutes=5)
    before = START - timedelta(hours=1)
    put(
        world["logs"],
        [
            (at, access_line("-", at, 0, apiKey=SECRET_VALUE)),
            (before, access_line("-", before, 0, apiKey=SECRET_VALUE)),
        ],
    )
    out = scope(action_ctx, log_group=GROUP)
    assert SECRET_VALUE not in out.model_dump_json()
    (caller,) = out.callers
    assert caller.api_key_id.startswith("value-sha256:") and caller.requests == 1
    assert caller.baseline_requests == 1  # the same key before the window: one fingerprint


def test_inputs_and_iam_resources(world):
    with pytest.raises(ValidationError, match="give log_group, or rest_api_id and stage"):
        ScopeInferenceExtraction.Input(api_key_id=THIEF)
    with pytest.raises(ValidationError, match="start must be before end"):
        ScopeInferenceExtraction.Input(log_group=GROUP, start=END, end=START)
    res = ScopeInferenceExtraction.iam_resources(
        {"log_group": "g1", "rest_api_id": "a1b2", "stage": "prod"}
    )
    assert res["logs:FilterLogEvents"] == ["arn:aws:logs:*:*:log-group:g1:*"]
    assert res["apigateway:GET"] == ["arn:aws:apigateway:*::/restapis/a1b2/stages/prod"]
    assert ScopeInferenceExtraction.iam_resources({"log_group": "g1"})["apigateway:GET"] == []
    # an expression is not a name: log groups only, not "*"
    vague = ScopeInferenceExtraction.iam_resources(
        {"log_group": "{{ inputs.g }}", "rest_api_id": "*"}
    )
    assert vague["logs:FilterLogEvents"] == ["arn:aws:logs:*:*:log-group:*:*"]
    assert vague["apigateway:GET"] == ["arn:aws:apigateway:*::/restapis/*/stages/*"]
