"""Evidence snapshots: CloudTrail and CloudWatch Logs, streamed into the evidence bucket.

Both actions write under ``s3://<bucket>/incidents/<run-id>/<step-id>/`` through
:class:`~clampdown_aws.evidence_store.EvidenceStore`, so every object is hashed
while it streams, locked when the bucket has Object Lock, and listed in the run's
``manifest.json``. Nothing is ever read whole into memory: trail files are copied
chunk by chunk from ``GetObject``; API results (``LookupEvents``,
``FilterLogEvents``) flow page by page through a generator that turns them into
gzip-compressed JSON lines, and the store uploads those chunks in multipart parts.

Neither action changes anything it could undo: evidence is never deleted (Object
Lock forbids it anyway), so they record no undo. Run twice in the same run (a step
retry), they write the same keys again: new object versions in a versioned or
locked bucket, the manifest entry pointing at the newest.

``describe`` (``clampdown plan --live``) never returns an empty list: evidence only adds,
so a run always writes. It lists what it would write using cheap read calls only (the
evidence bucket's Object Lock setting, DescribeTrails and the trail bucket's key listing,
DescribeLogGroups and DescribeExportTasks); it reads no LookupEvents or FilterLogEvents
page and no trail file, so event counts are known only at run time.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field, model_validator

from clampdown.core.actions import ActionContext, ActionInput, ActionOutput
from clampdown.core.diagnostics import ClampdownError
from clampdown_aws.base import Aws, AwsAction

CHUNK = 1024 * 1024  # bytes read per GetObject chunk
COPY_WORKERS = 8  # trail files copied at once (each holds at most one upload part)
GZIP_WBITS = 16 + 15  # zlib: gzip header and trailer, 32 KiB window
GZIP_LEVEL = 6
LOOKUP_PAGE = 50  # LookupEvents' maximum MaxResults
FILTER_PAGE = 10_000  # FilterLogEvents' maximum limit
_FILE_TIME = re.compile(r"_(\d{8}T\d{4})Z(?:[_.])")
_DELIVERY_FOLDERS = ("CloudTrail", "CloudTrail-Digest")

_S3_WRITE = (
    "s3:GetBucketObjectLockConfiguration",  # GetObjectLockConfiguration of the evidence bucket
    "s3:PutObject",  # PutObject, CreateMultipartUpload, UploadPart, CompleteMultipartUpload
    "s3:PutObjectRetention",  # Object Lock retention on each object
    "s3:AbortMultipartUpload",  # only when an upload fails half-way
    "s3:ListBucket",  # write_manifest lists manifest.d/
    "s3:GetObject",  # write_manifest reads manifest.d/ entries
)


def _now() -> datetime:
    """The end of the window (a function, so tests can fix the clock)."""
    return datetime.now(UTC)


class EvidenceBucketMissing(ClampdownError):
    """No evidence bucket was given or configured, or it does not exist."""


class TrailNotFound(ClampdownError):
    """``trail_name`` names no trail that DescribeTrails returns."""


class LogGroupNotFound(ClampdownError):
    """``log_group`` names no log group in the step's region (found by plan --live)."""


class ExportTaskBusy(ClampdownError):
    """CloudWatch Logs runs one export task per account at a time."""


class EvidenceRef(BaseModel):
    """One evidence object as the manifest lists it."""

    key: str
    sha256: str
    size: int


@dataclass
class _Count:
    n: int = 0


def _ref(obj: Any) -> EvidenceRef:
    return EvidenceRef(key=obj.key, sha256=obj.sha256, size=obj.size)


def _json_default(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def gzip_json_lines(pages: Iterable[Iterable[dict[str, Any]]], count: _Count) -> Iterator[bytes]:
    """One JSON object per line, gzip-compressed as it goes; ``count`` counts the lines.

    Memory holds one page at a time. The gzip header carries no timestamp, so the
    same records always give the same bytes (and the same SHA-256).
    """
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, GZIP_WBITS)
    dumps = json.JSONEncoder(default=_json_default, separators=(",", ":")).encode
    for page in pages:
        lines = [dumps(record) for record in page]
        if not lines:
            continue
        count.n += len(lines)
        lines.append("")
        out = compressor.compress("\n".join(lines).encode())
        if out:
            yield out
    yield compressor.flush()


