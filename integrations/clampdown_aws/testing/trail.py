"""The story a drill's account tells: CloudTrail records and log files, CloudWatch logs.

:func:`write_trail` turns the drill's story lines into CloudTrail records
(eventVersion 1.08, one second apart) and delivers them to the trail's bucket in
CloudTrail's own layout (a gzipped file per five-minute slot, never in the future);
:func:`write_log_groups` writes the CloudWatch log events.

S3 object calls on the buckets of ``trail.data_events`` are data events, as CloudTrail
writes them (``eventCategory: Data``, ``additionalEventData.bytesTransferredOut``,
``requestParameters.versionId``), and the trail's event selectors log those buckets'
object reads; so a scope of the story (``aws.forensics.scope_exfiltration``) finds the
theft with no data-events blind spot. ``trail.hours`` delivers a file at least every
half hour for that long, as a busy account's trail does, so the window has no gap.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from clampdown.core.drill_model import Seed, TrailEvent
from clampdown_aws.testing.seeded import Seeded

RECORDS_PER_FILE = 100
PUTS_AT_ONCE = 8  # trail files written to the simulated account at a time


def write_trail(spec: Seed, cloudtrail: Any, s3: Any, alert_time: datetime, out: Seeded) -> None:
    """The trail, and its log files in its bucket (made already), in CloudTrail's layout."""
    trail = spec.trail
    assert trail is not None
    s3.put_bucket_policy(Bucket=trail.bucket, Policy=json.dumps(_trail_bucket_policy(trail.bucket)))
    cloudtrail.create_trail(Name=trail.name, S3BucketName=trail.bucket, IsMultiRegionTrail=True)
    cloudtrail.start_logging(Name=trail.name)
    if trail.data_events:
        cloudtrail.put_event_selectors(
            TrailName=trail.name, EventSelectors=[_data_event_selector(trail.data_events)]
        )
    records = [
        record for event in trail.events for record in _records(event, spec, alert_time, out)
    ]
    records += _heartbeat(spec, alert_time, {r["eventTime"] for r in records})
    records.sort(key=lambda r: r["eventTime"])
    out.trail_records = records
    # CloudTrail delivers a file about every five minutes per region: group by 5-minute slot.
    files: dict[datetime, list[dict[str, Any]]] = {}
    for record in records:
        moment = parse_time(record["eventTime"])
        slot = moment.replace(minute=moment.minute - moment.minute % 5, second=0, microsecond=0)
        files.setdefault(slot + timedelta(minutes=5), []).append(record)
    delivered_files: list[tuple[str, bytes]] = []
    for delivered, batch in sorted(files.items()):
        delivered = min(delivered, alert_time - timedelta(seconds=30))  # never in the future
        for start in range(0, len(batch), RECORDS_PER_FILE):
            chunk = batch[start : start + RECORDS_PER_FILE]
            key = _trail_key(spec.account, spec.region, delivered, chunk)
            body = gzip.compress(json.dumps({"Records": chunk}).encode(), mtime=0)
            delivered_files.append((key, body))

    # one PUT per file (50 for a day's trail), a few at a time: a seed's round trips to
    # moto are most of its time, and the simulated account serves from a process of its own
    def put(file: tuple[str, bytes]) -> None:
        s3.put_object(Bucket=trail.bucket, Key=file[0], Body=file[1])

    with ThreadPoolExecutor(PUTS_AT_ONCE, thread_name_prefix="seed-trail") as pool:
        list(pool.map(put, delivered_files))  # every PUT's error is raised here
    out.trail_objects.extend(key for key, _ in delivered_files)


def _data_event_selector(buckets: list[str]) -> dict[str, Any]:
    """A basic selector: management events, and object reads and writes of ``buckets``."""
    return {
        "ReadWriteType": "All",
        "IncludeManagementEvents": True,
        "DataResources": [
            {"Type": "AWS::S3::Object", "Values": [f"arn:aws:s3:::{b}/" for b in buckets]}
        ],
    }


