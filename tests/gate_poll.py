"""Paused runs of the test's process that ask the Prefect API every 0.1 s.

A decision sent by another process, Prefect's UI or Prefect's own ``resume_flow_run``
rings no bell (:mod:`clampdown_flows.decision_wakeup`): the paused run finds it at its next
poll, ``approval_gate.poll_seconds`` apart — at least 0.5 s, 0.67 s for a two-minute
gate, 5 s for a fifteen-minute one. A test that sends several such decisions waited out
that clock for each. Here the run's flows (in this process) poll every 0.1 s instead: the
decision is still found by the poll, exactly as before, only sooner. The cost is the
API's, ~10 ms of CPU per ask, for the second or so a test keeps a run paused.
"""

from __future__ import annotations

import pytest

QUICK_POLL = 0.1


def poll_quickly(monkeypatch: pytest.MonkeyPatch) -> None:
    """Gates of flows run in this process (in-process starters, ``run_in_process``) ask the
    Prefect API every :data:`QUICK_POLL` seconds whether they were resumed."""
    from clampdown_flows import approval_gate

    monkeypatch.setattr(approval_gate, "poll_seconds", lambda wait: QUICK_POLL)
