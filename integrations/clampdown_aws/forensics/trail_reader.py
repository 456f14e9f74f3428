"""The trail's files for a window: where they are, which hours have none, and fetching them.

CloudTrail delivers a gzip JSON file (``{"Records": [...]}``) about every five minutes per
region that had activity, at
``[<prefix>/]AWSLogs/[<org-id>/]<account>/CloudTrail/<region>/YYYY/MM/DD/
<account>_CloudTrail_<region>_<YYYYMMDDTHHMMZ>_<id>.json.gz``; the time in the name is the
delivery time. Only the day folders of the window are listed. A file delivered up to
:data:`DELIVERY_LAG` after the window's end can still hold events of the window, so those
are read too (the SQL keeps only events inside the window).

Files are fetched in batches (a few dozen files, tens of MB) into a temporary folder,
several at once, gunzipped on the way, handed to the engine and deleted: the disk and
memory used stay the size of a batch or two whatever the window holds.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

DELIVERY_LAG = timedelta(minutes=30)  # files delivered this long after an event still read
SETTLE = timedelta(minutes=15)  # hours ending later than now - SETTLE may still be delivered
BATCH_FILES = 32
BATCH_BYTES = 16 * 1024 * 1024  # compressed; CloudTrail JSON inflates about 10-20x
FETCH_WORKERS = 8
CHUNK = 64 * 1024  # read from the HTTP body
PIECE = 256 * 1024  # inflated at most per zlib call
GZIP_OR_ZLIB = 32 + 15  # zlib: detect a gzip (or zlib) header, 32 KiB window
_FILE_TIME = re.compile(r"_(\d{8}T\d{4})Z(?:[_.])")


@dataclass(frozen=True)
class TrailFile:
    key: str
    region: str
    delivered: datetime
    size: int


@dataclass(frozen=True)
class TrailLocation:
    """Where one account's log files of a trail are, and which regions it logs."""

    bucket: str
    root: str  # ".../AWSLogs/[o-.../]<account>/CloudTrail/"
    account: str
    multi_region: bool
    home_region: str
    name: str = ""


def location(s3: Any, trail: dict[str, Any], account: str | None = None) -> TrailLocation:
    """The log folder of ``account`` (default: the trail's own) in the trail's bucket."""
    bucket = trail["S3BucketName"]
    arn = trail["TrailARN"]
    root = f"{trail['S3KeyPrefix'].strip('/')}/AWSLogs/" if trail.get("S3KeyPrefix") else "AWSLogs/"
    if trail.get("IsOrganizationTrail"):
        org = [p for p in folders(s3, bucket, root) if p.startswith("o-")]
        if org:
            root += f"{org[0]}/"
    owner = account or arn.split(":")[4]
    return TrailLocation(
        bucket=bucket,
        root=f"{root}{owner}/CloudTrail/",
        account=owner,
        multi_region=bool(trail.get("IsMultiRegionTrail")),
        home_region=trail.get("HomeRegion") or arn.split(":")[3],
        name=trail.get("Name", arn),
    )


def folders(s3: Any, bucket: str, prefix: str) -> list[str]:
    """Immediate sub-folder names under ``prefix``."""
    names = []
    for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=prefix, Delimiter="/"
    ):
        for common in page.get("CommonPrefixes", []):
            names.append(common["Prefix"][len(prefix) :].rstrip("/"))
    return names


def regions(s3: Any, where: TrailLocation) -> list[str]:
    """The regions with a folder of log files (a single-region trail: its home region)."""
    if not where.multi_region:
        return [where.home_region]
    return sorted(folders(s3, where.bucket, where.root))


def list_files(
    s3: Any, where: TrailLocation, region: str, start: datetime, end: datetime
) -> list[TrailFile]:
    """The region's files delivered in ``[start, end + DELIVERY_LAG]``, oldest first."""
    last = end + DELIVERY_LAG
    found = []
    day = start.date()
    while day <= last.date():
        prefix = f"{where.root}{region}/{day:%Y/%m/%d}/"
        for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=where.bucket, Prefix=prefix
        ):
            for item in page.get("Contents", []):
                moment = delivered_at(item["Key"])
                if moment is not None and start <= moment <= last:
                    found.append(TrailFile(item["Key"], region, moment, int(item.get("Size", 0))))
        day += timedelta(days=1)
    found.sort(key=lambda f: (f.delivered, f.key))
    return found


def delivered_at(key: str) -> datetime | None:
    found = _FILE_TIME.search(key.rsplit("/", 1)[-1])
    if not found:
        return None
    return datetime.strptime(found[1], "%Y%m%dT%H%M").replace(tzinfo=UTC)


