"""S3 server access logs: a second witness of object reads, parsed with DuckDB.

Where a model bucket has server access logging on, S3 writes a plain-text record per
request (AWS, "Amazon S3 server access log format"): space-separated fields, the time in
brackets, the request-URI, referrer and user agent in quotes — bucket owner, bucket, time,
remote IP, requester, request ID, operation, key, request-URI, HTTP status, error code,
bytes sent, object size, total time, turn-around time, referrer, user agent, version id,
host id, signature version, cipher suite, authentication type, host header, TLS version,
access point ARN, ACL required (newer records append more; older ones stop after the user
agent). Files are delivered to ``<target-prefix>YYYY-mm-DD-HH-MM-SS-<unique>`` (the time
of delivery), or with a partitioned prefix ``<target-prefix><account>/<region>/<bucket>/
YYYY/MM/DD/YYYY-mm-DD-HH-MM-SS-<unique>``.

Where they are: the ``access_logs`` input (``s3://bucket/prefix/``), and the target that
``GetBucketLogging`` names for each model bucket. Files delivered from the window's start
to :data:`DELIVERY_LAG` after its end are read (a file holds requests received before its
delivery; AWS delivers most within a few hours, best-effort).

Who: the ``requester`` field is the caller's ARN — an IAM user's
(``arn:aws:iam::<account>:user/<name>``) or an assumed-role session's
(``arn:aws:sts::<account>:assumed-role/<role>/<session>``). The access key id is not in
these logs, so a suspect given as an access key id cannot be matched here (a blind spot
says so); sessions the suspect created with ``AssumeRole`` are matched by the session ARN
CloudTrail recorded for them.

Each batch of files is parsed in DuckDB (``read_text``, split into lines,
``regexp_extract`` of the documented layout), the suspect's requests kept in
``access_hits``; lines that do not match the layout are counted per file and reported.
:mod:`clampdown_aws.forensics.rollup` merges them with the CloudTrail events: a request
seen in both (same S3 request ID) counts once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from clampdown_aws.forensics.coverage import blind
from clampdown_aws.forensics.principal import Principal, literal
from clampdown_aws.forensics.sql import iso
from clampdown_aws.forensics.trail_reader import TrailFile

DELIVERY_LAG = timedelta(hours=24)  # files delivered this long after the window still read
FIELDS = (
    "bucket_owner",
    "bucket",
    "time",
    "remote_ip",
    "requester",
    "request_id",
    "operation",
    "key",
    "request_uri",
    "http_status",
    "error_code",
    "bytes_sent",
    "object_size",
    "total_time",
    "turn_around_time",
    "referrer",
    "user_agent",
    "version_id",
    "host_id",
    "signature_version",
    "cipher_suite",
    "authentication_type",
    "host_header",
    "tls_version",
    "access_point_arn",
    "acl_required",
)
_TOKEN = r"(\S+)"
_QUOTED = r'"((?:[^"\\]|\\.)*)"'
# RE2 (DuckDB's regex engine): the 17 fields every record has, up to the user agent, then
# the later ones optional, anything appended after them ignored.
PATTERN = (
    "^"
    + " ".join([_TOKEN, _TOKEN, r"\[([^\]]*)\]", *[_TOKEN] * 5, _QUOTED, *[_TOKEN] * 6])
    + f" {_QUOTED} {_QUOTED}"
    + "".join(f"(?: {_TOKEN}" for _ in FIELDS[17:])
    + ")?" * len(FIELDS[17:])
    + "(?: .*)?$"
)
# Operations that read an object (named as CloudTrail names the same call) or list a bucket.
# AWS documents the field as ``REST.<HTTP method>.<resource type>`` and names some values in
# its examples; ``REST.POST.SELECT`` (S3 Select) is not among them: it is the name seen in
# real logs (docs/scoping.md), and a POST whose request-URI is S3 Select's is mapped too.
OPERATIONS = {
    "REST.GET.OBJECT": "GetObject",
    "REST.HEAD.OBJECT": "HeadObject",
    "REST.GET.OBJECT_TORRENT": "GetObjectTorrent",
    "REST.COPY.OBJECT_GET": "CopyObject",
    "REST.COPY.PART_GET": "UploadPartCopy",
    "REST.POST.RESTORE": "RestoreObject",
    "REST.POST.SELECT": "SelectObjectContent",
    "REST.GET.BUCKET": "ListObjects",
    "REST.GET.BUCKETVERSIONS": "ListObjectVersions",
}
_FILE_TIME = re.compile(r"(\d{4})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-[0-9A-Za-z]+$")
MAX_REPORTED_FILES = 20

ACCESS_COLUMNS = {
    "request_id": "VARCHAR",
    "eventtime": "VARCHAR",
    "eventname": "VARCHAR",
    "operation": "VARCHAR",
    "bucket": "VARCHAR",
    "object_key": "VARCHAR",
    "version_id": "VARCHAR",
    "bytes_out": "DOUBLE",
    "source_ip": "VARCHAR",
    "user_agent": "VARCHAR",
    "requester": "VARCHAR",
    "error_code": "VARCHAR",
    "log_file": "VARCHAR",
}


@dataclass(frozen=True)
class LogLocation:
    """A folder of access log files: ``s3://bucket/prefix``, and who named it."""

    bucket: str
    prefix: str
    partitioned: bool = False
    named_by: str = "the access_logs input"

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


