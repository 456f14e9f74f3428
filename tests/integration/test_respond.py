"""The respond flow on a real Prefect server: DAG order, concurrency, retries, timeouts,
conditions, failure policies, inputs, outputs, artifacts and the ledger it writes."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

import pytest

from clampdown.core.actions import Action, ActionContext, ActionInput, ActionOutput, registry
from clampdown.core.diagnostics import InputError
from clampdown.core.ledger import read, read_written, verify_file
from tests.support_actions import Flaky  # noqa: F401 - registers test.flaky

pytestmark = pytest.mark.usefixtures("prefect_server")

HEADER = """\
apiVersion: clampdown/v1
kind: Runbook
metadata: {name: test-runbook, title: Test runbook, severity: low}
"""


class Echo(Action):
    """Returns its secret-bearing input and logs it (test-only, for redaction)."""

    name = "test.echo"

    class Input(ActionInput):
        text: str

    class Output(ActionOutput):
        text: str

    def run(self, params: Input, ctx: ActionContext) -> Output:
        ctx.logger.info("echo %s", params.text)
        ctx.record_undo("nothing to undo", text=params.text)
        return self.Output(text=params.text)


registry().register(Echo)

BOUND = 60.0  # seconds a step below waits for its event at most: a regression fails, not hangs


class Meet(Action):
    """Ends once ``parties`` steps of the run naming the same ``at`` are all running
    (test-only): steps that get past it ran at the same time, whatever the machine's load."""

    name = "test.meet"
    barriers: ClassVar[dict[str, threading.Barrier]] = {}
    lock: ClassVar[threading.Lock] = threading.Lock()

    class Input(ActionInput):
        at: str
        parties: int = 2

    class Output(ActionOutput):
        met: bool

    def run(self, params: Input, ctx: ActionContext) -> Output:
        with self.lock:
            barrier = self.barriers.setdefault(
                f"{ctx.run_id}/{params.at}", threading.Barrier(params.parties, timeout=BOUND)
            )
        barrier.wait()  # BrokenBarrierError (the step fails) if the others never come
        return self.Output(met=True)


class AfterStep(Action):
    """Ends once the run's ledger has ``step``'s ``step.end`` (test-only): a step still
    running when another one ended, whatever the machine's load."""

    name = "test.after_step"

    class Input(ActionInput):
        step: str

    class Output(ActionOutput):
        seen: bool

    def run(self, params: Input, ctx: ActionContext) -> Output:
        deadline = time.monotonic() + BOUND
        while time.monotonic() < deadline:
            if records(read_written(ctx.files.ledger), "step.end", params.step):
                return self.Output(seen=True)
            time.sleep(0.02)
        raise RuntimeError(f"step {params.step} did not end within {BOUND:g} s")


registry().register(Meet)
registry().register(AfterStep)


def execute(path: Path, inputs: dict[str, Any] | None = None) -> tuple[Any, list[dict[str, Any]]]:
    """Run the flow as `clampdown run` does (its Prefect clients, and their one TLS context,
    shared: calling ``respond`` bare made Prefect build three clients a run); return its
    final Prefect state and the ledger records."""
    from clampdown.core.ledger import new_run_id
    from clampdown.core.settings import settings
    from clampdown_flows.respond import run_in_process

    run_id = new_run_id()
    state = run_in_process(str(path), inputs or {}, run_id=run_id)
    return state, read(settings().ledger_path(run_id))


def records(
    ledger: list[dict[str, Any]], type_: str, step: str | None = None
) -> list[dict[str, Any]]:
    return [r for r in ledger if r["type"] == type_ and (step is None or r.get("step") == step)]


