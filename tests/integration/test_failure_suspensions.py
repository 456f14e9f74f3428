"""Failure table (docs/operations.md, "what survives what"): serve stopped with SIGTERM
again and again while a run waits for people.

Each SIGTERM of serve (a deploy, ``systemctl stop``) suspends the runs it holds
(``run.suspended``) and the next serve continues them (``run.resumed``). A run that waits
hours for an approval may live through several deploys; the limit on resumes
("its process stopped 4 times") is for a run whose process keeps dying, not for one that
was stopped in good order. Here a run is suspended the way serve's SIGTERM suspends it
(``InProcessStarter.shutdown``, the code serve's signal handler calls), four times,
and is still continued, and its approval still counts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from clampdown.app.local_runs import InProcessStarter, stopped_runs
from clampdown.core.ledger import read
from clampdown.core.settings import settings
from clampdown_flows.decisions import submit_decision
from tests.approver_keys import approver_keys
from tests.waiting import wait_for

RUNBOOK = """\
apiVersion: clampdown/v1
kind: Runbook
metadata: {name: suspended-gate, title: Suspended gate, severity: high}
steps:
  - {id: first, uses: core.log, with: {message: "before the gate"}}
  - id: approve
    uses: approval.request
    needs: [first]
    with: {summary: "Go?", approvers: {users: [U0TERM1]}, timeout: 30m}
  - {id: act, uses: core.log, needs: [approve], with: {message: approved}}
"""

DEPLOYS = 4
"""One more than MAX_RESUMES: the fourth continuation is the one a crash loop would end."""


def wait_for_event(check: Any, what: str) -> Any:
    """:func:`tests.waiting.wait_for` within 120 s, this file's bound."""
    return wait_for(check, what, 120)


def records(run_id: str) -> list[dict[str, Any]]:
    path = settings().ledger_path(run_id)
    return read(path) if path.is_file() else []


def count(run_id: str, kind: str) -> int:
    return [r["type"] for r in records(run_id)].count(kind)


@pytest.fixture
def keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.delenv("CLAMPDOWN_SLACK_BOT_TOKEN", raising=False)
    return approver_keys(tmp_path, monkeypatch, "U0TERM1")


def test_a_run_waiting_for_approval_outlives_more_deploys_than_the_crash_limit(
    prefect_server: str, clampdown_home: Path, write_runbook: Any, keys: Any
) -> None:
    path = write_runbook(RUNBOOK, "suspended-gate.yaml")
    starter = InProcessStarter()
    run_id = starter(path, {}, {"type": "manual", "user": "U0LEAD"})
    request = settings().paths.run(run_id).approval_request("approve")
    wait_for_event(lambda: request.is_file(), "the approval request")
    first = json.loads(request.read_text())
    try:
        for deploy in range(1, DEPLOYS + 1):
            # the run is waiting (its gate entered, or re-entered after a resume)
            wait_for_event(
                lambda d=deploy: (
                    count(run_id, "approval.resumed") == d - 1
                    and (d == 1 or count(run_id, "run.resumed") == d - 1)
                ),
                "the wait",
            )
            assert starter.shutdown() == [run_id]  # serve's SIGTERM
            assert count(run_id, "run.suspended") == deploy
            assert stopped_runs(settings().paths) == [run_id]
            starter = InProcessStarter(resume_stopped=True, scan_every=3600)  # the next serve
            wait_for_event(
                lambda d=deploy: count(run_id, "approval.resumed") == d or count(run_id, "run.end"),
                "the run to be continued",
            )
            assert count(run_id, "run.end") == 0, records(run_id)[-1]
        again = json.loads(request.read_text())
        assert (again["nonce"], again["deadline"]) == (first["nonce"], first["deadline"])
        verdict = submit_decision(
            run_id, "approve", "U0TERM1", key=keys["U0TERM1"], wakeups=starter.wakeups
        )
        assert verdict.accepted, verdict.reason
        wait_for_event(lambda: count(run_id, "run.end"), "the run to end")
    finally:
        starter.shutdown()
    ledger = records(run_id)
    end = ledger[-1]
    assert end["type"] == "run.end" and end["status"] == "succeeded", end
    assert [r["resumes"] for r in ledger if r["type"] == "run.resumed"] == list(
        range(1, DEPLOYS + 1)
    )
    starts = [r["step"] for r in ledger if r["type"] == "step.start"]
    assert starts.count("first") == 1 and starts.count("act") == 1
