"""One parser per source: a verified payload in, a list of :class:`Alert` out.

A parser raises :class:`Malformed` (HTTP 400) naming the field that is wrong; it
returns an empty list for a well-formed payload that is not an alert (a resolved
Alertmanager alert, a CloudWatch alarm back to OK, a PagerDuty acknowledgement).
The ``source`` of an alert is the kind of payload, not the transport: a GuardDuty
finding is ``guardduty`` whether it came straight from EventBridge or through SNS,
so one trigger matches it either way.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from clampdown.core.alert import Alert, Severity
from clampdown.core.limits import TooDeep, loads_bounded
from clampdown_alerts.errors import Malformed

AlarmSeverity = Callable[[str], Severity]

GUARDDUTY_DETAIL_TYPE = "GuardDuty Finding"
CLOUDTRAIL_DETAIL_TYPE = "AWS API Call via CloudTrail"
MAX_TITLE = 500

_IAM_ARN = re.compile(
    r"arn:aws(?:-cn|-us-gov)?:(?:iam|sts)::\d{12}:(?:user|role|assumed-role|root)[\w+=,.@/-]*"
)


# --- small, strict readers -----------------------------------------------------------------


def _obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Malformed(f"{where} must be a JSON object")
    return value


def _str(obj: Mapping[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise Malformed(f"{where}.{key} is missing or not a string")
    return value


def _opt_str(obj: Mapping[str, Any], key: str, where: str) -> str | None:
    value = obj.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise Malformed(f"{where}.{key} must be a string")
    return value


def parse_time(value: Any, where: str) -> datetime:
    """An ISO 8601 time (``Z``, ``+00:00`` or ``+0000``); a time without zone is UTC."""
    if not isinstance(value, str) or not value:
        raise Malformed(f"{where} is missing or not an ISO 8601 time")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise Malformed(f"{where} is not an ISO 8601 time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_TITLE else text[: MAX_TITLE - 1] + "…"


def _unique(items: Iterable[str | None]) -> list[str]:
    return list(dict.fromkeys(i for i in items if i))


def _arn_region(arn: str | None) -> str | None:
    parts = (arn or "").split(":")
    return parts[3] or None if len(parts) > 5 and parts[0] == "arn" else None


def principal_arn(arn: str | None) -> str | None:
    """The IAM ARN containment acts on: an STS assumed-role session becomes its role."""
    if not arn:
        return None
    match = re.fullmatch(r"arn:(aws[\w-]*):sts::(\d{12}):assumed-role/([^/]+)/.+", arn)
    if match:
        partition, account, role = match.groups()
        return f"arn:{partition}:iam::{account}:role/{role}"
    return arn


# --- EventBridge and GuardDuty ---------------------------------------------------------------


def _event_envelope(event: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    event = _obj(event, "event")
    for key in ("id", "detail-type", "source", "time"):
        _str(event, key, "event")
    return event, _obj(event.get("detail"), "event.detail")


def parse_eventbridge(event: Any) -> list[Alert]:
    """Any EventBridge event; a GuardDuty finding is handed to :func:`parse_guardduty`."""
    event, detail = _event_envelope(event)
    if event["detail-type"] == GUARDDUTY_DETAIL_TYPE:
        return parse_guardduty(event)
    principal = None
    kind = event["detail-type"]
    title = f"{kind} from {event['source']}"
    resources = [r for r in event.get("resources") or [] if isinstance(r, str)]
    if kind == CLOUDTRAIL_DETAIL_TYPE:
        kind = _str(detail, "eventName", "event.detail")
        identity = _obj(detail.get("userIdentity") or {}, "event.detail.userIdentity")
        issuer = (identity.get("sessionContext") or {}).get("sessionIssuer") or {}
        principal = principal_arn(
            issuer.get("arn") if identity.get("type") == "AssumedRole" else None
        ) or principal_arn(_opt_str(identity, "arn", "event.detail.userIdentity"))
        title = f"{kind} on {detail.get('eventSource', event['source'])} by {principal or '?'}"
        if detail.get("errorCode"):
            title += f" (failed: {detail['errorCode']})"
        resources += [r.get("ARN") for r in detail.get("resources") or [] if isinstance(r, dict)]
    severity = detail.get("severity")
    return [
        Alert(
            source="eventbridge",
            id=event["id"],
            type=kind,
            title=_clip(title),
            severity=severity if severity in ("low", "medium", "high", "critical") else "medium",
            account=_opt_str(event, "account", "event"),
            region=_opt_str(event, "region", "event"),
            principal=principal,
            resources=_unique(r if isinstance(r, str) else None for r in resources),
            observed_at=parse_time(event["time"], "event.time"),
            raw=event,
        )
    ]


def guardduty_severity(value: Any) -> Severity:
    """GuardDuty's documented bands: 1.0-3.9 low, 4.0-6.9 medium, 7.0-8.9 high, 9.0-10 critical."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 10:
        raise Malformed("event.detail.severity must be a number from 0 to 10")
    if value >= 9:
        return "critical"
    if value >= 7:
        return "high"
    if value >= 4:
        return "medium"
    return "low"


