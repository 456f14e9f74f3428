"""Evidence snapshots streamed into the evidence bucket: what the actions share.

The actions are ``aws.evidence.snapshot_cloudtrail`` (:mod:`clampdown_aws.evidence_cloudtrail`)
and ``aws.evidence.snapshot_log_group`` (:mod:`clampdown_aws.evidence_log_group`); this module
opens the run's evidence store, turns pages into gzip JSON lines and words the plan lines.

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

# No __future__ annotations: pydantic then reads each field's type as written instead of
# compiling its text at class creation (a ForwardRef per field; lint imports this module).

import json
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel

from clampdown.core.actions import ActionContext
from clampdown.core.diagnostics import ClampdownError
from clampdown_aws.base import S3_WRITE, Aws

GZIP_WBITS = 16 + 15  # zlib: gzip header and trailer, 32 KiB window
GZIP_LEVEL = 6


def _now() -> datetime:
    """The end of the window (a function, so tests can fix the clock)."""
    return datetime.now(UTC)


class EvidenceBucketMissing(ClampdownError):
    """No evidence bucket was given or configured, or it does not exist."""


class EvidenceRef(BaseModel):
    """One evidence object as the manifest lists it."""

    key: str
    sha256: str
    size: int
    # The locked version and its retention, so the run's ledger alone tells counsel
    # which version to fetch and until when nobody can delete it (clampdown report).
    version_id: str | None = None
    lock_mode: str | None = None
    locked_until: str | None = None


@dataclass
class Count:
    n: int = 0


def to_ref(obj: Any) -> EvidenceRef:
    return EvidenceRef(
        key=obj.key,
        sha256=obj.sha256,
        size=obj.size,
        version_id=getattr(obj, "version_id", None),
        lock_mode=getattr(obj, "lock_mode", None),
        locked_until=getattr(obj, "locked_until", None),
    )


def _json_default(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def gzip_json_lines(pages: Iterable[Iterable[dict[str, Any]]], count: Count) -> Iterator[bytes]:
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


def checked_store(aws: Aws, ctx: ActionContext, bucket: str | None) -> Any:
    """The run's evidence store, after checking the bucket exists (fail before reading logs)."""
    store = open_store(aws, ctx, bucket)
    if not store.bucket_has_object_lock():
        ctx.logger.warning(
            "evidence bucket %s has no Object Lock: evidence is hashed but can be deleted",
            store.bucket,
        )
    return store


def open_store(aws: Aws, ctx: ActionContext, bucket: str | None) -> Any:
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


def step_uri(store: Any, ctx: ActionContext) -> str:
    """Where a step's evidence goes; the run id is not known before the run (plan --live)."""
    from clampdown_aws.evidence_store import PREFIX

    return f"s3://{store.bucket}/{PREFIX}/<run-id>/{ctx.step_id}/"


def manifest_line(store: Any) -> str:
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


def span_text(start: datetime, hours: int) -> str:
    return f"{start:%Y-%m-%d %H:%M} UTC → now, {hours} h"


def window(hours: int) -> tuple[datetime, datetime]:
    end = _now()
    return end - timedelta(hours=hours), end


__all__: list[str] = [
    "S3_WRITE",
    "Count",
    "EvidenceBucketMissing",
    "EvidenceRef",
    "checked_store",
    "gzip_json_lines",
    "manifest_line",
    "open_store",
    "span_text",
    "step_uri",
    "to_ref",
    "window",
]
