"""Gates bind everything they guard: a destructive step two hops below an approval is on
the request with its exact parameters, bound by hash, and refused when they change after
the approval; one whose parameters come from steps after the gate is shown as written."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any, ClassVar

from clampdown.core.actions import Action, ActionContext, ActionInput, ActionOutput, registry
from clampdown.core.approvals import params_hash
from clampdown.core.engine.gate_policy import GatePolicy, now
from clampdown.core.engine.scheduler import Attempt, Limits, Produced, schedule
from clampdown.core.engine.state import new_state
from clampdown.core.home import Home
from clampdown.core.inputs import validate
from clampdown.core.ledger import Ledger, read
from clampdown.core.lint import lint_paths, load_runbook
from clampdown.core.models import Step


class Quarantine(Action):
    """Test-only destructive action: remembers what it quarantined."""

    name = "test.gate_quarantine"
    destructive = True
    ran: ClassVar[list[str]] = []

    class Input(ActionInput):
        target: str

    class Output(ActionOutput):
        done: str

    def run(self, params: Input, ctx: ActionContext) -> Output:
        self.ran.append(params.target)
        return self.Output(done=params.target)


registry().register(Quarantine)

RUNBOOK = """\
apiVersion: clampdown/v1
kind: Runbook
metadata: {name: two-hops, title: Two hops, severity: low}
inputs:
  target: {type: string, default: user/mallory}
steps:
  - id: ask
    uses: approval.request
    with: {summary: "quarantine {{ inputs.target }}?"}
  - id: note
    uses: core.set_output
    needs: [ask]
    with: {picked: "role/analyst"}
  - id: quarantine
    uses: test.gate_quarantine
    needs: [note]
    with: {target: "{{ inputs.target }}"}
  - id: follow_up
    uses: test.gate_quarantine
    needs: [note]
    with: {target: "{{ steps.note.outputs.picked }}"}
"""


class Approving:
    """Approves at once; ``tamper`` runs between the approval and the gated steps."""

    def __init__(self, gate: GatePolicy, tamper: Any = None) -> None:
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


def execute(tmp_path: Path, tamper_inputs: dict[str, Any] | None = None):
    path = tmp_path / "runbook.yaml"
    path.write_text(RUNBOOK, encoding="utf-8")
    rb = load_runbook(path)[0].model
    ledger = Ledger(tmp_path / "ledger.jsonl")
    info = {"id": "r1", "runbook": rb.metadata.name, "trigger": {"type": "manual"}}
    state = new_state("r1", rb, validate(rb.inputs, {}), ledger, info, Home(tmp_path).run("r1"))
    state.gate = gate = GatePolicy(state, lambda: (["U0LEAD"], []))
    tamper = (lambda: state.inputs.update(tamper_inputs)) if tamper_inputs else None
    runner = Approving(gate, tamper)
    Quarantine.ran.clear()
    asyncio.run(schedule(state, runner))
    ledger.close()
    return runner.requests[0], read(ledger.path), state


def test_a_destructive_step_two_hops_below_the_gate_is_shown_and_bound(tmp_path):
    request, records, _state = execute(tmp_path)
    shown = request.gated["quarantine"]
    assert shown["params"] == {"target": "user/mallory"}
    assert shown["guarded"] == "downstream of ask, not a direct need"
    assert "quarantine" in request.step_hashes
    later = request.gated["follow_up"]
    assert later["params"] == {
        "with (known at run time)": {"target": "{{ steps.note.outputs.picked }}"}
    }
    assert "follow_up" not in request.step_hashes
    assert "guarded" not in request.gated["note"], "a direct need is gated as it always was"
    assert sorted(Quarantine.ran) == ["role/analyst", "user/mallory"]
    (recorded,) = [r for r in records if r["type"] == "approval.request"]
    assert recorded["gated"]["quarantine"]["params"] == {"target": "user/mallory"}


def test_changing_its_parameters_after_the_approval_is_refused(tmp_path):
    _request, records, state = execute(tmp_path, {"target": "user/admin"})
    assert state.results["quarantine"].status == "failed"
    assert "differ from the ones approved" in str(state.results["quarantine"].error)
    assert "user/admin" not in Quarantine.ran
    (end,) = [r for r in records if r["type"] == "step.end" and r["step"] == "quarantine"]
    assert end["status"] == "failed" and "nothing was run" in end["error"]


def test_lint_names_the_gate_to_add_to_the_needs(tmp_path):
    path = tmp_path / "runbook.yaml"
    path.write_text(RUNBOOK, encoding="utf-8")
    found = [d for d in lint_paths([path]) if d.code == "indirect-gate"]
    assert [d.line for d in found] == [16, 20]  # the needs: of quarantine, follow_up
    assert "destructive step 'quarantine' is guarded by approval 'ask' only through" in (
        found[0].message
    )
    assert "add 'ask' to the needs of 'quarantine'" in found[0].hint


SECRET_TARGET = """\
apiVersion: clampdown/v1
kind: Runbook
metadata: {name: secret-target, title: Secret target, severity: low}
inputs:
  token: {type: string, default: tok-123456, secret: true}
steps:
  - id: ask
    uses: approval.request
    with: {summary: "quarantine?"}
  - id: quarantine
    uses: test.gate_quarantine
    needs: [ask]
    with: {target: "user/{{ inputs.token }}"}
"""


def _resumed_after_approval(tmp_path: Path, case: str, token: str | None) -> tuple[str, list]:
    """A run of SECRET_TARGET approved, then known only as a resumed run knows it: the gate's
    approved hash rebuilt from the ledger's approval.request (as resume._approval_ended
    does), the token input changed to ``token`` when given."""
    path = tmp_path / "runbook.yaml"
    path.write_text(SECRET_TARGET, encoding="utf-8")
    rb = load_runbook(path)[0].model
    ledger = Ledger(tmp_path / f"{case}.jsonl")
    ledger.redact("tok-123456")
    info = {"id": "r1", "runbook": rb.metadata.name, "trigger": {"type": "manual"}}
    state = new_state("r1", rb, validate(rb.inputs, {}), ledger, info, Home(tmp_path).run("r1"))
    state.gate = gate = GatePolicy(state, lambda: (["U0LEAD"], []))

    def as_if_resumed() -> None:
        recorded = [r for r in read(ledger.path) if r["type"] == "approval.request"][-1]
        gate.approved_params["quarantine"] = params_hash(recorded["gated"]["quarantine"]["params"])
        if token is not None:
            state.inputs["token"] = token

    Quarantine.ran.clear()
    asyncio.run(schedule(state, Approving(gate, as_if_resumed)))
    ledger.close()
    return state.results["quarantine"].status, list(Quarantine.ran)


def test_a_run_resumed_after_its_approval_runs_a_gated_step_carrying_a_secret(tmp_path):
    """Resumed after the approval, the gate knows what was approved from the ledger's
    approval.request, where the secret is masked: the step used to be refused as changed
    (h-review27). A step whose parameters really differ is still refused."""
    assert _resumed_after_approval(tmp_path, "same", None) == ("succeeded", ["user/tok-123456"])
    assert _resumed_after_approval(tmp_path, "changed", "other-token") == ("failed", [])
