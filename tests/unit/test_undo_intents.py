"""Undo intents: the undo of a change is on disk before the change, and rollback finds it.

An action declares each change with ``ctx.changing`` before making it; the engine writes
an ``undo.intent`` record (fsync'd) at once and the attempt's end confirms it. A run
killed between the call and the step's end leaves a ledger that ends after the intent:
rollback's plan must contain that change ("may have been applied"), bind it in the
approval hash, and execute it. Real runbooks, the real scheduler over an in-process
runner, real ledgers (signed where it matters); no sockets.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path
from typing import Any, ClassVar

import pytest

from clampdown.core.actions import Action, ActionContext, ActionInput, ActionOutput, registry
from clampdown.core.engine.gate_policy import GatePolicy
from clampdown.core.engine.scheduler import Attempt, Limits, Produced, schedule
from clampdown.core.engine.state import new_state
from clampdown.core.home import Home
from clampdown.core.inputs import validate
from clampdown.core.ledger import Ledger, append_to, read
from clampdown.core.ledger_signing import generate_local_key, load_local_key, open_ledger
from clampdown.core.lint import load_runbook
from clampdown.core.models import Step
from clampdown.core.undo import (
    LedgerNotTrusted,
    RollbackRun,
    checked_undo_items,
    describe,
    rollback_run,
    undo_hash,
    undo_items,
)

HEADER = """\
apiVersion: clampdown/v1
kind: Runbook
metadata: {name: intent-runbook, title: Intent runbook, severity: low}
"""


class Hold(Action):
    """Test-only containment: one declared change; it can fail after the call or be refused."""

    name = "test.intent_hold"
    destructive = True
    seen: ClassVar[list[dict[str, Any]]] = []  # the ledger's last record when the call is made
    undone: ClassVar[list[dict[str, Any]]] = []

    class Input(ActionInput):
        target: str
        fail_after_call: bool = False
        refused: bool = False

    def run(self, params: Input, ctx: ActionContext) -> ActionOutput:
        with ctx.changing(f"release {params.target}", op="release", target=params.target) as it:
            # the mutating call: the intent must already be on disk
            last = read(ctx.files.ledger)[-1]
            self.seen.append({**last, "thread": threading.current_thread().name})
            if params.refused:
                it.not_made()
            if params.fail_after_call:
                raise RuntimeError("connection lost after the request was sent")
        return ActionOutput()

    def rollback(self, how: dict[str, Any], ctx: ActionContext) -> None:
        self.undone.append(how)


registry().register(Hold)


class Runner:
    async def run_action(self, step: Step, attempt: Attempt, limits: Limits) -> Produced:
        return await attempt(logging.getLogger("unit"))

    async def request_approval(self, step: Step, params: Any) -> dict[str, Any]:
        raise AssertionError("no approvals here")


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return Home(tmp_path / "home")


@pytest.fixture(autouse=True)
def _fresh() -> None:
    Hold.seen.clear()
    Hold.undone.clear()


def run_steps(home: Home, tmp_path: Path, steps: str, run_id: str = "run1") -> list[dict]:
    path = tmp_path / f"{run_id}.yaml"
    path.write_text(HEADER + steps, encoding="utf-8")
    rb = load_runbook(path)[0].model
    ledger = Ledger(home.run(run_id).ledger)
    ledger.redact("s3cr3t-token-value")  # as the flow does with secret inputs
    ledger.append("run.start", run={"id": run_id, "runbook": rb.metadata.name})
    info = {"id": run_id, "runbook": rb.metadata.name, "trigger": {"type": "manual"}}
    state = new_state(run_id, rb, validate(rb.inputs, {}), ledger, info, home.run(run_id))
    state.gate = GatePolicy(state, lambda: (["U0LEAD"], []))
    asyncio.run(schedule(state, Runner()))
    ledger.append("run.end", status="done")
    ledger.close()
    return read(ledger.path)


def of(records: list[dict], type_: str) -> list[dict]:
    return [r for r in records if r["type"] == type_]


def test_the_intent_is_written_before_the_call_and_confirmed_by_step_end(home, tmp_path):
    records = run_steps(
        home, tmp_path, "steps:\n  - {id: hold, uses: test.intent_hold, with: {target: models}}\n"
    )
    (seen,) = Hold.seen
    assert seen["type"] == "undo.intent"  # on disk when the call was made
    assert seen["thread"] != threading.main_thread().name  # a sync action's worker thread
    (intent,) = of(records, "undo.intent")
    assert intent["seq"] == seen["seq"]
    assert intent["step"] == "hold" and intent["attempt"] == 1
    assert intent["description"] == "release models"
    assert intent["how"] == {"op": "release", "target": "models"}
    (end,) = of(records, "step.end")
    assert end["undo"] == [{"description": "release models", "op": "release", "target": "models"}]
    assert end["confirmed"] == [intent["intent"]] and "not_made" not in end
    (item,) = undo_items(home.run("run1").ledger)  # once, as the confirmed record
    assert item.confirmed and item.how == {"op": "release", "target": "models"}
    assert "may have been applied" not in describe(item)


def test_the_intent_record_has_secrets_masked_like_every_record(home, tmp_path):
    records = run_steps(
        home,
        tmp_path,
        "steps:\n  - {id: hold, uses: test.intent_hold, with: {target: s3cr3t-token-value}}\n",
    )
    (intent,) = of(records, "undo.intent")
    assert intent["how"]["target"] == "***" and "s3cr3t" not in intent["description"]


def test_an_attempt_failing_after_the_call_leaves_its_intent_to_rollback(home, tmp_path):
    records = run_steps(
        home,
        tmp_path,
        "steps:\n  - {id: hold, uses: test.intent_hold, with: {target: m, fail_after_call: true}}\n",
    )
    (failed,) = of(records, "step.attempt_failed")
    assert failed["undo"] == [] and "confirmed" not in failed
    (item,) = undo_items(home.run("run1").ledger)
    assert not item.confirmed and item.how == {"op": "release", "target": "m"}
    assert "may have been applied: the run stopped before confirming it" in describe(item)
    assert item.shown()["may have been applied"] == "the run stopped before confirming it"


def test_a_call_that_changed_nothing_is_not_undone(home, tmp_path):
    records = run_steps(
        home,
        tmp_path,
        "steps:\n  - {id: hold, uses: test.intent_hold, with: {target: m, refused: true}}\n",
    )
    (intent,) = of(records, "undo.intent")
    (end,) = of(records, "step.end")
    assert end["not_made"] == [intent["intent"]] and end["undo"] == []
    assert undo_items(home.run("run1").ledger) == []


# --- ledgers as a killed process leaves them ----------------------------------------------


def crashed(ledger: Ledger, *, resumed_same_change: bool = False) -> None:
    """revoke: the quarantine policy confirmed by an earlier step; the key's intent written,
    then the process was killed (no step.end). Optionally a resumed re-run made the same
    change again and confirmed it."""
    ledger.append("run.start", run={"id": "contain1", "runbook": "contain"})
    ledger.append("step.start", step="snapshot", uses="test.intent_hold", region="eu-west-1")
    ledger.append(
        "undo.intent", step="snapshot", attempt=1, intent="i-early", description="release a",
        how={"op": "release", "target": "a"},
    )  # fmt: skip
    ledger.append(
        "step.end", step="snapshot", status="succeeded", confirmed=["i-early"],
        undo=[{"description": "release a", "op": "release", "target": "a"}],
    )  # fmt: skip
    ledger.append("step.start", step="revoke", uses="test.intent_hold", region="eu-west-1")
    ledger.append(
        "undo.intent", step="revoke", attempt=1, intent="i-killed", description="release b",
        how={"op": "release", "target": "b"},
    )  # fmt: skip
    if resumed_same_change:
        ledger.append("run.resumed", rerun=["revoke"])
        ledger.append("step.start", step="revoke", uses="test.intent_hold", region="eu-west-1")
        ledger.append(
            "undo.intent", step="revoke", attempt=1, intent="i-again",
            description="release b", how={"op": "release", "target": "b"},
        )  # fmt: skip
        ledger.append(
            "step.end", step="revoke", status="succeeded", confirmed=["i-again"],
            undo=[{"description": "release b", "op": "release", "target": "b"}],
        )  # fmt: skip
    ledger.append("run.end", status="failed", reason="the process died")
    ledger.close()


def test_a_ledger_ending_after_an_intent_plans_its_undo_newest_first(home):
    crashed(Ledger(home.run("contain1").ledger))
    items = undo_items(home.run("contain1").ledger)
    assert [(i.step, i.how["target"], i.confirmed) for i in items] == [
        ("revoke", "b", False),  # the change cut off: may have been applied, undone first
        ("snapshot", "a", True),  # its confirmed intent appears once
    ]
    assert items[0].region == "eu-west-1" and items[0].uses == "test.intent_hold"


def test_a_resumed_re_run_that_made_the_same_change_lists_it_once(home):
    crashed(Ledger(home.run("contain1").ledger), resumed_same_change=True)
    items = undo_items(home.run("contain1").ledger)
    assert [(i.how["target"], i.confirmed) for i in items] == [("b", True), ("a", True)]


def test_rollback_executes_unconfirmed_intents_and_the_approval_hash_binds_them(home):
    crashed(Ledger(home.run("contain1").ledger))
    items = undo_items(home.run("contain1").ledger)
    confirmed_only = [i for i in items if i.confirmed]
    assert undo_hash(items) != undo_hash(confirmed_only)  # the unconfirmed one is bound
    shown = RollbackRun.approval_details(RollbackRun.Input(run_id="contain1"), home, None)
    assert shown["undo 1 of 2"]["may have been applied"] == "the run stopped before confirming it"
    assert "may have been applied" not in shown["undo 2 of 2"]

    def undo(item: Any, files: Any, run: str) -> None:
        Hold().rollback(item.how, None)  # type: ignore[arg-type]

    with pytest.raises(Exception, match="changed after they were approved"):
        rollback_run("contain1", "rb0", home, undo=undo, expected=undo_hash(confirmed_only))
    assert Hold.undone == []
    result = rollback_run("contain1", "rb1", home, undo=undo, expected=undo_hash(items))
    assert Hold.undone == [{"op": "release", "target": "b"}, {"op": "release", "target": "a"}]
    assert result.still_in_place == []
    starts = of(read(result.ledger), "undo.start")
    assert [s.get("confirmed", True) for s in starts] == [False, True]


def test_an_unsigned_intent_in_a_signed_ledger_is_refused(home, tmp_path):
    signer = load_local_key(generate_local_key(tmp_path / "keys" / "l.pem"), home.root)
    path = home.run("contain1").ledger
    crashed(open_ledger(path, "contain1", signer))
    items, verdict = checked_undo_items(path, signer)  # the engine's own intents: signed
    assert verdict.status == "intact" and len(items) == 2
    # someone who can write CLAMPDOWN_HOME appends an intent, as an unsigned writer can
    append_to(
        path, "undo.intent", step="revoke", attempt=1, intent="i-forged",
        description="release b", how={"op": "release", "target": "prod"},
    )  # fmt: skip
    with pytest.raises(LedgerNotTrusted, match=r"NOT SIGNED: record \d+ \(undo\.intent\)"):
        checked_undo_items(path, signer)


# --- outside the engine ----------------------------------------------------------------------


def test_without_a_hook_changes_are_recorded_in_memory_only(home):
    ctx = ActionContext(run_id="r", step_id="s", runbook="rb", home=home)
    with ctx.changing("put back x", op="x") as intent:
        pass
    ctx.record_undo("put back y", op="y")  # actions written before intents
    assert intent.state == "confirmed"
    assert ctx.undo == [
        {"description": "put back x", "op": "x"},
        {"description": "put back y", "op": "y"},
    ]
    assert ctx.confirmed == [] and not home.run("r").ledger.exists()


def test_a_hook_that_cannot_write_stops_the_change(home):
    def full_disk(intent: Any) -> None:
        raise OSError(28, "No space left on device")

    ctx = ActionContext(run_id="r", step_id="s", runbook="rb", home=home, intent_hook=full_disk)
    called = []
    with pytest.raises(OSError, match="No space left"), ctx.changing("put back x", op="x"):
        called.append("the mutating call")
    assert called == [] and ctx.undo == []


def test_an_intent_confirmed_with_what_the_call_returned(home):
    written: list[Any] = []
    ctx = ActionContext(
        run_id="r", step_id="s", runbook="rb", home=home, intent_hook=written.append
    )
    with ctx.changing("deactivate the key stored in v1", op="by_version", version="v1") as it:
        it.confirm("deactivate key AKIA1", op="by_id", key="AKIA1")
    assert [w.how for w in written] == [{"op": "by_version", "version": "v1"}]
    assert ctx.undo == [{"description": "deactivate key AKIA1", "op": "by_id", "key": "AKIA1"}]
    assert ctx.confirmed == [it.id]
    with pytest.raises(RuntimeError, match="already confirmed"):
        it.not_made()
