"""The embedded DuckDB scan and the Athena SQL on the seeded trail traffic of
:func:`records` (609 events in 41 files, delivered once per module) — the same answer from
both engines — and a 40 MB trail file inflated in bounded pieces. Here rather than in
tests/unit: each test scans the whole data set (a DuckDB database of its own; the
Athena-shaped table is filled once per module), ~4 CPU-s in all. The engines on hand-made
files of a few events, and Athena's polling, stay in tests/unit/test_scoping_engines.py."""

from __future__ import annotations

import functools
import gzip
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from clampdown_aws.forensics import rollup
from clampdown_aws.forensics.embedded import EmbeddedScan, connect
from clampdown_aws.forensics.principal import parse_principal
from clampdown_aws.forensics.scope import Scope
from clampdown_aws.forensics.trail_reader import delivered_at, inflate
from clampdown_aws.testing import trail_files as tf
from tests.unit.test_scoping_engines import (
    ACCOUNT,
    END,
    MB,
    MODELS,
    START,
    T0,
    _rolled,
    hop1,
    hop2,
    thief,
)


def records() -> list[dict[str, Any]]:
    """Normal traffic, and a theft through a two-hop AssumeRole chain, a copy and a denial."""
    at = T0 + timedelta(hours=1)
    theft = [
        tf.s3_read(thief, at, "models", "llm-v3/a.bin", size=10 * MB, seq=1),
        tf.assume_role(
            thief, at + timedelta(minutes=1), "exporter", "hop1", "ASIAHOP1000000000001", seq=2
        ),
        tf.assume_role(
            hop1, at + timedelta(minutes=2), "archiver", "hop2", "ASIAHOP2000000000001", seq=3
        ),
        # the second hop's reads land in another region, in a file delivered *before* the
        # file that holds the AssumeRole that created it (us-west-2 sorts first)
        tf.s3_read(
            hop2,
            at + timedelta(minutes=2, seconds=30),
            "models",
            "llm-v3/b.bin",
            size=20 * MB,
            version_id="v7",
            ip="203.0.113.20",
            region="us-west-2",
            seq=4,
        ),
        tf.s3_read(
            hop1,
            at + timedelta(minutes=3),
            "models",
            "llm-v3/c.bin",
            name="SelectObjectContent",
            size=MB,
            seq=5,
        ),
        tf.management(
            thief,
            at + timedelta(minutes=4),
            "iam.amazonaws.com",
            "CreateAccessKey",
            {"userName": "backup"},
            {
                "accessKey": {
                    "accessKeyId": "AKIABACKUP0000000001",
                    "userName": "backup",
                    "status": "Active",
                }
            },
            seq=6,
        ),
        tf.s3_read(
            tf.user("backup", "AKIABACKUP0000000001"),
            at + timedelta(minutes=20),
            "models",
            "llm-v3/d.bin",
            size=2 * MB,
            seq=7,
        ),
        tf.s3_read(
            thief, at + timedelta(minutes=21), "models", "llm-v3/e.bin", error="AccessDenied", seq=8
        ),
    ]
    copy = tf.s3_read(
        thief, at + timedelta(minutes=22), "attacker-drop", "loot/a.bin", name="CopyObject", seq=9
    )
    copy["requestParameters"]["x-amz-copy-source"] = "models/llm-v3/a%2Bb.bin?versionId=v1"
    normal = list(tf.Traffic(T0, objects=6, every=20.0).records(600))
    return sorted([*normal, *theft, copy], key=lambda r: r["eventTime"])


@functools.cache
def delivered() -> tuple[tuple[str, bytes], ...]:
    """The trail files of :func:`records`, built once for the module (their gzip costs a
    second each time): the same bytes every time (Traffic is seeded, gzip's mtime is 0),
    immutable, and each test still writes its own copies into its own folder."""
    return tuple(tf.deliver(records(), max_records=50).items())


