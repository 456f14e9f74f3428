"""The runs of a drill as their ledgers tell them (followed by the run follower)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

RUN_START_TIMEOUT = 30.0
EVIDENCE_WAIT = 15.0


@dataclass
class TrackedRun:
    """A run of the drill as its ledger tells it (re-read on every poll)."""

    run_id: str
    runbook: str
    origin: str
    ledger: Path
    started_at: float
    records: list[dict[str, Any]] = field(default_factory=list)
    ended_at: float | None = None

    @property
    def end(self) -> dict[str, Any] | None:
        return next((r for r in reversed(self.records) if r.get("type") == "run.end"), None)


def origin_of(trigger: dict[str, Any], *, primary: bool) -> str:
    """How a run started, for the report: the alert, a second alert, a command, a rollback."""
    kind = trigger.get("type")
    if kind == "alert":
        source = trigger.get("source", "?")
        return f"the alert ({source})" if primary else f"a second alert ({source})"
    if kind == "slack":
        return f"/clampdown run by {trigger.get('user', '?')}"
    if kind == "rollback":
        by = f" by run {trigger['by_run']}" if trigger.get("by_run") else ""
        return f"rollback of run {trigger.get('of', '?')}{by}"
    return str(kind or "unknown")


def epoch(ts: str) -> float:
    """A ledger timestamp (ISO 8601, ``Z``) as epoch seconds."""
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
