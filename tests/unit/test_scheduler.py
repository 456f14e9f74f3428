"""The step-running rules without Prefect: the core scheduler over a fake runner.

Runbooks are real (YAML, loaded and linted as ``clampdown run`` would); the runner
calls each attempt in-process (retries without delay, timeout by ``asyncio``) and
decides approvals on the spot through the real gate policy. What is checked is what
the flow records: ledger records, step statuses, reasons, the run's status.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest

from clampdown.core import ledger as ledger_module
from clampdown.core.actions import Action, ActionContext, ActionInput, ActionOutput, registry
from clampdown.core.engine.gate_policy import GatePolicy, now
from clampdown.core.engine.observing import Observers
from clampdown.core.engine.scheduler import (
    Attempt,
    Limits,
    Produced,
    render_outputs,
    run_status,
    schedule,
)
from clampdown.core.engine.state import RunState, new_state
from clampdown.core.home import Home
from clampdown.core.inputs import validate
from clampdown.core.ledger import Ledger, read
from clampdown.core.lint import load_runbook
from clampdown.core.models import Step
from tests.support_actions import Flaky  # noqa: F401 - registers test.flaky

HEADER = """\
apiVersion: clampdown/v1
kind: Runbook
metadata: {name: unit-runbook, title: Unit runbook, severity: low}
"""


class Contain(Action):
    """A destructive step for approval tests (test-only): records that it ran."""

    name = "test.unit_contain"
    destructive = True
    ran: ClassVar[list[str]] = []

    class Input(ActionInput):
        target: str

    class Output(ActionOutput):
        contained: str

    def run(self, params: Input, ctx: ActionContext) -> Output:
        self.ran.append(f"{ctx.run_id}/{ctx.step_id}")
        ctx.record_undo("release", target=params.target)
        return self.Output(contained=params.target)


registry().register(Contain)


@dataclass
class FakeRunner:
    """Attempts in-process; approvals end at once with the outcome given per step."""

    gate: GatePolicy
    outcomes: dict[str, str] = field(default_factory=dict)
    limits: dict[str, Limits] = field(default_factory=dict)

    async def run_action(self, step: Step, attempt: Attempt, limits: Limits) -> Produced:
        self.limits[step.id] = limits
        for n in range(limits.retries + 1):
            try:
                return await asyncio.wait_for(attempt(logging.getLogger("unit")), limits.timeout)
            except Exception:
                if n == limits.retries:
                    raise
        raise AssertionError("unreachable")

    async def request_approval(self, step: Step, params: Any) -> dict[str, Any]:
        request = self.gate.open(step.id, params)
        outputs, error = self.gate.close(request, self.outcomes[step.id], now())
        if error is not None:
            raise error
        return outputs


class Notes:
    """A run observer that keeps the notes (failure replies) it was told."""

    def __init__(self) -> None:
        self.notes: list[str] = []
        self.ended: list[str] = []

    def run_started(self, header: Any, steps: Any) -> None: ...

    def steps_changed(self, steps: Any, note: str | None = None) -> None:
        if note is not None:
            self.notes.append(note)

    def run_ended(self, outcome: str, steps: Any) -> None:
        self.ended.append(outcome)

    def approval_requested(self, request: Any) -> Any: ...

    def approval_progress(self, handle: Any, request: Any) -> None: ...

    def approval_ended(self, handle: Any, request: Any, outcome: str, at: Any) -> None: ...


@dataclass
class Run:
    state: RunState
    ledger: list[dict[str, Any]]
    status: str
    outputs: tuple[dict[str, Any], dict[str, str]]
    runner: FakeRunner
    notes: Notes

    @property
    def steps(self) -> dict[str, str]:
        return {sid: r.status for sid, r in self.state.results.items()}

    def records(self, type_: str, step: str | None = None) -> list[dict[str, Any]]:
        return [r for r in self.ledger if r["type"] == type_ and step in (None, r.get("step"))]

    def reason(self, step: str) -> str:
        (record,) = [r for r in self.ledger if r["type"] in ("step.skip", "step.cancel")
                     and r["step"] == step]  # fmt: skip
        return record["reason"]


def new_run_state(
    folder: Path, run_id: str, steps: str, inputs: dict[str, Any] | None, notes: Notes
) -> RunState:
    """A run of ``steps`` as the flow sets it up: runbook loaded and linted, inputs
    validated (defaults filled in), a ledger, the real gate policy, an observer."""
    path = folder / f"{run_id}.yaml"
    path.write_text(HEADER + steps, encoding="utf-8")
    rb = load_runbook(path)[0].model
    ledger = Ledger(folder / f"{run_id}.jsonl")
    info = {"id": run_id, "runbook": rb.metadata.name, "trigger": {"type": "manual"}}
    values = validate(rb.inputs, inputs or {})
    state = new_state(run_id, rb, values, ledger, info, Home(folder).run(run_id))
    state.gate = GatePolicy(state, lambda: (["U0LEAD"], []))
    state.observers = Observers(state, [notes])
    return state


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # The scheduler's rules, read back from the ledger: every record is still written and
    # read back, but not waited onto the disk (3 ms a record on this machine, 1.7 s for a
    # 300-step run). That records are fsync'd is the ledger's own tests' business.
    monkeypatch.setattr(ledger_module.os, "fsync", lambda fd: None)
    count = iter(range(1000))

    def execute(steps: str, inputs: dict[str, Any] | None = None, **outcomes: str) -> Run:
        notes = Notes()
        state = new_run_state(tmp_path, f"run{next(count)}", steps, inputs, notes)
        ledger, observers, gate = state.ledger, state.observers, state.gate
        runner = FakeRunner(gate, outcomes)
        asyncio.run(schedule(state, runner))
        status = run_status(state)
        observers.ended(status)
        outputs = render_outputs(state)
        ledger.close()
        return Run(state, read(ledger.path), status, outputs, runner, notes)

    return execute


def test_if_false_skips_the_step_and_its_dependants_but_always_still_runs(run):
    r = run("""