def _store(aws: Aws, ctx: ActionContext, bucket: str | None) -> Any:
    """The run's evidence store, after checking the bucket exists (fail before reading logs)."""
    store = _open_store(aws, ctx, bucket)
    if not store.bucket_has_object_lock():
        ctx.logger.warning(
            "evidence bucket %s has no Object Lock: evidence is hashed but can be deleted",
            store.bucket,
        )
    return store


def _open_store(aws: Aws, ctx: ActionContext, bucket: str | None) -> Any:
    """The run's evidence store; raises when no bucket is set or it does not exist."""
    from botocore.exceptions import ClientError

    from clampdown.core.settings import settings
    from clampdown_aws.evidence_store import EvidenceStore

    conf = settings()
    name = bucket or conf.evidence_bucket
    if not name:
        raise EvidenceBucketMissing(
            "no evidence bucket: the step has no 'bucket' and CLAMPDOWN_EVIDENCE_BUCKET is not set",
            "set CLAMPDOWN_EVIDENCE_BUCKET to an S3 bucket with Object Lock, "
            "or give the step with: {bucket: <name>}",
        )
    store = EvidenceStore(
        aws.client("s3"),
        name,
        ctx.run_id,
        retention_days=conf.evidence_retention_days,
        lock_mode=conf.evidence_lock_mode,
    )
    try:
        store.bucket_has_object_lock()  # GetObjectLockConfiguration: also proves it exists
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "NoSuchBucket":
            raise
        raise EvidenceBucketMissing(
            f"evidence bucket '{name}' does not exist",
            "create it with Object Lock enabled, or fix CLAMPDOWN_EVIDENCE_BUCKET / 'bucket'",
        ) from None
    return store


def _step_uri(store: Any, ctx: ActionContext) -> str:
    """Where a step's evidence goes; the run id is not known before the run (plan --live)."""
    from clampdown_aws.evidence_store import PREFIX

    return f"s3://{store.bucket}/{PREFIX}/<run-id>/{ctx.step_id}/"


def _manifest_line(store: Any) -> str:
    from clampdown_aws.evidence_store import PREFIX

    where = f"s3://{store.bucket}/{PREFIX}/<run-id>/manifest.json"
    if store.bucket_has_object_lock():
        lock = (
            f"each object locked ({store.lock_mode}, {store.retention_days} days): "
            "nobody can delete it before then"
        )
    else:
        lock = "the bucket has no Object Lock: the objects can be deleted"
    return f"hash every object (SHA-256) and list it in the run's manifest {where}; {lock}"


def _span(start: datetime, hours: int) -> str:
    return f"{start:%Y-%m-%d %H:%M} UTC → now, {hours} h"


def _masked(access_key_id: str) -> str:
    return f"{access_key_id[:4]}…{access_key_id[-4:]}"


def _window(hours: int) -> tuple[datetime, datetime]:
    end = _now()
    return end - timedelta(hours=hours), end


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


# --- CloudTrail -------------------------------------------------------------------------------


