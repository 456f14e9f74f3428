"""Refused ``with`` values said one way everywhere: plan, the engine, approvals; and the
sandbox limits and the depth limit as clean errors through the CLI (never a traceback)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import Field
from typer.testing import CliRunner

from clampdown.app.cli import app
from clampdown.core import plan as planner
from clampdown.core.actions import (
    Action,
    ActionContext,
    ActionInput,
    ActionOutput,
    InputValidationError,
    registry,
    validate_input,
)
from clampdown.core.lint import load_runbook
from tests.unit.test_scheduler import run  # noqa: F401 - the scheduler fixture

runner = CliRunner()
HEADER = """\
apiVersion: clampdown/v1
kind: Runbook
metadata: {name: with-values, title: With values, severity: low}
"""


class Typed(Action):
    """A destructive test action with constrained fields (test-only)."""

    name = "test.typed_fields"
    destructive = True
    ran: list[str] = []  # noqa: RUF012 - test bookkeeping

    class Input(ActionInput):
        name: str = Field(pattern=r"^[a-z]+$")
        items: list[str] = Field(min_length=1)
        flag: bool = False

    class Output(ActionOutput):
        done: bool

    def run(self, params: Input, ctx: ActionContext) -> Output:
        self.ran.append(ctx.step_id)
        return self.Output(done=True)


registry().register(Typed)


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "with-values.yaml"
    path.write_text(HEADER + body, encoding="utf-8")
    return path


# --- one formatter -----------------------------------------------------------------------


def test_refused_values_are_said_as_field_value_and_rule() -> None:
    with pytest.raises(InputValidationError) as info:
        validate_input(Typed, {"name": "Bad Name", "items": [], "flag": "maybe", "x": 1}, "s")
    text = str(info.value)
    assert "step 's' (test.typed_fields)" in text
    assert "with.name = 'Bad Name': must match the pattern ^[a-z]+$" in text
    assert "with.items = []: must have at least 1 item(s)" in text
    assert "with.flag = 'maybe': must be true or false" in text
    assert "with.x = 1: is not a field of this action" in text
    assert "pydantic" not in text and "Input should" not in text and "http" not in text


def test_a_missing_field_and_a_long_value() -> None:
    with pytest.raises(InputValidationError) as info:
        validate_input(Typed, {"name": "X" * 500}, "s")
    text = str(info.value)
    assert "with.items is missing" in text
    assert "with.name = 'XXXX" in text and "…" in text and "X" * 200 not in text


def test_secrets_are_masked_before_a_value_is_cut_short() -> None:
    secret = "s3cr3t-token"
    value = "y" * 75 + secret  # cut at 80 characters: half a secret would survive a scrub
    with pytest.raises(InputValidationError) as info:
        validate_input(
            Typed, {"name": value, "items": ["a"]}, "s", lambda v: str(v).replace(secret, "***")
        )
    assert "s3cr" not in str(info.value)


# --- plan --------------------------------------------------------------------------------


def plan_of(tmp_path: Path, body: str, given: dict[str, Any]) -> planner.Plan:
    loaded, _ = load_runbook(write(tmp_path, body))
    return planner.build(loaded.model, given, registry())


BODY = """\
inputs:
  who: {type: string, required: true}
  items: {type: array, min_items: 1, default: [a]}
  go: {type: boolean, default: true}
steps:
  - id: act
    uses: test.typed_fields
    if: "{{ inputs.go }}"
    preapproved: "policy IR-7, signed off by the CISO"
    with: {name: "{{ inputs.who }}", items: "{{ inputs.items }}"}
"""


def test_plan_reports_refused_values_with_the_given_inputs(tmp_path: Path) -> None:
    plan = plan_of(tmp_path, BODY, {"who": "Mallory Smith"})
    assert plan.problems == ["act: with.name = 'Mallory Smith': must match the pattern ^[a-z]+$"]
    assert plan.to_dict()["problems"] == plan.problems
    assert plan_of(tmp_path, BODY, {"who": "mallory"}).problems == []


def test_plan_does_not_check_a_step_its_if_skips(tmp_path: Path) -> None:
    plan = plan_of(tmp_path, BODY, {"who": "Mallory Smith", "go": "false"})
    (step,) = plan.stages[0]
    assert step.will_run is False and plan.problems == []


def test_plan_leaves_values_known_at_run_time_out(tmp_path: Path) -> None:
    plan = plan_of(tmp_path, BODY, {})  # who not given: known at run time
    (step,) = plan.stages[0]
    assert step.with_["name"].endswith(planner.AT_RUN_TIME) and plan.problems == []


def test_cli_plan_exits_1_and_names_field_value_and_rule(tmp_path: Path) -> None:
    path = write(tmp_path, BODY)
    result = runner.invoke(app, ["plan", str(path), "-i", "who=Mallory Smith"])
    assert result.exit_code == 1, result.output
    assert "refused: with.name = 'Mallory Smith': must match the pattern ^[a-z]+$" in result.output
    assert "plan: 1 with: value(s) refused" in result.output
    assert "pydantic" not in result.output


# --- the engine and approvals ----------------------------------------------------------------


def test_a_run_fails_the_step_in_clampdowns_words(run) -> None:  # noqa: F811
    r = run(
        """
