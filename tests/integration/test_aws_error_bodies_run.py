"""A whole run on moto server: an endpoint's HTML error page reaches neither the ledger,
the logs nor the run's Prefect artifact; a partial CloudTrail snapshot still succeeds.

moto server answers LookupEvents (which it does not implement) with Werkzeug's HTML 500
page: the real-world shape of a proxy or load balancer error in front of an AWS API.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from typing import Any

import boto3
import pytest

from clampdown.core.ledger import new_run_id, read
from clampdown.core.settings import settings

pytestmark = pytest.mark.usefixtures("prefect_server", "clampdown_home")

RUNBOOK = """apiVersion: clampdown/v1
kind: Runbook
metadata: {name: html-errors, title: HTML errors}
steps:
  - id: trail
    uses: aws.evidence.snapshot_cloudtrail
    retries: 0
    on_failure: continue
    with: {principal_arn: "arn:aws:iam::123456789012:user/alice", lookback_hours: 2}
"""
HTML_BITS = ("<html", "<title", "<h1", "doctype", "internal error and was unable")


def _seed(with_trail: bool) -> None:
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="evidence", ObjectLockEnabledForBucket=True)
    if not with_trail:
        return
    s3.create_bucket(Bucket="trail-bucket")
    boto3.client("cloudtrail", region_name="us-east-1").create_trail(
        Name="main", S3BucketName="trail-bucket"
    )
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    stamp = now.strftime("%Y%m%dT%H%M")
    key = (
        f"AWSLogs/123456789012/CloudTrail/us-east-1/{now:%Y/%m/%d}/"
        f"123456789012_CloudTrail_us-east-1_{stamp}Z_abcd.json.gz"
    )
    s3.put_object(Bucket="trail-bucket", Key=key, Body=gzip.compress(b'{"Records": []}'))


def _run(path: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[list[dict[str, Any]], list[str]]:
    from clampdown_flows import respond as respond_module

    artifacts: list[str] = []
    original = respond_module.acreate_markdown_artifact

    async def capture(*args: Any, **kwargs: Any) -> Any:
        artifacts.append(str(kwargs.get("markdown", "")))
        return await original(*args, **kwargs)

    monkeypatch.setattr(respond_module, "acreate_markdown_artifact", capture)
    run_id = new_run_id()
    asyncio.run(respond_module.respond(str(path), {}, run_id=run_id, return_state=True))
    return read(settings().ledger_path(run_id)), artifacts


@pytest.fixture
def evidence_env(aws_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLAMPDOWN_EVIDENCE_BUCKET", "evidence")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")


def _no_html(*texts: str) -> None:
    for text in texts:
        found = [bit for bit in HTML_BITS if bit in text.lower()]
        assert found == [], text[:2000]


def test_a_partial_cloudtrail_snapshot_succeeds_and_no_html_is_recorded(
    evidence_env, write_runbook, monkeypatch, capfd, caplog
):
    _seed(with_trail=True)
    ledger, artifacts = _run(write_runbook(RUNBOOK), monkeypatch)
    # Prefect's log of the run: on the console, or only in the log records when an
    # earlier test in the session configured Prefect's logging onto another stream
    printed = "".join(capfd.readouterr()) + caplog.text
    end = next(r for r in ledger if r["type"] == "step.end" and r.get("step") == "trail")
    assert end["status"] == "succeeded"
    assert end["outputs"]["trail_files"] == "copied (1 files)"
    assert end["outputs"]["lookup_events"].startswith(
        "failed (LookupEvents failed: HTTP 500: an HTML error page titled "
        "'500 Internal Server Error' (body not shown))"
    )
    assert "CloudTrail evidence is partial: LookupEvents failed" in printed  # the log is seen
    _no_html(json.dumps(ledger), printed, *artifacts)
    assert artifacts, "the run wrote no artifact"


def test_nothing_copied_fails_the_step_with_one_line_everywhere(
    evidence_env, write_runbook, monkeypatch, capfd, caplog
):
    _seed(with_trail=False)
    ledger, artifacts = _run(write_runbook(RUNBOOK), monkeypatch)
    printed = "".join(capfd.readouterr()) + caplog.text
    end = next(r for r in ledger if r["type"] == "step.end" and r.get("step") == "trail")
    assert end["status"] == "failed"
    text = json.dumps(end)
    assert "no CloudTrail evidence was copied: LookupEvents failed (LookupEvents failed: " in text
    assert "HTTP 500: an HTML error page titled '500 Internal Server Error'" in text
    assert any("HTTP 500: an HTML error page" in a for a in artifacts)
    assert "no CloudTrail evidence was copied" in printed
    _no_html(json.dumps(ledger), printed, *artifacts)
