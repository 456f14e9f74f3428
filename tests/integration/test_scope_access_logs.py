"""``aws.forensics.scope_exfiltration`` reading S3 server access logs too (moto).

The world: a multi-region trail; the model bucket ``models`` with server access logging to
``s3://access-logs/models/`` (files named ``models/YYYY-mm-DD-HH-MM-SS-<unique>`` as S3
names them); the serving role reading shards all along; the IAM user ``mallory`` reading
three shards, then assuming ``exporter`` whose session reads a fourth.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from clampdown.core.report_facts import ScopingResult
from clampdown.core.report_sections import html_scoping, md_scoping
from clampdown_aws.forensics import ScopeExfiltration
from clampdown_aws.testing import access_log_files as al
from clampdown_aws.testing import trail_files as tf
from tests.integration.moto_objects import put_objects
from tests.integration.shared_models import shared_service_models  # noqa: F401 - autouse

ACCOUNT = tf.ACCOUNT
START = datetime(2026, 11, 30, 0, 0, tzinfo=UTC)
END = START + timedelta(hours=6)
T0 = START.replace(tzinfo=None)
MALLORY = f"arn:aws:iam::{ACCOUNT}:user/mallory"
THIEF_KEY = "AKIAMALLORY000000001"
SESSION_KEY = "ASIAEXPORTER00000001"
SHARD = "llm-v3/shard-{:05d}.safetensors"
MODELS = [{"name": "llm-v3", "bucket": "models", "prefix": "llm-v3/"}]
MB = 1048576
LOG_DELIVERY = 'uri="http://acs.amazonaws.com/groups/s3/LogDelivery"'

mallory = tf.user("mallory", THIEF_KEY)
exporter = tf.session("exporter", "exfil", SESSION_KEY)


def theft() -> list[dict[str, Any]]:
    at = T0 + timedelta(hours=2)
    reads = [
        tf.s3_read(
            mallory,
            at + timedelta(minutes=m),
            "models",
            SHARD.format(n),
            size=n * MB,
            ip="203.0.113.9",
            seq=f"t{n}",
        )
        for m, n in ((1, 1), (2, 2), (3, 3))
    ]
    reads.append(
        tf.s3_read(
            mallory,
            at + timedelta(minutes=4),
            "models",
            SHARD.format(5),
            error="AccessDenied",
            ip="203.0.113.9",
            seq="denied",
        )
    )
    hop = tf.assume_role(
        mallory,
        at + timedelta(minutes=5),
        "exporter",
        "exfil",
        SESSION_KEY,
        ip="203.0.113.9",
        seq="a",
    )
    session_read = tf.s3_read(
        exporter,
        at + timedelta(minutes=7),
        "models",
        SHARD.format(4),
        size=4 * MB,
        ip="203.0.113.10",
        agent="rclone/v1.66",
        seq="t4",
    )
    return [*reads, hop, session_read]


def normal() -> list[dict[str, Any]]:
    return list(tf.Traffic(T0 - timedelta(hours=1), objects=8, every=30.0).records(8 * 120))


def selectors(data_events: bool) -> list[dict[str, Any]]:
    chosen = [
        {"Name": "mgmt", "FieldSelectors": [{"Field": "eventCategory", "Equals": ["Management"]}]}
    ]
    if data_events:
        chosen.append(
            {
                "Name": "model reads",
                "FieldSelectors": [
                    {"Field": "eventCategory", "Equals": ["Data"]},
                    {"Field": "resources.type", "Equals": ["AWS::S3::Object"]},
                    {"Field": "resources.ARN", "StartsWith": ["arn:aws:s3:::models/"]},
                ],
            }
        )
    return chosen


def build(data_events: bool, logging: bool = True) -> dict[str, Any]:
    """Trail files (S3 data events only when the selectors log them) and the access logs
    of every S3 request (S3 logs each one, whatever CloudTrail logs)."""
    from moto.cloudtrail.models import cloudtrail_backends

    s3 = boto3.client("s3", region_name="us-east-1")
    for bucket in ("trail-logs", "models", "access-logs"):
        s3.create_bucket(Bucket=bucket)
    s3.put_bucket_acl(Bucket="access-logs", GrantWrite=LOG_DELIVERY, GrantReadACP=LOG_DELIVERY)
    if logging:
        s3.put_bucket_logging(
            Bucket="models",
            BucketLoggingStatus={
                "LoggingEnabled": {"TargetBucket": "access-logs", "TargetPrefix": "models/"}
            },
        )
    cloudtrail = boto3.client("cloudtrail", region_name="us-east-1")
    cloudtrail.create_trail(Name="org-trail", S3BucketName="trail-logs", IsMultiRegionTrail=True)
    cloudtrail.start_logging(Name="org-trail")
    cloudtrail.put_event_selectors(
        TrailName="org-trail", AdvancedEventSelectors=selectors(data_events)
    )
    cloudtrail_backends[ACCOUNT]["us-east-1"].trails["org-trail"].status.started = datetime(
        2026, 1, 1
    )
    events = sorted([*normal(), *theft()], key=lambda r: r["eventTime"])
    logged = [r for r in events if data_events or r.get("eventCategory") != "Data"]
    put_objects("trail-logs", tf.deliver(logged))
    requests = [r for r in events if r["eventSource"] == "s3.amazonaws.com"]
    logs = al.deliver([al.from_cloudtrail(r) for r in requests], "models/")
    put_objects("access-logs", logs)
    return {"s3": s3, "logs": logs}


def scope(action_ctx: Any, **with_: Any) -> Any:
    action = ScopeExfiltration()
    params = action.Input(start=START, end=END, models=MODELS, **with_)
    return action.run(params, action_ctx)


def taken(out: Any) -> dict[str, tuple[int, int, list[str]]]:
    return {o.key: (o.reads, o.bytes_out, o.sources) for o in out.objects}


THEFT = {
    SHARD.format(1): (1, MB),
    SHARD.format(2): (1, 2 * MB),
    SHARD.format(3): (1, 3 * MB),
    SHARD.format(4): (1, 4 * MB),
}


def test_a_theft_seen_only_in_access_logs_is_found_and_the_blind_spot_still_said(
    mocked_aws: None, action_ctx: Any
) -> None:
    build(data_events=False)

    out = scope(action_ctx, principal=MALLORY)

    # found in the access logs found by GetBucketLogging; the session by its ARN
    assert taken(out) == {k: (*v, ["access_log"]) for k, v in THEFT.items()}
    assert out.access_log_locations == ["s3://access-logs/models/"]
    assert out.access_log_files_scanned >= 7 and out.access_log_records_scanned > 900
    assert out.linked_credentials == [SESSION_KEY]  # from CloudTrail's management events
    assert out.totals.objects == 4 and out.totals.bytes_out == 10 * MB
    assert out.totals.reads_by_source == {"cloudtrail_only": 0, "access_log_only": 4, "both": 0}
    assert out.totals.denied_events == 1
    assert out.totals.source_ips == ["203.0.113.10", "203.0.113.9"]
    assert out.models[0].objects == 4
    # CloudTrail's blind spot is still said, and the confidence says access logs are best-effort
    assert [s.kind for s in out.blind_spots] == ["data_events_off"]
    assert out.confidence == "low"
    assert "best-effort" in out.confidence_reason
    assert "silence proves nothing" in out.confidence_reason


def test_a_read_in_both_sources_counts_once(mocked_aws: None, action_ctx: Any) -> None:
    world = build(data_events=True, logging=False)
    # One more read only the access logs have (its CloudTrail record was never delivered).
    extra = al.record(
        T0 + timedelta(hours=3),
        "models",
        MALLORY,
        "ONLYINACCESSLOG1",
        key=SHARD.format(6),
        bytes_sent=6 * MB,
        ip="203.0.113.9",
    )
    world["s3"].put_object(
        Bucket="access-logs",
        Key=al.log_key("models/", T0 + timedelta(hours=4), "EXTRA000000000001"),
        Body=(extra + "\n").encode(),
    )

    out = scope(
        action_ctx,
        principal=MALLORY,
        access_logs=["s3://access-logs/models/"],
        discover_access_logs=False,
    )

    both = ["access_log", "cloudtrail"]
    assert taken(out) == {
        **{k: (*v, both) for k, v in THEFT.items()},
        SHARD.format(6): (1, 6 * MB, ["access_log"]),
    }
    assert out.totals.bytes_out == 16 * MB
    assert out.totals.reads_by_source == {"cloudtrail_only": 0, "access_log_only": 1, "both": 4}
    assert out.blind_spots == [] and out.confidence == "high"
    assert "best-effort" in out.confidence_reason

    without = scope(action_ctx, principal=MALLORY, discover_access_logs=False)
    assert {o.key: (o.reads, o.bytes_out) for o in without.objects} == THEFT
    assert without.access_log_locations == [] and "best-effort" not in without.confidence_reason

    # The incident report's scoping section says which sources were read and what each saw
    # (a read in both sources counts in both rows).
    trail = out.trail
    assert sources_read(out) == [
        ("CloudTrail (S3 data and management events)", trail, out.files_scanned, 4),
        ("S3 server access logs", "s3://access-logs/models/", out.access_log_files_scanned, 5),
    ]
    assert out.files_scanned > 0 and out.access_log_files_scanned > 0
    report = md_scoping([ScopingResult("scope", ScopeExfiltration.name, dumped(out))])
    assert (
        f"| S3 server access logs | s3://access-logs/models/ | {out.access_log_files_scanned} "
        f"| {out.access_log_records_scanned} | 5 |" in report
    )
    html = html_scoping([ScopingResult("scope", ScopeExfiltration.name, dumped(out))])
    assert 'id="scoping-sources"' in html and "s3://access-logs/models/" in html
    assert sources_read(without) == [
        ("CloudTrail (S3 data and management events)", trail, without.files_scanned, 4),
        ("S3 server access logs", NOT_READ, 0, "—"),
    ]


NOT_READ = (
    "not read: no location (none in access_logs; none found by GetBucketLogging, "
    "or discovery turned off)"
)


def dumped(out: Any) -> dict[str, Any]:
    """The outputs as the run's ledger records them (JSON)."""
    return json.loads(out.model_dump_json())


