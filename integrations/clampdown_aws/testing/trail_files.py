"""CloudTrail records and delivery files, shaped as AWS writes them, for tests, drills and
the scoping benchmark.

Records follow the CloudTrail record contents AWS documents (eventVersion 1.09):
``userIdentity`` (``IAMUser`` with ``accessKeyId``/``userName``; ``AssumedRole`` with
``sessionContext.sessionIssuer``), ``eventTime``, ``eventSource``, ``eventName``,
``awsRegion``, ``sourceIPAddress``, ``userAgent``, ``requestParameters``
(``bucketName``/``key``/``versionId`` for S3), ``responseElements``,
``additionalEventData.bytesTransferredOut``, ``resources[]``, ``errorCode``, ``readOnly``,
``eventCategory`` (``Data`` for S3 object calls, ``Management`` otherwise).

Files: ``{"Records": [...]}`` gzip-compressed, one per region per five-minute slot of
delivery, at ``AWSLogs/<account>/CloudTrail/<region>/YYYY/MM/DD/
<account>_CloudTrail_<region>_<YYYYMMDDTHHMMZ>_<id>.json.gz``.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

ACCOUNT = "123456789012"
DELIVERY_DELAY = timedelta(minutes=5)


def user(name: str, access_key: str, account: str = ACCOUNT) -> dict[str, Any]:
    """An IAM user calling with a long-term access key."""
    return {
        "type": "IAMUser",
        "principalId": "AIDA" + hashlib.sha1(name.encode()).hexdigest()[:16].upper(),
        "arn": f"arn:aws:iam::{account}:user/{name}",
        "accountId": account,
        "accessKeyId": access_key,
        "userName": name,
    }


def session(role: str, name: str, access_key: str, account: str = ACCOUNT) -> dict[str, Any]:
    """A role session (AssumedRole) calling with its temporary key."""
    role_id = "AROA" + hashlib.sha1(role.encode()).hexdigest()[:16].upper()
    return {
        "type": "AssumedRole",
        "principalId": f"{role_id}:{name}",
        "arn": f"arn:aws:sts::{account}:assumed-role/{role}/{name}",
        "accountId": account,
        "accessKeyId": access_key,
        "sessionContext": {
            "sessionIssuer": {
                "type": "Role",
                "principalId": role_id,
                "arn": f"arn:aws:iam::{account}:role/{role}",
                "accountId": account,
                "userName": role,
            },
            "attributes": {"creationDate": "2026-01-01T00:00:00Z", "mfaAuthenticated": "false"},
        },
    }


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _base(
    identity: dict[str, Any],
    moment: datetime,
    source: str,
    name: str,
    *,
    region: str,
    ip: str,
    agent: str,
    seq: int | str,
) -> dict[str, Any]:
    event_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{name}/{_iso(moment)}/{ip}/{seq}"))
    return {
        "eventVersion": "1.09",
        "userIdentity": identity,
        "eventTime": _iso(moment),
        "eventSource": source,
        "eventName": name,
        "awsRegion": region,
        "sourceIPAddress": ip,
        "userAgent": agent,
        "requestID": event_id.replace("-", "")[:16].upper(),
        "eventID": event_id,
        "readOnly": name.startswith(("Get", "List", "Head", "Describe")),
        "eventType": "AwsApiCall",
        "recipientAccountId": identity.get("accountId", ACCOUNT),
    }


def s3_read(
    identity: dict[str, Any],
    moment: datetime,
    bucket: str,
    key: str | None,
    *,
    name: str = "GetObject",
    size: int = 0,
    version_id: str | None = None,
    ip: str = "198.51.100.7",
    agent: str = "[aws-cli/2.15.0 Python/3.11.6]",
    region: str = "us-east-1",
    error: str | None = None,
    seq: int | str = 0,
) -> dict[str, Any]:
    """An S3 data event (GetObject, HeadObject, ListObjects, …) as CloudTrail logs it."""
    record = _base(
        identity, moment, "s3.amazonaws.com", name, region=region, ip=ip, agent=agent, seq=seq
    )
    params: dict[str, Any] = {"bucketName": bucket, "Host": f"{bucket}.s3.{region}.amazonaws.com"}
    if key is not None:
        params["key"] = key
    if version_id:
        params["versionId"] = version_id
    resources = [{"type": "AWS::S3::Bucket", "ARN": f"arn:aws:s3:::{bucket}", "accountId": ACCOUNT}]
    if key is not None:
        resources.insert(0, {"type": "AWS::S3::Object", "ARN": f"arn:aws:s3:::{bucket}/{key}"})
    record.update(
        {
            "requestParameters": params,
            "responseElements": None,
            "additionalEventData": {
                "SignatureVersion": "SigV4",
                "CipherSuite": "TLS_AES_128_GCM_SHA256",
                "bytesTransferredIn": 0,
                "bytesTransferredOut": float(size if not error else 0),
                "x-amz-id-2": "EXAMPLEid2",
            },
            "resources": resources,
            "managementEvent": False,
            "eventCategory": "Data",
        }
    )
    if error:
        record["errorCode"] = error
        record["errorMessage"] = error
    return record


def management(
    identity: dict[str, Any],
    moment: datetime,
    source: str,
    name: str,
    request: dict[str, Any] | None = None,
    response: dict[str, Any] | None = None,
    *,
    ip: str = "198.51.100.7",
    agent: str = "[aws-cli/2.15.0 Python/3.11.6]",
    region: str = "us-east-1",
    seq: int | str = 0,
) -> dict[str, Any]:
    """A management event (GetBucketPolicy, CreateAccessKey, …)."""
    record = _base(identity, moment, source, name, region=region, ip=ip, agent=agent, seq=seq)
    record.update(
        {
            "requestParameters": request,
            "responseElements": response,
            "managementEvent": True,
            "eventCategory": "Management",
        }
    )
    return record


def assume_role(
    identity: dict[str, Any],
    moment: datetime,
    role: str,
    session_name: str,
    new_key: str,
    account: str = ACCOUNT,
    **kwargs: Any,
) -> dict[str, Any]:
    """sts:AssumeRole by ``identity``: the response names the session's temporary key."""
    role_arn = f"arn:aws:iam::{account}:role/{role}"
    return management(
        identity,
        moment,
        "sts.amazonaws.com",
        "AssumeRole",
        {"roleArn": role_arn, "roleSessionName": session_name, "durationSeconds": 3600},
        {
            "credentials": {
                "accessKeyId": new_key,
                "sessionToken": "<redacted>",
                "expiration": "Jan 1, 2027, 12:00:00 AM",
            },
            "assumedRoleUser": {
                "assumedRoleId": f"AROAEXAMPLE:{session_name}",
                "arn": f"arn:aws:sts::{account}:assumed-role/{role}/{session_name}",
            },
        },
        **kwargs,
    )


