"""After a run: its ledger goes to the configured evidence sinks (S3 with Object Lock)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from clampdown.core.extensions import EvidenceSink


def manifest_uri(sinks: Sequence[EvidenceSink], run_id: str) -> str | None:
    """What ``run.end`` names as the run's evidence: the first sink's manifest."""
    return sinks[0].manifest_uri(run_id) if sinks else None


def publish_evidence(sinks: Sequence[EvidenceSink], run_id: str, ledger: Path) -> str | None:
    """Hand the finished ledger to every sink; what failed, as one message (None: all went).

    Runs after ``run.end`` (the ledger is complete). A failure here does not
    change what the run did; it is logged and returned so the caller can say so.
    """
    errors = []
    for sink in sinks:
        try:
            sink.publish(run_id, ledger)
        except Exception as exc:
            message = f"evidence upload to {sink.location} failed: {exc}"
            logging.getLogger("clampdown.evidence").error(message)
            errors.append(message)
    return "; ".join(errors) or None