def write_files(folder: Path) -> dict[Path, str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for key, body in delivered():
        path = folder / key.replace("/", "_").removesuffix(".gz")
        inflate([body[:100], body[100:]], path)  # as fetch gunzips them, chunk by chunk
        paths[path] = key
    return paths


def embedded_result(tmp_path: Path, principal: str, whole_above: float = 0.5) -> dict[str, Any]:
    files = write_files(tmp_path / "files")
    scope = Scope(tmp_path, parse_principal(principal, ACCOUNT), START, END, MODELS, threads=1)
    scan = EmbeddedScan(
        scope.con, scope.principal, START, END, tmp_path / "behind", parse_whole_above=whole_above
    )
    ordered = sorted(files, key=lambda p: (delivered_at(files[p]), files[p]))
    for start in range(0, len(ordered), 4):  # small batches: the chain spans batches
        scan.scan(ordered[start : start + 4])
    scope.keys = scan.keys
    assert not scan.stats.malformed
    return scope.result([])


@pytest.mark.parametrize("whole_above", [-1.0, 0.5, 1.0], ids=["whole", "adaptive", "picked"])
def test_embedded_engine_follows_the_chain_across_batches_and_regions(
    tmp_path: Path, whole_above: float
) -> None:
    """The same answer whether each batch is parsed whole, or its suspect's files are picked
    first and only they are parsed in full (passed-over files read again for later keys)."""
    result = embedded_result(tmp_path, "arn:aws:iam::123456789012:user/mallory", whole_above)
    assert {(o["key"], o["version_id"], o["bytes_out"]) for o in result["objects"]} == {
        ("llm-v3/a.bin", None, 10 * MB),
        ("llm-v3/b.bin", "v7", 20 * MB),
        ("llm-v3/c.bin", None, MB),
        ("llm-v3/d.bin", None, 2 * MB),
        ("llm-v3/a+b.bin", "v1", 0),  # CopyObject: counted against its source
    }
    assert result["linked_credentials"] == [
        "AKIABACKUP0000000001",
        "ASIAHOP1000000000001",
        "ASIAHOP2000000000001",
    ]
    assert result["models"][0]["objects"] == 5
    assert result["totals"]["denied_events"] == 1
    assert [m["event_name"] for m in result["management_events"]] == [
        "AssumeRole",
        "AssumeRole",
        "CreateAccessKey",
    ]
    assert "AKIABACKUP0000000001 for backup" in result["management_events"][2]["detail"]


def test_embedded_engine_skips_broken_files_and_reads_the_rest(tmp_path: Path) -> None:
    files = write_files(tmp_path / "files")
    broken = tmp_path / "broken.json"
    broken.write_bytes(b'{"Records": [{"eventName": "GetObject"},')
    no_records = tmp_path / "digest.json"
    no_records.write_bytes(b'{"Digest": true}')
    con = connect(tmp_path, "256MB", 1)
    scan = EmbeddedScan(
        con, parse_principal("AKIAMALLORY000000001", ACCOUNT), START, END, tmp_path / "behind"
    )
    scan.scan([*files, broken, no_records])
    problems = {Path(m.source).name: m.error for m in scan.stats.malformed}
    assert sorted(problems) == ["broken.json", "digest.json"]
    assert (
        "JSON" in problems["broken.json"]
        and problems["digest.json"] == "no Records array in the file"
    )
    assert scan.stats.records == sum(len(json.loads(p.read_bytes())["Records"]) for p in files)
    rolled = rollup.roll_up(con, MODELS)
    assert rolled["totals"]["objects"] == 5


def test_an_event_delivered_twice_counts_once(tmp_path: Path) -> None:
    """AWS documents that CloudTrail may deliver an event more than once (same eventID)."""
    files = write_files(tmp_path / "files")
    twice = [p for p in files if b"mallory" in p.read_bytes()]
    copies = []
    for n, path in enumerate(twice):
        copy = tmp_path / f"again-{n}.json"
        copy.write_bytes(path.read_bytes())
        copies.append(copy)
    con = connect(tmp_path, "256MB", 1)
    scan = EmbeddedScan(
        con, parse_principal("AKIAMALLORY000000001", ACCOUNT), START, END, tmp_path / "behind"
    )
    scan.scan([*files, *copies])  # the same batch
    scan.scan(copies)  # and a later one
    taken = {o["key"]: (o["reads"], o["bytes_out"]) for o in _rolled(con)}
    assert taken["llm-v3/a.bin"] == (1, 10 * MB) and taken["llm-v3/b.bin"] == (1, 20 * MB)


def test_inflate_holds_a_bounded_piece_whatever_a_chunk_inflates_to(tmp_path: Path) -> None:
    """One downloaded chunk can inflate to a thousand times its size; inflating it in
    pieces of at most PIECE bytes keeps each download thread's buffers small (large
    short-lived buffers in 8 threads grew glibc's per-thread arenas with the input:
    docs/benchmarks.md). Measured with tracemalloc: Python's allocations, bytes included."""
    import gzip
    import tracemalloc

    from clampdown_aws.forensics.trail_reader import PIECE

    raw = b'{"Records": []}' + b" " * (40 * 1024 * 1024)
    members = [gzip.compress(raw, 9), gzip.compress(b"\n", 9)]
    chunks = [b"".join(members)]  # ~40 KB in, 40 MB out, in one chunk
    out = tmp_path / "big.json"
    tracemalloc.start()
    try:
        inflate(chunks, out)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert out.stat().st_size == len(raw) + 1
    assert peak < 4 * PIECE, f"peak {peak:,} bytes while inflating"


# --- Athena: its SQL, run in DuckDB over a table of Athena's CloudTrail shape -------------------


def athena_table(con: Any) -> None:
    """``cloudtrail_logs`` as AWS's CREATE EXTERNAL TABLE defines it (the columns the scope
    reads), filled from the same records by a different path than the engine's; its
    database is attached as ``security``."""
    con.execute(
        """CREATE TABLE cloudtrail_logs (
          eventversion VARCHAR,
          useridentity STRUCT(type VARCHAR, principalid VARCHAR, arn VARCHAR, accountid VARCHAR,
            invokedby VARCHAR, accesskeyid VARCHAR, username VARCHAR,
            sessioncontext STRUCT(sessionissuer STRUCT(type VARCHAR, principalid VARCHAR,
              arn VARCHAR, accountid VARCHAR, username VARCHAR))),
          eventtime VARCHAR, eventsource VARCHAR, eventname VARCHAR, awsregion VARCHAR,
          sourceipaddress VARCHAR, useragent VARCHAR, errorcode VARCHAR, errormessage VARCHAR,
          requestparameters VARCHAR, responseelements VARCHAR, additionaleventdata VARCHAR,
          requestid VARCHAR, eventid VARCHAR, readonly VARCHAR, eventcategory VARCHAR,
          "timestamp" VARCHAR)"""
    )
    rows = []
    for key, body in delivered():
        day = key.split("/CloudTrail/")[1].split("/", 1)[1].rsplit("/", 1)[0]  # yyyy/MM/dd
        for r in json.loads(gzip.decompress(body))["Records"]:
            ui = r["userIdentity"]
            issuer = ui.get("sessionContext", {}).get("sessionIssuer")
            rows.append(
                (
                    r["eventVersion"],
                    {
                        "type": ui["type"],
                        "principalid": ui.get("principalId"),
                        "arn": ui.get("arn"),
                        "accountid": ui.get("accountId"),
                        "invokedby": None,
                        "accesskeyid": ui.get("accessKeyId"),
                        "username": ui.get("userName"),
                        "sessioncontext": {
                            "sessionissuer": {k.lower(): v for k, v in issuer.items()}
                        }
                        if issuer
                        else None,
                    },
                    r["eventTime"],
                    r["eventSource"],
                    r["eventName"],
                    r["awsRegion"],
                    r["sourceIPAddress"],
                    r["userAgent"],
                    r.get("errorCode"),
                    r.get("errorMessage"),
                    *(
                        json.dumps(r[f]) if r.get(f) is not None else None
                        for f in ("requestParameters", "responseElements", "additionalEventData")
                    ),
                    r["requestID"],
                    r["eventID"],
                    str(r["readOnly"]).lower(),
                    r["eventCategory"],
                    day,
                )
            )
    one = f"({', '.join('?' * len(rows[0]))})"
    for start in range(0, len(rows), 100):  # executemany: a statement per row, 40x slower
        chunk = rows[start : start + 100]
        con.execute(
            f"INSERT INTO cloudtrail_logs VALUES {', '.join([one] * len(chunk))}",
            [value for row in chunk for value in row],
        )


@pytest.fixture(scope="module")
def athena_database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The table, filled once for the module into a DuckDB file that each test attaches
    read-only as ``security``: no test can change what another one queries."""
    import duckdb

    path = tmp_path_factory.mktemp("athena") / "security.duckdb"
    con = duckdb.connect(str(path))
    try:
        athena_table(con)
    finally:
        con.close()
    yield path


def duckdb_as_athena(con: Any, seen: list[str]) -> Any:
    """A query function with AthenaRunner's shape, answering from DuckDB. The one rewrite:
    Presto spells a JSON key with hyphens ``$["k"]``, DuckDB ``$."k"``."""

    def query(sql: str) -> list[dict[str, str | None]]:
        seen.append(sql)
        cursor = con.execute(sql.replace('$["x-amz-copy-source"]', '$."x-amz-copy-source"'))
        names = [d[0] for d in cursor.description]
        return [
            {n: (None if v is None else str(v)) for n, v in zip(names, row, strict=True)}
            for row in cursor.fetchall()
        ]

    return query


@pytest.mark.parametrize(
    "principal",
    [
        "arn:aws:iam::123456789012:user/mallory",
        "AKIAMALLORY000000001",
        "exporter/hop1",
        "arn:aws:iam::123456789012:role/serving",
        "nobody",
    ],
)
def test_athena_sql_finds_what_the_embedded_engine_finds(
    tmp_path: Path, principal: str, athena_database: Path
) -> None:
    embedded = embedded_result(tmp_path / "embedded", principal)

    work = tmp_path / "athena"
    work.mkdir()
    scope = Scope(work, parse_principal(principal, ACCOUNT), START, END, MODELS, threads=1)
    table = connect(work, "256MB", 1)
    table.execute(f"ATTACH '{athena_database}' AS security (READ_ONLY)")
    seen: list[str] = []
    scope.athena(duckdb_as_athena(table, seen), "security", "cloudtrail_logs")
    athena = scope.result([])

    assert '"security"."cloudtrail_logs"' in seen[-1] and '"timestamp" BETWEEN' in seen[-1]
    for field in ("objects", "models", "totals", "management_events", "linked_credentials"):
        assert athena[field] == embedded[field], field
    assert athena["engine"] == "athena" and embedded["engine"] == "duckdb"
