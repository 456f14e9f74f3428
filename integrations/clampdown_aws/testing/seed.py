"""Seed simulated AWS (moto server) with a drill's world, and simulate what moto cannot.

:func:`seed` builds the account a drill starts from: IAM users with access keys,
roles (with open sessions when the story needs stolen session credentials), the
model bucket and its artifacts, the SageMaker model, endpoint config and
endpoint, a CloudTrail trail whose bucket holds log files in CloudTrail's own
delivery layout and format, CloudWatch log events, the model's customer managed
KMS keys and Secrets Manager secrets, and the evidence bucket with Object Lock.
It returns :class:`Seeded`, the facts (key ids, ARNs) that alert payloads and
objectives refer to.

:class:`SimulatedAws` installs botocore hooks on every session made in this
process while a drill runs, for three things moto server does not do:

* **refuse anything but the simulated endpoint**: a request to any other host
  fails before it is sent, so a drill can never touch a real account, whatever
  the environment says;
* **CloudTrail LookupEvents** (moto 5.2 answers HTTP 500): answered from the
  seeded story, in LookupEvents' own response shape (simulated, and said so in
  the report);
* **throttling** (moto never throttles): the next N calls of a service answer
  ``Throttling`` in the service's wire format, so botocore's real retry logic
  handles them as it would AWS's.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from clampdown.core.drill_model import Seed, TrailEvent

ClientFactory = Callable[[str], Any]
IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.1.0-cpu-py310"
RECORDS_PER_FILE = 100


@dataclass
class Seeded:
    """What the seed made: names, ARNs and key ids that payloads and objectives use."""

    account: str
    region: str
    evidence_bucket: str
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    roles: dict[str, dict[str, Any]] = field(default_factory=dict)
    buckets: dict[str, dict[str, Any]] = field(default_factory=dict)
    endpoints: dict[str, dict[str, Any]] = field(default_factory=dict)
    kms_keys: dict[str, dict[str, Any]] = field(default_factory=dict)
    secrets: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The AWSCURRENT version each secret was seeded with (objectives compare with it).
    secret_versions: dict[str, str] = field(default_factory=dict)
    trail_records: list[dict[str, Any]] = field(default_factory=list)
    trail_objects: list[str] = field(default_factory=list)
    log_events: int = 0
    # Session credentials of seeded roles (the attacker's stolen ones); never printed.
    session_credentials: dict[str, dict[str, str]] = field(default_factory=dict, repr=False)

    def context(self) -> dict[str, Any]:
        """The ``seed`` name of alert payload placeholders."""
        return {
            "account": self.account,
            "region": self.region,
            "evidence_bucket": self.evidence_bucket,
            "users": self.users,
            "roles": self.roles,
            "buckets": self.buckets,
            "endpoints": self.endpoints,
            "kms_keys": self.kms_keys,
            "secrets": self.secrets,
        }

    def principal_arn(self, name: str) -> str | None:
        if name in self.users:
            return str(self.users[name]["arn"])
        if name in self.roles:
            return str(self.roles[name]["arn"])
        return None


def seed(spec: Seed, alert_time: datetime, client: ClientFactory) -> Seeded:
    """Create the drill's world in the simulated account (``client(service)`` gives clients)."""
    out = Seeded(spec.account, spec.region, spec.evidence_bucket)
    s3, iam = client("s3"), client("iam")
    _bucket(s3, spec.evidence_bucket, spec.region, object_lock=True)
    for user in spec.users:
        made = iam.create_user(UserName=user.name)["User"]
        if user.policy:
            iam.put_user_policy(
                UserName=user.name,
                PolicyName="drill-access",
                PolicyDocument=json.dumps(user.policy),
            )
        keys = [
            iam.create_access_key(UserName=user.name)["AccessKey"]["AccessKeyId"]
            for _ in range(user.access_keys)
        ]
        if user.console:
            iam.create_login_profile(UserName=user.name, Password=uuid.uuid4().hex + "Aa1!")
        out.users[user.name] = {
            "name": user.name,
            "arn": made["Arn"],
            "id": made["UserId"],
            "access_keys": keys,
        }
    sts = client("sts")
    for role in spec.roles:
        principals: dict[str, Any] = {"AWS": f"arn:aws:iam::{spec.account}:root"}
        if role.service:
            principals["Service"] = role.service
        trust = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Principal": principals, "Action": "sts:AssumeRole"}],
        }
        made = iam.create_role(RoleName=role.name, AssumeRolePolicyDocument=json.dumps(trust))[
            "Role"
        ]
        if role.policy:
            iam.put_role_policy(
                RoleName=role.name,
                PolicyName="drill-access",
                PolicyDocument=json.dumps(role.policy),
            )
        sessions = []
        for i in range(role.sessions):
            creds = sts.assume_role(RoleArn=made["Arn"], RoleSessionName=f"i-0a1b2c3d4e5f6071{i}")[
                "Credentials"
            ]
            sessions.append(creds["AccessKeyId"])
            out.session_credentials[creds["AccessKeyId"]] = {
                "aws_access_key_id": creds["AccessKeyId"],
                "aws_secret_access_key": creds["SecretAccessKey"],
                "aws_session_token": creds["SessionToken"],
            }
        out.roles[role.name] = {
            "name": role.name,
            "arn": made["Arn"],
            "id": made["RoleId"],
            "sessions": sessions,
        }
    for bucket in spec.buckets:
        _bucket(s3, bucket.name, spec.region, object_lock=bucket.object_lock)
        for key, body in bucket.objects.items():
            s3.put_object(Bucket=bucket.name, Key=key, Body=_object_bytes(key, body))
        out.buckets[bucket.name] = {"name": bucket.name, "arn": f"arn:aws:s3:::{bucket.name}"}
    if spec.endpoints:
        _endpoints(spec, client("sagemaker"), out)
    if spec.kms_keys:
        _kms_keys(spec, client("kms"), out)
    if spec.secrets:
        _secrets(spec, client("secretsmanager"), out)
    if spec.trail is not None:
        _trail(spec, client("cloudtrail"), s3, alert_time, out)
    if spec.log_groups:
        _log_groups(spec, client("logs"), alert_time, out)
    return out