def ts(record: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(record["ts"].replace("Z", "+00:00"))


def end(ledger: list[dict[str, Any]]) -> dict[str, Any]:
    return records(ledger, "run.end")[-1]


def test_independent_steps_overlap_and_dependants_wait(write_runbook):
    """Each of the two independent steps ends only once the other has started (test.meet):
    run one after the other, the first would wait in vain and fail the run. Two 600 ms
    waits stood for this, overlapping only while the second started within 600 ms."""
    path = write_runbook(
        HEADER
        + """
steps:
  - {id: first, uses: test.meet, with: {at: both}}
  - {id: second, uses: test.meet, with: {at: both}}
  - {id: after, uses: core.set_output, needs: [first, second], with: {done: yes}}
"""
    )
    state, ledger = execute(path)
    assert state.is_completed()
    a0, a1 = (
        ts(records(ledger, "step.start", "first")[0]),
        ts(records(ledger, "step.end", "first")[0]),
    )
    b0, b1 = (
        ts(records(ledger, "step.start", "second")[0]),
        ts(records(ledger, "step.end", "second")[0]),
    )
    assert a0 < b1 and b0 < a1, "independent steps must run at the same time"
    c0 = ts(records(ledger, "step.start", "after")[0])
    assert c0 >= max(a1, b1), "a dependant starts only after all its needs have finished"
    assert verify_file(_ledger_path(ledger)).ok


def _ledger_path(ledger: list[dict[str, Any]]) -> Path:
    from clampdown.core.settings import settings

    return settings().ledger_path(records(ledger, "run.start")[0]["run"]["id"])


def test_retries_until_success_record_each_failed_attempt(write_runbook):
    path = write_runbook(
        HEADER
        + """
defaults: {retry_delay: 50ms}
steps:
  - {id: shaky, uses: test.flaky, retries: 3, with: {succeed_on: 3}}
"""
    )
    state, ledger = execute(path)
    assert state.is_completed()
    failed = records(ledger, "step.attempt_failed", "shaky")
    assert [r["attempt"] for r in failed] == [1, 2]
    assert "transient failure 1" in failed[0]["error"]
    done = records(ledger, "step.end", "shaky")[0]
    assert done["status"] == "succeeded" and done["attempts"] == 3
    assert done["outputs"] == {"attempts": 3}


def test_retries_exhausted_fail_the_run(write_runbook):
    path = write_runbook(
        HEADER
        + """
steps:
  - {id: doomed, uses: core.fail, retries: 2, retry_delay: 10ms, with: {message: still broken}}
"""
    )
    state, ledger = execute(path)
    assert state.is_failed()
    assert "step 'doomed' failed: ActionFailed: still broken" in state.message
    assert len(records(ledger, "step.attempt_failed", "doomed")) == 3
    assert end(ledger)["status"] == "failed" and end(ledger)["aborted_by"] == "doomed"


def test_timeout_interrupts_the_step(write_runbook):
    path = write_runbook(
        HEADER
        + """
steps:
  - {id: slow, uses: core.wait, timeout: 300ms, on_failure: continue, with: {duration: 20s}}
  - {id: next, uses: core.log, needs: [slow], if: always(), with: {message: "slow was {{ steps.slow.status }}"}}
"""
    )
    state, ledger = execute(path)
    assert state.is_completed()  # on_failure: continue
    slow = records(ledger, "step.end", "slow")[0]
    assert slow["status"] == "failed" and slow["error"] == "timed out"
    assert "outputs" not in slow
    assert records(ledger, "step.end", "next")[0]["outputs"] == {"message": "slow was failed"}


def test_if_false_skips_the_step_and_its_dependants(write_runbook):
    path = write_runbook(
        HEADER
        + """
inputs:
  freeze: {type: boolean, default: false}
steps:
  - {id: gate, uses: core.set_output, with: {go: "{{ inputs.freeze }}"}}
  - {id: freeze, uses: core.log, needs: [gate], if: steps.gate.outputs.go, with: {message: frozen}}
  - {id: after_freeze, uses: core.log, needs: [freeze], with: {message: after}}
  - {id: report, uses: core.log, needs: [after_freeze], if: always(), with: {message: "freeze {{ steps.freeze.status }}"}}
"""
    )
    state, ledger = execute(path)
    assert state.is_completed()
    assert "was false" in records(ledger, "step.skip", "freeze")[0]["reason"]
    assert "freeze did not succeed" in records(ledger, "step.skip", "after_freeze")[0]["reason"]
    assert records(ledger, "step.end", "report")[0]["outputs"]["message"] == "freeze skipped"

    state, ledger = execute(path, {"freeze": "true"})
    assert end(ledger)["steps"] == {
        "gate": "succeeded",
        "freeze": "succeeded",
        "after_freeze": "succeeded",
        "report": "succeeded",
    }


def test_abort_cancels_what_has_not_started_but_runs_failure_handlers(write_runbook):
    """slow_branch is still running when breaks fails: it ends only once breaks has ended
    (test.after_step), where a 400 ms wait stood for it and a breaks later than that let
    after_slow start."""
    path = write_runbook(
        HEADER
        + """
steps:
  - {id: slow_branch, uses: test.after_step, with: {step: breaks}}
  - {id: breaks, uses: core.fail, with: {message: boom}}
  - {id: after_slow, uses: core.log, needs: [slow_branch], with: {message: never}}
  - {id: on_failure_report, uses: core.log, needs: [slow_branch, breaks], if: failure(), with: {message: "reporting"}}
"""
    )
    state, ledger = execute(path)
    assert state.is_failed()
    steps = end(ledger)["steps"]
    assert steps["breaks"] == "failed"
    assert steps["slow_branch"] == "succeeded", "a running step is allowed to finish"
    assert steps["after_slow"] == "cancelled"
    assert steps["on_failure_report"] == "succeeded"
    assert (
        "run aborted by step 'breaks'" in records(ledger, "step.cancel", "after_slow")[0]["reason"]
    )


def test_continue_lets_independent_branches_run_and_skips_dependants(write_runbook):
    path = write_runbook(
        HEADER
        + """
steps:
  - {id: breaks, uses: core.fail, on_failure: continue, with: {message: boom}}
  - {id: depends, uses: core.log, needs: [breaks], with: {message: never}}
  - {id: independent, uses: core.wait, with: {duration: 200ms}}
  - {id: later, uses: core.log, needs: [independent], with: {message: fine}}
"""
    )
    state, ledger = execute(path)
    assert state.is_completed()
    assert end(ledger)["status"] == "succeeded"
    assert end(ledger)["steps"] == {
        "breaks": "failed",
        "depends": "skipped",
        "independent": "succeeded",
        "later": "succeeded",
    }


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({}, "missing required input 'principal_arn'"),
        ({"principal_arn": "arn:aws:iam::1234:user/x"}, "does not match the pattern"),
        ({"principal_arn": "arn:aws:iam::123456789012:user/x", "hours": "0"}, "must be at least 1"),
        (
            {"principal_arn": "arn:aws:iam::123456789012:user/x", "hours": "many"},
            "must be a whole number",
        ),
        (
            {"principal_arn": "arn:aws:iam::123456789012:user/x", "mode": "nuke"},
            "must be one of: soft, hard",
        ),
        (
            {"principal_arn": "arn:aws:iam::123456789012:user/x", "principle": "x"},
            "did you mean 'principal_arn'",
        ),
    ],
)
def test_invalid_inputs_fail_before_any_step(write_runbook, given, message):
    path = write_runbook(
        HEADER
        + r"""
inputs:
  principal_arn: {type: string, required: true, pattern: '^arn:aws:iam::\d{12}:(user|role)/.+$'}
  hours: {type: integer, default: 24, minimum: 1, maximum: 720}
  mode: {type: string, default: soft, enum: [soft, hard]}
steps:
  - {id: only, uses: core.log, with: {message: "{{ inputs.principal_arn }}"}}
"""
    )
    state, ledger = execute(path, given)
    assert state.is_failed()
    with pytest.raises(InputError, match=message):
        asyncio.run(state.result())
    assert not records(ledger, "step.start")
    assert end(ledger)["status"] == "failed" and message.split("'")[0] in end(ledger)["error"]