def trail_key(account: str, region: str, delivered: datetime, unique: str) -> str:
    return (
        f"AWSLogs/{account}/CloudTrail/{region}/{delivered:%Y/%m/%d}/"
        f"{account}_CloudTrail_{region}_{delivered:%Y%m%dT%H%M}Z_{unique}.json.gz"
    )


def deliver(
    records: Iterable[dict[str, Any]], account: str = ACCOUNT, max_records: int = 1000
) -> dict[str, bytes]:
    """Files as CloudTrail delivers them: per region, per five-minute slot, gzip JSON."""
    slots: dict[tuple[str, datetime], list[dict[str, Any]]] = {}
    for record in records:
        moment = datetime.strptime(record["eventTime"], "%Y-%m-%dT%H:%M:%SZ")
        slot = moment.replace(minute=moment.minute - moment.minute % 5, second=0)
        slots.setdefault((record["awsRegion"], slot), []).append(record)
    files = {}
    for (region, slot), batch in sorted(slots.items()):
        delivered = slot + DELIVERY_DELAY
        for start in range(0, len(batch), max_records):
            chunk = batch[start : start + max_records]
            unique = hashlib.sha256(chunk[0]["eventID"].encode()).hexdigest()[:16].upper()
            key = trail_key(account, region, delivered, unique)
            files[key] = gzip.compress(json.dumps({"Records": chunk}).encode(), mtime=0)
    return files


def upload(s3: Any, bucket: str, files: dict[str, bytes]) -> None:
    for key, body in files.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)


@dataclass
class Traffic:
    """Normal traffic for the benchmark and drills: a serving role reading model files.

    Deterministic for a seed; ``records(n)`` yields records in time order.
    """

    start: datetime
    bucket: str = "models"
    prefix: str = "llm-v3/"
    objects: int = 500
    region: str = "us-east-1"
    seed: int = 7
    every: float = 0.02  # seconds between records

    def records(self, n: int) -> Iterator[dict[str, Any]]:
        rng = random.Random(self.seed)
        roles = [session("serving", f"i-0{k:016x}", f"ASIA{k:016d}", ACCOUNT) for k in range(8)]
        for i in range(n):
            moment = self.start + timedelta(seconds=int(i * self.every))
            who = roles[rng.randrange(len(roles))]
            key = f"{self.prefix}shard-{rng.randrange(self.objects):05d}.safetensors"
            if i % 20 == 19:
                yield management(
                    who,
                    moment,
                    "kms.amazonaws.com",
                    "Decrypt",
                    {"keyId": "alias/models"},
                    ip=f"10.0.{i % 7}.{i % 251}",
                    agent="Boto3/1.35.0",
                    region=self.region,
                    seq=i,
                )
                continue
            yield s3_read(
                who,
                moment,
                self.bucket,
                key,
                size=rng.randrange(1, 64) * 1048576,
                ip=f"10.0.{i % 7}.{i % 251}",
                agent="Boto3/1.35.0 md/Botocore#1.35.0",
                region=self.region,
                seq=i,
            )
