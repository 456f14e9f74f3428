"""Evidence snapshots on moto (in-process and server): CloudTrail files and log groups.

moto 5.2 does not implement CloudTrail ``LookupEvents`` (in-process: NotImplementedError;
server: HTTP 500). Tests that exercise it answer that one operation with botocore's
Stubber and say so in their names (``..._stubbed_lookup_events``); every other call of
the same client (DescribeTrails) and all of S3 and CloudWatch Logs go to moto.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import re
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.stub import Stubber
from pydantic import ValidationError

from clampdown_aws import evidence, evidence_cloudtrail, evidence_log_group
from clampdown_aws.base import Aws, AwsAccessDenied, AwsActionError
from clampdown_aws.evidence import EvidenceBucketMissing, gzip_json_lines
from clampdown_aws.evidence_cloudtrail import (
    CloudTrailEvidenceMissing,
    SnapshotCloudTrail,
    TrailNotFound,
)
from clampdown_aws.evidence_log_group import ExportTaskBusy, LogGroupNotFound, SnapshotLogGroup
from clampdown_aws.evidence_store import verify_manifest
from tests.integration.shared_models import shared_service_models  # noqa: F401 - autouse

ACCOUNT = "123456789012"
RUN = "incidents/testrun0001"
PRINCIPAL = f"arn:aws:iam::{ACCOUNT}:user/ml/alice"
KEY_ID = "AKIAEXAMPLEKEY000001"
NOW = datetime(2026, 3, 10, 6, 0, tzinfo=UTC)  # the fixed clock of the CloudTrail tests
START = NOW - timedelta(hours=12)  # lookback_hours=12: 2026-03-09T18:00Z .. 2026-03-10T06:00Z


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(params=["in_process", "server"])
def aws(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str | None:
    """moto in-process (None) or the moto server's URL; evidence goes to a locked bucket."""
    endpoint = None
    if request.param == "in_process":
        request.getfixturevalue("mocked_aws")
    else:
        endpoint = request.getfixturevalue("aws_endpoint")
    monkeypatch.setenv("CLAMPDOWN_EVIDENCE_BUCKET", "evidence")
    monkeypatch.setenv("CLAMPDOWN_EVIDENCE_RETENTION_DAYS", "7")
    monkeypatch.setenv("CLAMPDOWN_EVIDENCE_LOCK_MODE", "GOVERNANCE")  # default: COMPLIANCE
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="evidence", ObjectLockEnabledForBucket=True)
    s3.create_bucket(Bucket="plain-evidence")
    return endpoint


@pytest.fixture
def s3(aws: str | None) -> Any:
    return boto3.client("s3", region_name="us-east-1")


