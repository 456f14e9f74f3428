"""A finished run's ledger into its evidence in S3: the ``clampdown.evidence_sinks`` plug-in.

After ``run.end`` the engine hands the ledger to :class:`S3EvidenceSink`, which puts
it beside the run's evidence (``incidents/<run-id>/ledger.jsonl``, Object Lock when
the bucket has it) and joins the manifest (:mod:`clampdown_aws.evidence_store`).
Configured by ``CLAMPDOWN_EVIDENCE_BUCKET`` (and its retention and lock mode);
without a bucket :func:`sink_from_env` returns None and no evidence is published.
"""

from __future__ import annotations

from pathlib import Path

from clampdown.core.settings import Settings
from clampdown_aws.evidence_store import PREFIX, EvidenceStore


class S3EvidenceSink:
    """Publishes each run's ledger and manifest to one bucket."""

    def __init__(
        self, bucket: str, *, retention_days: int = 365, lock_mode: str = "GOVERNANCE"
    ) -> None:
        self.bucket = bucket
        self.retention_days = retention_days
        self.lock_mode = lock_mode
        self.location = f"s3://{bucket}"

    def manifest_uri(self, run_id: str) -> str:
        return f"s3://{self.bucket}/{PREFIX}/{run_id}/manifest.json"

    def publish(self, run_id: str, ledger: Path) -> None:
        import boto3

        store = EvidenceStore(
            boto3.client("s3"),
            self.bucket,
            run_id,
            retention_days=self.retention_days,
            lock_mode=self.lock_mode,
        )
        store.put("ledger.jsonl", [ledger.read_bytes()], "application/x-ndjson")
        store.write_manifest()


def sink_from_env(conf: Settings) -> S3EvidenceSink | None:
    """The ``clampdown.evidence_sinks`` factory: None without ``CLAMPDOWN_EVIDENCE_BUCKET``
    (in the settings the run read at its start)."""
    if not conf.evidence_bucket:
        return None
    return S3EvidenceSink(
        conf.evidence_bucket,
        retention_days=conf.evidence_retention_days,
        lock_mode=conf.evidence_lock_mode,
    )
