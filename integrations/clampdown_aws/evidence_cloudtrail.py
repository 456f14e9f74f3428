"""``aws.evidence.snapshot_cloudtrail``: a principal's CloudTrail activity into the evidence bucket.

The trail's delivery files of the window are copied byte for byte, chunk by chunk
(several files at once); ``LookupEvents`` pages stream as gzip JSON lines. Both are
hashed into the run's manifest (see :mod:`clampdown_aws.evidence`).

The two sources are not equal: the trail files are the complete record (and carry
CloudTrail's own digests), LookupEvents is a convenience index of management events.
So a LookupEvents failure after trail files were copied does not throw the evidence
away: the step succeeds, its outputs say ``lookup_events: failed (...)`` and list a
warning. Only when nothing at all was copied does the step fail.
"""

# No __future__ annotations: pydantic then reads each field's type as written instead of
# compiling its text at class creation (a ForwardRef per field; lint imports this module).

import re
from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pydantic import Field, model_validator

from clampdown.core.actions import ActionContext, ActionInput, ActionOutput
from clampdown.core.diagnostics import ClampdownError
from clampdown_aws.base import Aws, AwsAction, evidence_resources, translate
from clampdown_aws.evidence import (
    S3_WRITE,
    Count,
    EvidenceRef,
    checked_store,
    gzip_json_lines,
    manifest_line,
    open_store,
    span_text,
    step_uri,
    to_ref,
    window,
)

CHUNK = 1024 * 1024  # bytes read per GetObject chunk
COPY_WORKERS = 8  # trail files copied at once (each holds at most one upload part)
LOOKUP_PAGE = 50  # LookupEvents' maximum MaxResults
_FILE_TIME = re.compile(r"_(\d{8}T\d{4})Z(?:[_.])")
_DELIVERY_FOLDERS = ("CloudTrail", "CloudTrail-Digest")


class TrailNotFound(ClampdownError):
    """``trail_name`` names no trail that DescribeTrails returns."""


class CloudTrailEvidenceMissing(ClampdownError):
    """Neither source gave anything: no trail file copied and LookupEvents failed."""


