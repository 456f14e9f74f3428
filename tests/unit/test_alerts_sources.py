"""Normalisation: each documented payload shape becomes the right :class:`Alert`."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from clampdown_alerts.errors import Malformed
from clampdown_alerts.settings import AlertSettings
from clampdown_alerts.sources import (
    parse_alertmanager,
    parse_eventbridge,
    parse_generic,
    parse_guardduty,
    parse_pagerduty,
    parse_sns_notification,
)
from tests import paths

FIXTURES = paths.FIXTURES / "alerts"
NOW = datetime(2024, 5, 14, 10, 30, tzinfo=UTC)


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


def high(_: str) -> str:
    return "high"


# --- GuardDuty ----------------------------------------------------------------------------------


def test_guardduty_finding_is_normalised() -> None:
    [alert] = parse_guardduty(load("guardduty_finding.json"))
    assert alert.source == "guardduty"
    assert alert.id == "16afba5c5c43e07c9e3e5e2e544e95df"
    assert alert.type == "Exfiltration:S3/AnomalousBehavior"
    assert alert.title.startswith("Anomalous S3 GetObject activity by ml-contractor")
    assert alert.severity == "high"
    assert (alert.account, alert.region) == ("123456789012", "us-east-1")
    assert alert.principal == "arn:aws:iam::123456789012:user/ml-contractor"
    assert alert.resources == ["AKIAIOSFODNN7EXAMPLE", "arn:aws:s3:::acme-model-artifacts"]
    assert alert.observed_at == datetime(2024, 5, 14, 10, 18, 40, tzinfo=UTC)
    assert alert.raw["detail"]["service"]["action"]["awsApiCallAction"]["api"] == "GetObject"


@pytest.mark.parametrize(
    ("value", "severity"),
    [
        (1.0, "low"),
        (3.9, "low"),
        (4, "medium"),
        (6.9, "medium"),
        (7.0, "high"),
        (8.9, "high"),
        (9.0, "critical"),
        (10, "critical"),
    ],
)
def test_guardduty_severity_follows_the_documented_bands(value: float, severity: str) -> None:
    event = load("guardduty_finding.json")
    event["detail"]["severity"] = value
    assert parse_guardduty(event)[0].severity == severity


@pytest.mark.parametrize("value", [11, -1, "8", None, True])
def test_guardduty_severity_out_of_range_is_malformed(value: Any) -> None:
    event = load("guardduty_finding.json")
    event["detail"]["severity"] = value
    with pytest.raises(Malformed, match=r"event\.detail\.severity must be a number from 0 to 10"):
        parse_guardduty(event)


@pytest.mark.parametrize(
    ("keys", "principal"),
    [
        (
            {"userType": "AssumedRole", "userName": "DataScience", "principalId": "AROA:x"},
            "arn:aws:iam::123456789012:role/DataScience",
        ),
        ({"userType": "Root", "principalId": "123456789012"}, "arn:aws:iam::123456789012:root"),
        (
            {"userType": "FederatedUser", "userName": "bob"},
            "arn:aws:sts::123456789012:federated-user/bob",
        ),
        ({"userType": "AWSService", "principalId": "AIDAX"}, None),
        ({}, None),
    ],
)
def test_guardduty_principal_becomes_an_arn_when_possible(
    keys: dict[str, str], principal: str | None
) -> None:
    event = load("guardduty_finding.json")
    event["detail"]["resource"]["accessKeyDetails"] = keys
    assert parse_guardduty(event)[0].principal == principal


def test_guardduty_endpoint_refuses_other_events_and_broken_findings() -> None:
    with pytest.raises(Malformed, match=r"not 'GuardDuty Finding'.*/alerts/eventbridge"):
        parse_guardduty(load("cloudtrail_api_call.json"))
    event = load("guardduty_finding.json")
    del event["detail"]["type"]
    with pytest.raises(Malformed, match=r"event\.detail\.type is missing"):
        parse_guardduty(event)
    with pytest.raises(Malformed, match=r"event\.detail must be a JSON object"):
        parse_guardduty({**load("guardduty_finding.json"), "detail": "x"})
    with pytest.raises(Malformed, match="event must be a JSON object"):
        parse_guardduty([1, 2])


# --- EventBridge --------------------------------------------------------------------------------


def test_cloudtrail_api_call_names_the_role_behind_the_session() -> None:
    [alert] = parse_eventbridge(load("cloudtrail_api_call.json"))
    assert alert.source == "eventbridge"
    assert alert.id == "36eb8523-97d0-4518-b33d-ee3579ff19f0"
    assert alert.type == "CreatePresignedDomainUrl"
    assert alert.principal == "arn:aws:iam::123456789012:role/DataScience"
    assert alert.resources == ["arn:aws:sagemaker:us-east-1:123456789012:domain/d-xxxxxxxxxxxx"]
    assert "CreatePresignedDomainUrl on sagemaker.amazonaws.com" in alert.title
    assert alert.severity == "medium"
    assert alert.observed_at == datetime(2024, 5, 14, 10, 25, 2, tzinfo=UTC)


def test_cloudtrail_iam_user_keeps_its_arn() -> None:
    event = load("cloudtrail_api_call.json")
    event["detail"]["userIdentity"] = {
        "type": "IAMUser",
        "arn": "arn:aws:iam::123456789012:user/Alice",
        "userName": "Alice",
    }
    event["detail"]["errorCode"] = "AccessDenied"
    [alert] = parse_eventbridge(event)
    assert alert.principal == "arn:aws:iam::123456789012:user/Alice"
    assert alert.title.endswith("(failed: AccessDenied)")


def test_eventbridge_hands_guardduty_findings_to_the_guardduty_parser() -> None:
    [alert] = parse_eventbridge(load("guardduty_finding.json"))
    assert (alert.source, alert.type) == ("guardduty", "Exfiltration:S3/AnomalousBehavior")


def test_any_other_eventbridge_event_is_typed_by_its_detail_type() -> None:
    event = {
        "version": "0",
        "id": "7bf73129-1428-4cd3-a780-95db273d1602",
        "detail-type": "EC2 Instance State-change Notification",
        "source": "aws.ec2",
        "account": "123456789012",
        "time": "2024-05-14T10:00:00Z",
        "region": "us-east-1",
        "resources": ["arn:aws:ec2:us-east-1:123456789012:instance/i-abcd1111"],
        "detail": {"instance-id": "i-abcd1111", "state": "pending"},
    }
    [alert] = parse_eventbridge(event)
    assert alert.type == "EC2 Instance State-change Notification"
    assert alert.title == "EC2 Instance State-change Notification from aws.ec2"
    assert alert.resources == ["arn:aws:ec2:us-east-1:123456789012:instance/i-abcd1111"]
    assert alert.principal is None


@pytest.mark.parametrize("missing", ["id", "detail-type", "source", "time"])
def test_eventbridge_envelope_fields_are_required(missing: str) -> None:
    event = load("cloudtrail_api_call.json")
    del event[missing]
    with pytest.raises(Malformed, match=f"event.{missing} is missing"):
        parse_eventbridge(event)


def test_eventbridge_time_must_be_iso_8601() -> None:
    with pytest.raises(Malformed, match=r"event\.time is not an ISO 8601 time"):
        parse_eventbridge({**load("cloudtrail_api_call.json"), "time": "yesterday"})


# --- SNS ----------------------------------------------------------------------------------------


def test_cloudwatch_alarm_through_sns() -> None:
    [alert] = parse_sns_notification(load("sns_cloudwatch_alarm.json"), high)
    assert alert.source == "sns"
    assert alert.type == "model-endpoint-invocations-spike"
    assert alert.severity == "high"
    assert (alert.account, alert.region) == ("123456789012", "us-east-1")
    assert alert.resources == [
        "arn:aws:cloudwatch:us-east-1:123456789012:alarm:model-endpoint-invocations-spike",
        "prod-llm-endpoint",
        "AllTraffic",
    ]
    assert alert.title.startswith("model-endpoint-invocations-spike in ALARM: Threshold Crossed")
    assert alert.observed_at == datetime(2024, 5, 14, 10, 21, 27, 123000, tzinfo=UTC)
    assert alert.raw["Trigger"]["MetricName"] == "Invocations"


def test_alarm_severity_comes_from_the_configured_rule() -> None:
    settings = AlertSettings(sns_alarm_severities="model-endpoint-*=critical")
    [alert] = parse_sns_notification(load("sns_cloudwatch_alarm.json"), settings.alarm_severity)
    assert alert.severity == "critical"


def test_alarm_back_to_ok_is_not_an_alert() -> None:
    message = load("sns_cloudwatch_alarm.json")
    alarm = json.loads(message["Message"])
    message["Message"] = json.dumps({**alarm, "NewStateValue": "OK", "OldStateValue": "ALARM"})
    assert parse_sns_notification(message, high) == []


def test_eventbridge_event_delivered_through_sns_keeps_its_source() -> None:
    message = load("sns_cloudwatch_alarm.json")
    message["Message"] = json.dumps(load("guardduty_finding.json"))
    [alert] = parse_sns_notification(message, high)
    assert (alert.source, alert.principal) == (
        "guardduty",
        "arn:aws:iam::123456789012:user/ml-contractor",
    )


def test_plain_text_sns_message() -> None:
    message = load("sns_cloudwatch_alarm.json")
    message.update(Message="disk full on builder-3", Subject=None)
    [alert] = parse_sns_notification(message, high)
    assert (alert.source, alert.type, alert.title) == ("sns", "sns", "disk full on builder-3")
    assert (alert.account, alert.region) == ("123456789012", "us-east-1")
    assert alert.id == "95df01b4-ee98-5cb9-9903-4c221d41eb5e"


def test_alarm_without_state_is_malformed() -> None:
    message = load("sns_cloudwatch_alarm.json")
    message["Message"] = json.dumps({"AlarmName": "x"})
    with pytest.raises(Malformed, match=r"sns\.Message\.NewStateValue is missing"):
        parse_sns_notification(message, high)


# --- Alertmanager -------------------------------------------------------------------------------


def test_alertmanager_firing_alerts_only() -> None:
    alerts = parse_alertmanager(load("alertmanager_v4.json"))
    assert [a.type for a in alerts] == ["ModelWeightsBulkDownload"]
    [alert] = alerts
    assert alert.source == "alertmanager"
    assert alert.id == "1a30ba71cca2921f@2024-05-14T10:20:45.123Z"
    assert alert.severity == "critical"
    assert alert.principal == "arn:aws:iam::123456789012:user/ml-contractor"
    assert (alert.account, alert.region) == ("123456789012", "us-east-1")
    assert alert.resources == ["arn:aws:s3:::acme-model-artifacts"]
    assert alert.title == "ml-contractor downloaded 14 GiB of model weights in 10 minutes"
    assert alert.observed_at == datetime(2024, 5, 14, 10, 20, 45, 123000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("label", "severity"),
    [
        ("critical", "critical"),
        ("page", "critical"),
        ("error", "high"),
        ("warning", "medium"),
        ("info", "low"),
        ("WARNING", "medium"),
        ("weird", "medium"),
        (None, "medium"),
    ],
)
def test_alertmanager_severity_label(label: str | None, severity: str) -> None:
    payload = load("alertmanager_v4.json")
    labels = payload["alerts"][0]["labels"]
    labels.pop("severity")
    if label is not None:
        labels["severity"] = label
    assert parse_alertmanager(payload)[0].severity == severity


def test_alertmanager_principal_from_an_annotation_and_session_arns() -> None:
    payload = load("alertmanager_v4.json")
    entry = payload["alerts"][0]
    del entry["labels"]["principal_arn"]
    entry["annotations"]["principal"] = "arn:aws:sts::123456789012:assumed-role/DataScience/s"
    del entry["fingerprint"]
    first = parse_alertmanager(payload)[0]
    assert first.principal == "arn:aws:iam::123456789012:role/DataScience"
    assert first.id == parse_alertmanager(payload)[0].id  # stable without a fingerprint


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"version": "3"}, 'body.version must be "4"'),
        ({"alerts": {"a": 1}}, "body.alerts must be a list"),
        (
            {"alerts": [{"status": "firing", "labels": {"a": 1}}]},
            r"body\.alerts\[0\]\.labels values",
        ),
        ({"alerts": [{"labels": {}}]}, r"body\.alerts\[0\]\.status is missing"),
        (
            {"alerts": [{"status": "firing", "labels": {}}]},
            r"body\.alerts\[0\]\.startsAt is missing",
        ),
    ],
)
def test_alertmanager_malformed(change: dict[str, Any], reason: str) -> None:
    with pytest.raises(Malformed, match=reason):
        parse_alertmanager({**load("alertmanager_v4.json"), **change})


# --- PagerDuty ----------------------------------------------------------------------------------


def test_pagerduty_incident_triggered() -> None:
    [alert] = parse_pagerduty(load("pagerduty_incident_triggered.json"))
    assert alert.source == "pagerduty"
    assert (alert.id, alert.type) == ("PGR0VU2", "incident.triggered")
    assert alert.severity == "critical"  # priority P1
    assert alert.principal == "arn:aws:iam::123456789012:role/DataScience"
    assert alert.resources == ["ml-platform"]
    assert alert.observed_at == datetime(2024, 5, 14, 10, 22, 3, 512000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("priority", "urgency", "severity"),
    [
        ("P2", "high", "high"),
        ("P3", "high", "medium"),
        ("P5", "high", "low"),
        (None, "high", "high"),
        (None, "low", "low"),
        (None, None, "medium"),
    ],
)
def test_pagerduty_severity(priority: str | None, urgency: str | None, severity: str) -> None:
    payload = load("pagerduty_incident_triggered.json")
    data = payload["event"]["data"]
    data["priority"] = {"summary": priority} if priority else None
    data["urgency"] = urgency
    assert parse_pagerduty(payload)[0].severity == severity


@pytest.mark.parametrize("kind", ["incident.acknowledged", "incident.resolved", "pagey.ping"])
def test_pagerduty_events_that_need_no_response(kind: str) -> None:
    payload = load("pagerduty_incident_triggered.json")
    payload["event"]["event_type"] = kind
    assert parse_pagerduty(payload) == []


def test_pagerduty_malformed() -> None:
    with pytest.raises(Malformed, match=r"body\.event must be a JSON object"):
        parse_pagerduty({"messages": []})
    payload = load("pagerduty_incident_triggered.json")
    del payload["event"]["data"]["title"]
    with pytest.raises(Malformed, match=r"body\.event\.data\.title is missing"):
        parse_pagerduty(payload)


# --- generic ------------------------------------------------------------------------------------


def test_generic_alert() -> None:
    payload = load("generic.json")
    [alert] = parse_generic(payload, NOW)
    assert alert.source == "generic"
    assert (alert.id, alert.type, alert.severity) == (
        "dlp-2024-05-14-0042",
        "dlp.model_weights_egress",
        "critical",
    )
    assert alert.principal == "arn:aws:iam::123456789012:role/DataScience"
    assert alert.resources == ["arn:aws:s3:::acme-model-artifacts", "prod-llm-endpoint"]
    assert alert.observed_at == datetime(2024, 5, 14, 10, 19, 55, tzinfo=UTC)
    assert alert.raw["proxy"]["host"] == "egress-proxy-2"


def test_generic_minimal_alert_defaults() -> None:
    [alert] = parse_generic({"id": "x-1", "title": "something odd"}, NOW)
    assert (alert.severity, alert.observed_at, alert.principal, alert.resources) == (
        "medium",
        NOW,
        None,
        [],
    )


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"id": "x"}, "generic alert: title: Field required"),
        ({"id": "x", "title": "t", "severity": "urgent"}, "severity: Input should be"),
        ({"id": "x", "title": "t", "account": "12"}, "account: String should match"),
        (
            {"id": "x", "title": "t", "resources": "not-a-list"},
            "resources: Input should be a valid list",
        ),
        ([{"id": "x"}], "body must be a JSON object"),
    ],
)
def test_generic_malformed(payload: Any, reason: str) -> None:
    with pytest.raises(Malformed, match=reason):
        parse_generic(payload, NOW)