def gaps(
    files: Iterable[TrailFile], start: datetime, end: datetime, now: datetime
) -> list[tuple[datetime, datetime]]:
    """Whole hours of the window in which no file was delivered, merged into ranges.

    Only hours that have had time to be delivered count (ending before ``now - SETTLE``).
    """
    hours = {f.delivered.replace(minute=0, second=0, microsecond=0) for f in files}
    first = start.replace(minute=0, second=0, microsecond=0)
    if first < start:
        first += timedelta(hours=1)
    stop = min(end, now - SETTLE)
    missing: list[tuple[datetime, datetime]] = []
    hour = first
    while hour + timedelta(hours=1) <= stop:
        if hour not in hours:
            if missing and missing[-1][1] == hour:
                missing[-1] = (missing[-1][0], hour + timedelta(hours=1))
            else:
                missing.append((hour, hour + timedelta(hours=1)))
        hour += timedelta(hours=1)
    return missing


def batches(files: list[TrailFile]) -> Iterator[list[TrailFile]]:
    """Files in delivery order, grouped to at most BATCH_FILES files / BATCH_BYTES bytes."""
    batch: list[TrailFile] = []
    size = 0
    for item in sorted(files, key=lambda f: (f.delivered, f.key)):
        if batch and (len(batch) >= BATCH_FILES or size + item.size > BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(item)
        size += item.size
    if batch:
        yield batch


class TrailFileError(Exception):
    """A trail file that is not valid gzip (corrupt or truncated)."""


def inflate(chunks: Iterable[bytes], path: Path) -> None:
    """Write the gunzipped ``chunks`` to ``path``, streaming; raise :class:`TrailFileError`
    for a stream that is not gzip or ends before its end marker (a truncated file).

    At most :data:`PIECE` bytes are inflated per zlib call: a chunk of CloudTrail JSON
    inflates 10-20 times (far more for repetitive files), and buffers of tens of MB made
    and freed in eight download threads grew glibc's per-thread malloc arenas with the
    number of files read (peak memory 338 -> 404 MB from 1 to 5 million records; with
    pieces, 280 -> 284 MB: docs/benchmarks.md). Bounded pieces fix that in the code, on any
    C library, instead of asking operators to set ``MALLOC_ARENA_MAX``."""
    inflater = zlib.decompressobj(GZIP_OR_ZLIB)
    try:
        with path.open("wb") as out:
            for chunk in chunks:
                while chunk:
                    out.write(inflater.decompress(chunk, PIECE))
                    chunk = inflater.unconsumed_tail
                    if inflater.eof and inflater.unused_data:  # another gzip member follows
                        chunk = inflater.unused_data
                        inflater = zlib.decompressobj(GZIP_OR_ZLIB)
            while not inflater.eof and (piece := inflater.decompress(b"", PIECE)):
                out.write(piece)
            out.write(inflater.flush())
    except zlib.error as exc:
        raise TrailFileError(f"not valid gzip ({exc})") from None
    if not inflater.eof:
        raise TrailFileError("truncated gzip: the stream ends before its end marker")


def copy(chunks: Iterable[bytes], path: Path) -> None:
    """Write ``chunks`` to ``path`` as they are (S3 server access logs are plain text)."""
    with path.open("wb") as out:
        for chunk in chunks:
            out.write(chunk)


def fetch(
    s3: Any, bucket: str, batch: list[TrailFile], folder: Path, gunzip: bool = True
) -> tuple[dict[Path, TrailFile], list[tuple[TrailFile, str]]]:
    """Download and gunzip a batch into ``folder`` (several at once): the readable files by
    local path, and the broken ones with what is wrong. Decompressing here, in the
    download threads (zlib releases the GIL), overlaps it with DuckDB's scan of the
    previous batch; DuckDB then parses plain JSON. ``gunzip`` False: stored as they are
    (access logs); a file that cannot be fetched (deleted meanwhile, access denied) is
    reported the same way."""
    from botocore.exceptions import ClientError  # here: lint imports this module, not botocore

    write = inflate if gunzip else copy

    def one(index_item: tuple[int, TrailFile]) -> tuple[Path, TrailFile, str | None]:
        index, item = index_item
        path = folder / f"{index:05d}.{'json' if gunzip else 'log'}"
        try:
            body = s3.get_object(Bucket=bucket, Key=item.key)["Body"]
        except ClientError as exc:
            return path, item, f"cannot be read ({exc.response['Error'].get('Code', exc)})"
        try:
            write(body.iter_chunks(CHUNK), path)
        except TrailFileError as exc:
            path.unlink(missing_ok=True)
            return path, item, str(exc)
        finally:
            body.close()
        return path, item, None

    with ThreadPoolExecutor(max_workers=min(FETCH_WORKERS, len(batch) or 1)) as pool:
        done = list(pool.map(one, enumerate(batch)))
    good = {path: item for path, item, error in done if error is None}
    bad = [(item, error) for _, item, error in done if error is not None]
    return good, bad