class SnapshotCloudTrail(AwsAction):
    """Copy a principal's CloudTrail activity for the last hours into the evidence bucket.

    Two sources, both hashed into the run's manifest:

    * the trail's own delivery files (logs and digests) for the window, byte for byte
      (``<step>/cloudtrail/<trail-bucket>/<original key>``);
    * ``LookupEvents`` for the principal's user name and/or access key id
      (``<step>/cloudtrail-lookup-events.jsonl.gz``, one event per line).
    """

    name = "aws.evidence.snapshot_cloudtrail"
    summary = "Snapshot a principal's CloudTrail activity to the evidence bucket"
    iam_actions = (
        "cloudtrail:DescribeTrails",
        "cloudtrail:LookupEvents",
        *_S3_WRITE,
    )  # s3:ListBucket and s3:GetObject also on the trail bucket

    class Input(ActionInput):
        principal_arn: str | None = Field(
            None,
            pattern=r"^arn:aws[a-z-]*:(iam|sts)::\d{12}:(root|(user|role|assumed-role)/.+)$",
            description="IAM user or role, or an assumed-role session ARN",
        )
        access_key_id: str | None = Field(
            None, pattern=r"^[A-Z0-9]{16,128}$", description="access key id (AKIA…/ASIA…)"
        )
        lookback_hours: int = Field(24, ge=1, le=720, description="window: the last N hours")
        trail_name: str | None = Field(
            None, description="trail whose files to copy (default: the account's trail, if any)"
        )
        bucket: str | None = Field(
            None, description="evidence bucket (default CLAMPDOWN_EVIDENCE_BUCKET)"
        )

        @model_validator(mode="after")
        def _someone(self) -> SnapshotCloudTrail.Input:
            if not (self.principal_arn or self.access_key_id):
                raise ValueError("give principal_arn or access_key_id (or both)")
            return self

    class Output(ActionOutput):
        manifest_uri: str
        objects: list[EvidenceRef]
        events: int
        trail_objects: int
        trail: str | None = None

    def apply(self, params: Input, aws: Aws, ctx: ActionContext) -> Output:
        store = _store(aws, ctx, params.bucket)
        start, end = _window(params.lookback_hours)
        cloudtrail = aws.client("cloudtrail")

        trail = _find_trail(cloudtrail, params.trail_name, ctx.region)
        copied = []
        if trail is not None:
            copied = _copy_trail_files(store, trail, params.principal_arn, start, end, ctx)

        username = _username(params.principal_arn)
        count = _Count()
        pages = _lookup_pages(cloudtrail, username, params.access_key_id, start, end)
        lookup = store.put(
            f"{ctx.step_id}/cloudtrail-lookup-events.jsonl.gz",
            gzip_json_lines(pages, count),
            "application/gzip",
        )
        manifest = store.write_manifest()
        ctx.logger.info(
            "CloudTrail evidence: %d trail files, %d looked-up events -> %s",
            len(copied),
            count.n,
            store.uri(),
        )
        return self.Output(
            manifest_uri=f"s3://{store.bucket}/{manifest.key}",
            objects=[_ref(o) for o in (*copied, lookup)],
            events=count.n,
            trail_objects=len(copied),
            trail=trail["TrailARN"] if trail else None,
        )

    def describe(self, params: Input, aws: Aws, ctx: ActionContext) -> list[str]:
        """What a run would write: trail files (listed now), then LookupEvents (not read)."""
        store = _open_store(aws, ctx, params.bucket)
        start, end = _window(params.lookback_hours)
        span = _span(start, params.lookback_hours)
        dest = _step_uri(store, ctx)
        trail = _find_trail(aws.client("cloudtrail"), params.trail_name, ctx.region)
        if trail is None:
            lines = [
                f"copy no CloudTrail files: no trail in {ctx.region or 'the default region'} "
                "delivers to S3 (LookupEvents only)"
            ]
        else:
            bucket = trail["S3BucketName"]
            keys = list(_trail_keys(store.s3, trail, params.principal_arn, start, end))
            digests = sum("/CloudTrail-Digest/" in key for key in keys)
            lines = [
                f"copy {len(keys) - digests} CloudTrail log file(s) and {digests} digest "
                f"file(s) delivered so far ({span}) from bucket {bucket} of trail "
                f"{trail.get('Name', trail['TrailARN'])} to {dest}cloudtrail/{bucket}/"
            ]
        who = []
        username = _username(params.principal_arn)
        if username:
            who.append(f"user {username}")
        if params.access_key_id:
            who.append(f"access key {_masked(params.access_key_id)}")
        lines.append(
            f"look up CloudTrail events (LookupEvents) for {' and '.join(who)} ({span}) and "
            f"write them to {dest}cloudtrail-lookup-events.jsonl.gz (events: counted at run time)"
        )
        lines.append(_manifest_line(store))
        return lines


def _username(principal_arn: str | None) -> str | None:
    """CloudTrail's user name for an ARN: the last path element (``root`` for the root user)."""
    if not principal_arn:
        return None
    return principal_arn.rsplit(":", 1)[1].rsplit("/", 1)[-1]


def _find_trail(cloudtrail: Any, name: str | None, region: str | None) -> dict[str, Any] | None:
    """The trail to copy: the one named, else the account's best trail with an S3 bucket.

    "Best": a multi-region trail first, then one that is not an organization trail,
    then one whose home region is the step's region; ties by name.
    """
    args = {"trailNameList": [name]} if name else {}
    trails = cloudtrail.describe_trails(**args).get("trailList", [])
    if name:
        # Filter here too: some endpoints (moto) ignore trailNameList.
        match = [t for t in trails if name in (t.get("Name"), t.get("TrailARN"))]
        if not match:
            raise TrailNotFound(
                f"CloudTrail trail '{name}' not found in {region or 'the default region'}",
                "check trail_name (a name or ARN), or leave it out to use the account's trail",
            )
        if not match[0].get("S3BucketName"):
            raise TrailNotFound(f"CloudTrail trail '{name}' delivers to no S3 bucket")
        return match[0]
    usable = [t for t in trails if t.get("S3BucketName")]
    usable.sort(
        key=lambda t: (
            not t.get("IsMultiRegionTrail"),
            bool(t.get("IsOrganizationTrail")),
            t.get("HomeRegion") != region,
            t.get("Name", ""),
        )
    )
    return usable[0] if usable else None