def _bucket(s3: Any, name: str, region: str, *, object_lock: bool) -> None:
    args: dict[str, Any] = {"Bucket": name}
    if region != "us-east-1":
        args["CreateBucketConfiguration"] = {"LocationConstraint": region}
    if object_lock:
        args["ObjectLockEnabledForBucket"] = True
    s3.create_bucket(**args)


def _object_bytes(key: str, body: int | str) -> bytes:
    """Text as given; a size becomes that many deterministic bytes (same drill, same hashes)."""
    if isinstance(body, str):
        return body.encode()
    block = hashlib.sha256(key.encode()).digest()
    return (block * (body // len(block) + 1))[:body]


def _endpoints(spec: Seed, sagemaker: Any, out: Seeded) -> None:
    for endpoint in spec.endpoints:
        role_arn = out.roles[endpoint.role]["arn"]
        sagemaker.create_model(
            ModelName=endpoint.name,
            ExecutionRoleArn=role_arn,
            PrimaryContainer={"Image": IMAGE, "ModelDataUrl": endpoint.model_data},
        )
        config = f"{endpoint.name}-config"
        sagemaker.create_endpoint_config(
            EndpointConfigName=config,
            ProductionVariants=[
                {
                    "VariantName": "AllTraffic",
                    "ModelName": endpoint.name,
                    "InitialInstanceCount": 1,
                    "InstanceType": endpoint.instance_type,
                    "InitialVariantWeight": 1.0,
                }
            ],
        )
        arn = sagemaker.create_endpoint(EndpointName=endpoint.name, EndpointConfigName=config)[
            "EndpointArn"
        ]
        out.endpoints[endpoint.name] = {"name": endpoint.name, "arn": arn, "config": config}


def _kms_keys(spec: Seed, kms: Any, out: Seeded) -> None:
    for key in spec.kms_keys:
        meta = kms.create_key(
            Description=key.description or f"drill key {key.alias}",
            KeyUsage="ENCRYPT_DECRYPT",
            KeySpec="SYMMETRIC_DEFAULT",
        )["KeyMetadata"]
        kms.create_alias(AliasName=f"alias/{key.alias}", TargetKeyId=meta["KeyId"])
        out.kms_keys[key.alias] = {
            "alias": key.alias,
            "name": f"alias/{key.alias}",
            "arn": meta["Arn"],
            "id": meta["KeyId"],
        }


def _secrets(spec: Seed, sm: Any, out: Seeded) -> None:
    for secret in spec.secrets:
        value = secret.value if isinstance(secret.value, str) else json.dumps(secret.value)
        made = sm.create_secret(Name=secret.name, SecretString=value)
        out.secrets[secret.name] = {"name": secret.name, "arn": made["ARN"]}
        out.secret_versions[secret.name] = made["VersionId"]


# --- CloudTrail ------------------------------------------------------------------------------


def _trail(spec: Seed, cloudtrail: Any, s3: Any, alert_time: datetime, out: Seeded) -> None:
    trail = spec.trail
    assert trail is not None
    _bucket(s3, trail.bucket, spec.region, object_lock=False)
    s3.put_bucket_policy(Bucket=trail.bucket, Policy=json.dumps(_trail_bucket_policy(trail.bucket)))
    cloudtrail.create_trail(Name=trail.name, S3BucketName=trail.bucket, IsMultiRegionTrail=True)
    cloudtrail.start_logging(Name=trail.name)
    records = [
        record for event in trail.events for record in _records(event, spec, alert_time, out)
    ]
    records.sort(key=lambda r: r["eventTime"])
    out.trail_records = records
    # CloudTrail delivers a file about every five minutes per region: group by 5-minute slot.
    files: dict[datetime, list[dict[str, Any]]] = {}
    for record in records:
        moment = _parse_time(record["eventTime"])
        slot = moment.replace(minute=moment.minute - moment.minute % 5, second=0, microsecond=0)
        files.setdefault(slot + timedelta(minutes=5), []).append(record)
    for delivered, batch in sorted(files.items()):
        delivered = min(delivered, alert_time - timedelta(seconds=30))  # never in the future
        for start in range(0, len(batch), RECORDS_PER_FILE):
            chunk = batch[start : start + RECORDS_PER_FILE]
            key = _trail_key(spec.account, spec.region, delivered, chunk)
            body = gzip.compress(json.dumps({"Records": chunk}).encode(), mtime=0)
            s3.put_object(Bucket=trail.bucket, Key=key, Body=body)
            out.trail_objects.append(key)


def _trail_bucket_policy(bucket: str) -> dict[str, Any]:
    """The bucket policy AWS documents for a trail's bucket."""
    service = {"Service": "cloudtrail.amazonaws.com"}
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "AWSCloudTrailAclCheck",
                "Effect": "Allow",
                "Principal": service,
                "Action": "s3:GetBucketAcl",
                "Resource": f"arn:aws:s3:::{bucket}",
            },
            {
                "Sid": "AWSCloudTrailWrite",
                "Effect": "Allow",
                "Principal": service,
                "Action": "s3:PutObject",
                "Resource": f"arn:aws:s3:::{bucket}/AWSLogs/*",
                "Condition": {"StringEquals": {"s3:x-amz-acl": "bucket-owner-full-control"}},
            },
        ],
    }


