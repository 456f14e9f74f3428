"""The step-running rule, without Prefect (docs/runbooks.md §10.2)."""

from __future__ import annotations

import pytest

from clampdown.core.expressions import ExpressionError
from clampdown.core.models import Step
from clampdown.core.rules import StepDecision, decide

CONTEXT = {"inputs": {"go": True, "stop": False}, "steps": {}, "run": {}}


def step(if_: object = None, needs: tuple[str, ...] = ("a",)) -> Step:
    return Step.model_validate({"id": "s", "uses": "core.log", "needs": list(needs), "if": if_})


@pytest.mark.parametrize(
    ("if_", "statuses", "aborted_by", "expected"),
    [
        (None, {"a": "succeeded"}, None, StepDecision("run")),
        (None, {"a": "failed"}, None, StepDecision("skipped", "needs a did not succeed")),
        (None, {"a": "skipped"}, None, StepDecision("skipped", "needs a did not succeed")),
        ("inputs.go", {"a": "succeeded"}, None, StepDecision("run")),
        (
            "inputs.stop",
            {"a": "succeeded"},
            None,
            StepDecision("skipped", "if: inputs.stop was false"),
        ),
        (False, {"a": "succeeded"}, None, StepDecision("skipped", "if: false was false")),
        ("always()", {"a": "failed"}, None, StepDecision("run")),
        ("failure()", {"a": "failed"}, None, StepDecision("run")),
        ("failure()", {"a": "succeeded"}, None, StepDecision("skipped", "if: failure() was false")),
        (
            "success() and inputs.go",
            {"a": "skipped"},
            None,
            StepDecision("skipped", "if: success() and inputs.go was false"),
        ),
        (None, {"a": "succeeded"}, "x", StepDecision("cancelled", "run aborted by step 'x'")),
        (
            "inputs.go",
            {"a": "succeeded"},
            "x",
            StepDecision("cancelled", "run aborted by step 'x'"),
        ),
        ("always()", {"a": "succeeded"}, "x", StepDecision("run")),
    ],
    ids=lambda v: str(v) if not isinstance(v, dict) else ",".join(v.values()),
)
def test_decide(if_, statuses, aborted_by, expected):
    assert decide(step(if_), statuses, statuses, CONTEXT, aborted_by) == expected


def test_an_ancestor_failing_behind_a_succeeded_need_skips_with_a_general_reason():
    statuses = {"a": "succeeded", "root": "failed"}
    assert decide(step(), statuses, ["a", "root"], CONTEXT) == StepDecision(
        "skipped", "an upstream step did not succeed"
    )
    assert decide(step("failure()"), statuses, ["a", "root"], CONTEXT) == StepDecision("run")


def test_a_broken_condition_raises_for_the_caller_to_fail_the_step():
    with pytest.raises(ExpressionError, match="nope"):
        decide(step("inputs.nope"), {"a": "succeeded"}, ["a"], CONTEXT)