def _copy_trail_files(
    store: Any,
    trail: dict[str, Any],
    principal_arn: str | None,
    start: datetime,
    end: datetime,
    ctx: ActionContext,
) -> list[Any]:
    """Stream every delivery file of the window from the trail bucket into the store."""
    from concurrent.futures import ThreadPoolExecutor

    s3, bucket = store.s3, trail["S3BucketName"]
    keys = sorted(_trail_keys(s3, trail, principal_arn, start, end))

    def copy(key: str) -> Any:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"]
        try:
            name = f"{ctx.step_id}/cloudtrail/{bucket}/{key}"
            return store.put(name, body.iter_chunks(CHUNK), "application/gzip")
        finally:
            body.close()

    if not keys:
        return []
    pool = ThreadPoolExecutor(max_workers=min(COPY_WORKERS, len(keys)))
    try:
        return list(pool.map(copy, keys))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _trail_keys(
    s3: Any, trail: dict[str, Any], principal_arn: str | None, start: datetime, end: datetime
) -> Iterator[str]:
    """Keys of the trail's log and digest files delivered within [start, end].

    Layout: ``<prefix>/AWSLogs/[<org-id>/]<account>/CloudTrail[-Digest]/<region>/YYYY/MM/DD/
    <account>_CloudTrail_<region>_<YYYYMMDDTHHMMZ>_<id>.json.gz``. Only the day folders of
    the window are listed; the delivery time in each file name does the rest.
    """
    bucket = trail["S3BucketName"]
    trail_account = trail["TrailARN"].split(":")[4]
    root = f"{trail['S3KeyPrefix'].strip('/')}/AWSLogs/" if trail.get("S3KeyPrefix") else "AWSLogs/"
    account = trail_account
    if trail.get("IsOrganizationTrail"):
        # An organization trail holds every member account; pick the principal's.
        account = principal_arn.split(":")[4] if principal_arn else trail_account
        org = [p for p in _folders(s3, bucket, root) if p.startswith("o-")]
        if org:
            root += f"{org[0]}/"
    root += f"{account}/"
    days = [start.date() + timedelta(days=i) for i in range((end.date() - start.date()).days + 1)]
    for folder in _DELIVERY_FOLDERS:
        base = f"{root}{folder}/"
        if trail.get("IsMultiRegionTrail"):
            regions = _folders(s3, bucket, base)
        else:
            regions = [trail.get("HomeRegion") or trail["TrailARN"].split(":")[3]]
        for region in regions:
            for day in days:
                yield from _delivered(s3, bucket, f"{base}{region}/{_day(day)}/", start, end)


def _day(day: date) -> str:
    return f"{day.year:04d}/{day.month:02d}/{day.day:02d}"


def _folders(s3: Any, bucket: str, prefix: str) -> list[str]:
    """Immediate sub-folder names under ``prefix``."""
    names = []
    for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=prefix, Delimiter="/"
    ):
        for common in page.get("CommonPrefixes", []):
            names.append(common["Prefix"][len(prefix) :].rstrip("/"))
    return names


def _delivered(s3: Any, bucket: str, prefix: str, start: datetime, end: datetime) -> Iterator[str]:
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            found = _FILE_TIME.search(item["Key"].rsplit("/", 1)[-1])
            if not found:
                continue
            delivered = datetime.strptime(found[1], "%Y%m%dT%H%M").replace(tzinfo=UTC)
            if start <= delivered <= end:
                yield item["Key"]