inputs:
  who: {type: string, required: true}
steps:
  - id: act
    uses: test.typed_fields
    preapproved: "policy IR-7, signed off by the CISO"
    with: {name: "{{ inputs.who }}", items: [a]}
""",
        {"who": "Mallory Smith"},
    )
    (end,) = r.records("step.end", "act")
    assert end["status"] == "failed"
    assert end["error"] == (
        "step 'act' (test.typed_fields): with.name = 'Mallory Smith': must match the pattern "
        "^[a-z]+$ — fix the with: value of 'act' or the input that gives it "
        "(clampdown actions lists each action's fields)"
    )


def test_a_refused_gated_step_fails_its_approval_without_the_needs_hint(run) -> None:  # noqa: F811
    Typed.ran.clear()
    r = run(
        """
inputs:
  who: {type: string, required: true}
steps:
  - id: gate
    uses: approval.request
    with: {summary: "Act on {{ inputs.who }}?"}
  - id: act
    uses: test.typed_fields
    needs: [gate]
    with: {name: "{{ inputs.who }}", items: [a]}
""",
        {"who": "Mallory Smith"},
        gate="approved",
    )
    (end,) = r.records("step.end", "gate")
    assert end["status"] == "failed"
    assert "gated step 'act' cannot be put to approval" in end["error"]
    assert "with.name = 'Mallory Smith': must match the pattern ^[a-z]+$" in end["error"]
    assert "needs" not in end["error"] and "nothing was run" in end["error"]
    assert Typed.ran == [] and r.steps["act"] != "succeeded"


# --- sandbox and depth limits through the CLI ------------------------------------------------

DEEP = "{{ " + "(" * 3000 + "1" + ")" * 3000 + " }}"


def test_lint_reports_3000_nested_parentheses_with_a_position(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f'steps:\n  - id: note\n    uses: core.log\n    with: {{message: "{DEEP}"}}\n',
    )
    result = runner.invoke(app, ["lint", str(path)])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert f"{path}:7:22: error: expression nested more than 48 levels deep" in result.output
    assert "RecursionError" not in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(
    ("expression", "operation"),
    [
        ("['x'] | join('y' * 99999) ~ ('z' * 10) | replace('z', 'zz' * 50000)", "replace"),
        ("[inputs.word * 99999, 'y'] | join(inputs.word * 10)", "join"),
        (  # three lists of 40,000 (a repetition counts items and characters: 80,000 each)
            "[[inputs.word] * 40000, [inputs.word] * 40000, [inputs.word] * 40000]"
            " | sum(start=[]) | join(',')",
            "sum",
        ),
        ("'%0' ~ inputs.big ~ 'd'", None),  # builds the format only: no refusal
        ("('%0' ~ inputs.big ~ 'd') % 1", "a %-format field"),
        ("inputs.word * inputs.big", "a repetition"),
        ("(inputs.word * 99999) ~ (inputs.word * 99999)", "a ~ concatenation"),
        ("(inputs.word * 99999) + (inputs.word * 99999)", "a concatenation"),
    ],
)
def test_plan_refuses_10_to_the_8_character_values_cleanly(
    tmp_path: Path, expression: str, operation: str | None
) -> None:
    path = write(
        tmp_path,
        "inputs:\n  word: {type: string, default: x}\n  big: {type: integer, default: 100000000}\n"
        f'steps:\n  - id: note\n    uses: core.log\n    with: {{message: "{{{{ {expression} }}}}"}}\n',
    )
    result = runner.invoke(app, ["plan", str(path)])
    if operation is None:
        assert result.exit_code == 0, result.output
        return
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert f"refused by the sandbox: {operation} would be longer than 100,000" in result.output
    assert "MemoryError" not in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(
    ("condition", "will_run"),
    [
        ("always() and inputs.who", False),  # false however the steps upstream end
        ("always()", True),
        ("failure()", None),  # depends on how the steps upstream end: checked
        ("success() and inputs.who", False),
        ("steps.first.outputs.ok", None),
    ],
)
def test_plan_judges_an_if_with_status_functions_both_ways(
    tmp_path: Path, condition: str, will_run: bool | None
) -> None:
    body = f"""\
inputs:
  who: {{type: string}}
steps:
  - {{id: first, uses: core.set_output, with: {{ok: true}}}}
  - id: act
    uses: test.typed_fields
    needs: [first]
    if: "{{{{ {condition} }}}}"
    preapproved: "policy IR-7, signed off by the CISO"
    with: {{name: "{{{{ inputs.who | default('x', true) }}}}", items: [a]}}
"""
    plan = plan_of(tmp_path, body, {})
    step = plan.stages[1][0]
    assert step.will_run is will_run
