"""Decisions waiting for their run: ``runs/<id>/decisions/<decision-id>.json``.

Every decision a sender makes (a Slack click via ``serve``, ``clampdown approve``) is
written here first, durably, and then delivered to the paused flow run. The run
removes the file once the decision is in its ledger (counted or refused). So a decision
that arrives while no process holds the run (:mod:`clampdown.core.run_ownership`), or
whose delivery is lost with a process that dies, is not lost: the run reads the inbox
when its approval wait begins or is re-entered after a resume, and checks each decision
as if it had just arrived (its proof — signature — included: a file forged on disk
without the approver's key is refused, and the refusal is recorded).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from clampdown.core.approvals import Decision
from clampdown.core.home import RunFiles, write_private

MAX_INBOX_BYTES = 64 * 1024  # a decision is small; anything bigger is not one


def keep(files: RunFiles, decision: Decision) -> Path:
    """Write ``decision`` to the run's inbox (0600, fsync'd) before it is delivered."""
    path = files.decision_inbox / f"{decision.decision_id}.json"
    write_private(path, decision.model_dump_json(), durable=True)
    return path


def inbox_decisions(files: RunFiles, step: str) -> Iterator[tuple[Path, Decision]]:
    """The inbox's decisions for ``step``, oldest first; unreadable files are skipped
    (and left for a person to look at)."""
    folder = files.decision_inbox
    if not folder.is_dir():
        return
    paths = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime)
    for path in paths:
        with contextlib.suppress(OSError, ValueError):
            if path.stat().st_size > MAX_INBOX_BYTES:
                continue
            decision = Decision.model_validate_json(path.read_bytes())
            if decision.step == step and decision.run_id == files.run_id:
                yield path, decision


def forget(files: RunFiles, decision_id: str) -> None:
    """The run recorded this decision: its inbox copy is no longer needed."""
    if "/" in decision_id or decision_id.startswith("."):
        return
    with contextlib.suppress(OSError):
        (files.decision_inbox / f"{decision_id}.json").unlink(missing_ok=True)


def read_request(files: RunFiles, step: str) -> dict[str, Any] | None:
    """The saved request of approval step ``step``, None when there is none."""
    try:
        return dict(json.loads(files.approval_request(step).read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None
