"""The S3 evidence sink asks for the bucket's Object Lock once it found it on, never again
for the same run's later writes, and every object it writes is still locked; a bucket
without Object Lock is asked at each write, so a lock turned on mid-run applies to what
follows (moto in-process)."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path
from typing import Any

import boto3
import pytest

from clampdown_aws.evidence_sink import S3EvidenceSink

RUN = "run-sink"


def _counted(sink: S3EvidenceSink) -> Counter[str]:
    """The S3 calls the sink's client makes from now on, by operation."""
    sink._store(RUN)  # its client is made on first use
    calls: Counter[str] = Counter()
    lock = threading.Lock()

    def count(event_name: str, **_: Any) -> None:
        with lock:
            calls[event_name.rsplit(".", 1)[-1]] += 1

    sink._s3.meta.events.register("before-call.s3", count)
    return calls


def _run(sink: S3EvidenceSink, ledger: Path, heads: int) -> None:
    """A run's writes as the engine makes them: heads as they are signed, the manifest
    before run.end, the last head and the ledger's copy after it."""
    for seq in range(heads):
        sink.anchor_head(RUN, seq, b'{"head": %d}' % seq)
    sink.write_manifest(RUN, ledger)
    sink.anchor_head(RUN, heads, b'{"head": "last"}')
    sink.copy_ledger(RUN, ledger)


def _modes(s3: Any, bucket: str) -> dict[str, str | None]:
    """Every version's Object Lock mode under the run's prefix, by key and version."""
    modes = {}
    for version in s3.list_object_versions(Bucket=bucket, Prefix=f"incidents/{RUN}/")["Versions"]:
        head = s3.head_object(Bucket=bucket, Key=version["Key"], VersionId=version["VersionId"])
        modes[f"{version['Key']}@{version['VersionId']}"] = head.get("ObjectLockMode")
    return modes


@pytest.fixture
def ledger(tmp_path: Path) -> Path:
    path = tmp_path / "ledger.jsonl"
    path.write_bytes(b'{"type": "run.start"}\n')
    return path


def test_a_locked_bucket_is_asked_once_and_everything_is_locked(
    mocked_aws: None, ledger: Path
) -> None:
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="evidence", ObjectLockEnabledForBucket=True)
    sink = S3EvidenceSink("evidence", retention_days=1, lock_mode="GOVERNANCE")
    calls = _counted(sink)
    _run(sink, ledger, heads=6)
    assert calls["GetObjectLockConfiguration"] == 1
    modes = _modes(s3, "evidence")
    assert len(modes) == 6 + 1 + 1 + 1 + 1 + 1  # heads, ledger, its entry, manifest, last, copy
    assert set(modes.values()) == {"GOVERNANCE"}


def test_a_bucket_without_lock_is_asked_at_each_write(mocked_aws: None, ledger: Path) -> None:
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="plain")
    s3.put_bucket_versioning(Bucket="plain", VersioningConfiguration={"Status": "Enabled"})
    sink = S3EvidenceSink("plain", retention_days=1, lock_mode="GOVERNANCE")
    calls = _counted(sink)
    for seq in range(3):
        sink.anchor_head(RUN, seq, b"{}")
    assert calls["GetObjectLockConfiguration"] == 3
    assert set(_modes(s3, "plain").values()) == {None}

    # moto turns Object Lock on only for an empty bucket (S3 allows it on any versioned one)
    for version in s3.list_object_versions(Bucket="plain")["Versions"]:
        s3.delete_object(Bucket="plain", Key=version["Key"], VersionId=version["VersionId"])
    s3.put_object_lock_configuration(Bucket="plain", ObjectLockConfiguration={"ObjectLockEnabled": "Enabled"})  # fmt: skip
    sink.anchor_head(RUN, 3, b'{"head": 3}')
    sink.copy_ledger(RUN, ledger)
    modes = _modes(s3, "plain")
    assert [m for k, m in modes.items() if "00000003" in k or "ledger" in k] == ["GOVERNANCE"] * 2
    assert calls["GetObjectLockConfiguration"] == 4  # found on at the fourth: not asked again
