"""A decision the run counted from its inbox before it paused: the sender stops resuming.

The race (found in session 25 by a faster terminal-approval test): `clampdown approve`
keeps the decision in the run's inbox, then resumes the flow run. A run still setting up
its approval (resolving the groups, posting the card) drains the inbox before it pauses,
records the decision and forgets the inbox copy; it never pauses for that decision. The
sender used to go on resuming a flow run that was not paused until its wait ran out, then
told the approver "not paused for approval" about a decision the run had counted. Now the
resume loop ends as soon as the kept copy is gone, and the sender reads the verdict from
the ledger.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import prefect.flow_runs
import pytest
from prefect.exceptions import NotPausedError

from clampdown.core.approvals import Decision
from clampdown.core.home import Home
from clampdown_flows import decision_inbox, decisions
from clampdown_flows.approval_store import DecisionError

RUN, STEP = "r-inbox-race", "approve"


@dataclass
class Sent:
    """A decision kept in a run's inbox, and the resume attempts made for it."""

    decision: Decision
    kept: decision_inbox.Kept
    attempts: list[str]

    def resume(self, wait: float) -> None:
        request = {"flow_run_id": str(uuid.uuid4()), "step": STEP}
        decisions._resume(request, self.decision, time.monotonic() + wait, self.kept)


def _sent_to_a_run_never_paused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, taken_at: int
) -> Sent:
    """A decision kept for a flow run that is never paused (``resume_flow_run`` always
    answers NotPausedError); the run takes it from its inbox (forgets the kept copy) at the
    ``taken_at``-th resume attempt (0: never)."""
    files = Home(tmp_path).run(RUN)
    decision = Decision(
        run_id=RUN, step=STEP, params_hash="0" * 64, decision="approve", approver="U0APPROVE1"
    )
    sent = Sent(decision, decision_inbox.keep(files, decision), [])

    def resume(flow_run_id: uuid.UUID, run_input: object = None) -> None:
        sent.attempts.append(str(flow_run_id))
        if len(sent.attempts) == taken_at:
            decision_inbox.forget(files, decision.decision_id)
        raise NotPausedError("not paused")

    monkeypatch.setattr(prefect.flow_runs, "resume_flow_run", resume)
    assert sent.kept.exists()
    return sent


def test_a_decision_the_run_took_from_its_inbox_ends_the_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent = _sent_to_a_run_never_paused(tmp_path, monkeypatch, taken_at=2)
    sent.resume(wait=20)  # returns: no error
    assert len(sent.attempts) == 2  # stopped at the first look after the run took it
    assert not sent.kept.exists()


def test_a_decision_still_kept_is_resumed_until_the_wait_runs_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent = _sent_to_a_run_never_paused(tmp_path, monkeypatch, taken_at=0)  # never taken
    with pytest.raises(DecisionError, match="not paused for approval"):
        sent.resume(wait=0.5)
    assert len(sent.attempts) >= 2 and sent.kept.exists()