def _masked(access_key_id: str) -> str:
    return f"{access_key_id[:4]}…{access_key_id[-4:]}"


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
        *S3_WRITE,
    )  # s3:ListBucket and s3:GetObject also on the trail bucket (see iam_resources)

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
        def _someone(self) -> "SnapshotCloudTrail.Input":
            if not (self.principal_arn or self.access_key_id):
                raise ValueError("give principal_arn or access_key_id (or both)")
            return self

    class Output(ActionOutput):
        manifest_uri: str
        objects: list[EvidenceRef]
        events: int
        trail_objects: int
        trail: str | None = None
        trail_files: str = Field(
            description="what happened to the trail's delivery files: 'copied (N files)', "
            "'none in the window', or 'no trail delivers to S3'"
        )
        lookup_events: str = Field(
            description="'copied (N events)', or 'failed (<why>)' when LookupEvents failed "
            "(the events read before the failure are kept)"
        )
        warnings: list[str] = Field(
            default_factory=list, description="what could not be copied although the step succeeded"
        )

    @classmethod
    def iam_resources(cls, with_: Mapping[str, Any]) -> dict[str, list[str]]:
        """Evidence writes on the evidence bucket; trail files read only under ``AWSLogs/``.

        The trail (so its bucket) is found at run time by DescribeTrails, but CloudTrail
        always delivers under ``[<prefix>/]AWSLogs/``: ``s3:GetObject`` is granted on
        ``arn:aws:s3:::*/AWSLogs/*`` only, never on model objects. Listing a bucket reads
        no object, so ``s3:ListBucket`` stays on any bucket.
        """
        out = evidence_resources(with_.get("bucket"))
        evidence_bucket = out["s3:ListBucket"][0]
        out["s3:GetBucketObjectLockConfiguration"] = [evidence_bucket]
        out["s3:GetObject"] = [*out["s3:GetObject"], "arn:aws:s3:::*/AWSLogs/*"]
        out["s3:ListBucket"] = ["arn:aws:s3:::*"]
        # AWS requires "*": DescribeTrails and LookupEvents have no resource-level permissions
        out["cloudtrail:DescribeTrails"] = ["*"]
        out["cloudtrail:LookupEvents"] = ["*"]
        return out

    def apply(self, params: Input, aws: Aws, ctx: ActionContext) -> Output:
        """Copy the trail files, then the LookupEvents pages; a LookupEvents failure is a
        warning when trail files were copied (they are the stronger evidence) and an error
        when nothing at all was copied."""
        store = checked_store(aws, ctx, params.bucket)
        start, end = window(params.lookback_hours)
        cloudtrail = aws.client("cloudtrail")

        trail = _find_trail(cloudtrail, params.trail_name, ctx.region)
        copied = []
        if trail is not None:
            copied = _copy_trail_files(store, trail, params.principal_arn, start, end, ctx)
        trail_files = (
            "no trail delivers to S3"
            if trail is None
            else f"copied ({len(copied)} files)"
            if copied
            else "none in the window"
        )

        count = Count()
        lookup, failure = _store_lookup_events(
            store,
            cloudtrail,
            _username(params.principal_arn),
            params.access_key_id,
            (start, end),
            count,
            aws,
            ctx,
        )
        warnings = []
        if failure is not None:
            kept = f"; the {count.n} events read before it are kept" if lookup else ""
            if not copied:
                raise CloudTrailEvidenceMissing(
                    f"no CloudTrail evidence was copied: LookupEvents failed ({failure}) "
                    f"and the trail files: {trail_files}{kept}",
                    "fix the LookupEvents error (the permission cloudtrail:LookupEvents, or "
                    "the endpoint) and run the step again",
                )
            warnings.append(f"LookupEvents failed ({failure}){kept}; trail files: {trail_files}")
            ctx.logger.warning(
                "CloudTrail evidence is partial: %s (the step goes on)", warnings[-1]
            )
        objects = [*copied, lookup] if lookup is not None else copied
        manifest = store.write_manifest()
        ctx.logger.info(
            "CloudTrail evidence: %d trail files, %d looked-up events -> %s",
            len(copied),
            count.n,
            store.uri(),
        )
        return self.Output(
            manifest_uri=f"s3://{store.bucket}/{manifest.key}",
            objects=[to_ref(o) for o in objects],
            events=count.n,
            trail_objects=len(copied),
            trail=trail["TrailARN"] if trail else None,
            trail_files=trail_files,
            lookup_events=f"copied ({count.n} events)"
            if failure is None
            else f"failed ({failure})",
            warnings=warnings,
        )

    def describe(self, params: Input, aws: Aws, ctx: ActionContext) -> list[str]:
        """What a run would write: trail files (listed now), then LookupEvents (not read)."""
        store = open_store(aws, ctx, params.bucket)
        start, end = window(params.lookback_hours)
        span = span_text(start, params.lookback_hours)
        dest = step_uri(store, ctx)
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
        lines.append(manifest_line(store))
        return lines


def _store_lookup_events(
    store: Any,
    cloudtrail: Any,
    username: str | None,
    access_key_id: str | None,
    span: tuple[datetime, datetime],
    count: Count,
    aws: Aws,
    ctx: ActionContext,
) -> tuple[Any, str | None]:
    """(the stored events object or None, why LookupEvents failed or None).

    The first page is read before anything is written, so a lookup that fails at once
    leaves no empty events file that would read as "no activity". A failure on a later
    page ends the file there: the events already read are kept and hashed.
    """
    pages = _lookup_pages(cloudtrail, username, access_key_id, *span)
    failure: list[str] = []
    try:
        first = next(pages, [])
    except Exception as exc:
        return None, _why(exc, aws)

    def guarded() -> Iterator[list[dict[str, Any]]]:
        yield first
        try:
            yield from pages
        except Exception as exc:
            failure.append(_why(exc, aws))

    stored = store.put(
        f"{ctx.step_id}/cloudtrail-lookup-events.jsonl.gz",
        gzip_json_lines(guarded(), count),
        "application/gzip",
    )
    return stored, (failure[0] if failure else None)


def _why(exc: Exception, aws: Aws) -> str:
    """A LookupEvents failure in one line (through the shared AWS error summary)."""
    return str(translate(exc, aws)) or type(exc).__name__


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
