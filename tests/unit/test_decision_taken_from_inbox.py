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
from collections.abc import Callable
from pathlib import Path

import prefect.flow_runs
import pytest
from prefect.exceptions import NotPausedError

from clampdown.core.approvals import Decision
from clampdown.core.home import Home, RunFiles
from clampdown_flows import decision_inbox, decisions
from clampdown_flows.approval_store import DecisionError

RUN, STEP = "r-inbox-race", "approve"


def _decision() -> Decision:
    return Decision(
        run_id=RUN, step=STEP, params_hash="0" * 64, decision="approve", approver="U0APPROVE1"
    )


def _never_paused(
    taken_at: int, files: RunFiles, decision: Decision
) -> tuple[list[str], Callable[..., None]]:
    """A ``resume_flow_run`` for a flow run that is never paused; the run takes the decision
    from its inbox (forgets the kept copy) at the ``taken_at``-th attempt (0: never).
    Returns the attempts made so far and the function."""
    attempts: list[str] = []

    def resume(flow_run_id: uuid.UUID, run_input: object = None) -> None:
        attempts.append(str(flow_run_id))
        if len(attempts) == taken_at:
            decision_inbox.forget(files, decision.decision_id)
        raise NotPausedError("not paused")

    return attempts, resume


def test_a_decision_the_run_took_from_its_inbox_ends_the_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = Home(tmp_path).run(RUN)
    decision = _decision()
    kept = decision_inbox.keep(files, decision)
    assert kept.exists()
    attempts, resume = _never_paused(2, files, decision)
    monkeypatch.setattr(prefect.flow_runs, "resume_flow_run", resume)

    request = {"flow_run_id": str(uuid.uuid4()), "step": STEP}
    decisions._resume(request, decision, time.monotonic() + 20, kept)  # returns: no error

    assert len(attempts) == 2  # stopped at the first look after the run took it
    assert not kept.exists()


def test_a_decision_still_kept_is_resumed_until_the_wait_runs_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = Home(tmp_path).run(RUN)
    decision = _decision()
    kept = decision_inbox.keep(files, decision)
    attempts, resume = _never_paused(0, files, decision)  # never taken
    monkeypatch.setattr(prefect.flow_runs, "resume_flow_run", resume)

    request = {"flow_run_id": str(uuid.uuid4()), "step": STEP}
    with pytest.raises(DecisionError, match="not paused for approval"):
        decisions._resume(request, decision, time.monotonic() + 0.5, kept)
    assert len(attempts) >= 2 and kept.exists()
