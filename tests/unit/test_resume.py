"""Continuing a run from its ledger (clampdown.core.engine.resume), without Prefect.

A run is executed with the scheduler and a fake runner, its ledger is cut where a
process could have died, and a fresh state rebuilt from what is left must go on
exactly: nothing that ended runs again, the step that was in flight runs again, an
approval's outcome and what it approved are kept, a pending approval is waited on again.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr

from clampdown.core.engine.gate_policy import GatePolicy
from clampdown.core.engine.resume import restore
from clampdown.core.engine.scheduler import run_status, schedule
from clampdown.core.engine.state import new_state
from clampdown.core.home import Home
from clampdown.core.inputs import validate
from clampdown.core.ledger import Ledger, read
from clampdown.core.lint import load_runbook
from clampdown.core.run_ownership import RunHeld, hold, is_held
from clampdown.core.run_start import RunStart
from clampdown.core.sealed_inputs import unseal_inputs
from tests.unit.test_scheduler import HEADER, Contain, FakeRunner

CHAIN = """
steps:
  - {id: note, uses: core.log, with: {message: "start"}}
  - id: gate
    uses: approval.request
    needs: [note]
    with: {summary: "contain?", approvers: {users: [U0LEAD]}}
  - {id: contain, uses: test.unit_contain, needs: [gate], with: {target: "t-1"}}
  - {id: after, uses: core.log, needs: [contain], with: {message: "done"}}