def _guardduty_principal(keys: Mapping[str, Any], account: str, partition: str) -> str | None:
    """``accessKeyDetails`` -> ARN; None when the user type has no IAM ARN (e.g. AWSService)."""
    user_type, name = keys.get("userType"), keys.get("userName")
    if user_type == "Root":
        return f"arn:{partition}:iam::{account}:root"
    if not isinstance(name, str) or not name:
        return None
    if user_type == "IAMUser":
        return f"arn:{partition}:iam::{account}:user/{name}"
    if user_type == "AssumedRole":  # GuardDuty names the role (the session issuer) here
        return f"arn:{partition}:iam::{account}:role/{name}"
    if user_type == "FederatedUser":
        return f"arn:{partition}:sts::{account}:federated-user/{name}"
    return None


def parse_guardduty(event: Any) -> list[Alert]:
    """An EventBridge ``GuardDuty Finding`` event."""
    event, detail = _event_envelope(event)
    if event["detail-type"] != GUARDDUTY_DETAIL_TYPE:
        raise Malformed(
            f"event.detail-type is '{event['detail-type']}', not '{GUARDDUTY_DETAIL_TYPE}': "
            "send other events to /alerts/eventbridge"
        )
    account = _str(detail, "accountId", "event.detail")
    region = _opt_str(detail, "region", "event.detail") or _opt_str(event, "region", "event")
    partition = _opt_str(detail, "partition", "event.detail") or "aws"
    resource = _obj(detail.get("resource") or {}, "event.detail.resource")
    keys = _obj(resource.get("accessKeyDetails") or {}, "event.detail.resource.accessKeyDetails")
    buckets = resource.get("s3BucketDetails") or []
    if not isinstance(buckets, list):
        raise Malformed("event.detail.resource.s3BucketDetails must be a list")
    instance = (resource.get("instanceDetails") or {}).get("instanceId")
    service = detail.get("service") if isinstance(detail.get("service"), dict) else {}
    seen = service.get("eventLastSeen") or detail.get("updatedAt") or event["time"]
    resources = [
        keys.get("accessKeyId") if isinstance(keys.get("accessKeyId"), str) else None,
        *(
            b.get("arn") or (f"arn:{partition}:s3:::{b['name']}" if b.get("name") else None)
            for b in buckets
            if isinstance(b, dict)
        ),
        f"arn:{partition}:ec2:{region}:{account}:instance/{instance}"
        if isinstance(instance, str)
        else None,
        (resource.get("eksClusterDetails") or {}).get("arn"),
        *(r for r in event.get("resources") or [] if isinstance(r, str)),
    ]
    return [
        Alert(
            source="guardduty",
            id=_str(detail, "id", "event.detail"),
            type=_str(detail, "type", "event.detail"),
            title=_clip(_opt_str(detail, "title", "event.detail") or detail["type"]),
            severity=guardduty_severity(detail.get("severity")),
            account=account,
            region=region,
            principal=_guardduty_principal(keys, account, partition),
            resources=_unique(r if isinstance(r, str) else None for r in resources),
            observed_at=parse_time(seen, "event.detail.service.eventLastSeen"),
            raw=event,
        )
    ]


# --- SNS (CloudWatch alarms, EventBridge events, plain text) ---------------------------------