def _heartbeat(spec: Seed, alert_time: datetime, taken: set[str]) -> list[dict[str, Any]]:
    """One quiet management record (the trail checking its own status) every 30 minutes of
    ``trail.hours`` before the alert: a busy account's trail delivers all the time."""
    assert spec.trail is not None
    records = []
    for half_hours in range(2 * spec.trail.hours, 0, -1):
        moment = alert_time - timedelta(minutes=30 * half_hours - 1)
        if moment.strftime("%Y-%m-%dT%H:%M:%SZ") in taken:
            continue
        event_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"heartbeat/{moment.isoformat()}"))
        records.append(
            {
                "eventVersion": "1.08",
                "userIdentity": {"type": "AWSService", "invokedBy": "cloudtrail.amazonaws.com"},
                "eventTime": moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "eventSource": "cloudtrail.amazonaws.com",
                "eventName": "GetTrailStatus",
                "awsRegion": spec.region,
                "sourceIPAddress": "cloudtrail.amazonaws.com",
                "userAgent": "cloudtrail.amazonaws.com",
                "requestParameters": {"name": spec.trail.name},
                "responseElements": None,
                "requestID": event_id.replace("-", "")[:16].upper(),
                "eventID": event_id,
                "readOnly": True,
                "eventType": "AwsApiCall",
                "managementEvent": True,
                "recipientAccountId": spec.account,
                "eventCategory": "Management",
            }
        )
    return records


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
    data = _data_event(event, spec)
    records = []
    for i in range(event.repeat):
        moment = alert_time - timedelta(seconds=event.ago) + timedelta(seconds=i)
        who = event.user or event.role
        what = f"{event.event}/{who}/{event.request.get('key', '')}/{moment.isoformat()}/{i}"
        event_id = str(uuid.uuid5(uuid.NAMESPACE_URL, what))
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
                **data,
            }
        )
    return records


S3_OBJECT_CALLS = ("GetObject", "HeadObject", "PutObject", "CopyObject", "SelectObjectContent")


def _data_event(event: TrailEvent, spec: Seed) -> dict[str, Any]:
    """The fields that make an S3 object call on a ``data_events`` bucket a data event."""
    bucket = event.request.get("bucketName")
    key = event.request.get("key")
    if (
        spec.trail is None
        or event.source != "s3.amazonaws.com"
        or event.event not in S3_OBJECT_CALLS
        or bucket not in spec.trail.data_events
        or not key
    ):
        return {}
    size = event.bytes_out
    if size is None:
        size = _object_size(spec, bucket, key) if event.event == "GetObject" else 0
    request = {**event.request, "Host": f"{bucket}.s3.{spec.region}.amazonaws.com"}
    if event.version_id:
        request["versionId"] = event.version_id
    return {
        "requestParameters": request,
        "additionalEventData": {
            "SignatureVersion": "SigV4",
            "bytesTransferredIn": 0,
            "bytesTransferredOut": float(size),
        },
        "resources": [
            {"type": "AWS::S3::Object", "ARN": f"arn:aws:s3:::{bucket}/{key}"},
            {"type": "AWS::S3::Bucket", "ARN": f"arn:aws:s3:::{bucket}", "accountId": spec.account},
        ],
        "managementEvent": False,
        "eventCategory": "Data",
    }


def _object_size(spec: Seed, bucket: str, key: str) -> int:
    """The size of a seeded object (0 when the seed has no such object)."""
    for seeded in spec.buckets:
        if seeded.name == bucket and key in seeded.objects:
            body = seeded.objects[key]
            return body if isinstance(body, int) else len(body.encode())
    return 0


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


def parse_time(text: str) -> datetime:
    """A CloudTrail ``eventTime`` (``2024-01-01T00:00:00Z``) as an aware datetime."""
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def write_log_groups(spec: Seed, logs: Any, alert_time: datetime, out: Seeded) -> None:
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
