"""The drill report's evidence list reads each object's retention a few at a time.

One HeadObject per manifest entry, after the story: :func:`clampdown.app.drill.report.retention_of`
gives what ``with_retention`` gives (same entries, same order, same mode and date), with
the reads overlapping.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from clampdown.app.drill.report import retention_of
from clampdown_aws.evidence_package import with_retention


@pytest.fixture
def entries(mocked_aws: None) -> tuple[Any, list[dict[str, Any]]]:
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="evidence", ObjectLockEnabledForBucket=True)
    until = datetime.now(UTC) + timedelta(days=2)
    listed = []
    for i in range(20):
        lock = {"ObjectLockMode": "GOVERNANCE", "ObjectLockRetainUntilDate": until} if i % 3 else {}
        made = s3.put_object(Bucket="evidence", Key=f"incidents/r/o{i:02d}", Body=b"x", **lock)
        listed.append({"key": f"incidents/r/o{i:02d}", "version_id": made.get("VersionId")})
    listed.append({"key": "incidents/r/gone", "version_id": None, "locked_until": "2027-01-01"})
    return s3, listed


def test_retention_of_gives_with_retention_answer_in_order(entries: Any) -> None:
    s3, listed = entries
    got = retention_of(s3, "evidence", listed)
    assert got == with_retention(s3, "evidence", listed)
    assert [e["key"] for e in got] == [e["key"] for e in listed]
    assert {e["lock_mode"] for e in got[:-1]} == {None, "GOVERNANCE"}
    assert got[-1]["lock_mode"] is None and got[-1]["retain_until"] == "2027-01-01"


def test_retention_reads_overlap(entries: Any) -> None:
    """The first two HeadObject calls wait for each other: one at a time never gets past."""
    s3, listed = entries
    meet = threading.Barrier(2, timeout=20)
    calls = {"n": 0}
    lock = threading.Lock()

    def first_two_meet(**_: Any) -> None:
        with lock:
            calls["n"] += 1
            first = calls["n"] <= 2
        if first:
            meet.wait()

    s3.meta.events.register("before-call.s3.HeadObject", first_two_meet)
    assert len(retention_of(s3, "evidence", listed)) == len(listed)