def parse_sns_notification(
    message: Mapping[str, Any], alarm_severity: AlarmSeverity
) -> list[Alert]:
    """A verified SNS ``Notification``: its ``Message`` is a CloudWatch alarm, an
    EventBridge event (EventBridge -> SNS -> HTTPS), or plain text."""
    text = _str(message, "Message", "sns")
    try:
        inner = loads_bounded(text)
    except TooDeep as exc:
        raise Malformed(f"sns.Message is {exc}") from None
    except ValueError:
        inner = None
    if isinstance(inner, dict) and "AlarmName" in inner:
        return parse_cloudwatch_alarm(inner, alarm_severity)
    if isinstance(inner, dict) and "detail-type" in inner:
        return parse_eventbridge(inner)
    subject = _opt_str(message, "Subject", "sns")
    topic = _str(message, "TopicArn", "sns")
    return [
        Alert(
            source="sns",
            id=_str(message, "MessageId", "sns"),
            type=subject or "sns",
            title=_clip(subject or text),
            account=(topic.split(":") + [""] * 5)[4] or None,
            region=_arn_region(topic),
            resources=[topic],
            observed_at=parse_time(message.get("Timestamp"), "sns.Timestamp"),
            raw={
                k: message.get(k) for k in ("Type", "MessageId", "TopicArn", "Subject", "Message")
            },
        )
    ]


def parse_cloudwatch_alarm(alarm: Mapping[str, Any], alarm_severity: AlarmSeverity) -> list[Alert]:
    """A CloudWatch alarm state change; only a change into ``ALARM`` is an alert."""
    name = _str(alarm, "AlarmName", "sns.Message")
    state = _str(alarm, "NewStateValue", "sns.Message")
    if state != "ALARM":
        return []
    changed = _str(alarm, "StateChangeTime", "sns.Message")
    alarm_arn = _opt_str(alarm, "AlarmArn", "sns.Message")
    trigger = alarm.get("Trigger") if isinstance(alarm.get("Trigger"), dict) else {}
    dimensions = trigger.get("Dimensions") if isinstance(trigger.get("Dimensions"), list) else []
    reason = _opt_str(alarm, "NewStateReason", "sns.Message")
    return [
        Alert(
            source="sns",
            id=f"{alarm_arn or name}@{changed}",
            type=name,
            title=_clip(f"{name} in ALARM" + (f": {reason}" if reason else "")),
            severity=alarm_severity(name),
            account=_opt_str(alarm, "AWSAccountId", "sns.Message"),
            region=_arn_region(alarm_arn),
            resources=_unique(
                [alarm_arn, *(d.get("value") for d in dimensions if isinstance(d, dict))]
            ),
            observed_at=parse_time(changed, "sns.Message.StateChangeTime"),
            raw=dict(alarm),
        )
    ]


# --- Alertmanager --------------------------------------------------------------------------

_AM_SEVERITY: dict[str, Severity] = {
    **dict.fromkeys(("critical", "crit", "page", "p1", "fatal", "emergency"), "critical"),
    **dict.fromkeys(("high", "error", "err", "p2", "major"), "high"),
    **dict.fromkeys(("warning", "warn", "medium", "p3", "minor"), "medium"),
    **dict.fromkeys(("low", "info", "informational", "none", "p4", "p5"), "low"),
}


def _labels(alert: Mapping[str, Any], key: str, where: str) -> dict[str, str]:
    value = _obj(alert.get(key) or {}, f"{where}.{key}")
    if not all(isinstance(v, str) for v in value.values()):
        raise Malformed(f"{where}.{key} values must be strings")
    return value


