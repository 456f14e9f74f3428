"""A drill reads its run's evidence back once: one GetObject per object gives the hash the
evidence objective checks and the retention the report lists.

:func:`clampdown_aws.evidence_store.read_entry` gives what ``entry_digest`` and
``evidence_package.retention`` give (no HeadObject); :class:`EvidenceReader` reads the
manifest and each object once for both askers, a few objects at a time, and hands errors
to every asker as before (the objective raises the first, the report leaves a refused
object without retention).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import boto3
import pytest

from clampdown.app.drill.evidence_reads import EvidenceReader
from clampdown.app.drill.facts import DrillFacts
from clampdown.app.drill.objectives_aws import evidence_manifest_complete
from clampdown.core.drill_model import EvidenceManifestComplete
from clampdown_aws.evidence_package import retention, with_retention
from clampdown_aws.evidence_store import entry_digest, read_entry

BUCKET = "evidence"
RUN = "r1"


@pytest.fixture
def evidence(mocked_aws: None) -> tuple[Any, list[dict[str, Any]]]:
    """A locked bucket with 20 objects (two thirds under retention, one version rewritten
    after the entry was made) and a manifest listing them, plus one that is gone."""
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket=BUCKET, ObjectLockEnabledForBucket=True)
    until = datetime.now(UTC) + timedelta(days=2)
    listed = []
    for i in range(20):
        key = f"incidents/{RUN}/o{i:02d}" + ("/cloudtrail" if i == 0 else "")
        body = f"object {i}".encode() * (i + 1)
        lock = {"ObjectLockMode": "GOVERNANCE", "ObjectLockRetainUntilDate": until} if i % 3 else {}
        made = s3.put_object(Bucket=BUCKET, Key=key, Body=body, **lock)
        listed.append(
            {
                "key": key,
                "sha256": hashlib.sha256(body).hexdigest(),
                "size": len(body),
                "version_id": made.get("VersionId"),
            }
        )
    s3.put_object(Bucket=BUCKET, Key=listed[5]["key"], Body=b"a newer version, not the entry's")
    listed.append(
        {
            "key": f"incidents/{RUN}/gone",
            "sha256": "0" * 64,
            "size": 1,
            "version_id": None,
            "locked_until": "2027-01-01",
        }
    )
    ledger = f"incidents/{RUN}/ledger.jsonl"
    made = s3.put_object(Bucket=BUCKET, Key=ledger, Body=b"{}\n")
    listed.insert(0, {"key": ledger, "sha256": hashlib.sha256(b"{}\n").hexdigest(), "size": 3,
                      "version_id": made.get("VersionId")})  # fmt: skip
    manifest = {"objects": listed}
    s3.put_object(
        Bucket=BUCKET, Key=f"incidents/{RUN}/manifest.json", Body=json.dumps(manifest).encode()
    )
    return s3, listed


def _calls(s3: Any) -> Counter[str]:
    counted: Counter[str] = Counter()
    lock = threading.Lock()

    def count(event_name: str, **_: Any) -> None:
        with lock:
            counted[event_name.rsplit(".", 1)[-1]] += 1

    s3.meta.events.register("before-call.s3", count)
    return counted


def test_read_entry_gives_the_digest_and_the_retention_head_gives(evidence: Any) -> None:
    s3, listed = evidence
    for entry in listed[:-1]:
        got = read_entry(s3, BUCKET, entry)
        assert (got.sha256, got.size) == entry_digest(s3, BUCKET, entry)
        assert (got.sha256, got.size) == (entry["sha256"], entry["size"])  # the entry's version
        assert (got.lock_mode, got.retain_until) == retention(
            s3, BUCKET, entry["key"], entry["version_id"]
        )
    modes = {read_entry(s3, BUCKET, e).lock_mode for e in listed[:-1]}
    assert modes == {None, "GOVERNANCE"}


def test_one_read_serves_the_objective_and_the_report(evidence: Any) -> None:
    """The report's list equals with_retention's; the objective and the list together read
    the manifest once and each object once, with no HeadObject."""
    s3, listed = evidence
    expected = with_retention(s3, BUCKET, listed)
    calls = _calls(s3)
    reader = EvidenceReader(lambda service: s3, BUCKET)
    results: list[Any] = []
    askers = [
        threading.Thread(target=lambda: results.append(reader.read(RUN).with_retention())),
        threading.Thread(target=lambda: results.append(reader.read(RUN))),
    ]
    for asker in askers:
        asker.start()
    for asker in askers:
        asker.join(30)
    listing = next(r for r in results if isinstance(r, list))
    assert listing == expected
    assert listing[-1]["lock_mode"] is None and listing[-1]["retain_until"] == "2027-01-01"
    assert calls == Counter({"GetObject": len(listed) + 1})  # the manifest, then each object


def test_the_objective_judges_the_shared_read(evidence: Any) -> None:
    """Hash mismatch and missing objects are still found through the shared read; the
    first error of an object read is raised to the objective (checked: not met)."""
    s3, listed = evidence
    facts = DrillFacts(
        drill=None,  # type: ignore[arg-type]  # the objective reads no drill field
        seeded=SimpleNamespace(evidence_bucket=BUCKET),  # type: ignore[arg-type]
        alert_epoch=0.0,
        client=lambda service: s3,
        run_id=RUN,
        evidence=EvidenceReader(lambda service: s3, BUCKET),
    )
    objective = EvidenceManifestComplete(kind="evidence_manifest_complete", id="evidence")
    with pytest.raises(Exception, match=r"NoSuchKey|Not Found|404"):
        evidence_manifest_complete(objective, facts)  # the "gone" object
    manifest = {"objects": listed[:-1]}
    s3.put_object(
        Bucket=BUCKET, Key=f"incidents/{RUN}/manifest.json", Body=json.dumps(manifest).encode()
    )
    fresh = DrillFacts(**{**facts.__dict__, "evidence": EvidenceReader(lambda s: s3, BUCKET)})
    assert evidence_manifest_complete(objective, fresh)[0] is True
    listed[3]["sha256"] = "f" * 64  # an entry whose object's bytes are not what it says
    s3.put_object(
        Bucket=BUCKET,
        Key=f"incidents/{RUN}/manifest.json",
        Body=json.dumps({"objects": listed[:-1]}).encode(),
    )
    fresh = DrillFacts(**{**facts.__dict__, "evidence": None})  # a read of its own
    met, _, why = evidence_manifest_complete(objective, fresh)
    assert not met and listed[3]["key"] in why


def test_no_manifest_is_said_to_every_asker(mocked_aws: None) -> None:
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket=BUCKET)
    reader = EvidenceReader(lambda service: s3, BUCKET)
    for _ in range(2):
        with pytest.raises(Exception, match="NoSuchKey"):
            reader.read(RUN)


def test_object_reads_overlap(evidence: Any) -> None:
    """The first two object reads wait for each other: one at a time never gets past."""
    s3, listed = evidence
    meet = threading.Barrier(2, timeout=10)
    calls = {"n": 0}
    lock = threading.Lock()

    def first_two_meet(params: dict[str, Any], **_: Any) -> None:
        if params.get("Key", "").endswith("manifest.json"):
            return
        with lock:
            calls["n"] += 1
            first = calls["n"] <= 2
        if first:
            meet.wait()

    s3.meta.events.register("before-parameter-build.s3.GetObject", first_two_meet)
    back = EvidenceReader(lambda service: s3, BUCKET).read(RUN)
    assert len(back.reads) == len(listed)
    assert not [r for r in back.reads if isinstance(r, threading.BrokenBarrierError)]


def test_a_read_begun_when_the_run_ended_serves_the_report(evidence: Any) -> None:
    """The session's early read (begun by the follower once every run ended) is the one the
    scoring then gets: every object read once, by the early thread, none again."""
    from clampdown.app.drill.session import DrillSession

    s3, listed = evidence
    readers: Counter[str] = Counter()

    def who(**_: Any) -> None:
        readers[threading.current_thread().name.split("_")[0]] += 1

    s3.meta.events.register("before-call.s3.GetObject", who)
    unused: Any = None
    session = DrillSession(
        drill=unused,
        library=unused,
        workspace=unused,
        console=unused,
        keys=unused,
        signers=unused,
        clock=unused,
        slack=None,
        sim=unused,
        seeded=SimpleNamespace(evidence_bucket=BUCKET),  # type: ignore[arg-type]
        base_url="",
        app=unused,
        signing_secret="",
        _clients={"s3": s3},
    )
    session.read_evidence_soon(RUN)
    back = session.evidence_reader().read(RUN)
    assert [r.sha256 for r in back.reads[:-1]] == [e["sha256"] for e in listed[:-1]]  # type: ignore[union-attr]
    assert session.evidence_reader() is session.evidence_reader()
    assert readers == Counter({"drill-evidence-early": 1, "drill-evidence-read": len(listed)})