@dataclass
class AccessStats:
    files: int = 0
    records: int = 0
    matched: int = 0
    malformed: list[tuple[str, int, int]] = field(default_factory=list)  # file, lines, first
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # file, why


def parse_uri(uri: str) -> LogLocation:
    """``s3://bucket/prefix`` (the prefix as configured: ``logs/`` or ``logs/models-``)."""
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    return LogLocation(bucket, prefix)


def discover(s3: Any, buckets: list[str]) -> tuple[list[LogLocation], list[dict[str, str]]]:
    """Where each model bucket's server access logs go (``GetBucketLogging``); a bucket
    without logging is not a blind spot here (CloudTrail is the first witness), a call that
    fails is."""
    found: list[LogLocation] = []
    spots = []
    for bucket in sorted(set(buckets)):
        try:
            enabled = s3.get_bucket_logging(Bucket=bucket).get("LoggingEnabled")
        except ClientError as exc:
            code = exc.response["Error"].get("Code", "error")
            spots.append(
                blind(
                    "access_logs_missing",
                    f"cannot tell where bucket {bucket}'s server access logs go "
                    f"(GetBucketLogging: {code}); give them as access_logs: s3://… if it has any",
                )
            )
            continue
        if not enabled:
            continue
        key_format = enabled.get("TargetObjectKeyFormat") or {}
        where = LogLocation(
            enabled["TargetBucket"],
            enabled.get("TargetPrefix", ""),
            partitioned="PartitionedPrefix" in key_format,
            named_by=f"GetBucketLogging of {bucket}",
        )
        if where not in found:
            found.append(where)
    return found, spots


def delivered_at(key: str) -> datetime | None:
    found = _FILE_TIME.search(key.rsplit("/", 1)[-1])
    if not found:
        return None
    return datetime(*(int(part) for part in found.groups()), tzinfo=UTC)


def list_files(
    s3: Any, where: LogLocation, start: datetime, end: datetime
) -> tuple[list[TrailFile], str | None]:
    """The location's files delivered in ``[start, end + DELIVERY_LAG]``, oldest first, or
    why they could not be listed. The simple layout is listed per day (``prefix`` +
    ``YYYY-mm-DD``); the partitioned one under its prefix."""
    last = end + DELIVERY_LAG
    prefixes = []
    if where.partitioned:
        prefixes.append(where.prefix)
    else:
        day = start.date()
        while day <= last.date():
            prefixes.append(f"{where.prefix}{day:%Y-%m-%d}-")
            day += timedelta(days=1)
    found = []
    try:
        for prefix in prefixes:
            pages = s3.get_paginator("list_objects_v2").paginate(Bucket=where.bucket, Prefix=prefix)
            for page in pages:
                for item in page.get("Contents", []):
                    moment = delivered_at(item["Key"])
                    if moment is not None and start <= moment <= last:
                        found.append(TrailFile(item["Key"], "", moment, int(item.get("Size", 0))))
    except ClientError as exc:
        return [], str(exc.response["Error"].get("Code", exc))
    found.sort(key=lambda f: (f.delivered, f.key))
    return found, None