steps:
  - {id: maybe, uses: core.log, if: "false", with: {message: never}}
  - {id: after, uses: core.log, needs: [maybe], with: {message: never}}
  - {id: later, uses: core.log, needs: [after], if: success(), with: {message: never}}
  - {id: report, uses: core.log, needs: [later], if: always(),
     with: {message: "maybe {{ steps.maybe.status }}"}}
""")
    assert r.steps == {
        "maybe": "skipped",
        "after": "skipped",
        "later": "skipped",
        "report": "succeeded",
    }
    assert r.reason("maybe") == "if: false was false"
    assert r.reason("after") == "needs maybe did not succeed"
    assert r.reason("later") == "if: success() was false"
    assert r.records("step.end", "report")[0]["outputs"] == {"message": "maybe skipped"}
    assert not r.records("step.start", "maybe") and r.status == "succeeded"


def test_abort_cancels_steps_not_started_and_status_function_steps_still_run(run):
    r = run("""
steps:
  - {id: slow, uses: core.wait, with: {duration: 50ms}}
  - {id: breaks, uses: core.fail, with: {message: boom}}
  - {id: after_slow, uses: core.log, needs: [slow], with: {message: never}}
  - {id: then, uses: core.log, needs: [after_slow], with: {message: never}}
  - {id: report, uses: core.log, needs: [slow, breaks], if: failure(), with: {message: seen}}
  - {id: cleanup, uses: core.log, needs: [then], if: always(), with: {message: done}}
""")
    assert r.status == "failed" and r.state.aborted_by == "breaks"
    assert r.steps == {
        "slow": "succeeded",  # already running: allowed to finish
        "breaks": "failed",
        "after_slow": "cancelled",
        "then": "cancelled",
        "report": "succeeded",
        "cleanup": "succeeded",
    }
    assert r.reason("after_slow") == "run aborted by step 'breaks'"
    assert r.reason("then") == "run aborted by step 'breaks'"
    end = r.records("step.end", "breaks")[0]
    assert end["error"] == "ActionFailed: boom" and end["on_failure"] == "abort"
    assert end["attempts"] == 1
    assert r.notes.notes == ["❌ step `breaks` failed (abort): ActionFailed: boom"]


def test_on_failure_continue_skips_dependants_and_lets_the_rest_run(run):
    r = run("""