def _lookup_pages(
    cloudtrail: Any,
    username: str | None,
    access_key_id: str | None,
    start: datetime,
    end: datetime,
) -> Iterator[list[dict[str, Any]]]:
    """LookupEvents pages for the user name, then for the access key id.

    LookupEvents takes one attribute per call. An event of the key whose user name
    is ``username`` was already returned by the first lookup, so it is skipped: no
    duplicates, and no set of seen ids growing in memory.
    """
    paginator = cloudtrail.get_paginator("lookup_events")
    lookups = []
    if username:
        lookups.append(("Username", username))
    if access_key_id:
        lookups.append(("AccessKeyId", access_key_id))
    for attribute, value in lookups:
        for page in paginator.paginate(
            LookupAttributes=[{"AttributeKey": attribute, "AttributeValue": value}],
            StartTime=start,
            EndTime=end,
            PaginationConfig={"PageSize": LOOKUP_PAGE},
        ):
            events = page.get("Events", [])
            if attribute == "AccessKeyId" and username:
                events = [e for e in events if e.get("Username") != username]
            yield events


# --- CloudWatch Logs --------------------------------------------------------------------------


class SnapshotLogGroup(AwsAction):
    """Copy a log group's events for the last hours into the evidence bucket.

    Default: ``FilterLogEvents`` over the window (optionally with a filter pattern),
    streamed as gzip JSON lines to ``<step>/logs/<log group>.jsonl.gz`` and hashed into
    the manifest. With ``export_task: true``: a CloudWatch Logs export task writes the
    whole window to ``<step>/export/`` asynchronously; only a descriptor of the task is
    in the manifest (see docs/actions.md).
    """

    name = "aws.evidence.snapshot_log_group"
    summary = "Snapshot a CloudWatch Logs log group to the evidence bucket"
    iam_actions = (
        "logs:FilterLogEvents",
        "logs:CreateExportTask",  # export_task: true only
        "logs:DescribeExportTasks",  # export_task: true only
        "logs:DescribeLogGroups",  # plan --live only: does the group exist
        *_S3_WRITE,
    )

    class Input(ActionInput):
        log_group: str = Field(min_length=1, max_length=512, description="log group name")
        lookback_hours: int = Field(24, ge=1, le=720, description="window: the last N hours")
        filter_pattern: str | None = Field(
            None, description="CloudWatch Logs filter pattern (default: every event)"
        )
        bucket: str | None = Field(
            None, description="evidence bucket (default CLAMPDOWN_EVIDENCE_BUCKET)"
        )
        export_task: bool = Field(
            False, description="let CloudWatch Logs export the window (async) instead of streaming"
        )

        @model_validator(mode="after")
        def _pattern_needs_stream(self) -> SnapshotLogGroup.Input:
            if self.export_task and self.filter_pattern:
                raise ValueError(
                    "filter_pattern cannot be combined with export_task: an export task "
                    "copies every event of the window"
                )
            return self

    class Output(ActionOutput):
        manifest_uri: str
        object: EvidenceRef | None = None
        events: int | None = None
        export_task_id: str | None = None

    def apply(self, params: Input, aws: Aws, ctx: ActionContext) -> Output:
        store = _store(aws, ctx, params.bucket)
        start, end = _window(params.lookback_hours)
        logs = aws.client("logs")
        if params.export_task:
            return self._export(logs, store, params, start, end, ctx)

        count = _Count()
        pages = _filter_pages(logs, params.log_group, params.filter_pattern, start, end)
        obj = store.put(
            f"{ctx.step_id}/logs/{params.log_group.strip('/')}.jsonl.gz",
            gzip_json_lines(pages, count),
            "application/gzip",
        )
        manifest = store.write_manifest()
        ctx.logger.info(
            "log group %s: %d events -> s3://%s/%s",
            params.log_group,
            count.n,
            store.bucket,
            obj.key,
        )
        return self.Output(
            manifest_uri=f"s3://{store.bucket}/{manifest.key}", object=_ref(obj), events=count.n
        )

    def describe(self, params: Input, aws: Aws, ctx: ActionContext) -> list[str]:
        """What a run would write; the group must exist, its events are not read."""
        store = _open_store(aws, ctx, params.bucket)
        start, _ = _window(params.lookback_hours)
        span = _span(start, params.lookback_hours)
        dest = _step_uri(store, ctx)
        logs = aws.client("logs")
        _log_group(logs, params.log_group, ctx.region)
        if params.export_task:
            line = (
                f"start a CloudWatch Logs export task of every event of {params.log_group} "
                f"({span}) to {dest}export/ (asynchronous, not hashed) and write its "
                f"descriptor to {dest}export-task.json"
            )
            busy = [f"{t['taskId']} ({t['status']['code']})" for t in _export_tasks(logs)]
            if busy:
                line += (
                    f"; export task {', '.join(busy)} is in progress and the account runs one "
                    "at a time: the step fails with ExportTaskBusy unless it finishes first"
                )
            lines = [line]
        else:
            which = (
                f"log events of {params.log_group} matching {params.filter_pattern!r}"
                if params.filter_pattern
                else f"every log event of {params.log_group}"
            )
            lines = [
                f"write {which} ({span}) to {dest}logs/{params.log_group.strip('/')}.jsonl.gz "
                "(events: counted at run time)"
            ]
        return [*lines, _manifest_line(store)]

    def _export(
        self,
        logs: Any,
        store: Any,
        params: Input,
        start: datetime,
        end: datetime,
        ctx: ActionContext,
    ) -> Output:
        prefix = f"{store.prefix}/{ctx.step_id}/export"
        task_name = f"clampdown-{ctx.run_id}-{ctx.step_id}"[:512]
        task_id = _active_export(logs, task_name, params.log_group)
        if task_id is None:
            try:
                task_id = logs.create_export_task(
                    taskName=task_name,
                    logGroupName=params.log_group,
                    fromTime=_ms(start),
                    to=_ms(end),
                    destination=store.bucket,
                    destinationPrefix=prefix,
                )["taskId"]
            except logs.exceptions.LimitExceededException:
                raise ExportTaskBusy(
                    "another CloudWatch Logs export task is running in this account and region "
                    "(one at a time)",
                    "retry the step when it finishes, or snapshot without export_task",
                ) from None
        else:
            ctx.logger.info(
                "export task %s of this step is still running; not starting another", task_id
            )
        descriptor = {
            "taskId": task_id,
            "taskName": task_name,
            "logGroupName": params.log_group,
            "from": start.isoformat(),
            "to": end.isoformat(),
            "destination": f"s3://{store.bucket}/{prefix}/{task_id}/",
            "note": "exported asynchronously by CloudWatch Logs; not hashed in this manifest",
        }
        store.put(
            f"{ctx.step_id}/export-task.json",
            [json.dumps(descriptor, indent=2, sort_keys=True).encode()],
            "application/json",
        )
        manifest = store.write_manifest()
        return self.Output(
            manifest_uri=f"s3://{store.bucket}/{manifest.key}", export_task_id=task_id
        )