def _trail_key(account: str, region: str, delivered: datetime, chunk: list[dict[str, Any]]) -> str:
    """``AWSLogs/<acct>/CloudTrail/<region>/YYYY/MM/DD/<acct>_CloudTrail_<region>_<time>Z_<id>.json.gz``."""
    unique = hashlib.sha256(chunk[0]["eventID"].encode()).hexdigest()[:16].upper()
    return (
        f"AWSLogs/{account}/CloudTrail/{region}/{delivered:%Y/%m/%d}/"
        f"{account}_CloudTrail_{region}_{delivered:%Y%m%dT%H%M}Z_{unique}.json.gz"
    )


def _records(
    event: TrailEvent, spec: Seed, alert_time: datetime, out: Seeded
) -> list[dict[str, Any]]:
    """CloudTrail records (eventVersion 1.08) for one story line, one second apart."""
    identity = _identity(event, spec, out)
    records = []
    for i in range(event.repeat):
        moment = alert_time - timedelta(seconds=event.ago) + timedelta(seconds=i)
        event_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{event.event}/{moment.isoformat()}/{i}"))
        records.append(
            {
                "eventVersion": "1.08",
                "userIdentity": identity,
                "eventTime": moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "eventSource": event.source,
                "eventName": event.event,
                "awsRegion": spec.region,
                "sourceIPAddress": event.ip,
                "userAgent": event.user_agent,
                "requestParameters": event.request or None,
                "responseElements": None,
                "requestID": event_id.replace("-", "")[:16].upper(),
                "eventID": event_id,
                "readOnly": event.event.startswith(("Get", "List", "Describe", "Head")),
                "resources": [
                    {"type": _resource_type(arn), "ARN": arn, "accountId": spec.account}
                    for arn in event.resources
                ],
                "eventType": "AwsApiCall",
                "managementEvent": event.source != "s3.amazonaws.com"
                or event.event not in ("GetObject", "PutObject"),
                "recipientAccountId": spec.account,
                "eventCategory": "Management",
            }
        )
    return records