steps:
  - {id: breaks, uses: core.fail, on_failure: continue, with: {message: boom}}
  - {id: depends, uses: core.log, needs: [breaks], with: {message: never}}
  - {id: independent, uses: core.log, with: {message: fine}}
  - {id: later, uses: core.log, needs: [independent], with: {message: fine}}
""")
    assert r.status == "succeeded" and r.state.aborted_by is None
    assert r.steps == {
        "breaks": "failed",
        "depends": "skipped",
        "independent": "succeeded",
        "later": "succeeded",
    }
    assert r.reason("depends") == "needs breaks did not succeed"
    assert r.records("step.end", "breaks")[0]["on_failure"] == "continue"


def test_status_functions_after_a_failure(run):
    r = run("""
steps:
  - {id: breaks, uses: core.fail, on_failure: continue}
  - {id: on_ok, uses: core.log, needs: [breaks], if: success(), with: {message: ok}}
  - {id: on_fail, uses: core.log, needs: [breaks], if: failure(), with: {message: failed}}
  - {id: anyway, uses: core.log, needs: [breaks], if: always(),
     with: {message: "{{ steps.breaks.status }}"}}
""")
    assert r.steps == {
        "breaks": "failed",
        "on_ok": "skipped",
        "on_fail": "succeeded",
        "anyway": "succeeded",
    }
    assert r.reason("on_ok") == "if: success() was false"
    assert r.records("step.end", "anyway")[0]["outputs"] == {"message": "failed"}


def test_failure_is_false_when_everything_succeeded(run):
    r = run("""
steps:
  - {id: fine, uses: core.log, with: {message: ok}}
  - {id: on_fail, uses: core.log, needs: [fine], if: failure(), with: {message: never}}
""")
    assert r.steps == {"fine": "succeeded", "on_fail": "skipped"}
    assert r.reason("on_fail") == "if: failure() was false"


def test_expression_and_parameter_errors_fail_the_step_without_retrying(run):
    r = run(
        """
inputs:
  wait: {type: string, default: soon}
steps:
  - {id: maybe, uses: core.set_output, if: "false", with: {x: 1}}
  - {id: reads, uses: test.flaky, needs: [maybe], if: always(), retries: 3,
     on_failure: continue, with: {succeed_on: "{{ steps.maybe.outputs.x }}"}}
  - {id: bad_param, uses: core.wait, retries: 3, with: {duration: "{{ inputs.wait }}"}}
"""
    )
    assert r.steps == {"maybe": "skipped", "reads": "failed", "bad_param": "failed"}
    for step in ("reads", "bad_param"):
        (start,) = r.records("step.start", step)
        assert start["attempt"] == 0 and "params" not in start
        (end,) = r.records("step.end", step)
        assert end["attempts"] == 0
        assert not r.records("step.attempt_failed", step)
        assert step not in r.runner.limits, "the runner was never asked"
    assert "has no attribute 'x'" in r.records("step.end", "reads")[0]["error"]
    assert "duration" in r.records("step.end", "bad_param")[0]["error"]
    assert r.status == "failed" and r.state.aborted_by == "bad_param"


def test_retries_count_each_attempt_and_the_runner_gets_the_step_settings(run):
    r = run("""
defaults: {retry_delay: 5s}
steps:
  - {id: shaky, uses: test.flaky, retries: 3, timeout: 9s, with: {succeed_on: 3}}
""")
    assert r.runner.limits["shaky"] == Limits(retries=3, retry_delay=5.0, timeout=9.0)
    failed = r.records("step.attempt_failed", "shaky")
    assert [(f["attempt"], f["error"]) for f in failed] == [
        (1, "RuntimeError: transient failure 1"),
        (2, "RuntimeError: transient failure 2"),
    ]
    (end,) = r.records("step.end", "shaky")
    assert end["status"] == "succeeded" and end["attempts"] == 3
    assert end["outputs"] == {"attempts": 3}


def test_a_step_over_its_timeout_fails_as_timed_out(run):
    r = run("""
