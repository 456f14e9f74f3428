"""What moto server does not simulate, done with botocore hooks while a drill runs.

:class:`SimulatedAws` hooks every botocore session made in this process while it is
installed, for three things:

* **refuse anything but the simulated endpoint**: a request to any other host
  fails before it is sent, so a drill can never touch a real account, whatever
  the environment says;
* **CloudTrail LookupEvents** (moto 5.2 answers HTTP 500): answered from the
  seeded story, in LookupEvents' own response shape (simulated, and said so in
  the report);
* **CloudTrail GetTrailStatus**: moto says the trail started logging when the seed
  created it, seconds before the alert, although the seeded story has it delivering
  files for hours before; the answer's ``StartLoggingTime`` is moved back to an hour
  before the story's first record, so scoping does not report the seeded window as
  uncovered;
* **throttling** (moto never throttles): the next N calls of a service answer
  ``Throttling`` in the service's wire format, so botocore's real retry logic
  handles them as it would AWS's.

The hooks go into botocore's handler list (``botocore.handlers.BUILTIN_HANDLERS``)
on :meth:`SimulatedAws.install` and comes out again on :meth:`SimulatedAws.uninstall`
(or at the end of its ``with`` block): after a drill, sessions made in the process are
as they were before it. Sessions made during the drill keep the hook, which then
does nothing.
"""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from clampdown_aws.testing.trail import parse_time


class RefusedOutsideSimulation(RuntimeError):
    """A drill tried to reach a host other than the simulated AWS endpoint."""