def sources_read(out: Any) -> list[tuple[Any, ...]]:
    rows = ScopingResult("scope", ScopeExfiltration.name, dumped(out)).sources
    return [(r["source"], r["read from"], r["files"], r["object reads seen"]) for r in rows]


def test_malformed_lines_and_missing_logs_are_reported_not_fatal(
    mocked_aws: None, action_ctx: Any
) -> None:
    world = build(data_events=False)
    first = next(iter(world["logs"]))
    body = world["logs"][first].decode().splitlines()
    body[1:1] = ["this is not an access log record", body[0][:60]]
    world["s3"].put_object(Bucket="access-logs", Key=first, Body="\n".join(body).encode())

    out = scope(action_ctx, principal=MALLORY, access_logs=["s3://no-such-log-bucket/x/"])

    assert taken(out) == {k: (*v, ["access_log"]) for k, v in THEFT.items()}
    details = {s.kind: s.detail for s in out.blind_spots if s.kind != "data_events_off"}
    assert details["malformed_file"] == (
        f"s3://access-logs/{first}: 2 line(s) not in the S3 server access log format "
        "(first at line 2), skipped"
    )
    assert details["access_logs_missing"].startswith(
        "server access logs at s3://no-such-log-bucket/x/ (from the access_logs input) "
        "cannot be listed (NoSuchBucket)"
    )
    assert out.confidence == "low"  # data events are off


def test_access_key_suspect_cannot_be_matched_in_access_logs(
    mocked_aws: None, action_ctx: Any
) -> None:
    build(data_events=False)
    out = scope(action_ctx, principal=THIEF_KEY)
    # only the session it created is attributable (by the session's ARN)
    assert taken(out) == {SHARD.format(4): (1, 4 * MB, ["access_log"])}
    spot = next(s for s in out.blind_spots if s.kind == "access_logs_unattributable")
    assert THIEF_KEY in spot.detail and "not the access key id" in spot.detail


def test_access_logs_input_must_be_an_s3_uri() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="is not s3://bucket/prefix/"):
        ScopeExfiltration.Input(principal=MALLORY, access_logs=["access-logs/models/"])
