"""Decisions waiting for their run: ``runs/<id>/decisions/<decision-id>.json``.

Every decision a sender makes (a Slack click via ``serve``, ``clampdown approve``) is
written here first, durably, and then delivered to the paused flow run. The run
removes the file once the decision is in its ledger (counted or refused). So a decision
that arrives while no process holds the run (:mod:`clampdown.core.run_ownership`), or
whose delivery is lost with a process that dies, is not lost: the run reads the inbox
when its approval wait begins or is re-entered after a resume, and checks each decision
as if it had just arrived (its proof — signature — included: a file forged on disk
without the approver's key is refused, and the refusal is recorded).

The inbox goes through :class:`~clampdown.core.home.RunFiles`: in the scaled mode it is
the run's ``decisions/`` rows in the run store (PostgreSQL), so a decision sent from one
machine is read by the run on another, or by the worker that continues it.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from clampdown.core.approvals import Decision
from clampdown.core.home import APPROVALS, DECISION_INBOX, RunFiles

MAX_INBOX_BYTES = 64 * 1024  # a decision is small; anything bigger is not one


@dataclass(frozen=True)
class Kept:
    """A decision in a run's inbox: :meth:`exists` until the run has recorded it."""

    files: RunFiles
    name: str

    def exists(self) -> bool:
        return self.files.read(self.name) is not None


def keep(files: RunFiles, decision: Decision) -> Kept:
    """Write ``decision`` to the run's inbox (0600, fsync'd; in the run store when there is
    one) before it is delivered."""
    name = f"{DECISION_INBOX}/{decision.decision_id}.json"
    files.write(name, decision.model_dump_json(), durable=True)
    return Kept(files, name)


def inbox_decisions(files: RunFiles, step: str) -> Iterator[tuple[str, Decision]]:
    """The inbox's decisions for ``step`` (with their names), oldest first; unreadable
    ones are skipped (and left for a person to look at)."""
    for name in files.names(DECISION_INBOX):
        if not name.endswith(".json"):
            continue
        with contextlib.suppress(OSError, ValueError):
            text = files.read(f"{DECISION_INBOX}/{name}")
            if text is None or len(text.encode()) > MAX_INBOX_BYTES:
                continue
            decision = Decision.model_validate_json(text)
            if decision.step == step and decision.run_id == files.run_id:
                yield name, decision


def forget(files: RunFiles, decision_id: str) -> None:
    """The run recorded this decision: its inbox copy is no longer needed."""
    if "/" in decision_id or decision_id.startswith("."):
        return
    with contextlib.suppress(OSError):
        files.remove(f"{DECISION_INBOX}/{decision_id}.json")


def read_request(files: RunFiles, step: str) -> dict[str, Any] | None:
    """The saved request of approval step ``step``, None when there is none."""
    try:
        text = files.read(f"{APPROVALS}/{step}.json")
        return None if text is None else dict(json.loads(text))
    except (OSError, ValueError):
        return None
