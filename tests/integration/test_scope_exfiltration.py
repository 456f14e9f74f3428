"""``aws.forensics.scope_exfiltration`` on moto: trail files in AWS's delivery layout.

The world: a multi-region trail logging S3 data events for the model bucket, six hours
of normal traffic (the serving role reading model shards), and a theft by the IAM user
``mallory``: three shards read directly (one twice, one by version), a bucket policy
read, then an AssumeRole into ``exporter`` whose session reads a fourth shard from
another IP. Around it: a denied read, a read before the window, a read of another bucket.

The normal traffic is a read every 20 minutes in us-east-1 and every 40 in us-west-2:
~40 trail files. (At one every 30 s it was ~190 files, one per region and 5-minute slot,
and each scope took 2.5 times the CPU, for the same assertions: every hour still has
files in both regions, the serving role still reads all eight shards in the window, and
the theft's first file still holds a read of the serving role.) The scope reads files in
batches of at most 32 (``trail_reader.BATCH_FILES``): here of 8, so that the window's
~32 files are still read in several batches, as the ~160 were.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from pydantic import ValidationError

from clampdown_aws.forensics import ScopeExfiltration
from clampdown_aws.forensics.exfiltration import TrailMissing
from clampdown_aws.forensics.trail_reader import delivered_at
from clampdown_aws.testing import trail_files as tf
from tests.integration.moto_objects import put_objects
from tests.integration.shared_models import shared_service_models  # noqa: F401 - autouse

ACCOUNT = "123456789012"
START = datetime(2026, 11, 30, 0, 0, tzinfo=UTC)
END = START + timedelta(hours=6)
T0 = START.replace(tzinfo=None)
THIEF_KEY = "AKIAMALLORY000000001"
SESSION_KEY = "ASIAEXPORTER00000001"
SHARD = "llm-v3/shard-{:05d}.safetensors"
MODELS = [{"name": "llm-v3", "bucket": "models", "prefix": "llm-v3/"}]
MB = 1048576

mallory = tf.user("mallory", THIEF_KEY)
exporter = tf.session("exporter", "exfil", SESSION_KEY)


def theft() -> list[dict[str, Any]]:
    """The thief's records (and the noise around them the scope must leave out)."""
    at = T0 + timedelta(hours=2)
    ip, ip2 = "203.0.113.9", "203.0.113.10"
    return [
        tf.management(
            mallory,
            at,
            "s3.amazonaws.com",
            "GetBucketPolicy",
            {"bucketName": "models", "policy": ""},
            ip=ip,
            seq="p",
        ),
        tf.s3_read(
            mallory, at + timedelta(minutes=1), "models", None, name="ListObjectsV2", ip=ip, seq="l"
        ),
        tf.s3_read(
            mallory,
            at + timedelta(minutes=2),
            "models",
            SHARD.format(1),
            size=300 * MB,
            ip=ip,
            seq=1,
        ),
        tf.s3_read(
            mallory,
            at + timedelta(minutes=3),
            "models",
            SHARD.format(1),
            size=300 * MB,
            ip=ip,
            seq=2,
        ),
        tf.s3_read(
            mallory,
            at + timedelta(minutes=4),
            "models",
            SHARD.format(2),
            size=200 * MB,
            version_id="3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY",
            ip=ip,
            seq=3,
        ),
        tf.s3_read(
            mallory,
            at + timedelta(minutes=5),
            "models",
            SHARD.format(3),
            error="AccessDenied",
            ip=ip,
            seq=4,
        ),
        tf.s3_read(
            mallory,
            at + timedelta(minutes=6),
            "datasets",
            "train/part-0.parquet",
            size=5 * MB,
            ip=ip,
            seq=5,
        ),
        tf.assume_role(
            mallory, at + timedelta(minutes=7), "exporter", "exfil", SESSION_KEY, ip=ip, seq="a"
        ),
        tf.s3_read(
            exporter,
            at + timedelta(minutes=9),
            "models",
            SHARD.format(4),
            size=400 * MB,
            ip=ip2,
            agent="rclone/v1.66",
            region="us-west-2",
            seq=6,
        ),
        # before the window: not counted
        tf.s3_read(
            mallory, T0 - timedelta(minutes=30), "models", SHARD.format(9), size=MB, ip=ip, seq=7
        ),
    ]


