"""S3 server access log parsing (DuckDB, the documented layout), file names, who matches,
and the IAM grants for access logs."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from clampdown_aws.forensics.access_logs import (
    AccessLogScan,
    LogLocation,
    delivered_at,
    list_files,
    parse_uri,
)
from clampdown_aws.forensics.embedded import connect
from clampdown_aws.forensics.exfiltration import ScopeExfiltration
from clampdown_aws.forensics.principal import parse_principal

ACCOUNT = "123456789012"
START = datetime(2019, 2, 6, 0, 0, tzinfo=UTC)
END = datetime(2019, 2, 7, 0, 0, tzinfo=UTC)
OWNER = "79a59df900b949e55d96a1e698fbacedfd6e09d98eacf8f8d5218e7cd47ef2be"
ALICE = f"arn:aws:iam::{ACCOUNT}:user/alice"
SESSION = f"arn:aws:sts::{ACCOUNT}:assumed-role/exporter/exfil"
# AWS's documented example record (with the later fields and a trailing source region),
# requester and operation changed to a user's object read.
DOCUMENTED = (
    f"{OWNER} amzn-s3-demo-bucket1 [06/Feb/2019:00:00:38 +0000] 192.0.2.3 {ALICE} "
    '3E57427F3EXAMPLE REST.GET.OBJECT weights/shard%201.bin "GET /amzn-s3-demo-bucket1/'
    'weights/shard%201.bin?versionId=v9 HTTP/1.1" 200 - 113 113 7 - "-" "S3Console/0.4" v9 '
    "s9lzHYrFp76ZVxRcpX9+5cjAnEH2ROuNkd2BHfIa6UkFVdtjf5mKR3/eTPFvsiP/XV/VLi31234= SigV4 "
    "ECDHE-RSA-AES128-GCM-SHA256 AuthHeader amzn-s3-demo-bucket1.s3.us-west-1.amazonaws.com "
    "TLSV1.2 arn:aws:s3:us-west-1:123456789012:accesspoint/example-AP Yes us-east-1"
)
# An older record: it ends after the user agent.
OLD = (
    f"{OWNER} amzn-s3-demo-bucket1 [06/Feb/2019:01:00:00 +0100] 192.0.2.4 {SESSION} "
    'REQ2 REST.HEAD.OBJECT a.bin "HEAD /amzn-s3-demo-bucket1/a.bin HTTP/1.1" 200 - - 5 3 - '
    '"-" "Boto3/1.35 \\"quoted\\""'
)
LISTING = (
    f"{OWNER} amzn-s3-demo-bucket1 [06/Feb/2019:02:00:00 +0000] 192.0.2.3 {ALICE} REQ3 "
    'REST.GET.BUCKET - "GET /amzn-s3-demo-bucket1?list-type=2&prefix=weights HTTP/1.1" '
    '200 - 900 - 7 6 "-" "aws-cli/2.15" -'
)
DENIED = (
    f"{OWNER} amzn-s3-demo-bucket1 [06/Feb/2019:03:00:00 +0000] 192.0.2.3 {ALICE} REQ4 "
    'REST.GET.OBJECT b.bin "GET /amzn-s3-demo-bucket1/b.bin HTTP/1.1" 403 AccessDenied 243 - '
    '7 - "-" "aws-cli/2.15" -'
)


def scan(
    tmp_path: Path, principal: str, lines: list[str], sessions: frozenset[str] = frozenset()
) -> tuple[AccessLogScan, list[tuple[Any, ...]]]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "f.log"
    path.write_text("\n".join(lines) + "\n")
    con = connect(tmp_path, "256MB", 1)
    reader = AccessLogScan(con, parse_principal(principal, ACCOUNT), sessions, START, END)
    reader.scan({path: "logs/2019-02-06-05-00-00-0123456789ABCDEF"})
    rows = con.execute(
        "SELECT request_id, eventtime, eventname, bucket, object_key, version_id, bytes_out, "
        "source_ip, user_agent, error_code FROM access_hits ORDER BY eventtime"
    ).fetchall()
    return reader, rows


def test_documented_and_older_records_are_read(tmp_path: Path) -> None:
    reader, rows = scan(tmp_path, ALICE, [DOCUMENTED, LISTING, DENIED], frozenset({SESSION}))
    assert rows == [
        (
            "3E57427F3EXAMPLE",
            "2019-02-06T00:00:38Z",
            "GetObject",
            "amzn-s3-demo-bucket1",
            "weights/shard 1.bin",
            "v9",
            113.0,
            "192.0.2.3",
            "S3Console/0.4",
            None,
        ),
        (
            "REQ3",
            "2019-02-06T02:00:00Z",
            "ListObjectsV2",
            "amzn-s3-demo-bucket1",
            None,
            None,
            900.0,
            "192.0.2.3",
            "aws-cli/2.15",
            None,
        ),
        (
            "REQ4",
            "2019-02-06T03:00:00Z",
            "GetObject",
            "amzn-s3-demo-bucket1",
            "b.bin",
            None,
            243.0,
            "192.0.2.3",
            "aws-cli/2.15",
            "AccessDenied",
        ),
    ]
    assert reader.stats.records == 3 and reader.stats.malformed == []
    _, rows = scan(tmp_path / "old", "exporter/exfil", [OLD])
    # +0100 is turned into UTC; a quoted user agent keeps its escaped quotes
    assert rows == [
        (
            "REQ2",
            "2019-02-06T00:00:00Z",
            "HeadObject",
            "amzn-s3-demo-bucket1",
            "a.bin",
            None,
            0.0,
            "192.0.2.4",
            'Boto3/1.35 \\"quoted\\"',
            None,
        )
    ]


def test_who_matches_by_requester_arn(tmp_path: Path) -> None:
    lines = [DOCUMENTED, OLD]
    assert [r[0] for r in scan(tmp_path / "a", "alice", lines)[1]] == ["3E57427F3EXAMPLE"]
    role = f"arn:aws:iam::{ACCOUNT}:role/team/exporter"  # a role path is not in session ARNs
    assert [r[0] for r in scan(tmp_path / "b", role, lines)[1]] == ["REQ2"]
    assert scan(tmp_path / "c", f"arn:aws:iam::{ACCOUNT}:user/bob", lines)[1] == []
    # an access key id is not in access logs; the sessions it created are
    key = "AKIAALICE00000000001"
    assert scan(tmp_path / "d", key, lines)[1] == []
    assert [r[0] for r in scan(tmp_path / "e", key, lines, frozenset({SESSION}))[1]] == ["REQ2"]


def test_malformed_lines_are_counted_and_skipped(tmp_path: Path) -> None:
    broken_time = DOCUMENTED.replace("06/Feb/2019:00:00:38", "31/Foo/2019:99:00:38")
    cut = DOCUMENTED[:150]
    reader, rows = scan(tmp_path, ALICE, [cut, DOCUMENTED, "", broken_time, "garbage"])
    assert [r[0] for r in rows] == ["3E57427F3EXAMPLE"]
    assert reader.stats.records == 1
    assert reader.stats.malformed == [("logs/2019-02-06-05-00-00-0123456789ABCDEF", 3, 1)]


def test_file_names_and_locations() -> None:
    assert delivered_at("logs/2019-02-06-05-10-59-0123456789ABCDEF") == datetime(
        2019, 2, 6, 5, 10, 59, tzinfo=UTC
    )
    assert delivered_at(
        f"logs/{ACCOUNT}/us-east-1/models/2019/02/06/2019-02-06-05-10-59-0123456789ABCDEF"
    ) == datetime(2019, 2, 6, 5, 10, 59, tzinfo=UTC)
    assert delivered_at("logs/notes.txt") is None
    assert parse_uri("s3://access-logs/models/") == LogLocation("access-logs", "models/")
    assert parse_uri("s3://access-logs").uri == "s3://access-logs/"


class Lister:
    """list_objects_v2 pages for the prefixes asked."""

    def __init__(self, keys: list[str]) -> None:
        self.keys = keys
        self.prefixes: list[str] = []

    def get_paginator(self, name: str) -> Any:
        outer = self

        class Pages:
            def paginate(self, Bucket: str, Prefix: str) -> Any:
                outer.prefixes.append(Prefix)
                yield {
                    "Contents": [{"Key": k, "Size": 1} for k in outer.keys if k.startswith(Prefix)]
                }

        return Pages()


def test_listing_reads_the_window_and_a_day_after_by_day_prefix() -> None:
    keys = [
        "logs/2019-02-05-23-59-00-AAAA",  # delivered before the window: cannot hold it
        "logs/2019-02-06-01-00-00-BBBB",
        "logs/2019-02-07-20-00-00-CCCC",  # late delivery, still read
        "logs/2019-02-08-01-00-00-DDDD",  # over 24 h after the window
    ]
    lister = Lister(keys)
    files, error = list_files(lister, LogLocation("b", "logs/"), START, END)
    assert error is None
    assert [f.key for f in files] == keys[1:3]
    assert lister.prefixes == ["logs/2019-02-06-", "logs/2019-02-07-", "logs/2019-02-08-"]
    partitioned = Lister(keys)
    list_files(partitioned, LogLocation("b", "logs/", partitioned=True), START, END)
    assert partitioned.prefixes == ["logs/"]


def test_iam_grants_for_access_logs() -> None:
    models = [{"name": "m", "bucket": "models", "prefix": "llm/"}]
    granted = ScopeExfiltration.iam_resources(
        {"trail_bucket": "trail-logs", "models": models, "access_logs": ["s3://logs/models/"]}
    )
    assert granted["s3:GetBucketLogging"] == ["arn:aws:s3:::models"]
    assert "arn:aws:s3:::logs/models/*" in granted["s3:GetObject"]
    assert granted["s3:ListBucket"][-1] == "arn:aws:s3:::logs"
    plain = ScopeExfiltration.iam_resources({"trail_bucket": "trail-logs", "models": models})
    assert not any("logs/models" in r for r in plain["s3:GetObject"])
    off = ScopeExfiltration.iam_resources({"models": models, "discover_access_logs": False})
    assert off["s3:GetBucketLogging"] == []
    templated = ScopeExfiltration.iam_resources({"models": "{{ inputs.models }}"})
    assert templated["s3:GetBucketLogging"] == ["arn:aws:s3:::*"]
    # folders given by an expression are not granted: reading every bucket is too wide
    expression = ScopeExfiltration.iam_resources(
        {"trail_bucket": "trail-logs", "access_logs": "{{ inputs.access_logs }}"}
    )
    assert expression["s3:GetObject"] == plain["s3:GetObject"]


def test_a_file_that_is_not_text_is_reported_and_the_others_read(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.log", tmp_path / "bad.log"
    odd_key = DOCUMENTED.replace("weights/shard%201.bin", "weights/%C3%28.bin", 1)
    good.write_text(odd_key + "\n")
    bad.write_bytes(b"\xff\xfe not text\n")
    con = connect(tmp_path, "256MB", 1)
    reader = AccessLogScan(con, parse_principal(ALICE, ACCOUNT), frozenset(), START, END)
    reader.scan({good: "logs/good", bad: "logs/bad"})
    keys = con.execute("SELECT object_key FROM access_hits").fetchall()
    assert keys == [("weights/%C3%28.bin",)]  # not valid UTF-8 once decoded: kept as logged
    assert reader.stats.files == 1 and reader.stats.records == 1
    assert [(key, "UTF-8" in why) for key, why in reader.stats.unreadable] == [("logs/bad", True)]


def _post(request_id: str, operation: str, uri: str, sent: str) -> str:
    return (
        f"{OWNER} amzn-s3-demo-bucket1 [06/Feb/2019:04:00:00 +0000] 192.0.2.3 {ALICE} "
        f'{request_id} {operation} data.csv "POST /amzn-s3-demo-bucket1/data.csv{uri} '
        f'HTTP/1.1" 200 - {sent} 5000 7 6 "-" "aws-cli/2.15" -'
    )


def test_s3_select_is_an_object_read(tmp_path: Path) -> None:
    """SelectObjectContent (``POST /key?select&select-type=2``): logged as REST.POST.SELECT,
    and recognised by its request-URI under another POST operation name; other POSTs (a
    multipart upload's start) are not reads."""
    lines = [
        _post("SEL1", "REST.POST.SELECT", "?select&select-type=2", "812"),
        _post("SEL2", "REST.POST.OBJECT", "?select&select-type=2", "64"),
        _post("UPL1", "REST.POST.UPLOADS", "?uploads", "300"),
        _post("SEL3", "REST.POST.RESTORE", "?restore", "-"),
    ]
    reader, rows = scan(tmp_path, ALICE, lines)
    named = sorted((r[0], r[2], r[4], r[6]) for r in rows)
    assert named == [
        ("SEL1", "SelectObjectContent", "data.csv", 812.0),
        ("SEL2", "SelectObjectContent", "data.csv", 64.0),
        ("SEL3", "RestoreObject", "data.csv", 0.0),
    ]
    assert reader.stats.records == 4 and reader.stats.malformed == []
