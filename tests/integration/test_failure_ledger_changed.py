"""Failure table (docs/operations.md, "what survives what"): the ledger was changed while
the run was stopped.

Someone who can write ``CLAMPDOWN_HOME`` edits a stopped run's ledger so that its
containment looks approved and done, and recomputes the whole hash chain (SHA-256 is no
secret: tests/ledger_forgery.py). The next serve must not continue that run: nothing is
written to its ledger, no step runs, and the refusal says why. The run is signed with a
local key (``CLAMPDOWN_LEDGER_KEY``), which is what makes a re-chained edit detectable.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from clampdown.app.local_runs import InProcessStarter, stopped_runs
from clampdown.core.ledger import read
from clampdown.core.ledger_signing import generate_local_key
from clampdown.core.settings import settings
from tests.approver_keys import approver_keys
from tests.ledger_forgery import rewrite
from tests.waiting import wait_for

RUNBOOK = """\
apiVersion: clampdown/v1
kind: Runbook
metadata: {name: forged-while-stopped, title: Forged while stopped, severity: high}
steps:
  - id: approve
    uses: approval.request
    with: {summary: "Go?", approvers: {users: [U0TERM1]}, timeout: 30m}
  - {id: act, uses: core.log, needs: [approve], with: {message: approved}}
"""
BOUND = 120.0


def wait_for_event(check: Any, what: str) -> Any:
    """:func:`tests.waiting.wait_for` within this file's :data:`BOUND`."""
    return wait_for(check, what, BOUND)


LOGGER = "prefect.flow_runs"
"""A run's own log, which serve writes to its stderr with its own."""


def looks_approved_and_done(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The forger's edit: the approval ended approved and the gated step succeeded."""
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    return [
        *records,
        {"ts": now, "type": "approval.end", "step": "approve", "status": "approved",
         "approvers": ["U0TERM1"]},
        {"ts": now, "type": "step.end", "step": "act", "status": "succeeded", "attempts": 1},
    ]  # fmt: skip


def test_a_ledger_forged_while_the_run_was_stopped_is_not_continued(
    prefect_server: str,
    clampdown_home: Path,
    write_runbook: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CLAMPDOWN_SLACK_BOT_TOKEN", raising=False)
    approver_keys(tmp_path, monkeypatch, "U0TERM1")
    monkeypatch.setenv("CLAMPDOWN_LEDGER_KEY", str(generate_local_key(tmp_path / "k" / "l.pem")))
    path = write_runbook(RUNBOOK, "forged-while-stopped.yaml")
    first = InProcessStarter()
    run_id = first(path, {}, {"type": "manual"})
    request = settings().paths.run(run_id).approval_request("approve")
    wait_for_event(lambda: request.is_file() and json.loads(request.read_text()), "the gate")
    assert first.shutdown() == [run_id]  # serve stopped: the run is suspended
    ledger = settings().ledger_path(run_id)
    rewrite(ledger, looks_approved_and_done)  # signatures kept: they cannot be made
    forged = ledger.read_bytes()

    said: list[str] = []
    heard = logging.Handler(logging.ERROR)
    heard.emit = lambda record: said.append(record.getMessage())  # type: ignore[method-assign]
    serve_log = logging.getLogger(LOGGER)
    serve_log.addHandler(heard)
    second = InProcessStarter(resume_stopped=True, scan_every=3600)  # the next serve
    try:
        refusal = wait_for_event(
            lambda: next((m for m in said if run_id in m and "fails verification" in m), None),
            "the run's log to say why it is refused",
        )
    finally:
        second.shutdown()
        serve_log.removeHandler(heard)
    assert "is not resumed: its ledger fails verification" in refusal, refusal
    assert ledger.read_bytes() == forged  # nothing written: no run.resumed, no run.end
    assert stopped_runs(settings().paths) == [run_id]  # still stopped, for a human to see
    assert [r["type"] for r in read(ledger)][-2:] == ["approval.end", "step.end"]