@functools.cache
def delivered() -> dict[str, bytes]:
    """The trail files of :func:`normal` and :func:`theft`, built once per module (the same
    bytes every time: seeded traffic, gzip's mtime 0); tests get a copy of the mapping."""
    return tf.deliver(sorted([*normal(), *theft()], key=lambda r: r["eventTime"]))


def normal() -> list[dict[str, Any]]:
    """The serving role reading the same shards all day, in both regions: every hour of
    the window has files in each (no trail gap), all eight shards are read in it."""
    east = tf.Traffic(T0 - timedelta(hours=1), objects=8, every=1200.0).records(8 * 3)
    west = tf.Traffic(T0 - timedelta(hours=1), objects=8, every=2400.0, region="us-west-2", seed=3)
    return [*east, *west.records(8 * 3 // 2)]


def advanced_selectors(bucket_prefix: str = "arn:aws:s3:::models/") -> list[dict[str, Any]]:
    """What docs/scoping.md tells an operator to paste: management events, and object
    reads and writes on the model bucket."""
    return [
        {
            "Name": "Management events",
            "FieldSelectors": [{"Field": "eventCategory", "Equals": ["Management"]}],
        },
        {
            "Name": "Model bucket object reads",
            "FieldSelectors": [
                {"Field": "eventCategory", "Equals": ["Data"]},
                {"Field": "resources.type", "Equals": ["AWS::S3::Object"]},
                {"Field": "resources.ARN", "StartsWith": [bucket_prefix]},
            ],
        },
    ]


@pytest.fixture
def world(mocked_aws: None, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Trail, buckets, evidence bucket with Object Lock; files delivered in AWS's layout."""
    from moto.cloudtrail.models import cloudtrail_backends

    from clampdown_aws.forensics import trail_reader

    monkeypatch.setattr(trail_reader, "BATCH_FILES", 8)  # several batches (see above)
    monkeypatch.setenv("CLAMPDOWN_EVIDENCE_BUCKET", "evidence")
    s3 = boto3.client("s3", region_name="us-east-1")
    for bucket in ("trail-logs", "models", "athena-results"):
        s3.create_bucket(Bucket=bucket)
    s3.create_bucket(Bucket="evidence", ObjectLockEnabledForBucket=True)
    cloudtrail = boto3.client("cloudtrail", region_name="us-east-1")
    cloudtrail.create_trail(Name="org-trail", S3BucketName="trail-logs", IsMultiRegionTrail=True)
    cloudtrail.start_logging(Name="org-trail")
    cloudtrail.put_event_selectors(
        TrailName="org-trail", AdvancedEventSelectors=advanced_selectors()
    )
    # The trail has logged since long before the window (moto records "now" as its start).
    trail = cloudtrail_backends[ACCOUNT]["us-east-1"].trails["org-trail"]
    trail.status.started = datetime(2026, 1, 1)
    files = dict(delivered())
    put_objects("trail-logs", files)
    return {"s3": s3, "cloudtrail": cloudtrail, "files": files}


def scope(action_ctx: Any, **with_: Any) -> Any:
    action = ScopeExfiltration()
    params = action.Input(start=START, end=END, models=MODELS, **with_)
    return action.run(params, action_ctx)


def objects_of(out: Any) -> set[tuple[str | None, str, str | None, int, int]]:
    return {(o.bucket, o.key, o.version_id, o.reads, o.bytes_out) for o in out.objects}


def test_theft_among_normal_traffic_is_found_exactly(
    world: dict[str, Any], action_ctx: Any
) -> None:
    out = scope(action_ctx, principal=f"arn:aws:iam::{ACCOUNT}:user/mallory")

    assert objects_of(out) == {
        ("models", SHARD.format(4), None, 1, 400 * MB),
        ("models", SHARD.format(1), None, 2, 600 * MB),
        ("models", SHARD.format(2), "3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY", 1, 200 * MB),
        ("datasets", "train/part-0.parquet", None, 1, 5 * MB),
    }
    assert [o.key for o in out.objects][:2] == [SHARD.format(1), SHARD.format(4)]  # bytes first
    shard4 = next(o for o in out.objects if o.key == SHARD.format(4))
    assert shard4.source_ips == ["203.0.113.10"] and shard4.user_agents == ["rclone/v1.66"]
    assert out.models[0].model_dump() == {
        "model": "llm-v3",
        "bucket": "models",
        "prefix": "llm-v3/",
        "objects": 3,
        "bytes_out": 1200 * MB,
        "first_access": "2026-11-30T02:02:00Z",
        "last_access": "2026-11-30T02:09:00Z",
    }
    assert out.totals.objects == 4 and out.totals.bytes_out == 1205 * MB
    assert out.totals.source_ips == ["203.0.113.10", "203.0.113.9"]
    assert out.totals.denied_events == 1
    assert out.totals.first_access == "2026-11-30T02:01:00Z"  # the listing
    assert [(m.event_name, m.time) for m in out.management_events] == [
        ("GetBucketPolicy", "2026-11-30T02:00:00Z"),
        ("AssumeRole", "2026-11-30T02:07:00Z"),
    ]
    assert SESSION_KEY in out.management_events[1].detail
    assert out.linked_credentials == [SESSION_KEY]
    assert (out.window_start, out.window_end) == ("2026-11-30T00:00:00Z", "2026-11-30T06:00:00Z")
    assert out.blind_spots == [] and out.confidence == "high", out.blind_spots
    read = {
        k: b
        for k, b in world["files"].items()
        if START <= delivered_at(k) <= END + timedelta(minutes=30)
    }
    assert out.engine == "duckdb" and out.files_scanned == len(read) < len(world["files"])
    assert out.records_scanned == sum(
        len(json.loads(gzip.decompress(b))["Records"]) for b in read.values()
    )
    assert "4 object(s)" in out.summary

    # The full result is in the evidence bucket, hashed as the outputs say.
    assert out.results_uri.startswith("s3://evidence/incidents/testrun0001/step/")
    body = (
        world["s3"]
        .get_object(Bucket="evidence", Key=out.results_uri.split("/", 3)[3])["Body"]
        .read()
    )
    assert hashlib.sha256(body).hexdigest() == out.results_sha256
    assert len(json.loads(body)["objects"]) == 4


def test_outputs_are_bounded_and_the_full_list_is_in_the_result(
    world: dict[str, Any], action_ctx: Any
) -> None:
    out = scope(action_ctx, principal=f"arn:aws:iam::{ACCOUNT}:user/mallory", max_objects=1)
    assert [o.key for o in out.objects] == [SHARD.format(1)]
    assert out.objects_total == 4 and out.objects_truncated


def test_access_key_id_as_principal(world: dict[str, Any], action_ctx: Any) -> None:
    out = scope(action_ctx, principal=THIEF_KEY)
    assert {o.key for o in out.objects} == {SHARD.format(i) for i in (1, 2, 4)} | {
        "train/part-0.parquet"
    }


def test_role_session_as_principal_finds_only_that_session(
    world: dict[str, Any], action_ctx: Any
) -> None:
    out = scope(action_ctx, principal="exporter/exfil")
    assert objects_of(out) == {("models", SHARD.format(4), None, 1, 400 * MB)}
    assert out.management_events == []


def test_serving_role_traffic_is_its_own(world: dict[str, Any], action_ctx: Any) -> None:
    out = scope(action_ctx, principal=f"arn:aws:iam::{ACCOUNT}:role/serving")
    assert out.totals.source_ips and all(ip.startswith("10.0.") for ip in out.totals.source_ips)
    assert out.models[0].objects == 8


def test_principal_with_no_reads_gives_an_explicit_empty_result(
    world: dict[str, Any], action_ctx: Any
) -> None:
    out = scope(action_ctx, principal=f"arn:aws:iam::{ACCOUNT}:user/bob")
    assert out.objects == [] and out.totals.objects == 0 and out.totals.bytes_out == 0
    assert out.models[0].objects == 0
    assert out.confidence == "high"
    assert (
        out.summary
        == f"IAM user arn:aws:iam::{ACCOUNT}:user/bob: no reads by this principal in the window"
    )


def test_data_events_off_and_a_missing_hour_are_blind_spots_not_nothing_taken(
    world: dict[str, Any], action_ctx: Any
) -> None:
    s3, cloudtrail = world["s3"], world["cloudtrail"]
    cloudtrail.put_event_selectors(
        TrailName="org-trail", AdvancedEventSelectors=advanced_selectors()[:1]
    )
    hour = "20261130T03"
    for key in world["files"]:
        if "us-east-1" in key and f"_{hour}" in key:
            s3.delete_object(Bucket="trail-logs", Key=key)

    out = scope(action_ctx, principal=f"arn:aws:iam::{ACCOUNT}:user/bob")

    kinds = [s.kind for s in out.blind_spots]
    assert kinds.count("data_events_off") == 1 and "llm-v3" in out.blind_spots[0].detail
    gap = [s.detail for s in out.blind_spots if s.kind == "trail_gap"]
    assert gap == [
        "no trail files for us-east-1 from 2026-11-30T03:00:00Z to 2026-11-30T04:00:00Z: calls in that time may be missing"
    ]
    assert out.confidence == "low"
    assert "does not show that nothing was taken" in out.summary


def test_malformed_and_truncated_files_are_reported_and_skipped(
    world: dict[str, Any], action_ctx: Any
) -> None:
    s3 = world["s3"]
    day = "AWSLogs/123456789012/CloudTrail/us-east-1/2026/11/30/"
    truncated = f"{day}123456789012_CloudTrail_us-east-1_20261130T0105Z_TRUNCATED0000001.json.gz"
    broken = f"{day}123456789012_CloudTrail_us-east-1_20261130T0110Z_BROKENJSON000001.json.gz"
    no_records = f"{day}123456789012_CloudTrail_us-east-1_20261130T0115Z_NORECORDS0000001.json.gz"
    whole = next(iter(world["files"].values()))
    s3.put_object(Bucket="trail-logs", Key=truncated, Body=whole[: len(whole) // 2])
    s3.put_object(
        Bucket="trail-logs", Key=broken, Body=gzip.compress(b'{"Records": [{"eventName": ')
    )
    s3.put_object(Bucket="trail-logs", Key=no_records, Body=gzip.compress(b'{"Digest": true}'))

    out = scope(action_ctx, principal=f"arn:aws:iam::{ACCOUNT}:user/mallory")

    bad = sorted(s.detail for s in out.blind_spots if s.kind == "malformed_file")
    assert len(bad) == 3
    assert any("BROKENJSON" in d and "JSON" in d for d in bad)
    assert any("TRUNCATED" in d and "GZIP" in d.upper() for d in bad)
    assert any("NORECORDS" in d and "no Records" in d for d in bad)
    assert out.totals.objects == 4  # the theft is still found in the readable files
    assert out.confidence == "medium"


def test_trail_started_inside_the_window_is_not_covered(
    world: dict[str, Any], action_ctx: Any
) -> None:
    from moto.cloudtrail.models import cloudtrail_backends

    cloudtrail_backends[ACCOUNT]["us-east-1"].trails["org-trail"].status.started = datetime(
        2026, 11, 30, 2, 0
    )
    out = scope(action_ctx, principal=f"arn:aws:iam::{ACCOUNT}:user/bob")
    assert [s.kind for s in out.blind_spots] == ["window_not_covered"]
    assert "2026-11-30T00:00:00Z to 2026-11-30T02:00:00Z" in out.blind_spots[0].detail
    assert out.confidence == "low"


def test_without_an_evidence_bucket_the_result_goes_to_the_run_folder(
    world: dict[str, Any], action_ctx: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CLAMPDOWN_EVIDENCE_BUCKET")
    out = scope(action_ctx, principal=THIEF_KEY)
    path = action_ctx.run_dir / "step" / "exfiltration-scope.json"
    assert out.results_uri == path.as_uri()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == out.results_sha256


def test_no_trail_is_a_clear_error(mocked_aws: None, action_ctx: Any) -> None:
    with pytest.raises(TrailMissing, match="no CloudTrail trail in us-east-1 delivers to S3"):
        scope(action_ctx, principal=THIEF_KEY)


def test_bad_inputs_say_what_to_do() -> None:
    with pytest.raises(ValidationError, match="engine athena needs athena_database"):
        ScopeExfiltration.Input(principal=THIEF_KEY, engine="athena")
    with pytest.raises(ValidationError, match="start must be before end"):
        ScopeExfiltration.Input(principal=THIEF_KEY, start=END, end=START)
    with pytest.raises(ValidationError, match="principal"):
        ScopeExfiltration.Input(principal="mallory'; DROP TABLE x")


# --- Athena: the plumbing against moto (moto returns results queued by the test) -------------


def _result(columns: list[str], rows: list[list[str | None]]) -> Any:
    from moto.athena.models import QueryResults

    def row(values: list[str | None]) -> dict[str, Any]:
        return {"Data": [{"VarCharValue": v} if v is not None else {} for v in values]}

    return QueryResults(
        rows=[row(list(columns)), *(row(r) for r in rows)],
        column_info=[{"Name": c, "Type": "varchar"} for c in columns],
    )


def test_athena_engine_queries_and_rolls_up(world: dict[str, Any], action_ctx: Any) -> None:
    from moto.athena.models import athena_backends

    from clampdown_aws.forensics.sql import NARROW_COLUMNS

    backend = athena_backends[ACCOUNT]["us-east-1"]
    hit = dict.fromkeys(NARROW_COLUMNS)
    hit.update(
        eventid="e1",
        eventtime="2026-11-30T02:02:00Z",
        eventsource="s3.amazonaws.com",
        eventname="GetObject",
        source_ip="203.0.113.9",
        bucket="models",
        object_key=SHARD.format(1),
        bytes_out="314572800.0",
        access_key_id=SESSION_KEY,
    )
    backend.query_results_queue.extend(
        [
            _result(["minted_key"], [[SESSION_KEY]]),  # round 1: the suspect minted a key
            _result(["minted_key"], [[SESSION_KEY]]),  # round 2: nothing new
            _result(list(NARROW_COLUMNS), [[hit[c] for c in NARROW_COLUMNS]]),
        ]
    )
    out = scope(
        action_ctx,
        principal=THIEF_KEY,
        engine="athena",
        athena_database="security",
        athena_table="cloudtrail_logs",
        athena_output="s3://athena-results/clampdown/",
    )
    assert out.engine == "athena"
    assert objects_of(out) == {("models", SHARD.format(1), None, 1, 300 * MB)}
    assert out.linked_credentials == [SESSION_KEY]
    queries = [e.query for e in backend.executions.values()]
    assert len(queries) == 3
    assert f"access_key_id = '{THIEF_KEY}'" in queries[0]
    assert f"access_key_id IN ('{SESSION_KEY}')" in queries[2]
    assert '"security"."cloudtrail_logs"' in queries[2]
    assert "\"timestamp\" BETWEEN '2026/11/30' AND '2026/12/01'" in queries[2]
    assert all(
        e.workgroup is None or e.workgroup.name == "primary" for e in backend.executions.values()
    )
    assert out.files_scanned == 0 and out.confidence == "high"


def test_single_region_trail_and_a_region_without_files_are_blind_spots(
    world: dict[str, Any], action_ctx: Any
) -> None:
    world["cloudtrail"].update_trail(Name="org-trail", IsMultiRegionTrail=False)
    out = scope(
        action_ctx,
        principal=f"arn:aws:iam::{ACCOUNT}:user/mallory",
        regions=["us-east-1", "eu-west-1"],
    )
    spots = [(s.kind, s.detail) for s in out.blind_spots]
    assert spots == [
        (
            "region_not_logged",
            "trail org-trail logs only us-east-1: calls in other regions (S3 buckets there included) are not in its files",
        ),
        ("region_not_logged", "no log files at all for region eu-west-1"),
    ]
    assert out.confidence == "medium"
    # only us-east-1's files were read: the session's read in us-west-2 is not seen
    assert SHARD.format(4) not in {o.key for o in out.objects} and out.totals.objects == 3


def test_athena_rows_load_into_hits_row_for_row_with_their_types() -> None:
    """Athena's rows, loaded column by column in one statement, are the same rows in the
    same order: blanks are NULL, ``bytes_out`` a number (NULL when not one)."""
    import duckdb

    from clampdown_aws.forensics.rollup import load_hits
    from clampdown_aws.forensics.sql import NARROW_COLUMNS

    rows: list[dict[str, str | None]] = []
    for n in range(2500):
        row: dict[str, str | None] = {c: f"{c}-{n}" for c in NARROW_COLUMNS}
        row["bytes_out"] = ("x" if n % 7 == 0 else str(n * 1.5)) if n % 5 else None
        row["source_ip"] = "" if n % 3 == 0 else f"203.0.113.{n % 250}"
        rows.append(row)
    con = duckdb.connect()
    load_hits(con, rows)
    got = con.execute(f"SELECT {', '.join(NARROW_COLUMNS)} FROM hits").fetchall()
    expected = []
    for n, row in enumerate(rows):
        values = dict(row)
        values["source_ip"] = row["source_ip"] or None
        values["bytes_out"] = None if n % 5 == 0 or n % 7 == 0 else n * 1.5
        expected.append(tuple(values[c] for c in NARROW_COLUMNS))
    assert got == expected
    empty = duckdb.connect()
    load_hits(empty, [])
    assert empty.execute("SELECT count(*) FROM hits").fetchone() == (0,)
