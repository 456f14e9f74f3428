"""Which rollback refusals a step may try again: only those a moment can change.

A release step is approved and destructive, so the engine gives it several retries
(``APPROVED_RETRIES``); a refusal by rule (already rolled back, not a run) must not spend
them — the e2e release test counts the attempts of a real flow run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clampdown.core.home import ROLLED_BACK_MARK, Home
from clampdown.core.undo import RollbackRefused, rollback_target


def _ledger(home: Home, run_id: str, *records: dict) -> None:
    path = home.run(run_id).ledger
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def _refusal(home: Home, run_id: str) -> RollbackRefused:
    with pytest.raises(RollbackRefused) as caught:
        rollback_target(run_id, home, allow_repeat=False)
    return caught.value


def test_refusals_by_rule_are_final_and_those_of_the_moment_are_not(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    assert _refusal(home, "../etc").retry_may_help is False  # not a run id
    assert _refusal(home, "nosuchrun").retry_may_help is False
    _ledger(home, "rollback1", {"type": "run.start", "rollback_of": "contain1"})
    assert _refusal(home, "rollback1").retry_may_help is False  # a rollback itself
    _ledger(home, "running1", {"type": "run.start"})
    assert _refusal(home, "running1").retry_may_help is True  # it may finish
    _ledger(home, "done1", {"type": "run.start"}, {"type": "run.end", "status": "succeeded"})
    done = home.run("done1").ledger.parent / ROLLED_BACK_MARK
    done.write_text(json.dumps({"rollback_id": "rb1", "at": "2026-12-05T00:00:00Z"}))
    refused = _refusal(home, "done1")
    assert "already rolled back" in str(refused) and refused.retry_may_help is False
