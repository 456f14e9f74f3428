"""Undo records of a run, read back from its ledger for rollback.

Actions record what they changed as they go (``ActionContext.record_undo``);
the executor writes those records into the step's ``step.end`` record, and
into ``step.attempt_failed`` for an attempt that changed something and then
failed. Rollback takes them newest first: the last change is put back first,
so a step that built on an earlier one is undone before it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clampdown.diagnostics import ClampdownError
from clampdown.ledger import read, verify_file


@dataclass(frozen=True)
class UndoItem:
    """One change to put back: which action made it, where, and how to reverse it."""

    seq: int
    step: str
    uses: str
    region: str | None
    account: str | None
    description: str
    how: dict[str, Any]


def undo_items(ledger: Path) -> list[UndoItem]:
    """The run's undo records, newest first. Refuses a ledger whose chain is broken."""
    verdict = verify_file(ledger)
    if not verdict.ok:
        raise ClampdownError(
            f"the ledger {ledger} fails verification: {verdict.message}",
            "rollback trusts only an intact ledger; investigate the tampering first",
        )
    started: dict[str, dict[str, Any]] = {}
    items: list[UndoItem] = []
    for record in read(ledger):
        if record["type"] == "step.start":
            started[record["step"]] = record
        if record["type"] not in ("step.end", "step.attempt_failed"):
            continue
        start = started.get(record["step"], {})
        for index, entry in enumerate(record.get("undo") or []):
            how = {k: v for k, v in entry.items() if k != "description"}
            items.append(
                UndoItem(
                    seq=record["seq"] * 1000 + index,
                    step=record["step"],
                    uses=start.get("uses", record.get("uses", "")),
                    region=start.get("region"),
                    account=start.get("account"),
                    description=entry.get("description", ""),
                    how=how,
                )
            )
    return sorted(items, key=lambda item: item.seq, reverse=True)
