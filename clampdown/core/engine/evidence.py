"""A run's ledger to the configured evidence sinks (S3 with Object Lock), during and after.

During the run each signed chain head goes to every sink that anchors heads
(:func:`anchors`). When the steps are done, each sink writes the run's evidence
manifest, the ledger so far included (:func:`write_manifests`), and the first one's
version id and SHA-256 go into ``run.end`` (signed like every record): ``clampdown
verify s3://…/manifest.json`` reads that version, not whatever was written last. After
``run.end`` the finished ledger is copied (:func:`store_ledger`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from clampdown.core.extensions import EvidenceSink
from clampdown.core.ledger import Ledger
from clampdown.core.ledger_signing import Anchor

log = logging.getLogger("clampdown.evidence")


def manifest_uri(sinks: Sequence[EvidenceSink], run_id: str) -> str | None:
    """What ``run.end`` names as the run's evidence: the first sink's manifest."""
    return sinks[0].manifest_uri(run_id) if sinks else None


def anchors(sinks: Sequence[EvidenceSink]) -> list[Anchor]:
    """Where signed heads are copied as the run goes."""
    return [sink.anchor_head for sink in sinks]


def write_manifests(
    sinks: Sequence[EvidenceSink], run_id: str, ledger: Path
) -> tuple[dict[str, Any] | None, list[str]]:
    """Each sink's manifest (with the ledger so far), before ``run.end``: the first one's
    pin, and what failed."""
    pin: dict[str, Any] | None = None
    errors: list[str] = []
    for sink in sinks:
        try:
            written = sink.write_manifest(run_id, ledger)
        except Exception as exc:
            errors.append(_failed(sink, exc))
            continue
        pin = pin or written
    return pin, errors


def store_ledger(
    sinks: Sequence[EvidenceSink], run_id: str, ledger: Ledger, errors: Sequence[str] = ()
) -> str | None:
    """Copy the finished ledger to every sink; what failed, as one message (None: all went).

    Runs after ``run.end``. Closes the ledger first (the newest signed head has then
    reached the sinks). A failure does not change what the run did; it is logged and
    returned so the caller can say so.
    """
    ledger.close()
    failed = list(errors)
    for sink in sinks:
        try:
            sink.copy_ledger(run_id, ledger.path)
        except Exception as exc:
            failed.append(_failed(sink, exc))
    return "; ".join(failed) or None


def _failed(sink: EvidenceSink, exc: Exception) -> str:
    message = f"evidence upload to {sink.location} failed: {exc}"
    log.error(message)
    return message
