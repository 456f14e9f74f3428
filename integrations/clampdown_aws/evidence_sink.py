"""A run's ledger into its evidence in S3: the ``clampdown.evidence_sinks`` plug-in.

During the run, each signed ledger head goes to ``incidents/<run-id>/heads/`` as it is
signed. When the steps are done :class:`S3EvidenceSink` stores the ledger so far and
joins the run's manifest (:mod:`clampdown_aws.evidence_store`), whose version id and
hash the engine records in ``run.end``; after ``run.end`` it stores the finished ledger
as a newer version of ``incidents/<run-id>/ledger.jsonl``. Every object is under Object
Lock when the bucket has it.

Configured by ``CLAMPDOWN_EVIDENCE_BUCKET`` (and its retention and lock mode);
without a bucket :func:`sink_from_env` returns None and no evidence is published.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from clampdown.core.settings import Settings
from clampdown_aws.evidence_store import PREFIX, EvidenceStore


class S3EvidenceSink:
    """Publishes each run's ledger and manifest to one bucket."""

    def __init__(
        self, bucket: str, *, retention_days: int = 365, lock_mode: str = "COMPLIANCE"
    ) -> None:
        self.bucket = bucket
        self.retention_days = retention_days
        self.lock_mode = lock_mode
        self.location = f"s3://{bucket}"
        self._s3: Any = None
        self._client_lock = threading.Lock()
        self._locked = False  # a store of this sink found Object Lock on the bucket

    def manifest_uri(self, run_id: str) -> str:
        return f"s3://{self.bucket}/{PREFIX}/{run_id}/manifest.json"

    def _store(self, run_id: str) -> EvidenceStore:
        """A store for one write. Why it is told what an earlier one found: each signed head
        is a write of its own (16 in the default drill, the last ones after ``run.end``),
        and each new store asked S3 for the bucket's Object Lock configuration again. Once
        a store found Object Lock on, later ones are told (S3 never turns it off on a
        bucket); a bucket found without it is asked again, so a lock turned on during the
        run still applies to what follows."""
        with self._client_lock:  # heads (anchor thread) and the manifest (a step thread)
            if self._s3 is None:  # one client per run
                import boto3

                self._s3 = boto3.client("s3")
        return EvidenceStore(
            self._s3,
            self.bucket,
            run_id,
            retention_days=self.retention_days,
            lock_mode=self.lock_mode,
            locked=self._locked,
        )

    def _remember(self, store: EvidenceStore) -> None:
        """What ``store`` found (it asked at its write, or was told): see :meth:`_store`."""
        if store.bucket_has_object_lock():
            self._locked = True

    def anchor_head(self, run_id: str, seq: int, head: bytes) -> None:
        store = self._store(run_id)
        store.put_head(seq, head)
        self._remember(store)

    def write_manifest(self, run_id: str, ledger: Path) -> dict[str, Any]:
        store = self._store(run_id)
        # the ledger so far is evidence too: the manifest pins that version (and the
        # final ledger, stored after run.end, is a newer version of the same key)
        store.put("ledger.jsonl", [ledger.read_bytes()], "application/x-ndjson")
        manifest = store.write_manifest()
        self._remember(store)
        return {
            "uri": f"s3://{self.bucket}/{manifest.key}",
            "version_id": manifest.version_id,
            "sha256": manifest.sha256,
        }

    def copy_ledger(self, run_id: str, ledger: Path) -> None:
        store = self._store(run_id)
        store.put_plain("ledger.jsonl", ledger.read_bytes(), "application/x-ndjson")
        self._remember(store)


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