"""


def _state(tmp_path: Path, name: str, ledger_path: Path):
    path = tmp_path / "runbook.yaml"
    path.write_text(HEADER + CHAIN, encoding="utf-8")
    rb = load_runbook(path)[0].model
    info = {"id": name, "runbook": rb.metadata.name, "trigger": {"type": "manual"}}
    state = new_state(
        name, rb, validate(rb.inputs, {}), Ledger(ledger_path), info, Home(tmp_path).run(name)
    )
    state.gate = GatePolicy(state, lambda: (["U0LEAD"], []))
    return state


def _full_run(tmp_path: Path) -> list[dict[str, Any]]:
    state = _state(tmp_path, "first", tmp_path / "full.jsonl")
    assert state.gate is not None
    asyncio.run(schedule(state, FakeRunner(state.gate, {"gate": "approved"})))
    state.ledger.close()
    return read(state.ledger.path)


def _cut_after(records: list[dict[str, Any]], type_: str, step: str) -> list[dict[str, Any]]:
    index = next(i for i, r in enumerate(records) if r["type"] == type_ and r.get("step") == step)
    return records[: index + 1]


class NoApprovals(FakeRunner):
    async def request_approval(self, step: Any, params: Any) -> dict[str, Any]:
        raise AssertionError(f"approval {step.id} was asked again")


def test_a_run_cut_in_the_middle_of_a_step_runs_that_step_again_and_nothing_before(
    tmp_path: Path,
) -> None:
    records = _cut_after(_full_run(tmp_path), "step.start", "contain")
    state = _state(tmp_path, "first", tmp_path / "resumed.jsonl")
    restored = restore(state, records)
    assert restored.rerun == ["contain"]
    assert restored.waiting == {}
    assert {s: r.status for s, r in state.results.items()} == {
        "note": "succeeded",
        "gate": "succeeded",
        "contain": "pending",
        "after": "pending",
    }
    assert state.gate is not None and state.gate.outcomes == {"gate": "approved"}
    Contain.ran.clear()
    asyncio.run(schedule(state, NoApprovals(state.gate)))
    assert Contain.ran == ["first/contain"]  # once, with the parameters approved
    assert run_status(state) == "succeeded"
    written = [(r["type"], r.get("step")) for r in read(state.ledger.path)]
    assert ("step.start", "note") not in written and ("step.start", "contain") in written


def test_approved_parameters_survive_the_restart_and_other_ones_are_refused(
    tmp_path: Path,
) -> None:
    records = _cut_after(_full_run(tmp_path), "approval.end", "gate")
    state = _state(tmp_path, "first", tmp_path / "resumed.jsonl")
    restore(state, records)
    gate = state.gate
    assert isinstance(gate, GatePolicy)
    params = Contain.Input(target="t-1")
    assert gate.check_params("contain", params) is None
    assert "differ" in str(gate.check_params("contain", Contain.Input(target="t-2")))


def test_a_run_cut_while_waiting_for_approval_waits_again_on_the_same_request(
    tmp_path: Path,
) -> None:
    records = _cut_after(_full_run(tmp_path), "approval.request", "gate")
    records += [
        {"type": "step.start", "step": "ignored-unknown-step"},
        {"type": "approval.decision", "step": "gate", "decision_id": "d1", "accepted": True,
         "approver": "U0LEAD", "decision": "approve"},
        {"type": "approval.decision", "step": "gate", "decision_id": "d2", "accepted": False},
    ]  # fmt: skip
    state = _state(tmp_path, "first", tmp_path / "resumed.jsonl")
    restored = restore(state, records)
    assert restored.rerun == ["gate"]
    waiting = restored.waiting["gate"]
    assert waiting.request["type"] == "approval.request"
    assert [d["decision_id"] for d in waiting.decisions] == ["d1"]
    assert waiting.recorded == {"d1", "d2"}
    assert state.gate is not None and state.gate.outcomes == {}


def test_a_step_that_failed_and_aborted_still_aborts_after_a_restart(tmp_path: Path) -> None:
    records = [
        {"type": "run.start", "flow_run_id": "f-1"},
        {"type": "step.start", "step": "note"},
        {"type": "step.end", "step": "note", "status": "failed", "error": "boom",
         "on_failure": "abort", "attempts": 2},
        {"type": "run.resumed", "flow_run_id": "f-2"},
    ]  # fmt: skip
    state = _state(tmp_path, "first", tmp_path / "resumed.jsonl")
    restored = restore(state, records)
    assert state.aborted_by == "note" and state.results["note"].attempts == 2
    assert (restored.resumes, restored.previous_flow_run) == (1, "f-2")
    asyncio.run(schedule(state, NoApprovals(state.gate)))  # type: ignore[arg-type]
    assert run_status(state) == "failed"
    assert {state.results[s].status for s in ("gate", "contain", "after")} == {"cancelled"}


# --- who holds a run ---------------------------------------------------------------------


def test_a_run_is_held_by_one_holder_at_a_time(tmp_path: Path) -> None:
    files = Home(tmp_path).run("r1")
    assert not is_held(files)
    with hold(files):
        assert is_held(files)
        with pytest.raises(RunHeld, match="being run by pid"), hold(files):
            pass
    assert not is_held(files)


def test_a_killed_holder_lets_the_run_go(tmp_path: Path) -> None:
    """What a kill -9 of serve does to a run it held: the kernel releases the lock."""
    files = Home(tmp_path).run("r2")
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from clampdown.core.home import Home\n"
        "from clampdown.core.run_ownership import hold\n"
        f"with hold(Home(Path({str(tmp_path)!r})).run('r2')):\n"
        "    print('held', flush=True)\n"
        "    time.sleep(60)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline() == b"held\n"
        assert is_held(files)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        deadline = time.monotonic() + 5
        while is_held(files) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not is_held(files)
    finally:
        child.kill()


# --- the start record ---------------------------------------------------------------------


def test_the_start_record_keeps_secrets_sealed_or_leaves_them_out(tmp_path: Path) -> None:
    files = Home(tmp_path).run("r3")
    key = SecretStr(Fernet.generate_key().decode())
    inputs = {"principal": "arn:aws:iam::1:user/a", "token": SecretStr("s3cr3t-value")}
    RunStart.of("r3", "rb.yaml", inputs, {"type": "alert"}, inputs_key=key).save(files)
    text = files.start.read_text()
    assert "s3cr3t-value" not in text
    assert oct(files.start.stat().st_mode & 0o777) == "0o600"
    loaded = RunStart.load(files)
    assert loaded is not None and loaded.secrets_left_out == ()
    opened = unseal_inputs(loaded.inputs, key)
    assert opened["token"].get_secret_value() == "s3cr3t-value"

    without = RunStart.of("r3", "rb.yaml", inputs, {"type": "alert"}, inputs_key=None)
    assert without.secrets_left_out == ("token",) and "token" not in without.inputs
    without.save(files)
    assert "s3cr3t-value" not in files.start.read_text()
    assert json.loads(files.start.read_text())["secrets_left_out"] == ["token"]


def test_rollback_of_a_stopped_run_says_how_to_finish_it_first(tmp_path: Path) -> None:
    from clampdown.core.undo import RollbackRefused, rollback_target

    home = Home(tmp_path)
    files = home.run("r4")
    ledger = Ledger(files.ledger)
    ledger.append("run.start", run={"id": "r4"})
    ledger.close()
    with pytest.raises(RollbackRefused, match="has not finished"):
        rollback_target("r4", home, allow_repeat=False)  # no start record: an older run
    RunStart.of("r4", "rb.yaml", {}, {"type": "manual"}).save(files)
    with pytest.raises(RollbackRefused, match="stopped before it finished") as refused:
        rollback_target("r4", home, allow_repeat=False)
    assert "clampdown resume r4" in refused.value.hint
    with hold(files), pytest.raises(RollbackRefused, match="has not finished"):
        rollback_target("r4", home, allow_repeat=False)  # a live process runs it