@pytest.fixture(autouse=True)
def no_retry_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retries still happen (standard mode decides them); only the back-off wait is zero."""
    from botocore.retries.standard import ExponentialBackoff

    monkeypatch.setattr(ExponentialBackoff, "delay_amount", lambda self, context: 0)


@pytest.fixture
def client_hooks(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Callable[[Any], None]]]:
    """Per-service callbacks run on every client the actions create (to stub or fault it)."""
    hooks: dict[str, list[Callable[[Any], None]]] = {}
    original = Aws.client

    def client(self: Aws, service: str) -> Any:
        made = original(self, service)
        for hook in hooks.get(service, []):
            hook(made)
        return made

    monkeypatch.setattr(Aws, "client", client)
    return hooks


def _event_prefix(client: Any) -> str:
    return client.meta.service_model.service_id.hyphenize()


def stub_operation(client: Any, operation: str) -> Stubber:
    """A Stubber that answers only ``operation``; the client's other calls reach moto.

    ``Stubber.activate`` would capture every operation of the client; registering its two
    handlers for one operation keeps its parameter and response validation.
    """
    stubber = Stubber(client)
    events, service = client.meta.events, _event_prefix(client)
    events.register_first(
        f"before-parameter-build.{service}.{operation}", stubber._assert_expected_params
    )
    events.register(f"before-call.{service}.{operation}", stubber._get_response_handler)
    return stubber


class _Raw:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.body


def fail_first_send(
    client: Any, operation: str, status: int, error: dict[str, str], times: int = 1
) -> list[str]:
    """The first ``times`` HTTP requests of ``operation`` get an AWS JSON error; later ones
    reach moto. The error goes through botocore's parser and retry handler, as AWS's would.
    Returns the list of attempts (one entry per request sent).
    """
    attempts: list[str] = []

    def send(request: Any, **_: Any) -> AWSResponse | None:
        attempts.append(request.url)
        if len(attempts) > times:
            return None
        body = json.dumps(error).encode()
        headers = {"Content-Type": "application/x-amz-json-1.1", "x-amzn-RequestId": "fault"}
        return AWSResponse(request.url, status, headers, _Raw(body))

    client.meta.events.register_first(f"before-send.{_event_prefix(client)}.{operation}", send)
    return attempts


def read_gz_lines(s3: Any, key: str, bucket: str = "evidence") -> list[dict[str, Any]]:
    body = gzip.decompress(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    return [json.loads(line) for line in body.decode().splitlines()]


def manifest_keys(s3: Any, uri: str) -> list[str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    return [entry["key"] for entry in manifest["objects"]]


def keys_under(s3: Any, prefix: str, bucket: str = "evidence") -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


def assert_locked(s3: Any, key: str) -> None:
    head = s3.head_object(Bucket="evidence", Key=key)
    assert head["ObjectLockMode"] == "GOVERNANCE"
    days = (head["ObjectLockRetainUntilDate"] - datetime.now(UTC)).days
    assert 6 <= days <= 7  # CLAMPDOWN_EVIDENCE_RETENTION_DAYS=7


@contextlib.contextmanager
def iam_enforced(
    endpoint: str | None, monkeypatch: pytest.MonkeyPatch, allow: dict[str, list[str]]
) -> Iterator[str]:
    """Run as an IAM user allowed only ``allow`` (action -> resources), with moto enforcing
    IAM (S3 only: see the module docstring); yields the user's ARN."""
    iam = boto3.client("iam", region_name="us-east-1")
    user = iam.create_user(UserName="responder")["User"]
    statements = [
        {"Effect": "Allow", "Action": action, "Resource": resources}
        for action, resources in allow.items()
    ]
    policy = {"Version": "2012-10-17", "Statement": statements}
    iam.put_user_policy(UserName="responder", PolicyName="only", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName="responder")["AccessKey"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_SECURITY_TOKEN", raising=False)
    if endpoint is None:
        from moto.core import enable_iam_authentication

        with enable_iam_authentication():
            yield user["Arn"]
        return

    def reset_auth(count: str) -> str:
        # Not form-encoded (urllib's default): moto reads the raw body.
        request = urllib.request.Request(
            f"{endpoint}/moto-api/reset-auth",
            data=count.encode(),
            method="POST",
            headers={"Content-Type": "text/plain"},
        )
        with urllib.request.urlopen(request) as response:
            return json.loads(response.read())["PREVIOUS_INITIAL_NO_AUTH_ACTION_COUNT"]

    previous = reset_auth("0")
    try:
        yield user["Arn"]
    finally:
        reset_auth(previous)


# --- CloudTrail ----------------------------------------------------------------------------


def ct_key(folder: str, region: str, stamp: str, account: str = ACCOUNT) -> str:
    """A delivery file's key as CloudTrail writes it (``stamp``: YYYYMMDDTHHMM, UTC)."""
    day = f"{stamp[:4]}/{stamp[4:6]}/{stamp[6:8]}"
    if folder == "CloudTrail":
        name = f"{account}_CloudTrail_{region}_{stamp}Z_{stamp[-4:]}abcd.json.gz"
    else:
        name = f"{account}_CloudTrail-Digest_{region}_main_{region}_{stamp}Z.json.gz"
    return f"ct/AWSLogs/{account}/{folder}/{region}/{day}/{name}"


IN_WINDOW = sorted(
    [
        ct_key("CloudTrail", "us-east-1", "20260309T1805"),  # just after the start
        ct_key("CloudTrail", "us-east-1", "20260310T0555"),  # just before the end
        ct_key("CloudTrail", "eu-west-1", "20260310T0100"),  # another region (multi-region)
        ct_key("CloudTrail-Digest", "us-east-1", "20260310T0300"),  # digest file
    ]
)
OUT_OF_WINDOW = [
    ct_key("CloudTrail", "us-east-1", "20260309T1750"),  # same day folder, before the start
    ct_key("CloudTrail", "us-east-1", "20260308T2300"),  # day folder outside the window
    ct_key("CloudTrail", "eu-west-1", "20260310T0610"),  # after the end
    ct_key("CloudTrail", "us-east-1", "20260310T0300", account="999999999999"),  # other account
]
TRAIL_ARN = f"arn:aws:cloudtrail:us-east-1:{ACCOUNT}:trail/main"
COPIED = f"{RUN}/step/cloudtrail/trail-bucket/"
LOOKUP_KEY = f"{RUN}/step/cloudtrail-lookup-events.jsonl.gz"


def seed_trail(s3: Any) -> dict[str, bytes]:
    """A multi-region trail and its bucket with files in and out of the window."""
    s3.create_bucket(Bucket="trail-bucket")
    boto3.client("cloudtrail", region_name="us-east-1").create_trail(
        Name="main", S3BucketName="trail-bucket", S3KeyPrefix="ct", IsMultiRegionTrail=True
    )
    bodies = {}
    for key in IN_WINDOW + OUT_OF_WINDOW:
        records = {"Records": [{"eventID": key.rsplit("/", 1)[-1], "noise": os.urandom(8).hex()}]}
        bodies[key] = gzip.compress(json.dumps(records).encode())
        s3.put_object(Bucket="trail-bucket", Key=key, Body=bodies[key])
    return bodies


def trail_event(event_id: str, user: str) -> dict[str, Any]:
    return {
        "EventId": event_id,
        "EventName": "GetObject",
        "EventTime": NOW - timedelta(hours=1),
        "EventSource": "s3.amazonaws.com",
        "Username": user,
        "AccessKeyId": KEY_ID,
        "CloudTrailEvent": json.dumps({"eventID": event_id, "userIdentity": {"userName": user}}),
    }


def add_lookup_pages(stubber: Stubber, username: str | None = "alice", key: bool = True) -> None:
    """LookupEvents as AWS pages it: two pages for the user, one for the key."""
    base = {"StartTime": START, "EndTime": NOW, "MaxResults": 50}
    by_user = [{"AttributeKey": "Username", "AttributeValue": username}]
    if username:
        stubber.add_response(
            "lookup_events",
            {"Events": [trail_event("e1", "alice"), trail_event("e2", "alice")], "NextToken": "p2"},
            {**base, "LookupAttributes": by_user},
        )
        stubber.add_response(
            "lookup_events",
            {"Events": [trail_event("e3", "alice")]},
            {**base, "LookupAttributes": by_user, "NextToken": "p2"},
        )
    if key:
        # e2 again (alice's own key: found by the user lookup already) and one of bob's.
        stubber.add_response(
            "lookup_events",
            {"Events": [trail_event("e2", "alice"), trail_event("e9", "bob")]},
            {
                **base,
                "LookupAttributes": [{"AttributeKey": "AccessKeyId", "AttributeValue": KEY_ID}],
            },
        )


@dataclass
class LookupStubs:
    """``responses``: callables that add LookupEvents responses to each new Stubber;
    ``stubbers``: one per CloudTrail client the action made."""

    responses: list[Callable[[Stubber], None]] = field(default_factory=list)
    stubbers: list[Stubber] = field(default_factory=list)
    of_client: dict[int, Stubber] = field(default_factory=dict)


@pytest.fixture
def lookup_stubs(
    client_hooks: dict[str, list[Callable[[Any], None]]], monkeypatch: pytest.MonkeyPatch
) -> LookupStubs:
    """Fix the clock; every CloudTrail client the action makes answers LookupEvents from
    a Stubber (moto lacks it); its other operations reach moto."""
    monkeypatch.setattr(evidence, "_now", lambda: NOW)
    stubs = LookupStubs()

    def hook(client: Any) -> None:
        # a run's client is reused by the action's next run: stubbed once, its responses
        # given again when the last run has used them all
        stubber = stubs.of_client.get(id(client))
        if stubber is None:
            stubber = stubs.of_client[id(client)] = stub_operation(client, "LookupEvents")
            stubs.stubbers.append(stubber)
        elif stubber._queue:
            return
        for add in stubs.responses:
            add(stubber)

    client_hooks.setdefault("cloudtrail", []).append(hook)
    return stubs


def test_cloudtrail_copies_in_window_files_and_stubbed_lookup_events(s3, lookup_stubs, action_ctx):
    bodies = seed_trail(s3)
    lookup_stubs.responses.append(add_lookup_pages)
    params = SnapshotCloudTrail.Input(
        principal_arn=PRINCIPAL, access_key_id=KEY_ID, lookback_hours=12
    )
    out = SnapshotCloudTrail().run(params, action_ctx)

    # Exactly the in-window files of this account, byte for byte, under the run's prefix.
    assert keys_under(s3, COPIED) == [COPIED + key for key in IN_WINDOW]
    for key in IN_WINDOW:
        assert s3.get_object(Bucket="evidence", Key=COPIED + key)["Body"].read() == bodies[key]
    assert out.trail_objects == 4 and out.trail == TRAIL_ARN
    # LookupEvents: both of alice's pages, then bob's event from the key lookup (e2 once).
    lines = read_gz_lines(s3, LOOKUP_KEY)
    assert [line["EventId"] for line in lines] == ["e1", "e2", "e3", "e9"]
    assert lines[0]["EventTime"] == (NOW - timedelta(hours=1)).isoformat()
    assert json.loads(lines[3]["CloudTrailEvent"])["userIdentity"]["userName"] == "bob"
    assert out.events == 4
    lookup_stubs.stubbers[0].assert_no_pending_responses()
    # The manifest lists every object with the right hash; all locked.
    assert out.manifest_uri == f"s3://evidence/{RUN}/manifest.json"
    ok, lines_ = verify_manifest(s3, out.manifest_uri)
    assert ok, lines_
    expected = [COPIED + key for key in IN_WINDOW] + [LOOKUP_KEY]
    assert manifest_keys(s3, out.manifest_uri) == sorted(expected)
    assert [o.key for o in out.objects] == expected
    for key in expected:
        assert_locked(s3, key)
    assert action_ctx.undo == []  # evidence is never undone


def test_cloudtrail_second_run_rewrites_same_keys_as_new_versions_stubbed_lookup_events(
    s3, lookup_stubs, action_ctx
):
    seed_trail(s3)
    lookup_stubs.responses.append(add_lookup_pages)
    params = SnapshotCloudTrail.Input(
        principal_arn=PRINCIPAL, access_key_id=KEY_ID, lookback_hours=12
    )
    first = SnapshotCloudTrail().run(params, action_ctx)
    second = SnapshotCloudTrail().run(params, action_ctx)

    # same keys, same bytes (gzip has no timestamp); each run locked a new version
    assert [(o.key, o.sha256, o.size) for o in second.objects] == [
        (o.key, o.sha256, o.size) for o in first.objects
    ]
    assert all(
        a.version_id != b.version_id for a, b in zip(first.objects, second.objects, strict=True)
    )
    # the step's outputs (so the ledger) carry the locked version and its retention
    assert all(o.version_id and o.lock_mode and o.locked_until for o in first.objects)
    for obj in second.objects:
        versions = s3.list_object_versions(Bucket="evidence", Prefix=obj.key)["Versions"]
        assert len(versions) == 2
    ok, _ = verify_manifest(s3, second.manifest_uri)
    assert ok and action_ctx.undo == []


def test_cloudtrail_without_trail_keeps_lookup_events_stubbed_lookup_events(
    s3, lookup_stubs, action_ctx
):
    lookup_stubs.responses.append(lambda stubber: add_lookup_pages(stubber, key=False))
    out = SnapshotCloudTrail().run(
        SnapshotCloudTrail.Input(principal_arn=PRINCIPAL, lookback_hours=12), action_ctx
    )
    assert out.trail is None and out.trail_objects == 0 and out.events == 3
    assert [o.key for o in out.objects] == [LOOKUP_KEY]
    assert [line["EventId"] for line in read_gz_lines(s3, LOOKUP_KEY)] == ["e1", "e2", "e3"]
    assert manifest_keys(s3, out.manifest_uri) == [LOOKUP_KEY]


def test_cloudtrail_named_trail_must_exist(s3, lookup_stubs, action_ctx):
    seed_trail(s3)
    params = SnapshotCloudTrail.Input(access_key_id=KEY_ID, trail_name="nope", lookback_hours=12)
    with pytest.raises(TrailNotFound, match="CloudTrail trail 'nope' not found in us-east-1"):
        SnapshotCloudTrail().run(params, action_ctx)
    assert keys_under(s3, RUN) == []


def test_cloudtrail_throttled_describe_trails_is_retried_stubbed_lookup_events(
    s3, lookup_stubs, client_hooks, action_ctx
):
    seed_trail(s3)
    lookup_stubs.responses.append(lambda stubber: add_lookup_pages(stubber, username=None))
    attempts: list[list[str]] = []
    throttle = {"__type": "ThrottlingException", "message": "Rate exceeded"}
    client_hooks["cloudtrail"].append(
        lambda c: attempts.append(fail_first_send(c, "DescribeTrails", 400, throttle))
    )
    out = SnapshotCloudTrail().run(
        SnapshotCloudTrail.Input(access_key_id=KEY_ID, lookback_hours=12), action_ctx
    )
    assert len(attempts[0]) == 2  # throttled once, retried once by the standard retry mode
    assert out.trail_objects == 4 and out.events == 2


def test_cloudtrail_access_denied_names_action_and_principal_stubbed_lookup_events(
    s3, lookup_stubs, action_ctx
):
    denied = (
        f"User: arn:aws:iam::{ACCOUNT}:user/responder is not authorized to perform: "
        "cloudtrail:LookupEvents because no identity-based policy allows the "
        "cloudtrail:LookupEvents action"
    )
    lookup_stubs.responses.append(
        lambda stubber: stubber.add_client_error(
            "lookup_events", "AccessDeniedException", denied, http_status_code=400
        )
    )
    # no trail either: nothing was copied, so the step fails and names the denial
    with pytest.raises(CloudTrailEvidenceMissing) as caught:
        SnapshotCloudTrail().run(SnapshotCloudTrail.Input(principal_arn=PRINCIPAL), action_ctx)
    assert str(caught.value).startswith(
        "no CloudTrail evidence was copied: LookupEvents failed (AccessDenied: "
        f"arn:aws:iam::{ACCOUNT}:user/responder may not call cloudtrail:LookupEvents"
    )
    assert "no trail delivers to S3" in str(caught.value)
    assert keys_under(s3, LOOKUP_KEY) == []  # no half-written evidence under the name


HTML_PAGE_BITS = ("<html", "<title", "<h1", "<p>", "doctype")


def _no_html(*texts: str) -> None:
    for text in texts:
        assert not any(bit in text.lower() for bit in HTML_PAGE_BITS), text


@pytest.mark.parametrize("aws", ["server"], indirect=True)
def test_cloudtrail_lookup_events_html_500_keeps_the_trail_files_and_warns(
    aws, s3, action_ctx, monkeypatch, caplog
):
    """moto server answers LookupEvents (unimplemented) with Werkzeug's HTML 500 page: the
    trail files are copied, the step succeeds and says LookupEvents failed, in one line."""
    monkeypatch.setattr(evidence, "_now", lambda: NOW)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    seed_trail(s3)
    params = SnapshotCloudTrail.Input(principal_arn=PRINCIPAL, lookback_hours=12)
    with caplog.at_level("INFO"):
        out = SnapshotCloudTrail().run(params, action_ctx)

    assert out.trail_files == "copied (4 files)" and out.trail_objects == 4
    assert out.lookup_events == (
        "failed (LookupEvents failed: HTTP 500: an HTML error page titled "
        "'500 Internal Server Error' (body not shown))"
    )
    assert out.events == 0 and len(out.warnings) == 1
    assert out.warnings[0].startswith("LookupEvents failed (LookupEvents failed: HTTP 500")
    assert out.warnings[0].endswith("trail files: copied (4 files)")
    # no empty events file that would read as "no activity"; the manifest has the trail files
    assert keys_under(s3, LOOKUP_KEY) == []
    assert manifest_keys(s3, out.manifest_uri) == [COPIED + key for key in IN_WINDOW]
    assert [r.levelname for r in caplog.records if "partial" in r.getMessage()] == ["WARNING"]
    _no_html(out.model_dump_json(), caplog.text)


@pytest.mark.parametrize("aws", ["server"], indirect=True)
def test_cloudtrail_nothing_copied_fails_with_one_line(aws, s3, action_ctx, monkeypatch):
    """No trail and LookupEvents answers an HTML 500: nothing was copied, so the step fails."""
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    params = SnapshotCloudTrail.Input(access_key_id=KEY_ID, lookback_hours=12)
    with pytest.raises(CloudTrailEvidenceMissing) as caught:
        SnapshotCloudTrail().run(params, action_ctx)
    message = str(caught.value)
    assert message.startswith(
        "no CloudTrail evidence was copied: LookupEvents failed (LookupEvents failed: "
        "HTTP 500: an HTML error page titled '500 Internal Server Error' (body not shown)) "
        "and the trail files: no trail delivers to S3"
    )
    assert "\n" not in message
    _no_html(message)
    assert keys_under(s3, RUN + "/step/") == []


def test_cloudtrail_lookup_failing_on_a_later_page_keeps_the_events_read(
    s3, lookup_stubs, action_ctx
):
    seed_trail(s3)
    base = {
        "StartTime": START,
        "EndTime": NOW,
        "MaxResults": 50,
        "LookupAttributes": [{"AttributeKey": "Username", "AttributeValue": "alice"}],
    }

    def pages(stubber: Stubber) -> None:
        stubber.add_response(
            "lookup_events",
            {"Events": [trail_event("e1", "alice"), trail_event("e2", "alice")], "NextToken": "p2"},
            base,
        )
        stubber.add_client_error(
            "lookup_events",
            "InvalidNextTokenException",
            "the token expired\nsecond line of detail",
            http_status_code=400,
        )

    lookup_stubs.responses.append(pages)
    out = SnapshotCloudTrail().run(
        SnapshotCloudTrail.Input(principal_arn=PRINCIPAL, lookback_hours=12), action_ctx
    )
    assert out.lookup_events == (
        "failed (LookupEvents failed: InvalidNextTokenException: the token expired …)"
    )
    assert out.events == 2 and out.trail_objects == 4
    assert [line["EventId"] for line in read_gz_lines(s3, LOOKUP_KEY)] == ["e1", "e2"]
    assert "the 2 events read before it are kept" in out.warnings[0]
    assert LOOKUP_KEY in manifest_keys(s3, out.manifest_uri)
    ok, _ = verify_manifest(s3, out.manifest_uri)
    assert ok


def test_cloudtrail_outputs_say_both_sources_copied_stubbed_lookup_events(
    s3, lookup_stubs, action_ctx
):
    seed_trail(s3)
    lookup_stubs.responses.append(lambda stubber: add_lookup_pages(stubber, key=False))
    out = SnapshotCloudTrail().run(
        SnapshotCloudTrail.Input(principal_arn=PRINCIPAL, lookback_hours=12), action_ctx
    )
    assert (out.trail_files, out.lookup_events, out.warnings) == (
        "copied (4 files)",
        "copied (3 events)",
        [],
    )


def test_cloudtrail_access_denied_by_moto_iam_names_s3_action_and_principal(
    aws, s3, lookup_stubs, action_ctx, monkeypatch
):
    """moto enforces IAM: the engine may write evidence but not read the trail bucket."""
    seed_trail(s3)
    evidence_only = ["arn:aws:s3:::evidence", "arn:aws:s3:::evidence/*"]
    allow = {"cloudtrail:*": ["*"], "s3:*": evidence_only}
    params = SnapshotCloudTrail.Input(principal_arn=PRINCIPAL, lookback_hours=12)
    with iam_enforced(aws, monkeypatch, allow) as arn, pytest.raises(AwsAccessDenied) as caught:
        SnapshotCloudTrail().run(params, action_ctx)
    # S3's AccessDenied text (moto's, and AWS's cross-account one) names no IAM action, so
    # base.translate names the API operation (see the report: a map to s3:ListBucket).
    assert re.match(
        rf"AccessDenied: {arn} may not call (s3:ListBucket|the permission behind ListObjectsV2)",
        str(caught.value),
    )


@pytest.mark.parametrize("aws", ["in_process"], indirect=True)
def test_organization_trail_layout_lists_the_principals_account(s3, action_ctx):
    s3.create_bucket(Bucket="org-trail")
    folder = f"ct/AWSLogs/o-abc123/{ACCOUNT}/CloudTrail/us-east-1/2026/03/10/"
    wanted = f"{folder}{ACCOUNT}_CloudTrail_us-east-1_20260310T0100Z_x.json.gz"
    other = wanted.replace(ACCOUNT, "999999999999")
    for key in (wanted, other):
        s3.put_object(Bucket="org-trail", Key=key, Body=b"{}")
    trail = {
        "S3BucketName": "org-trail",
        "S3KeyPrefix": "ct",
        "TrailARN": "arn:aws:cloudtrail:us-east-1:555555555555:trail/org",
        "IsOrganizationTrail": True,
        "IsMultiRegionTrail": True,
    }
    keys = list(evidence_cloudtrail._trail_keys(s3, trail, PRINCIPAL, START, NOW))
    assert keys == [wanted]


# --- CloudWatch Logs -----------------------------------------------------------------------

GROUP = "/app/inference"
LOG_KEY = f"{RUN}/step/logs/app/inference.jsonl.gz"


def seed_log_group() -> dict[str, list[tuple[str, str]]]:
    """Events in and out of a 24 h window; returns (stream, message) of the in-window ones."""
    logs = boto3.client("logs", region_name="us-east-1")
    logs.create_log_group(logGroupName=GROUP)
    now = datetime.now(UTC)
    streams = {
        "a": [
            (30, "GET model/weights.bin by alice"),  # hours ago: out of the window
            (3, "GET model/weights.bin by alice"),
            (2, "healthcheck ok"),
        ],
        "b": [(26, "download model/tokenizer.json"), (20, "download model/tokenizer.json")],
    }
    for stream, events in streams.items():
        logs.create_log_stream(logGroupName=GROUP, logStreamName=stream)
        logs.put_log_events(
            logGroupName=GROUP,
            logStreamName=stream,
            logEvents=[
                {"timestamp": int((now - timedelta(hours=h)).timestamp() * 1000), "message": m}
                for h, m in events
            ],
        )
    in_window = sorted((s, m) for s, events in streams.items() for h, m in events if h < 24)
    return {
        "all": in_window,
        "model": [(s, m) for s, m in in_window if "model" in m],
    }


def test_log_group_snapshot_streams_in_window_matching_events(aws, s3, action_ctx):
    expected = seed_log_group()["model"]
    params = SnapshotLogGroup.Input(log_group=GROUP, filter_pattern="model")
    out = SnapshotLogGroup().run(params, action_ctx)

    lines = read_gz_lines(s3, LOG_KEY)
    assert sorted((line["logStreamName"], line["message"]) for line in lines) == expected
    assert all({"timestamp", "eventId", "ingestionTime"} <= set(line) for line in lines)
    assert out.events == 2 and out.export_task_id is None
    assert out.object is not None and out.object.key == LOG_KEY
    ok, report = verify_manifest(s3, out.manifest_uri)
    assert ok and manifest_keys(s3, out.manifest_uri) == [LOG_KEY], report
    manifest = json.loads(
        s3.get_object(Bucket="evidence", Key=f"{RUN}/manifest.json")["Body"].read()
    )
    assert manifest["objects"][0]["sha256"] == out.object.sha256
    assert_locked(s3, LOG_KEY)
    assert action_ctx.undo == []


def test_log_group_snapshot_pages_through_every_in_window_event(aws, s3, action_ctx, monkeypatch):
    expected = seed_log_group()["all"]
    monkeypatch.setattr(evidence_log_group, "FILTER_PAGE", 1)  # one event per FilterLogEvents page
    out = SnapshotLogGroup().run(SnapshotLogGroup.Input(log_group=GROUP), action_ctx)
    lines = read_gz_lines(s3, LOG_KEY)
    assert sorted((line["logStreamName"], line["message"]) for line in lines) == expected
    assert out.events == len(expected) == 3


def test_log_group_second_run_rewrites_the_same_key_as_a_new_version(aws, s3, action_ctx):
    seed_log_group()
    params = SnapshotLogGroup.Input(log_group=GROUP, filter_pattern="model")
    first = SnapshotLogGroup().run(params, action_ctx)
    second = SnapshotLogGroup().run(params, action_ctx)
    same = {"key", "sha256", "size"}
    assert second.object.model_dump(include=same) == first.object.model_dump(include=same)
    assert second.events == first.events == 2
    assert second.object.version_id != first.object.version_id  # a new locked version
    assert len(s3.list_object_versions(Bucket="evidence", Prefix=LOG_KEY)["Versions"]) == 2
    assert verify_manifest(s3, second.manifest_uri)[0]


@pytest.mark.parametrize("aws", ["in_process"], indirect=True)
def test_log_group_snapshot_to_a_bucket_without_object_lock_warns(s3, action_ctx, caplog):
    seed_log_group()
    params = SnapshotLogGroup.Input(log_group=GROUP, bucket="plain-evidence")
    with caplog.at_level("WARNING", logger="clampdown.action"):
        out = SnapshotLogGroup().run(params, action_ctx)
    assert out.manifest_uri == f"s3://plain-evidence/{RUN}/manifest.json"
    assert "ObjectLockMode" not in s3.head_object(Bucket="plain-evidence", Key=LOG_KEY)
    assert verify_manifest(s3, out.manifest_uri)[0]
    assert "evidence bucket plain-evidence has no Object Lock" in caplog.text


def test_log_group_export_task_is_described_in_the_manifest(aws, s3, action_ctx):
    seed_log_group()
    params = SnapshotLogGroup.Input(log_group=GROUP, export_task=True)
    out = SnapshotLogGroup().run(params, action_ctx)

    logs = boto3.client("logs", region_name="us-east-1")
    task = logs.describe_export_tasks(taskId=out.export_task_id)["exportTasks"][0]
    assert task["destination"] == "evidence"
    assert task["destinationPrefix"] == f"{RUN}/step/export"
    assert task["taskName"] == "clampdown-testrun0001-step"
    assert out.object is None and out.events is None
    # CloudWatch Logs wrote the export (moto does it at once); only the descriptor is hashed.
    assert keys_under(s3, f"{RUN}/step/export/")
    descriptor_key = f"{RUN}/step/export-task.json"
    assert manifest_keys(s3, out.manifest_uri) == [descriptor_key]
    descriptor = json.loads(s3.get_object(Bucket="evidence", Key=descriptor_key)["Body"].read())
    assert descriptor["taskId"] == out.export_task_id and descriptor["logGroupName"] == GROUP
    assert verify_manifest(s3, out.manifest_uri)[0]
    # A second run (the first export has finished) starts another one without failing.
    again = SnapshotLogGroup().run(params, action_ctx)
    assert again.export_task_id and again.export_task_id != out.export_task_id


@pytest.mark.parametrize("aws", ["in_process"], indirect=True)
def test_log_group_export_task_still_running_is_not_started_twice(s3, action_ctx):
    from moto.logs.models import logs_backends

    seed_log_group()
    params = SnapshotLogGroup.Input(log_group=GROUP, export_task=True)
    first = SnapshotLogGroup().run(params, action_ctx)
    backend = logs_backends[ACCOUNT]["us-east-1"]
    backend.export_tasks[first.export_task_id].status["code"] = "RUNNING"
    second = SnapshotLogGroup().run(params, action_ctx)
    assert second.export_task_id == first.export_task_id
    assert len(backend.export_tasks) == 1


def test_log_group_export_task_busy_stubbed_create_export_task(aws, s3, client_hooks, action_ctx):
    seed_log_group()

    def busy(client: Any) -> None:
        stubber = stub_operation(client, "CreateExportTask")
        stubber.add_client_error(
            "create_export_task", "LimitExceededException", "Resource limit exceeded."
        )

    client_hooks["logs"] = [busy]
    with pytest.raises(ExportTaskBusy, match="one at a time"):
        SnapshotLogGroup().run(
            SnapshotLogGroup.Input(log_group=GROUP, export_task=True), action_ctx
        )


def test_log_group_throttled_filter_log_events_is_retried(aws, s3, client_hooks, action_ctx):
    expected = seed_log_group()["model"]
    attempts: list[list[str]] = []
    throttle = {"__type": "ThrottlingException", "message": "Rate exceeded"}
    client_hooks["logs"] = [
        lambda c: attempts.append(fail_first_send(c, "FilterLogEvents", 400, throttle))
    ]
    out = SnapshotLogGroup().run(
        SnapshotLogGroup.Input(log_group=GROUP, filter_pattern="model"), action_ctx
    )
    assert len(attempts[0]) == 2  # throttled once, retried once by the standard retry mode
    assert out.events == len(expected)


def test_log_group_access_denied_names_action_and_principal(aws, s3, client_hooks, action_ctx):
    """AWS's own AccessDeniedException body (JSON), answered for every FilterLogEvents."""
    seed_log_group()
    who = f"arn:aws:iam::{ACCOUNT}:user/responder"
    denied = {
        "__type": "AccessDeniedException",
        "Message": f"User: {who} is not authorized to perform: logs:FilterLogEvents on "
        f"resource: arn:aws:logs:us-east-1:{ACCOUNT}:log-group:{GROUP}:log-stream: because "
        "no identity-based policy allows the logs:FilterLogEvents action",
    }
    attempts: list[list[str]] = []
    client_hooks["logs"] = [
        lambda c: attempts.append(fail_first_send(c, "FilterLogEvents", 400, denied, times=99))
    ]
    with pytest.raises(AwsAccessDenied) as caught:
        SnapshotLogGroup().run(SnapshotLogGroup.Input(log_group=GROUP), action_ctx)
    assert str(caught.value) == (
        f"AccessDenied: {who} may not call logs:FilterLogEvents — grant it to the engine's "
        "role (clampdown iam-policy prints the policy the runbook needs)"
    )
    assert len(attempts[0]) == 1  # not retried
    assert keys_under(s3, LOG_KEY) == []  # no half-written evidence under the name


def test_log_group_access_denied_by_moto_iam_names_s3_action_and_principal(
    aws, s3, action_ctx, monkeypatch
):
    """moto enforces IAM: the engine may read logs and the bucket but not write evidence."""
    seed_log_group()
    allow = {"logs:*": ["*"], "s3:Get*": ["*"], "s3:List*": ["*"]}
    with iam_enforced(aws, monkeypatch, allow) as arn, pytest.raises(AwsAccessDenied) as caught:
        SnapshotLogGroup().run(SnapshotLogGroup.Input(log_group=GROUP), action_ctx)
    assert re.match(
        rf"AccessDenied: {arn} may not call (s3:PutObject|the permission behind PutObject)",
        str(caught.value),
    )


# --- errors a user can hit before any evidence is read ---------------------------------------


@pytest.mark.parametrize("aws", ["in_process"], indirect=True)
@pytest.mark.parametrize(
    "action, params",
    [
        (SnapshotLogGroup, {"log_group": GROUP}),
        (SnapshotCloudTrail, {"access_key_id": KEY_ID}),
    ],
)
def test_no_evidence_bucket_is_a_clear_error(aws, action_ctx, monkeypatch, action, params):
    monkeypatch.delenv("CLAMPDOWN_EVIDENCE_BUCKET")
    with pytest.raises(EvidenceBucketMissing) as caught:
        action().run(action.Input(**params), action_ctx)
    assert str(caught.value) == (
        "no evidence bucket: the step has no 'bucket' and CLAMPDOWN_EVIDENCE_BUCKET is not set"
        " — set CLAMPDOWN_EVIDENCE_BUCKET to an S3 bucket with Object Lock, or give the step "
        "with: {bucket: <name>}"
    )
    with pytest.raises(EvidenceBucketMissing, match="evidence bucket 'nope' does not exist"):
        action().run(action.Input(**params, bucket="nope"), action_ctx)


@pytest.mark.parametrize(
    "action, params, message",
    [
        (SnapshotCloudTrail, {}, "give principal_arn or access_key_id"),
        (
            SnapshotCloudTrail,
            {"access_key_id": KEY_ID, "lookback_hours": 0},
            "greater than or equal to 1",
        ),
        (
            SnapshotCloudTrail,
            {"access_key_id": KEY_ID, "lookback_hours": 721},
            "less than or equal to 720",
        ),
        (SnapshotCloudTrail, {"principal_arn": "alice"}, "should match pattern"),
        (
            SnapshotCloudTrail,
            {"access_key_id": KEY_ID, "region": "x"},
            "Extra inputs are not permitted",
        ),
        (
            SnapshotLogGroup,
            {"log_group": GROUP, "export_task": True, "filter_pattern": "x"},
            "cannot be combined with export_task",
        ),
        (SnapshotLogGroup, {"log_group": GROUP, "lookback_hours": 0}, "greater than or equal to 1"),
    ],
)
def test_inputs_are_validated(action, params, message):
    with pytest.raises(ValidationError, match=message):
        action.Input(**params)


def test_username_is_the_last_path_element_of_the_arn():
    assert evidence_cloudtrail._username(PRINCIPAL) == "alice"
    assert (
        evidence_cloudtrail._username(f"arn:aws:sts::{ACCOUNT}:assumed-role/Admin/session-7")
        == "session-7"
    )
    assert evidence_cloudtrail._username(f"arn:aws:iam::{ACCOUNT}:root") == "root"


def test_gzip_json_lines_streams_page_by_page_and_is_deterministic():
    consumed = []

    def pages() -> Iterator[list[dict[str, Any]]]:
        for number in range(200):
            consumed.append(number)
            yield [{"n": i, "blob": os.urandom(16).hex()} for i in range(100)]

    count = evidence.Count()
    chunks = gzip_json_lines(pages(), count)
    next(chunks)
    assert len(consumed) < 10  # the first compressed bytes come before the last page is read
    rest = b"".join(chunks)
    assert count.n == 200 * 100 and len(consumed) == 200 and rest

    fixed = [[{"a": 1, "t": NOW}], [], [{"b": "é"}]]
    one = b"".join(gzip_json_lines(fixed, evidence.Count()))
    two = b"".join(gzip_json_lines(fixed, evidence.Count()))
    assert one == two  # no timestamp in the gzip header: same records, same hash
    assert gzip.decompress(one).decode().splitlines() == [
        '{"a":1,"t":"2026-03-10T06:00:00+00:00"}',
        '{"b":"\\u00e9"}',  # ASCII JSON: safe in any viewer
    ]


@pytest.mark.parametrize("aws", ["in_process"], indirect=True)
def test_unknown_log_group_is_named_in_the_error(s3, action_ctx):
    with pytest.raises(AwsActionError) as caught:
        SnapshotLogGroup().run(SnapshotLogGroup.Input(log_group="/no/such/group"), action_ctx)
    assert str(caught.value).startswith("FilterLogEvents failed: ResourceNotFoundException")
    assert keys_under(s3, RUN) == []


# --- describe (clampdown plan --live): what a run would write, read-only and cheap -----------

STEP_URI = "s3://evidence/incidents/<run-id>/step/"
LOCKED_MANIFEST = (
    "hash every object (SHA-256) and list it in the run's manifest "
    "s3://evidence/incidents/<run-id>/manifest.json; each object locked (GOVERNANCE, 7 days): "
    "nobody can delete it before then"
)


@pytest.fixture
def calls(client_hooks: dict[str, list[Callable[[Any], None]]]) -> list[str]:
    """Every operation the actions' S3, CloudTrail and CloudWatch Logs clients call."""
    made: list[str] = []

    def record(client: Any) -> None:
        client.meta.events.register("before-call", lambda model, **_: made.append(model.name))

    for service in ("s3", "cloudtrail", "logs"):
        client_hooks.setdefault(service, []).append(record)
    return made


def evidence_state(s3: Any) -> dict[str, Any]:
    """Every object version and delete marker in the evidence buckets."""
    state = {}
    for bucket in ("evidence", "plain-evidence"):
        listed = s3.list_object_versions(Bucket=bucket)
        state[bucket] = sorted(
            (v["Key"], v["VersionId"], v.get("ETag"))
            for v in listed.get("Versions", []) + listed.get("DeleteMarkers", [])
        )
    return state


def test_cloudtrail_describe_lists_files_and_lookups_and_writes_nothing(
    aws, s3, lookup_stubs, calls, action_ctx
):
    seed_trail(s3)
    params = SnapshotCloudTrail.Input(
        principal_arn=PRINCIPAL, access_key_id=KEY_ID, lookback_hours=12
    )
    span = "2026-03-09 18:00 UTC → now, 12 h"
    expected = [
        f"copy 3 CloudTrail log file(s) and 1 digest file(s) delivered so far ({span}) from "
        f"bucket trail-bucket of trail main to {STEP_URI}cloudtrail/trail-bucket/",
        f"look up CloudTrail events (LookupEvents) for user alice and access key AKIA…0001 "
        f"({span}) and write them to {STEP_URI}cloudtrail-lookup-events.jsonl.gz "
        "(events: counted at run time)",
        LOCKED_MANIFEST,
    ]
    before = evidence_state(s3)

    assert SnapshotCloudTrail().preview(params, action_ctx) == expected

    assert evidence_state(s3) == before == {"evidence": [], "plain-evidence": []}
    # keys listed, nothing read: no LookupEvents page, no trail file body
    assert set(calls) == {"GetObjectLockConfiguration", "DescribeTrails", "ListObjectsV2"}

    lookup_stubs.responses.append(add_lookup_pages)
    SnapshotCloudTrail().run(params, action_ctx)
    written = evidence_state(s3)
    # evidence only adds: a second run would write it all again, so the preview says so
    assert SnapshotCloudTrail().preview(params, action_ctx) == expected
    assert evidence_state(s3) == written


@pytest.mark.parametrize("aws", ["in_process"], indirect=True)
def test_cloudtrail_describe_without_trail_to_a_bucket_without_object_lock(
    s3, calls, action_ctx, monkeypatch
):
    monkeypatch.setattr(evidence, "_now", lambda: NOW)
    params = SnapshotCloudTrail.Input(access_key_id=KEY_ID, bucket="plain-evidence")
    assert SnapshotCloudTrail().preview(params, action_ctx) == [
        "copy no CloudTrail files: no trail in us-east-1 delivers to S3 (LookupEvents only)",
        "look up CloudTrail events (LookupEvents) for access key AKIA…0001 "
        "(2026-03-09 06:00 UTC → now, 24 h) and write them to s3://plain-evidence/incidents/"
        "<run-id>/step/cloudtrail-lookup-events.jsonl.gz (events: counted at run time)",
        "hash every object (SHA-256) and list it in the run's manifest s3://plain-evidence/"
        "incidents/<run-id>/manifest.json; the bucket has no Object Lock: the objects can be "
        "deleted",
    ]
    assert "LookupEvents" not in calls
    with pytest.raises(TrailNotFound, match="CloudTrail trail 'nope' not found"):
        SnapshotCloudTrail().preview(
            SnapshotCloudTrail.Input(access_key_id=KEY_ID, trail_name="nope"), action_ctx
        )


def logs_state() -> list[tuple[str, str]]:
    logs = boto3.client("logs", region_name="us-east-1")
    return sorted(
        (t["taskId"], t["status"]["code"]) for t in logs.describe_export_tasks()["exportTasks"]
    )


def test_log_group_describe_lists_what_would_be_written_and_reads_no_event(
    aws, s3, calls, action_ctx, monkeypatch
):
    seed_log_group()
    monkeypatch.setattr(evidence, "_now", lambda: NOW)
    params = SnapshotLogGroup.Input(log_group=GROUP, filter_pattern="model")
    expected = [
        f"write log events of {GROUP} matching 'model' (2026-03-09 06:00 UTC → now, 24 h) to "
        f"{STEP_URI}logs/app/inference.jsonl.gz (events: counted at run time)",
        LOCKED_MANIFEST,
    ]
    before = (evidence_state(s3), logs_state())

    assert SnapshotLogGroup().preview(params, action_ctx) == expected

    assert (evidence_state(s3), logs_state()) == before
    assert set(calls) == {"GetObjectLockConfiguration", "DescribeLogGroups"}
    SnapshotLogGroup().run(params, action_ctx)
    written = evidence_state(s3)
    assert SnapshotLogGroup().preview(params, action_ctx) == expected
    assert evidence_state(s3) == written


@pytest.mark.parametrize("aws", ["in_process"], indirect=True)
def test_log_group_describe_export_task_warns_of_a_running_one(s3, calls, action_ctx, monkeypatch):
    from moto.logs.models import logs_backends

    seed_log_group()
    monkeypatch.setattr(evidence, "_now", lambda: NOW)
    params = SnapshotLogGroup.Input(log_group=GROUP, export_task=True, lookback_hours=2)
    start = (
        f"start a CloudWatch Logs export task of every event of {GROUP} "
        f"(2026-03-10 04:00 UTC → now, 2 h) to {STEP_URI}export/ (asynchronous, not hashed) and "
        f"write its descriptor to {STEP_URI}export-task.json"
    )
    assert SnapshotLogGroup().preview(params, action_ctx) == [start, LOCKED_MANIFEST]
    assert logs_state() == [] and "CreateExportTask" not in calls

    other = SnapshotLogGroup().run(params, action_ctx).export_task_id
    backend = logs_backends[ACCOUNT]["us-east-1"]
    backend.export_tasks[other].status["code"] = "RUNNING"
    running = logs_state()
    assert SnapshotLogGroup().preview(params, action_ctx) == [
        f"{start}; export task {other} (RUNNING) is in progress and the account runs one at "
        "a time: the step fails with ExportTaskBusy unless it finishes first",
        LOCKED_MANIFEST,
    ]
    assert logs_state() == running


@pytest.mark.parametrize("aws", ["in_process"], indirect=True)
def test_log_group_describe_fails_as_the_run_would(s3, action_ctx, monkeypatch):
    logs = boto3.client("logs", region_name="us-east-1")
    logs.create_log_group(logGroupName=f"{GROUP}-v2")  # same prefix, another group
    with pytest.raises(LogGroupNotFound) as caught:
        SnapshotLogGroup().preview(SnapshotLogGroup.Input(log_group=GROUP), action_ctx)
    assert str(caught.value) == (
        f"log group '{GROUP}' not found in us-east-1 — check log_group (the name, not the ARN) "
        "and the step's region"
    )
    with pytest.raises(EvidenceBucketMissing, match="evidence bucket 'nope' does not exist"):
        SnapshotLogGroup().preview(
            SnapshotLogGroup.Input(log_group=GROUP, bucket="nope"), action_ctx
        )