def requester_predicate(principal: Principal, sessions: frozenset[str]) -> str:
    """SQL on ``requester`` (an ARN): the suspect, or a session it created. FALSE for an
    access key id (not recorded in access logs)."""
    value = literal(principal.value)
    if principal.kind in ("user_arn", "session_arn"):
        base = f"requester = {value}"
    elif principal.kind == "user_name":
        base = (
            f"(requester LIKE 'arn:%:iam::%:user/%' AND string_split(requester, '/')[-1] = {value})"
        )
    elif principal.kind == "role_arn":
        parts = principal.value.split(":")
        role = parts[5].rsplit("/", 1)[-1]
        prefix = f"arn:{parts[1]}:sts::{parts[4]}:assumed-role/{role}/"
        base = f"starts_with(requester, {literal(prefix)})"
    else:
        base = "FALSE"
    if sessions:
        listed = ", ".join(literal(arn) for arn in sorted(sessions))
        return f"({base} OR requester IN ({listed}))"
    return f"({base})"


def access_table(con: Any) -> None:
    """``access_hits``: the suspect's requests from access logs (empty when none read)."""
    columns = ", ".join(f"{name} {kind}" for name, kind in ACCESS_COLUMNS.items())
    con.execute(f"CREATE TABLE IF NOT EXISTS access_hits ({columns})")


def _lines(paths: list[Path]) -> str:
    listed = ", ".join(literal(str(p)) for p in paths)
    return f"""SELECT filename, n, rtrim(line, chr(13)) AS line
FROM (
  SELECT filename,
    unnest(string_split(content, chr(10))) AS line,
    unnest(generate_series(1, len(string_split(content, chr(10))))) AS n
  FROM read_text([{listed}])
)"""


# SelectObjectContent is ``POST /<key>?select&select-type=2`` (S3 API reference): a POST
# with that query is S3 Select whatever resource type the operation field names.
_SELECT = (
    "CASE WHEN operation LIKE 'REST.POST.%' AND regexp_matches(request_uri, "
    "'^POST [^ ?]*[?]([^ ]*&)?select(&| |=)') THEN 'REST.POST.SELECT' ELSE operation END"
)
_OPERATION = "CASE operation " + " ".join(
    f"WHEN {literal(op)} THEN {literal(name)}" for op, name in OPERATIONS.items()
)
_EVENT_NAME = (
    f"{_OPERATION} END || CASE WHEN operation = 'REST.GET.BUCKET' "
    "AND request_uri LIKE '%list-type=2%' THEN 'V2' ELSE '' END"
)
_STAMP = "try_strptime(substr({0}, 1, 20), '%d/%b/%Y:%H:%M:%S')"
# The bracketed time with its offset (+0000 in every record AWS writes) to CloudTrail's form.
_TIME = (
    "strftime(" + _STAMP.format('"time"') + " - to_minutes("
    """(CASE WHEN substr("time", 22, 1) = '-' THEN -1 ELSE 1 END) * """
    """(TRY_CAST(substr("time", 23, 2) AS INTEGER) * 60 """
    """+ TRY_CAST(substr("time", 25, 2) AS INTEGER))), '%Y-%m-%dT%H:%M:%SZ')"""
)


def _dash(column: str) -> str:
    """NULL for ``-`` (does not apply) and for a field an older record does not have."""
    return f"nullif(nullif({column}, '-'), '')"


_ROWS = f"""SELECT
  {_dash("request_id")} AS request_id,
  {_TIME} AS eventtime,
  {_EVENT_NAME} AS eventname,
  operation,
  bucket,
  coalesce(try(url_decode({_dash('"key"')})), {_dash('"key"')}) AS object_key,
  {_dash("version_id")} AS version_id,
  coalesce(TRY_CAST({_dash("bytes_sent")} AS DOUBLE), 0) AS bytes_out,
  {_dash("remote_ip")} AS source_ip,
  {_dash("user_agent")} AS user_agent,
  requester,
  CASE WHEN error_code <> '-' THEN error_code
    WHEN TRY_CAST(http_status AS INTEGER) >= 400 THEN 'HTTP ' || http_status
  END AS error_code,
  log_file
FROM (
  SELECT * REPLACE ({_SELECT} AS operation)
  FROM (SELECT log_file, unnest(f) FROM access_batch WHERE ok)
) AS a
WHERE operation IN ({", ".join(literal(op) for op in OPERATIONS)})"""