steps:
  - {id: slow, uses: core.wait, timeout: 50ms, on_failure: continue, with: {duration: 5s}}
""")
    (end,) = r.records("step.end", "slow")
    assert end["status"] == "failed" and end["error"] == "timed out"


APPROVAL = """
steps:
  - {id: find, uses: core.set_output, with: {target: "user/mallory"}}
  - id: ask
    uses: approval.request
    needs: [find]
    with: {summary: "contain {{ steps.find.outputs.target }}?", on_timeout: %s}
  - {id: contain, uses: test.unit_contain, needs: [ask],
     with: {target: "{{ steps.find.outputs.target }}"}}
  - {id: after, uses: core.log, needs: [contain], with: {message: contained}}
  - {id: report, uses: core.log, needs: [contain], if: always(),
     with: {message: "ask {{ steps.ask.outputs.outcome }}, contain {{ steps.contain.status }}"}}
  - {id: forced, uses: test.unit_contain, needs: [ask], if: always(), with: {target: x}}
"""


def test_approved_runs_the_gated_steps_with_the_parameters_shown(run):
    Contain.ran.clear()
    r = run(APPROVAL % "deny", ask="approved")
    assert r.status == "succeeded"
    assert set(r.steps.values()) == {"succeeded"}
    (request,) = r.records("approval.request", "ask")
    assert request["summary"] == "contain user/mallory?"
    assert request["gated"]["contain"]["params"] == {"target": "user/mallory"}
    assert request["approvers"] == {"users": ["U0LEAD"], "groups": []}
    (approval,) = r.records("approval.end", "ask")
    assert approval["approved"] is True and approval["outcome"] == "approved"
    assert r.records("step.end", "ask")[0]["outputs"]["outcome"] == "approved"
    assert sorted(Contain.ran) == [f"{r.state.run_id}/contain", f"{r.state.run_id}/forced"]
    assert r.records("step.end", "contain")[0]["undo"] == [
        {"description": "release", "target": "user/mallory"}
    ]


@pytest.mark.parametrize(
    ("on_timeout", "outcome", "reason"),
    [
        ("deny", "denied", "approval 'ask' denied"),
        ("deny", "timed_out", "approval 'ask' timed out"),
    ],
)
def test_not_approved_skips_gated_steps_but_a_non_destructive_report_runs(
    run, on_timeout, outcome, reason
):
    Contain.ran.clear()
    r = run(APPROVAL % on_timeout, ask=outcome)
    assert r.status == "denied" and r.state.denied_by == "ask"
    assert r.steps == {
        "find": "succeeded",
        "ask": "succeeded",
        "contain": "skipped",
        "after": "skipped",
        "report": "succeeded",
        "forced": "skipped",  # destructive: always() does not get it past the approval
    }
    assert r.reason("contain") == reason
    assert r.reason("forced") == reason
    assert r.reason("after") == "needs contain did not succeed"
    message = r.records("step.end", "report")[0]["outputs"]["message"]
    assert message == f"ask {outcome}, contain skipped"
    assert not Contain.ran
    assert r.records("approval.end", "ask")[0]["approved"] is False


def test_timeout_with_on_timeout_fail_fails_the_approval_step_and_the_run(run):
    r = run(APPROVAL % "fail", ask="timed_out")
    assert r.status == "failed" and r.state.aborted_by == "ask"
    (end,) = r.records("step.end", "ask")
    assert end["error"].startswith("ApprovalTimedOut: no decision by the deadline ")
    assert r.steps["contain"] == "cancelled"
    assert r.reason("contain") == "run aborted by step 'ask'"
    # the report still runs (always()) but reads outputs a failed step does not have
    assert r.steps["report"] == "failed"
    assert "has no attribute 'outcome'" in r.records("step.end", "report")[0]["error"]


def test_timeout_with_on_timeout_approve_runs_the_gated_steps(run):
    r = run(APPROVAL % "approve", ask="timed_out")
    assert r.status == "succeeded" and r.steps["contain"] == "succeeded"
    assert r.records("approval.end", "ask")[0]["on_timeout"] == "approve"


def test_outputs_that_cannot_be_rendered_are_reported_not_fatal(run):
    r = run("""
