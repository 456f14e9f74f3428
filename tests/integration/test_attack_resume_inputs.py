"""A stopped run continues with the inputs it started with, not with an edited start record.

A resumed run reads its inputs from its start record (``runs/<id>/start.json``, which keeps
secret inputs sealed): a file, not signed. Someone who can write the run's files (the home,
the run store) edited it while the run was stopped, and the next serve continued the
containment against another target. The signed ``run.start`` has the inputs too (secret
ones masked): the run now ends, failed, saying why, instead of acting on the edited ones.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from clampdown.app.local_runs import InProcessStarter
from clampdown.core.ledger import read
from clampdown.core.settings import settings
from tests.waiting import wait_for

RUNBOOK = """\
apiVersion: clampdown/v1
kind: Runbook
metadata: {name: contain-someone, title: Contain someone, severity: high}
inputs:
  user: {type: string, required: true}
steps:
  - {id: first, uses: core.log, with: {message: "about {{ inputs.user }}"}}
  - id: approve
    uses: approval.request
    needs: [first]
    with: {summary: "Contain {{ inputs.user }}?", approvers: {users: [U0TERM1]},
           timeout: 30m}
  - {id: act, uses: core.log, needs: [approve], with: {message: "contained {{ inputs.user }}"}}
"""


def _records(run_id: str) -> list[dict[str, Any]]:
    path = settings().ledger_path(run_id)
    return read(path) if path.is_file() else []


def test_a_start_record_edited_while_the_run_was_stopped_ends_the_run(
    prefect_server: str, clampdown_home: Path, write_runbook: Any
) -> None:
    path = write_runbook(RUNBOOK, "contain-someone.yaml")
    first = InProcessStarter()
    run_id = first(path, {"user": "alice"}, {"type": "manual", "user": "U0LEAD"})
    wait_for(
        lambda: any(r["type"] == "approval.request" for r in _records(run_id)),
        "the run to wait for its approval",
    )
    assert first.shutdown() == [run_id]  # serve's SIGTERM: the run is suspended

    start = settings().paths.run(run_id).dir / "start.json"
    data = json.loads(start.read_text())
    data["inputs"]["user"] = "mallory"  # the forged target
    start.write_text(json.dumps(data))

    second = InProcessStarter(resume_stopped=True, scan_every=3600)
    try:
        end = wait_for(
            lambda: next((r for r in _records(run_id) if r["type"] == "run.end"), None),
            "the resumed run to end",
        )
    finally:
        second.shutdown()
    assert end["status"] == "failed"
    assert "inputs differ from the signed run.start (user)" in end["error"]
    text = json.dumps(_records(run_id))
    assert "mallory" not in text  # no step acted on (or even logged) the edited input
    assert "run.resumed" not in [r["type"] for r in _records(run_id)]


def test_an_input_holding_a_secret_s_text_is_compared_as_the_ledger_wrote_it() -> None:
    """The ledger masks a secret's text inside every value (a webhook URL that carries the
    token): that input reads differently in run.start, and is not an edit (h-review27)."""
    from clampdown.core.models import Runbook
    from clampdown_flows.respond import _inputs_changed

    rb = Runbook.model_validate(
        {
            "apiVersion": "clampdown/v1",
            "kind": "Runbook",
            "metadata": {"name": "r", "title": "r"},
            "inputs": {"token": {"type": "string", "secret": True}, "url": {"type": "string"}},
            "steps": [{"id": "s", "uses": "core.log", "with": {"message": "hi"}}],
        }
    )
    values = {"token": "tok-123456", "url": "https://hooks.example/tok-123456"}
    recorded = {"token": "***", "url": "https://hooks.example/***"}

    def scrub(value: Any) -> Any:
        return json.loads(json.dumps(value).replace("tok-123456", "***"))

    assert _inputs_changed(rb, values, {"inputs": recorded}, scrub) is None
    edited = {**values, "url": "https://evil.example/tok-123456"}
    assert "(url)" in (_inputs_changed(rb, edited, {"inputs": recorded}, scrub) or "")