class _Raw:
    """The raw body botocore reads from a response made here."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_: Any) -> Any:
        yield self.body


class SimulatedAws:
    """botocore hooks for every session made while installed (see the module docstring)."""

    def __init__(self, endpoint: str, records: list[dict[str, Any]] | None = None) -> None:
        parts = urlsplit(endpoint)
        self.allowed = (parts.hostname, parts.port)
        self.records = records or []
        self._throttle: dict[str, int] = {}
        self._lock = threading.Lock()
        self.throttled: dict[str, int] = {}
        self.lookups = 0

    def install(self) -> SimulatedAws:
        """Hook every botocore session made from now on (and boto3's default one, renewed)."""
        import boto3
        from botocore import handlers

        global _ACTIVE
        with _INSTALLING:
            _ACTIVE = self
            for hook in HOOKS:
                if hook not in handlers.BUILTIN_HANDLERS:
                    handlers.BUILTIN_HANDLERS.append(hook)
        boto3.DEFAULT_SESSION = None  # made before the drill: no hook, maybe other settings
        return self

    def uninstall(self) -> None:
        """Take the hook out of botocore's handler list again (sessions made later lack it)."""
        import boto3
        from botocore import handlers

        global _ACTIVE
        with _INSTALLING:
            if _ACTIVE is self:
                _ACTIVE = None
                for hook in HOOKS:
                    while hook in handlers.BUILTIN_HANDLERS:
                        handlers.BUILTIN_HANDLERS.remove(hook)
        boto3.DEFAULT_SESSION = None  # it points at this drill's endpoint

    @property
    def installed(self) -> bool:
        """This simulation is the one botocore sessions of the process consult."""
        return _ACTIVE is self

    def __enter__(self) -> SimulatedAws:
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.uninstall()

    def throttle(self, service: str, calls: int) -> None:
        """The next ``calls`` requests to ``service`` (``iam``, ``s3``, …) answer Throttling."""
        sid = _service_id(service)
        with self._lock:
            self._throttle[sid] = self._throttle.get(sid, 0) + calls

    def _before_send(self, request: Any, event_name: str = "", **_: Any) -> Any:
        from botocore.awsrequest import AWSResponse

        parts = urlsplit(request.url)
        if (parts.hostname, parts.port) != self.allowed:
            raise RefusedOutsideSimulation(
                f"the drill refused a request to {parts.hostname}: drills only reach the "
                "simulated AWS on loopback"
            )
        _, service, operation = [*event_name.split("."), "", ""][:3]
        with self._lock:
            left = self._throttle.get(service, 0)
            if left > 0:
                self._throttle[service] = left - 1
                self.throttled[service] = self.throttled.get(service, 0) + 1
                status, headers, body = _throttling(service)
                return AWSResponse(request.url, status, headers, _Raw(body))
        if service == "cloudtrail" and operation == "LookupEvents":
            with self._lock:
                self.lookups += 1
            body = json.dumps(self.lookup_events(json.loads(request.body or b"{}"))).encode()
            headers = {"Content-Type": "application/x-amz-json-1.1", "x-amzn-RequestId": "drill"}
            return AWSResponse(request.url, 200, headers, _Raw(body))
        return None

    def backdate_logging_start(self, parsed: dict[str, Any]) -> None:
        """GetTrailStatus as the story has it: logging since before its first record."""
        started = parsed.get("StartLoggingTime")
        if not self.records or not isinstance(started, datetime):
            return
        first = min(parse_time(r["eventTime"]) for r in self.records) - timedelta(hours=1)
        if started > first:
            parsed["StartLoggingTime"] = first

    def lookup_events(self, params: dict[str, Any]) -> dict[str, Any]:
        """LookupEvents over the seeded records: one attribute, a window, pages."""
        attrs = params.get("LookupAttributes") or []
        start = _epoch(params.get("StartTime"), 0)
        end = _epoch(params.get("EndTime"), 1e12)
        limit = min(int(params.get("MaxResults") or 50), 50)
        offset = int(params.get("NextToken") or 0)
        found = [
            r
            for r in sorted(self.records, key=lambda r: r["eventTime"], reverse=True)
            if start <= parse_time(r["eventTime"]).timestamp() <= end
            and all(_matches(r, a["AttributeKey"], a["AttributeValue"]) for a in attrs)
        ]
        page = found[offset : offset + limit]
        answer: dict[str, Any] = {"Events": [_lookup_event(r) for r in page]}
        if offset + limit < len(found):
            answer["NextToken"] = str(offset + limit)
        return answer


_ACTIVE: SimulatedAws | None = None
_INSTALLING = threading.Lock()


def _before_send(request: Any, event_name: str = "", **kwargs: Any) -> Any:
    """The one hook botocore sessions get; it acts only while a simulation is installed."""
    active = _ACTIVE
    if active is None:
        return None
    return active._before_send(request, event_name, **kwargs)


def _after_trail_status(parsed: dict[str, Any], **_: Any) -> None:
    active = _ACTIVE
    if active is not None:
        active.backdate_logging_start(parsed)


HOOKS = (
    ("before-send", _before_send),
    ("after-call.cloudtrail.GetTrailStatus", _after_trail_status),
)


def _service_id(service: str) -> str:
    """botocore's event name part for a service name (``logs`` -> ``cloudwatch-logs``)."""
    import botocore.session

    model = botocore.session.get_session().get_service_model(service)
    return str(model.service_id.hyphenize())


def _throttling(service: str) -> tuple[int, dict[str, str], bytes]:
    """A ``Throttling`` error as ``service`` sends it on the wire."""
    import botocore.session

    session = botocore.session.get_session()
    names = {
        session.get_service_model(n).service_id.hyphenize(): n
        for n in ("iam", "s3", "sts", "sagemaker", "cloudtrail", "logs", "kms", "secretsmanager")
    }
    protocol = session.get_service_model(names.get(service, "iam")).protocol
    if protocol == "query":
        body = (
            b"<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code>"
            b"<Message>Rate exceeded (simulated by the drill)</Message></Error>"
            b"<RequestId>drill-throttle</RequestId></ErrorResponse>"
        )
        return 400, {"Content-Type": "text/xml"}, body
    if protocol == "rest-xml":
        body = (
            b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate "
            b"(simulated by the drill)</Message><RequestId>drill-throttle</RequestId></Error>"
        )
        return 503, {"Content-Type": "application/xml"}, body
    body = json.dumps(
        {"__type": "ThrottlingException", "message": "Rate exceeded (simulated by the drill)"}
    ).encode()
    return 400, {"Content-Type": "application/x-amz-json-1.1"}, body


def _epoch(value: Any, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, int | float):
        return float(value)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


def _matches(record: dict[str, Any], key: str, value: str) -> bool:
    identity = record.get("userIdentity", {})
    if key == "Username":
        return _username(record) == value
    if key == "AccessKeyId":
        return bool(identity.get("accessKeyId") == value)
    if key == "EventName":
        return bool(record.get("eventName") == value)
    if key == "EventSource":
        return bool(record.get("eventSource") == value)
    if key == "ReadOnly":
        return str(record.get("readOnly")).lower() == value.lower()
    if key == "ResourceName":
        return any(r.get("ARN") == value for r in record.get("resources", []))
    return False


def _username(record: dict[str, Any]) -> str:
    identity = record.get("userIdentity", {})
    if identity.get("type") == "AssumedRole":
        return str(identity.get("arn", "")).rsplit("/", 1)[-1]
    return str(identity.get("userName", ""))


def _lookup_event(record: dict[str, Any]) -> dict[str, Any]:
    """A record as LookupEvents returns it (the record itself as ``CloudTrailEvent`` text)."""
    return {
        "EventId": record["eventID"],
        "EventName": record["eventName"],
        "ReadOnly": str(record["readOnly"]).lower(),
        "AccessKeyId": record["userIdentity"].get("accessKeyId", ""),
        "EventTime": parse_time(record["eventTime"]).timestamp(),
        "EventSource": record["eventSource"],
        "Username": _username(record),
        "Resources": [
            {"ResourceType": r["type"], "ResourceName": r["ARN"]} for r in record["resources"]
        ],
        "CloudTrailEvent": json.dumps(record),
    }
