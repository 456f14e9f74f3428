"""When a step runs: the one rule of docs/runbooks.md §10.2, free of Prefect.

Called when every ``needs`` of a step has finished:

* After an abort, only steps whose ``if:`` calls a status function still run;
  the rest are cancelled.
* Without a status function, a step runs only when every ancestor succeeded
  (an implicit ``success()``) and its ``if:``, if any, is true.
* With one (``always()``, ``success()``, ``failure()``), the condition alone decides.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from clampdown.core.expressions import compile_expression, condition_source, evaluate_condition
from clampdown.core.models import Step


@dataclass(frozen=True)
class StepDecision:
    """Whether a step runs, is skipped or is cancelled, and why (the engine's rule, not a
    person's decision: that is :class:`clampdown.core.approvals.DecisionVerdict`)."""

    outcome: Literal["run", "skipped", "cancelled"]
    reason: str = ""


RUN = StepDecision("run")


def decide(
    step: Step,
    statuses: Mapping[str, str],
    ancestors: Iterable[str],
    context: Mapping[str, Any],
    aborted_by: str | None = None,
) -> StepDecision:
    """The decision for ``step``; raises ExpressionError when its ``if:`` cannot be evaluated."""
    source = condition_source(step.if_) if step.if_ is not None else None
    status_aware = source is not None and compile_expression(source).uses_status_function
    if aborted_by and not status_aware:
        return StepDecision("cancelled", f"run aborted by step '{aborted_by}'")
    ancestry = [statuses[a] for a in ancestors]
    functions = {
        "success": lambda: all(s == "succeeded" for s in ancestry),
        "failure": lambda: any(s == "failed" for s in ancestry),
        "always": lambda: True,
    }
    if not status_aware and not functions["success"]():
        bad = [n for n in step.needs if statuses[n] != "succeeded"]
        what = f"needs {', '.join(bad)}" if bad else "an upstream step"
        return StepDecision("skipped", f"{what} did not succeed")
    if step.if_ is not None and not evaluate_condition(step.if_, {**context, **functions}):
        shown = str(step.if_).lower() if isinstance(step.if_, bool) else step.if_
        return StepDecision("skipped", f"if: {shown} was false")
    return RUN