class AccessLogScan:
    """Feed it batches of local access log files; the suspect's requests go to
    ``access_hits``, malformed lines are counted per file."""

    def __init__(
        self,
        con: Any,
        principal: Principal,
        sessions: frozenset[str],
        start: datetime,
        end: datetime,
    ) -> None:
        self.con = con
        self.stats = AccessStats()
        self._who = requester_predicate(principal, sessions)
        self._window = (iso(start), iso(end))
        access_table(con)

    def scan(self, paths: dict[Path, str]) -> None:
        """One batch (local path -> the file's S3 key, for the reports). A batch DuckDB
        cannot read (a file that is not UTF-8 text) is read again file by file: the
        unreadable files are reported, the others read."""
        if not paths:
            return
        try:
            self._scan(paths)
        except _file_problems():
            for path, key in paths.items():
                try:
                    self._scan({path: key})
                except _file_problems() as exc:
                    self.stats.unreadable.append((key, _first_line(str(exc))))

    def _scan(self, paths: dict[Path, str]) -> None:
        names = ", ".join(f"({literal(str(p))}, {literal(k)})" for p, k in paths.items())
        pattern = literal(PATTERN)
        stamp = _STAMP.format(f"regexp_extract(l.line, {pattern}, 3)")
        start, end = (literal(t) for t in self._window)
        try:
            self.con.execute(
                f"""CREATE OR REPLACE TEMP TABLE access_batch AS
                SELECT k.key AS log_file, l.n,
                  regexp_full_match(l.line, {pattern}) AND {stamp} IS NOT NULL AS ok,
                  regexp_extract(l.line, {pattern}, {list(FIELDS)}) AS f
                FROM ({_lines(list(paths))}) AS l
                JOIN (VALUES {names}) AS k(path, key) ON k.path = l.filename
                WHERE l.line <> ''"""
            )
            counts = self.con.execute(
                "SELECT log_file, count(*) FILTER (WHERE NOT ok), min(n) FILTER (WHERE NOT ok), "
                "count(*) FILTER (WHERE ok) FROM access_batch GROUP BY log_file"
            ).fetchall()
            matched = self.con.execute(
                f"INSERT INTO access_hits SELECT * FROM ({_ROWS}) AS r "
                f"WHERE r.eventtime >= {start} AND r.eventtime < {end} AND {self._who}"
            ).fetchone()
        finally:
            self.con.execute("DROP TABLE IF EXISTS access_batch")
        self.stats.files += len(paths)
        self.stats.matched += int(matched[0]) if matched else 0
        for log_file, bad, first, good in counts:
            self.stats.records += int(good)
            if bad:
                self.stats.malformed.append((log_file, int(bad), int(first)))


def _file_problems() -> tuple[type[Exception], ...]:
    import duckdb

    return (duckdb.IOException, duckdb.InvalidInputException, duckdb.ConversionException)


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0][:300] if text.strip() else "unreadable"


def malformed_spots(where: LogLocation, stats: AccessStats) -> list[dict[str, str]]:
    """One ``malformed_file`` per file with lines not in the documented layout (at most
    :data:`MAX_REPORTED_FILES`, then a count)."""
    spots = [
        blind(
            "malformed_file",
            f"s3://{where.bucket}/{key}: {bad} line(s) not in the S3 server access log "
            f"format (first at line {first}), skipped",
        )
        for key, bad, first in stats.malformed[:MAX_REPORTED_FILES]
    ]
    spots += [
        blind("malformed_file", f"s3://{where.bucket}/{key}: {why} (skipped)")
        for key, why in stats.unreadable[:MAX_REPORTED_FILES]
    ]
    more = len(stats.malformed) - MAX_REPORTED_FILES
    if more > 0:
        spots.append(
            blind(
                "malformed_file",
                f"{more} more access log file(s) under {where.uri} with malformed lines, skipped",
            )
        )
    return spots