inputs:
  hours: {type: integer, default: 6}
steps:
  - {id: facts, uses: core.set_output, with: {hours: "{{ inputs.hours * 2 }}"}}
  - {id: maybe, uses: core.set_output, if: "false", with: {x: 1}}
outputs:
  hours: "{{ steps.facts.outputs.hours }}"
  missing: "{{ steps.maybe.outputs.x }}"
""")
    values, errors = r.outputs
    assert values == {"hours": 12, "missing": None}
    assert list(errors) == ["missing"] and "has no attribute 'x'" in errors["missing"]
    assert r.status == "succeeded"


def test_independent_steps_run_at_the_same_time_and_dependants_wait(run):
    # Overlap is read from the ledger's order, not from a clock: the second wait
    # starts before the first one ends.
    r = run("""
steps:
  - {id: first, uses: core.wait, with: {duration: 150ms}}
  - {id: second, uses: core.wait, with: {duration: 150ms}}
  - {id: after, uses: core.log, needs: [first, second], with: {message: done}}
""")
    assert r.status == "succeeded"
    order = [(x["type"], x.get("step")) for x in r.ledger if x["type"].startswith("step.")]
    assert order.index(("step.start", "second")) < order.index(("step.end", "first"))
    assert order.index(("step.start", "after")) > max(
        order.index(("step.end", "first")), order.index(("step.end", "second"))
    )


def test_the_observer_hears_the_end_once(run):
    r = run("""
steps:
  - {id: fine, uses: core.log, with: {message: ok}}
""")
    r.state.observers.ended("interrupted")  # type: ignore[union-attr]
    assert r.notes.ended == ["succeeded"]


def _step_records(r: Run) -> list[tuple[str, str]]:
    return [(x["type"], x["step"]) for x in r.ledger if x["type"].startswith("step.")]


def test_a_300_step_chain_runs_in_order_and_a_skip_reaches_the_end(run):
    steps = ["steps:", "  - {id: s0, uses: core.set_output, with: {n: 0}}"]
    for i in range(1, 300):
        when = ', if: "false"' if i == 250 else ""
        value = f"{{{{ steps.s{i - 1}.outputs.n + 1 }}}}"
        steps.append(
            f'  - {{id: s{i}, uses: core.set_output, needs: s{i - 1}{when}, with: {{n: "{value}"}}}}'
        )
    r = run("\n".join([*steps, 'outputs: {last: "{{ steps.s249.outputs.n }}"}', ""]))
    assert r.status == "succeeded"
    assert r.outputs == ({"last": 249}, {})
    expected = [(kind, f"s{i}") for i in range(250) for kind in ("step.start", "step.end")]
    expected += [("step.skip", f"s{i}") for i in range(250, 300)]
    assert _step_records(r) == expected
    assert r.steps == {f"s{i}": "succeeded" if i < 250 else "skipped" for i in range(300)}
    assert r.reason("s250") == "if: false was false"
    assert [r.reason(f"s{i}") for i in range(251, 300)] == [
        f"needs s{i - 1} did not succeed" for i in range(251, 300)
    ]


def test_a_300_step_fan_out_starts_every_step_at_once_and_a_fan_in_waits_for_all(run):
    steps = ["steps:"]
    steps += [f"  - {{id: s{i}, uses: core.set_output, with: {{n: {i}}}}}" for i in range(300)]
    needs = ", ".join(f"s{i}" for i in range(300))
    steps.append(f"  - {{id: joined, uses: core.log, needs: [{needs}], with: {{message: all}}}}")
    r = run("\n".join(steps) + "\n")
    assert r.status == "succeeded"
    assert set(r.steps.values()) == {"succeeded"} and len(r.steps) == 301
    order = _step_records(r)
    assert order[:300] == [("step.start", f"s{i}") for i in range(300)]  # one pass starts all
    assert sorted(order[300:600]) == sorted(("step.end", f"s{i}") for i in range(300))
    assert order[600:] == [("step.start", "joined"), ("step.end", "joined")]
    for x in r.records("step.end"):  # ends come in any order (threads); each has its output
        if x["step"] != "joined":
            assert x["outputs"] == {"n": int(x["step"][1:])}


def test_a_step_with_several_needs_starts_only_after_the_last_of_them_ends(run):
    r = run("""
