"""S3 server access log records and files, as S3 writes them, for tests and drills.

A record is one line of space-separated fields in AWS's documented order ("Amazon S3
server access log format"): bucket owner, bucket, ``[time]``, remote IP, requester,
request ID, operation, key, ``"request-URI"``, HTTP status, error code, bytes sent, object
size, total time, turn-around time, ``"referrer"``, ``"user-agent"``, version id, host id,
signature version, cipher suite, authentication type, host header, TLS version, access
point ARN, ACL required; ``-`` where a field does not apply.

Files go to ``<target-prefix>YYYY-mm-DD-HH-MM-SS-<UniqueString>`` (the delivery time), each
holding the requests received before it was delivered.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

OWNER = "79a59df900b949e55d96a1e698fbacedfd6e09d98eacf8f8d5218e7cd47ef2be"
DELIVERY_DELAY = timedelta(minutes=40)


def record(
    moment: datetime,
    bucket: str,
    requester: str,
    request_id: str,
    *,
    operation: str = "REST.GET.OBJECT",
    key: str | None = None,
    status: int = 200,
    error: str | None = None,
    bytes_sent: int = 0,
    object_size: int | None = None,
    version_id: str | None = None,
    ip: str = "198.51.100.7",
    agent: str = "aws-cli/2.15.0 Python/3.11.6",
    region: str = "us-east-1",
) -> str:
    """One access log line, every documented field filled as S3 fills it."""
    method = operation.split(".")[1] if operation.startswith("REST.") else "GET"
    path = f"/{bucket}/{quote(key)}" if key else f"/{bucket}"
    if version_id:
        path += f"?versionId={version_id}"
    host_id = hashlib.sha256(request_id.encode()).hexdigest()[:56] + "="
    fields = [
        OWNER,
        bucket,
        f"[{moment:%d/%b/%Y:%H:%M:%S} +0000]",
        ip,
        requester,
        request_id,
        operation,
        quote(key) if key else "-",
        f'"{method} {path} HTTP/1.1"',
        str(status),
        error or "-",
        str(bytes_sent) if bytes_sent else "-",
        str(object_size if object_size is not None else bytes_sent or 0) if key else "-",
        "70",
        "10" if status < 400 else "-",
        '"-"',
        f'"{agent}"',
        version_id or "-",
        host_id,
        "SigV4",
        "TLS_AES_128_GCM_SHA256",
        "AuthHeader",
        f"{bucket}.s3.{region}.amazonaws.com",
        "TLSv1.3",
        "-",
        "-",
    ]
    return " ".join(fields)


def from_cloudtrail(event: dict[str, Any]) -> str:
    """The access log line for the same request as a CloudTrail S3 data event (same request
    ID: how a request seen by both is recognised)."""
    params = event.get("requestParameters") or {}
    operations = {
        "GetObject": "REST.GET.OBJECT",
        "HeadObject": "REST.HEAD.OBJECT",
        "ListObjects": "REST.GET.BUCKET",
        "ListObjectsV2": "REST.GET.BUCKET",
    }
    size = int((event.get("additionalEventData") or {}).get("bytesTransferredOut") or 0)
    return record(
        datetime.strptime(event["eventTime"], "%Y-%m-%dT%H:%M:%SZ"),
        params["bucketName"],
        event["userIdentity"]["arn"],
        event["requestID"],
        operation=operations[event["eventName"]],
        key=params.get("key"),
        status=403 if event.get("errorCode") == "AccessDenied" else 200,
        error=event.get("errorCode"),
        bytes_sent=size,
        version_id=params.get("versionId"),
        ip=event["sourceIPAddress"],
        agent=event["userAgent"],
        region=event["awsRegion"],
    )


def log_key(prefix: str, delivered: datetime, unique: str) -> str:
    return f"{prefix}{delivered:%Y-%m-%d-%H-%M-%S}-{unique}"


def deliver(
    lines: Iterable[str], prefix: str, every: timedelta = timedelta(hours=1)
) -> dict[str, bytes]:
    """Files as S3 delivers them: the requests of each ``every`` slot (by the time in
    the record), delivered :data:`DELIVERY_DELAY` after the slot ends."""
    slots: dict[datetime, list[str]] = {}
    seconds = int(every.total_seconds())
    for line in lines:
        stamp = line.split("[", 1)[1].split(" ", 1)[0]
        moment = datetime.strptime(stamp, "%d/%b/%Y:%H:%M:%S")
        epoch = int((moment - datetime(1970, 1, 1)).total_seconds())
        slot = datetime(1970, 1, 1) + timedelta(seconds=epoch - epoch % seconds)
        slots.setdefault(slot, []).append(line)
    files = {}
    for slot, batch in sorted(slots.items()):
        unique = hashlib.sha256(batch[0].encode()).hexdigest()[:16].upper()
        key = log_key(prefix, slot + every + DELIVERY_DELAY, unique)
        files[key] = ("\n".join(batch) + "\n").encode()
    return files