def parse_alertmanager(payload: Any) -> list[Alert]:
    """Alertmanager webhook (``version: "4"``): one alert per *firing* entry of ``alerts``."""
    payload = _obj(payload, "body")
    if payload.get("version") != "4":
        raise Malformed('body.version must be "4" (Alertmanager webhook payload version 4)')
    entries = payload.get("alerts")
    if not isinstance(entries, list):
        raise Malformed("body.alerts must be a list")
    alerts: list[Alert] = []
    for index, entry in enumerate(entries):
        where = f"body.alerts[{index}]"
        entry = _obj(entry, where)
        if _str(entry, "status", where) != "firing":
            continue
        labels = _labels(entry, "labels", where)
        notes = _labels(entry, "annotations", where)
        facts = {**notes, **labels}  # a label wins over an annotation of the same name
        name = labels.get("alertname") or "alert"
        fingerprint = entry.get("fingerprint")
        if not isinstance(fingerprint, str) or not fingerprint:
            canonical = json.dumps(labels, sort_keys=True).encode()
            fingerprint = hashlib.sha256(canonical).hexdigest()[:16]
        started = entry.get("startsAt")
        resources = (facts.get("resources") or facts.get("resource") or "").split(",")
        alerts.append(
            Alert(
                source="alertmanager",
                id=f"{fingerprint}@{started}",
                type=name,
                title=_clip(notes.get("summary") or notes.get("description") or name),
                severity=_AM_SEVERITY.get(labels.get("severity", "").lower(), "medium"),
                account=facts.get("account") or facts.get("aws_account_id"),
                region=facts.get("region") or facts.get("aws_region"),
                principal=principal_arn(facts.get("principal_arn") or facts.get("principal")),
                resources=_unique(r.strip() for r in resources),
                observed_at=parse_time(started, f"{where}.startsAt"),
                raw=entry,
            )
        )
    return alerts


# --- PagerDuty -----------------------------------------------------------------------------

PAGERDUTY_ALERT_EVENTS = frozenset(
    {"incident.triggered", "incident.reopened", "incident.escalated", "incident.priority_updated"}
)
_PD_PRIORITY: dict[str, Severity] = {"P1": "critical", "P2": "high", "P3": "medium"}


def pagerduty_severity(incident: Mapping[str, Any]) -> Severity:
    """Priority P1..P5 when set (P1 critical, P2 high, P3 medium, else low), else urgency."""
    priority = incident.get("priority")
    summary = priority.get("summary") if isinstance(priority, dict) else None
    if isinstance(summary, str) and re.fullmatch(r"P\d", summary.strip().upper()):
        return _PD_PRIORITY.get(summary.strip().upper(), "low")
    urgency = incident.get("urgency")
    return "high" if urgency == "high" else "low" if urgency == "low" else "medium"


def parse_pagerduty(payload: Any) -> list[Alert]:
    """PagerDuty v3 webhook: an alert for incident events that call for a response."""
    event = _obj(_obj(payload, "body").get("event"), "body.event")
    kind = _str(event, "event_type", "body.event")
    _str(event, "id", "body.event")
    occurred = parse_time(event.get("occurred_at"), "body.event.occurred_at")
    if kind not in PAGERDUTY_ALERT_EVENTS:
        return []
    incident = _obj(event.get("data"), "body.event.data")
    title = _str(incident, "title", "body.event.data")
    found = _IAM_ARN.search(title)
    service = incident.get("service") if isinstance(incident.get("service"), dict) else {}
    return [
        Alert(
            source="pagerduty",
            id=_str(incident, "id", "body.event.data"),
            type=kind,
            title=_clip(title),
            severity=pagerduty_severity(incident),
            principal=principal_arn(found.group(0)) if found else None,
            resources=_unique(
                [service.get("summary") if isinstance(service.get("summary"), str) else None]
            ),
            observed_at=occurred,
            raw=event,
        )
    ]


# --- generic -------------------------------------------------------------------------------


class GenericAlert(BaseModel):
    """The documented body of ``/alerts/generic``; other fields are kept in ``raw``."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(min_length=1, max_length=256)
    title: str = Field(min_length=1, max_length=2000)
    severity: Severity = "medium"
    type: str = Field("", max_length=256)
    principal: str | None = Field(None, max_length=2048)
    resources: list[str] = Field(default_factory=list, max_length=100)
    account: str | None = Field(None, pattern=r"^\d{12}$")
    region: str | None = Field(None, max_length=64)
    observed_at: datetime | None = None


def parse_generic(payload: Any, now: datetime) -> list[Alert]:
    try:
        body = GenericAlert.model_validate(_obj(payload, "body"))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
            for e in exc.errors(include_url=False, include_input=False)
        )
        raise Malformed(f"generic alert: {problems}") from None
    observed = body.observed_at or now
    return [
        Alert(
            source="generic",
            id=body.id,
            type=body.type,
            title=_clip(body.title),
            severity=body.severity,
            account=body.account,
            region=body.region,
            principal=principal_arn(body.principal),
            resources=_unique(body.resources),
            observed_at=observed if observed.tzinfo else observed.replace(tzinfo=UTC),
            raw=payload,
        )
    ]
