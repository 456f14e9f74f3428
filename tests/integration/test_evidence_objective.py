"""The drill's evidence objective re-hashes every object its run's manifest lists (a few at
a time) and names each one whose bytes changed, on moto in-process."""

from __future__ import annotations

from types import SimpleNamespace

import boto3

from clampdown.app.drill.evidence_reads import READERS as HASHERS
from clampdown.app.drill.facts import DrillFacts
from clampdown.app.drill.objectives_aws import evidence_manifest_complete
from clampdown.core.drill_model import EvidenceManifestComplete
from clampdown_aws.evidence_store import EvidenceStore


def _facts(s3, run_id: str) -> DrillFacts:
    return DrillFacts(
        drill=None,  # type: ignore[arg-type]  # the objective reads no drill field
        seeded=SimpleNamespace(evidence_bucket="evidence"),  # type: ignore[arg-type]
        alert_epoch=0.0,
        client=lambda service: s3,
        run_id=run_id,
    )


def test_every_listed_object_is_rehashed_and_each_changed_one_named(mocked_aws: None) -> None:
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="evidence")
    store = EvidenceStore(s3, "evidence", "run-1")
    store.put("ledger.jsonl", [b"{}\n"])
    store.put("cloudtrail/part-0.json", [b"[]"])
    names = [f"logs/{i:02d}.txt" for i in range(2 * HASHERS + 1)]
    for name in names:
        store.put(name, [name.encode()])
    store.write_manifest()
    objective = EvidenceManifestComplete(id="evidence", kind="evidence_manifest_complete")

    met, measured, _ = evidence_manifest_complete(objective, _facts(s3, "run-1"))
    assert (met, measured) == (True, f"{len(names) + 2} objects")

    for name in (names[3], names[-1]):  # unversioned bucket: overwritten in place
        s3.put_object(Bucket="evidence", Key=f"incidents/run-1/{name}", Body=b"tampered")
    met, _, reason = evidence_manifest_complete(objective, _facts(s3, "run-1"))
    assert not met
    assert reason == (f"hash mismatch: incidents/run-1/{names[3]}, incidents/run-1/{names[-1]}")