def _export_tasks(logs: Any) -> Iterator[dict[str, Any]]:
    """The account's export tasks that are pending or running now."""
    for status in ("PENDING", "RUNNING"):
        for task in logs.describe_export_tasks(statusCode=status).get("exportTasks", []):
            if task.get("status", {}).get("code") == status:
                yield task


def _active_export(logs: Any, task_name: str, log_group: str) -> str | None:
    """This step's export task if it is still pending or running (a step retry)."""
    for task in _export_tasks(logs):
        if task.get("taskName") == task_name and task.get("logGroupName") == log_group:
            return str(task["taskId"])
    return None


def _log_group(logs: Any, name: str, region: str | None) -> dict[str, Any]:
    """The log group named ``name`` (the first group of that prefix, as names sort)."""
    groups = logs.describe_log_groups(logGroupNamePrefix=name, limit=1).get("logGroups", [])
    if not groups or groups[0].get("logGroupName") != name:
        raise LogGroupNotFound(
            f"log group '{name}' not found in {region or 'the default region'}",
            "check log_group (the name, not the ARN) and the step's region",
        )
    return dict(groups[0])


def _filter_pages(
    logs: Any, log_group: str, pattern: str | None, start: datetime, end: datetime
) -> Iterator[list[dict[str, Any]]]:
    args: dict[str, Any] = {"logGroupName": log_group, "startTime": _ms(start), "endTime": _ms(end)}
    if pattern:
        args["filterPattern"] = pattern
    pages = logs.get_paginator("filter_log_events").paginate(
        **args, PaginationConfig={"PageSize": FILTER_PAGE}
    )
    for page in pages:
        yield page.get("events", [])


__all__: list[str] = [
    "EvidenceBucketMissing",
    "EvidenceRef",
    "ExportTaskBusy",
    "LogGroupNotFound",
    "SnapshotCloudTrail",
    "SnapshotLogGroup",
    "TrailNotFound",
    "gzip_json_lines",
]