def _identity(event: TrailEvent, spec: Seed, out: Seeded) -> dict[str, Any]:
    if event.user is not None:
        user = out.users[event.user]
        keys = user["access_keys"]
        return {
            "type": "IAMUser",
            "principalId": user["id"],
            "arn": user["arn"],
            "accountId": spec.account,
            "accessKeyId": keys[0] if keys else "",
            "userName": user["name"],
        }
    assert event.role is not None
    role = out.roles[event.role]
    session = role["sessions"][0] if role["sessions"] else ""
    session_name = "i-0a1b2c3d4e5f60710"
    return {
        "type": "AssumedRole",
        "principalId": f"{role['id']}:{session_name}",
        "arn": f"arn:aws:sts::{spec.account}:assumed-role/{role['name']}/{session_name}",
        "accountId": spec.account,
        "accessKeyId": session,
        "sessionContext": {
            "sessionIssuer": {
                "type": "Role",
                "principalId": role["id"],
                "arn": role["arn"],
                "accountId": spec.account,
                "userName": role["name"],
            },
            "attributes": {"mfaAuthenticated": "false"},
        },
    }


def _resource_type(arn: str) -> str:
    if arn.startswith("arn:aws:s3:::"):
        return "AWS::S3::Object" if "/" in arn else "AWS::S3::Bucket"
    return "AWS::" + arn.split(":")[2].capitalize() + "::Resource"


def _parse_time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def _log_groups(spec: Seed, logs: Any, alert_time: datetime, out: Seeded) -> None:
    for group in spec.log_groups:
        logs.create_log_group(logGroupName=group.name)
        logs.create_log_stream(logGroupName=group.name, logStreamName="drill")
        events = [
            {
                "timestamp": int(
                    (alert_time - timedelta(seconds=e.ago) + timedelta(milliseconds=i)).timestamp()
                    * 1000
                ),
                "message": e.message,
            }
            for e in group.events
            for i in range(e.repeat)
        ]
        events.sort(key=lambda e: e["timestamp"])
        if events:
            logs.put_log_events(logGroupName=group.name, logStreamName="drill", logEvents=events)
        out.log_events += len(events)


# --- what moto does not simulate ---------------------------------------------------------------


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
        _ACTIVE = self
        if _HOOK not in handlers.BUILTIN_HANDLERS:
            handlers.BUILTIN_HANDLERS.append(_HOOK)
        boto3.DEFAULT_SESSION = None  # made before the drill: no hook, maybe other settings
        return self

    def uninstall(self) -> None:
        import boto3

        global _ACTIVE
        if _ACTIVE is self:
            _ACTIVE = None
        boto3.DEFAULT_SESSION = None  # it points at this drill's endpoint

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
            self.lookups += 1
            body = json.dumps(self.lookup_events(json.loads(request.body or b"{}"))).encode()
            headers = {"Content-Type": "application/x-amz-json-1.1", "x-amzn-RequestId": "drill"}
            return AWSResponse(request.url, 200, headers, _Raw(body))
        return None

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
            if start <= _parse_time(r["eventTime"]).timestamp() <= end
            and all(_matches(r, a["AttributeKey"], a["AttributeValue"]) for a in attrs)
        ]
        page = found[offset : offset + limit]
        answer: dict[str, Any] = {"Events": [_lookup_event(r) for r in page]}
        if offset + limit < len(found):
            answer["NextToken"] = str(offset + limit)
        return answer


_ACTIVE: SimulatedAws | None = None


def _before_send(request: Any, event_name: str = "", **kwargs: Any) -> Any:
    """The one hook botocore sessions get; it acts only while a simulation is installed."""
    active = _ACTIVE
    if active is None:
        return None
    return active._before_send(request, event_name, **kwargs)


_HOOK = ("before-send", _before_send)


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
        "EventTime": _parse_time(record["eventTime"]).timestamp(),
        "EventSource": record["eventSource"],
        "Username": _username(record),
        "Resources": [
            {"ResourceType": r["type"], "ResourceName": r["ARN"]} for r in record["resources"]
        ],
        "CloudTrailEvent": json.dumps(record),
    }
