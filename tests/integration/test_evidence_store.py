"""The evidence store on moto: streamed uploads, hashes, Object Lock, manifest, verify."""

from __future__ import annotations

import hashlib
import json

import boto3
import pytest

from clampdown_aws.evidence_store import READ_AT_ONCE, EvidenceStore, verify_manifest


@pytest.fixture
def s3(mocked_aws: None):
    client = boto3.client("s3", region_name="us-east-1")
    client.create_bucket(Bucket="evidence", ObjectLockEnabledForBucket=True)
    client.create_bucket(Bucket="plain")
    return client


def test_small_and_multipart_objects_are_hashed_locked_and_listed(s3):
    store = EvidenceStore(s3, "evidence", "run1", retention_days=7)
    small = store.put("notes.txt", [b"hello ", b"world"])
    big_chunks = [bytes([i]) * (1024 * 1024) for i in range(10)]  # 10 MiB: two parts
    big = store.put("logs/big.bin", iter(big_chunks))
    assert small.sha256 == hashlib.sha256(b"hello world").hexdigest() and small.size == 11
    assert big.size == 10 * 1024 * 1024
    assert big.sha256 == hashlib.sha256(b"".join(big_chunks)).hexdigest()
    head = s3.head_object(Bucket="evidence", Key="incidents/run1/logs/big.bin")
    assert head["ObjectLockMode"] == "COMPLIANCE" and head["ContentLength"] == big.size
    manifest = store.write_manifest()
    ok, lines = verify_manifest(s3, f"s3://evidence/{manifest.key}")
    assert ok and len(lines) == 2


def test_changed_object_fails_verification(s3):
    store = EvidenceStore(s3, "plain", "run2")
    store.put("a.txt", [b"original"])
    manifest = store.write_manifest()
    assert store.bucket_has_object_lock() is False
    s3.put_object(Bucket="plain", Key="incidents/run2/a.txt", Body=b"tampered")
    ok, lines = verify_manifest(s3, f"s3://plain/{manifest.key}")
    assert not ok and lines == ["CHANGED  incidents/run2/a.txt (8 bytes)"]


def test_manifest_lists_every_entry_once_read_a_few_at_a_time(s3):
    """Entries are read back a few at a time: each of 3x that many once, in key order,
    with the hash it was stored with."""
    store = EvidenceStore(s3, "plain", "run-many")
    stored = {
        store.put(f"o/{i:04d}.txt", [str(i).encode()]).key: i for i in range(3 * READ_AT_ONCE + 1)
    }
    manifest = store.write_manifest()
    body = s3.get_object(Bucket="plain", Key=manifest.key)["Body"].read()
    objects = json.loads(body)["objects"]
    assert [o["key"] for o in objects] == sorted(stored)
    assert all(
        o["sha256"] == hashlib.sha256(str(stored[o["key"]]).encode()).hexdigest() for o in objects
    )