steps:
  - {id: slow, uses: core.wait, with: {duration: 60ms}}
  - {id: quick, uses: core.wait, with: {duration: 0s}}
  - {id: middle, uses: core.wait, with: {duration: 20ms}}
  - {id: after, uses: core.log, needs: [quick, slow, middle], with: {message: done}}
""")
    assert r.status == "succeeded"
    order = _step_records(r)
    ends = [order.index(("step.end", sid)) for sid in ("quick", "middle", "slow")]
    assert ends == sorted(ends), order  # they end shortest first
    assert order.index(("step.start", "after")) == ends[-1] + 1
    assert order[-2:] == [("step.start", "after"), ("step.end", "after")]


def test_an_approved_destructive_step_tries_for_longer_than_an_unapproved_one(run):
    """A few seconds of AWS trouble after people approved must not spend the approval."""
    r = run(
        """
steps:
  - id: gate
    uses: approval.request
    with: {summary: "contain?", approvers: {users: [U0LEAD]}}
  - {id: approved, uses: test.unit_contain, needs: [gate], with: {target: a}}
  - {id: preapproved, uses: test.unit_contain, preapproved: "unit test: no gate", with: {target: b}}
  - {id: own, uses: test.unit_contain, needs: [gate], retries: 9, with: {target: c}}
""",
        gate="approved",
    )
    limits = r.runner.limits
    assert (limits["approved"].retries, limits["approved"].retry_delay) == (4, 5.0)
    assert (limits["preapproved"].retries, limits["preapproved"].retry_delay) == (0, 2.0)
    assert limits["own"].retries == 9  # the runbook asked for more: it wins


class ParkedRunner:
    """Every step waits until it is cancelled, and says with what (the run's suspension)."""

    def __init__(self, steps: int) -> None:
        self.expected = steps
        self.all_started = asyncio.Event()
        self.started: set[str] = set()
        self.cancelled: dict[str, tuple[Any, ...]] = {}

    async def _park(self, step: Step) -> Any:
        self.started.add(step.id)
        if len(self.started) == self.expected:
            self.all_started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError as exc:
            self.cancelled[step.id] = exc.args
            raise

    async def run_action(self, step: Step, attempt: Attempt, limits: Limits) -> Produced:
        return await self._park(step)

    async def request_approval(self, step: Step, params: Any) -> dict[str, Any]:
        return await self._park(step)


def test_a_cancelled_run_cancels_its_steps_in_flight_and_waits_for_them(tmp_path: Path) -> None:
    """serve's SIGTERM cancels a run's task with the suspend message: the steps in flight
    (an approval waiting, an action) are cancelled with it and have stopped when the run's
    cancellation returns. Left going, a suspended approval went on to pause a flow run
    Prefect had marked crashed and wrote ``step.end failed``, which the next process took
    as the step's end. They write nothing: the next process sees them still running."""
    state = new_run_state(tmp_path, "suspended", """
steps:
  - id: approve
    uses: approval.request
    with: {summary: "Contain?", approvers: {users: [U0LEAD]}}
  - {id: evidence, uses: core.log, with: {message: collecting}}
""", None, Notes())  # fmt: skip
    runner = ParkedRunner(steps=2)

    async def suspend() -> None:
        run = asyncio.create_task(schedule(state, runner))
        await runner.all_started.wait()
        run.cancel("clampdown:suspend")
        with pytest.raises(asyncio.CancelledError):
            await run
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert others == [], others  # no step is left going in the loop

    asyncio.run(suspend())
    state.ledger.close()
    assert runner.cancelled == {
        "approve": ("clampdown:suspend",),
        "evidence": ("clampdown:suspend",),
    }
    records = read(state.ledger.path)
    assert [r["step"] for r in records if r["type"] == "step.start"] == ["approve", "evidence"]
    assert not [r for r in records if r["type"] == "step.end"]
    assert {sid: r.status for sid, r in state.results.items()} == {
        "approve": "running",
        "evidence": "running",
    }