def test_outputs_keep_native_types_and_bad_outputs_are_reported(write_runbook):
    path = write_runbook(
        HEADER
        + """
inputs:
  hours: {type: integer, default: 6}
steps:
  - {id: facts, uses: core.set_output, with: {hours: "{{ inputs.hours * 2 }}", tags: [a, b]}}
  - {id: maybe, uses: core.set_output, if: "false", with: {x: 1}}
outputs:
  hours: "{{ steps.facts.outputs.hours }}"
  tags: "{{ steps.facts.outputs.tags }}"
  text: "{{ steps.facts.outputs.hours }} hours"
  missing: "{{ steps.maybe.outputs.x }}"
"""
    )
    state, ledger = execute(path)
    assert state.is_completed()
    final = end(ledger)
    assert final["outputs"]["hours"] == 12 and final["outputs"]["tags"] == ["a", "b"]
    assert final["outputs"]["text"] == "12 hours"
    assert final["outputs"]["missing"] is None
    assert "has no attribute 'x'" in final["output_errors"]["missing"]


def test_expression_error_at_run_time_fails_the_step_without_retrying(write_runbook):
    path = write_runbook(
        HEADER
        + """
steps:
  - {id: maybe, uses: core.set_output, if: "false", with: {x: "1"}}
  - {id: uses_it, uses: core.log, needs: [maybe], if: always(), retries: 3,
     with: {message: "{{ steps.maybe.outputs.x }}"}}
"""
    )
    state, ledger = execute(path)
    assert state.is_failed()
    failed = records(ledger, "step.end", "uses_it")[0]
    assert "has no attribute 'x'" in failed["error"] and failed["attempts"] == 0


