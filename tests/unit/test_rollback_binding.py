"""Rollback executes only what the engine wrote, and only what the approver saw.

A containment run's ledger is on disk; release-containment's approval shows and binds
every undo action (action, target, parameters). An attacker who can write
CLAMPDOWN_HOME then rewrites the undo records between the approval and the rollback
(chain recomputed): with a signing key the rollback refuses the ledger by its
signatures, without one by the approved hash. Nothing forged is executed either way,
and each refusal is on the record."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any, ClassVar

import pytest

from clampdown.core.actions import Action, ActionContext, ActionInput, ActionOutput, registry
from clampdown.core.diagnostics import ClampdownError
from clampdown.core.engine.gate_policy import GatePolicy, now
from clampdown.core.engine.scheduler import Attempt, Limits, Produced, schedule
from clampdown.core.engine.state import new_state
from clampdown.core.home import Home
from clampdown.core.inputs import validate
from clampdown.core.ledger import read
from clampdown.core.ledger_signing import generate_local_key, load_local_key, open_ledger
from clampdown.core.lint import load_runbook
from clampdown.core.models import Step
from clampdown.core.undo import RollbackRun, rollback_run
from tests.ledger_forgery import forge_undo, rewrite
from tests.paths import REPO


class Retag(Action):
    """Test-only containment whose undo records what it would put back."""

    name = "test.retag_binding"
    destructive = True
    undone: ClassVar[list[dict[str, Any]]] = []

    class Input(ActionInput):
        bucket: str

    def run(self, params: Input, ctx: ActionContext) -> ActionOutput:
        return ActionOutput()

    def rollback(self, how: dict[str, Any], ctx: ActionContext) -> None:
        self.undone.append(how)


registry().register(Retag)


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return Home(tmp_path / "home")


@pytest.fixture
def signer(tmp_path: Path):
    return load_local_key(generate_local_key(tmp_path / "keys" / "ledger.pem"), tmp_path / "home")


def containment(home: Home, signer: Any, run_id: str = "contain1") -> Path:
    ledger = open_ledger(home.run(run_id).ledger, run_id, signer)
    ledger.append("run.start", run={"id": run_id, "runbook": "contain"})
    ledger.append("step.start", step="freeze", uses="test.retag_binding", region="eu-west-1")
    ledger.append(
        "step.end",
        step="freeze",
        status="succeeded",
        undo=[{"description": "put back state=serving on models", "bucket": "models"}],
    )
    ledger.append("run.end", status="succeeded")
    ledger.close()
    return ledger.path


class Approving:
    """Approves at once; ``tamper`` runs between the approval and the gated step."""

    def __init__(self, gate: GatePolicy, tamper: Any) -> None:
        self.gate, self.tamper, self.requests = gate, tamper, []

    async def run_action(self, step: Step, attempt: Attempt, limits: Limits) -> Produced:
        return await attempt(logging.getLogger("unit"))

    async def request_approval(self, step: Step, params: Any) -> dict[str, Any]:
        request = self.gate.open(step.id, params)
        self.requests.append(request)
        outputs, _ = self.gate.close(request, "approved", now())
        if self.tamper is not None:
            self.tamper()
        return outputs


def release(home: Home, signer: Any, tamper: Any = None):
    rb = load_runbook(REPO / "runbooks" / "release-containment.yaml")[0].model
    ledger = open_ledger(home.run("release1").ledger, "release1", signer)
    values = validate(rb.inputs, {"run_id": "contain1", "reason": "INC-1 closed"})
    info = {"id": "release1", "runbook": rb.metadata.name, "trigger": {"type": "manual"}}
    state = new_state("release1", rb, values, ledger, info, home.run("release1"))
    state.gate = gate = GatePolicy(state, lambda: (["U0LEAD"], []))
    runner = Approving(gate, tamper)
    Retag.undone.clear()
    asyncio.run(schedule(state, runner))
    ledger.close()
    return runner.requests[0], state


def test_the_release_approval_shows_and_binds_every_undo_action(home, signer):
    containment(home, signer)
    request, state = release(home, signer)
    shown = request.gated["rollback"]["params"]
    assert shown["run_id"] == "contain1"
    assert shown["undo 1 of 1"] == {
        "step": "freeze",
        "action": "test.retag_binding",
        "region": "eu-west-1",
        "account": None,
        "says": "put back state=serving on models",
        "does": {"bucket": "models"},
    }
    assert shown["ledger"].startswith("intact: ")
    assert state.results["rollback"].status == "succeeded"
    assert Retag.undone == [{"bucket": "models"}]


def test_undo_records_forged_after_the_approval_are_refused_by_their_signatures(home, signer):
    path = containment(home, signer)
    forged = forge_undo("freeze", {"bucket": "prod-models", "policy": "Allow *:*"})
    _, state = release(home, signer, tamper=lambda: rewrite(path, forged))
    result = state.results["rollback"]
    assert result.status == "failed" and Retag.undone == []
    assert "TAMPERED at record 2 (step.end)" in str(result.error)


def test_without_a_key_changed_undo_records_are_refused_by_the_approved_hash(home):
    path = containment(home, None)
    forged = forge_undo("freeze", {"bucket": "prod-models", "policy": "Allow *:*"})
    _, state = release(home, None, tamper=lambda: rewrite(path, forged))
    result = state.results["rollback"]
    assert result.status == "failed" and Retag.undone == []
    assert "differ from the ones approved" in str(result.error)


def test_a_forged_ledger_is_refused_before_anyone_is_asked(home, signer):
    path = containment(home, signer)
    rewrite(path, forge_undo("freeze", {"bucket": "prod-models"}))
    with pytest.raises(ClampdownError, match=r"fails verification \(record 2\)"):
        RollbackRun.approval_details(RollbackRun.Input(run_id="contain1"), home, signer)


def test_a_refused_rollback_is_recorded_in_its_own_signed_ledger(home, signer):
    path = containment(home, signer)
    rewrite(path, forge_undo("freeze", {"bucket": "prod-models"}))
    with pytest.raises(ClampdownError, match="TAMPERED at record 2"):
        rollback_run("contain1", "rb1", home, undo=lambda *a: None, signer=signer)
    records = read(home.run("rb1").ledger)
    assert [r["type"] for r in records] == ["run.start", "rollback.refused", "run.end"]
    assert "TAMPERED at record 2 (step.end)" in records[1]["reason"]
    assert all("sig" in r for r in records)


def test_an_unsigned_ledger_is_refused_once_a_key_is_configured(home, signer):
    containment(home, None)
    with pytest.raises(ClampdownError, match="UNSIGNED"):
        rollback_run("contain1", "rb2", home, undo=lambda *a: None, signer=signer)


def test_a_rollback_undoes_only_what_was_confirmed(home, signer):
    containment(home, signer)
    with pytest.raises(ClampdownError, match="changed after they were approved"):
        rollback_run("contain1", "rb3", home, undo=lambda *a: None, signer=signer, expected="0")
    done = rollback_run("contain1", "rb4", home, undo=lambda *a: None, signer=signer)
    start = read(done.ledger)[0]
    assert start["source"]["status"] == "intact" and start["undo_count"] == 1
    assert json.loads(json.dumps(start["source"]["undo_sha256"]))


def test_a_run_already_rolled_back_is_shown_as_refused_and_the_step_refuses_it(home, signer):
    containment(home, signer)
    rollback_run("contain1", "rb5", home, undo=lambda *a: None, signer=signer)
    request, state = release(home, signer)
    shown = request.gated["rollback"]["params"]
    assert "already rolled back by rb5" in shown["will be refused"]
    result = state.results["rollback"]
    assert result.status == "failed" and "already rolled back by rb5" in str(result.error)