def test_secret_inputs_never_reach_the_ledger(write_runbook):
    secret = "s3cr3t-token-value"
    path = write_runbook(
        HEADER
        + """
inputs:
  token: {type: string, required: true, secret: true}
steps:
  - {id: use, uses: test.echo, with: {text: "Bearer {{ inputs.token }}"}}
"""
    )
    state, ledger = execute(path, {"token": secret})
    assert state.is_completed()
    raw = _ledger_path(ledger).read_text()
    assert secret not in raw
    assert records(ledger, "run.start")[0]["inputs"]["token"] == "***"
    assert records(ledger, "step.end", "use")[0]["outputs"]["text"] == "Bearer ***"


def test_run_summary_artifact_lists_every_step(write_runbook):
    from prefect.client.orchestration import get_client

    path = write_runbook(
        HEADER
        + """
steps:
  - {id: one, uses: core.log, with: {message: hi}}
  - {id: two, uses: core.set_output, needs: [one], if: "false", with: {x: 1}}
"""
    )
    _, ledger = execute(path)
    run_id = records(ledger, "run.start")[0]["run"]["id"]

    async def artifact() -> Any:
        async with get_client() as client:
            return await client.read_latest_artifacts()

    mine = [a for a in asyncio.run(artifact()) if a.key and run_id in a.key]
    # one artifact per run (each is a request to the Prefect server): report + step table
    assert [a.key for a in mine] == [f"clampdown-report-{run_id}"]
    body = mine[0].data
    assert body.startswith("# ") and "## Timeline" in body  # the incident report
    steps = body.split("## Steps", 1)[1]
    assert "`one`" in steps and "`two`" in steps and "skipped" in steps and "succeeded" in steps


def test_secrets_stay_out_of_prefect_parameters_logs_state_and_artifact(write_runbook):
    """A secret input reaches the action, but not Prefect's database, logs or the ledger."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    from clampdown.core import inputs as inputs_mod
    from clampdown.core.ledger import new_run_id
    from clampdown.core.loader import load
    from clampdown.core.settings import settings
    from clampdown_flows.respond import run_in_process

    given, default = "given-secret-0451", "default-secret-7788"
    path = write_runbook(
        HEADER
        + f"""
inputs:
  token: {{type: string, required: true, secret: true}}
  fallback: {{type: string, default: {default}, secret: true}}
steps:
  - {{id: echo, uses: test.echo, with: {{text: "{{{{ inputs.fallback }}}}"}}}}
  - {{id: leak, uses: core.fail, needs: [echo], with: {{message: "denied for {{{{ inputs.token }}}}"}}}}
"""
    )
    specs = load(path).model.inputs
    run_id = new_run_id()
    state = run_in_process(str(path), inputs_mod.protect(specs, {"token": given}), run_id=run_id)
    assert state.is_failed()
    ledger_text = settings().ledger_path(run_id).read_text()
    assert "denied for ***" in ledger_text
    assert given not in ledger_text and default not in ledger_text

    async def stored() -> tuple[Any, list[Any], list[Any]]:
        async with get_client() as client:
            flow_run = await client.read_flow_run(state.state_details.flow_run_id)
            only_this_run = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run.id]))
            for _ in range(100):  # logs are shipped in batches; wait for the final one
                logs = await client.read_logs(only_this_run)
                if any("Finished in state Failed" in log.message for log in logs):
                    break
                await asyncio.sleep(0.1)
            artifacts = await client.read_latest_artifacts()
            return flow_run, logs, artifacts

    # the run's logs go to the API in batches (every 2 s by Prefect's default): send what is
    # queued now instead of waiting for the next batch
    APILogHandler().flush()
    flow_run, logs, artifacts = asyncio.run(stored())
    assert flow_run.parameters["inputs"]["token"] == "**********"
    assert (
        given not in (flow_run.state.message or "") and "denied for ***" in flow_run.state.message
    )
    assert logs, "the run's logs reach the Prefect API"
    assert not [log.message for log in logs if given in log.message or default in log.message]
    body = next(a.data for a in artifacts if a.key == f"clampdown-report-{run_id}")
    assert given not in body and default not in body and "denied for ***" in body
