"""``clampdown plan``: what a run would do, in order, without doing any of it.

The plan renders ``with`` values that depend only on inputs and leaves those
that need a step's outputs as written (they are known only during the run). It
never calls an action, so it is safe on a production account.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from clampdown.core import graph
from clampdown.core import inputs as inputs_mod
from clampdown.core.actions import Action, InputValidationError, Registry, validate_input
from clampdown.core.diagnostics import InputError
from clampdown.core.expressions import (
    ExpressionError,
    compile_expression,
    condition_source,
    contains_expression,
    evaluate,
    evaluate_condition,
)
from clampdown.core.home import Home
from clampdown.core.models import Runbook

AT_RUN_TIME = "(known at run time)"
FAILS = "(fails with these inputs)"


@dataclass
class PlannedStep:
    id: str
    name: str | None
    uses: str
    needs: list[str]
    condition: str | None
    with_: dict[str, Any]
    iam_actions: list[str]
    destructive: bool
    approval_gate: bool
    retries: int | None  # None for an approval step: it is never retried
    timeout: float | None  # None for an approval step: its with.timeout bounds the wait
    on_failure: str
    preapproved: str | None = None
    changes: list[str] | None = None  # from a live preview; None: not previewed
    preview_note: str | None = None
    will_run: bool | None = None  # its if: with these inputs (None: known at run time)
    problems: list[str] = field(default_factory=list)  # with: values the action refuses


@dataclass
class Plan:
    runbook: str
    title: str
    severity: str
    inputs: dict[str, Any]
    missing_inputs: list[str]
    stages: list[list[PlannedStep]]
    iam_actions: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        """Every refused ``with`` value, as ``step: with.field = value: rule``."""
        return [f"{s.id}: {p}" for stage in self.stages for s in stage for p in s.problems]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with ``with`` spelled as in the runbook."""
        data = asdict(self)
        data["problems"] = self.problems
        for stage in data["stages"]:
            for step in stage:
                step["with"] = step.pop("with_")
        return data


def build(runbook: Runbook, given: dict[str, Any], actions: Registry) -> Plan:
    """A plan for ``runbook``; given inputs are validated, missing ones stay unresolved."""
    missing = [
        n for n, s in runbook.inputs.items() if s.required and n not in given and s.default is None
    ]
    present = {n: s for n, s in runbook.inputs.items() if n not in missing}
    values = inputs_mod.validate(present, given)
    shown = inputs_mod.masked(runbook.inputs, values)
    context = {
        "inputs": values,
        "run": {
            "id": "(plan)",
            "runbook": runbook.metadata.name,
            "started_at": "(plan)",
            "trigger": {"type": "plan"},
            "drill": False,
        },
    }
    order = graph.stages({s.id: s.needs for s in runbook.steps})
    stages: list[list[PlannedStep]] = []
    all_iam: set[str] = set()
    for stage in order:
        planned = []
        for sid in stage:
            step = runbook.step(sid)
            action = actions.get(step.uses)
            all_iam.update(action.iam_actions)
            failures: list[str] = []
            planned.append(
                _checked(
                    PlannedStep(
                        id=sid,
                        name=step.name,
                        uses=step.uses,
                        needs=list(step.needs),
                        condition=None
                        if step.if_ is None
                        else str(step.if_).lower()
                        if isinstance(step.if_, bool)
                        else step.if_,
                        with_=_resolve(step.with_, context, runbook, failures),
                        iam_actions=list(action.iam_actions),
                        destructive=action.destructive,
                        approval_gate=action.approval_gate,
                        retries=None
                        if action.approval_gate
                        else runbook.setting(step, "retries", 0),
                        timeout=None
                        if action.approval_gate
                        else runbook.setting(step, "timeout", 300.0),
                        on_failure=runbook.setting(step, "on_failure", "abort"),
                        preapproved=step.preapproved,
                        will_run=_condition(step.if_, context),
                    ),
                    action,
                    failures,
                )
            )
        stages.append(planned)
    return Plan(
        runbook.metadata.name,
        runbook.metadata.title,
        runbook.metadata.severity,
        shown,
        missing,
        stages,
        sorted(all_iam),
    )


def preview(plan: Plan, runbook: Runbook, actions: Registry, home: Home) -> None:
    """Ask each action what it would change now (read-only calls); fill ``changes``.

    Steps whose ``with`` values depend on other steps' outputs, or whose region
    or account is an expression, cannot be previewed before the run. The actions see
    the files of a run named ``plan`` under ``home`` (a preview writes nothing there).
    """
    from clampdown.core.actions import ActionContext

    for stage in plan.stages:
        for planned in stage:
            step = runbook.step(planned.id)
            region = runbook.setting(step, "region", None)
            account = runbook.setting(step, "account", None)
            if (
                _unresolved(planned.with_)
                or contains_expression(region)
                or contains_expression(account)
            ):
                planned.preview_note = "depends on values known only during the run"
                continue
            action = actions.get(planned.uses)
            ctx = ActionContext(
                run_id="plan",
                step_id=planned.id,
                runbook=plan.runbook,
                home=home,
                region=region,
                account=account,
            )
            if planned.problems or planned.will_run is False:
                planned.preview_note = "not previewed: " + (
                    "its with: values are refused" if planned.problems else "its if: is false"
                )
                continue
            try:
                params = validate_input(action, planned.with_, planned.id)
                planned.changes = action().preview(params, ctx)
            except Exception as exc:  # a preview failure is information, not a crash
                planned.preview_note = f"preview failed: {type(exc).__name__}: {exc}"
                continue
            if planned.changes is None:
                planned.preview_note = "this action cannot preview its changes"


def _condition(condition: str | bool | None, context: dict[str, Any]) -> bool | None:
    """A step's ``if:`` with the plan's inputs: True or False when it is the same whether
    the steps upstream succeed or fail (``always() and inputs.x`` with no ``x``: False);
    None when it reads steps' values or depends on how they end."""
    if condition is None:
        return True
    expr = compile_expression(condition_source(condition))
    if any(r.root == "steps" for r in expr.references):
        return None
    outcomes = set()
    for upstream_ok in (True, False):
        functions = {
            "always": lambda: True,
            "success": lambda ok=upstream_ok: ok,
            "failure": lambda ok=upstream_ok: not ok,
        }
        try:
            outcomes.add(evaluate_condition(condition, {**context, **functions}))
        except ExpressionError:
            return None
    return outcomes.pop() if len(outcomes) == 1 else None


def _checked(planned: PlannedStep, action: type[Action], failures: list[str]) -> PlannedStep:
    """Validate the ``with`` values known now against the action's input model.

    Values known only during the run (or masked secrets) are left out, and so are
    the problems they would cause; a step its ``if:`` skips is not checked.
    """
    if planned.will_run is False:
        return planned
    planned.problems = list(failures)
    known = {k: v for k, v in planned.with_.items() if not _unresolved(v)}
    try:
        validate_input(action, known, planned.id)
    except InputValidationError as exc:
        unknown = set(planned.with_) - set(known)
        planned.problems += [
            str(p)
            for p in exc.problems
            if p.field.split(".")[0] not in unknown and p.field != "(all)"
        ]
    return planned


def _unresolved(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_unresolved(v) for v in value.values())
    if isinstance(value, list):
        return any(_unresolved(v) for v in value)
    return isinstance(value, str) and (
        value.endswith((AT_RUN_TIME, FAILS)) or value == inputs_mod.SECRET_MASK
    )


def _resolve(
    value: Any, context: dict[str, Any], runbook: Runbook, failures: list[str], where: str = "with"
) -> Any:
    """``value`` rendered with the plan's inputs; steps' outputs and missing inputs stay
    as written (known at run time); an expression that fails with the inputs it has is
    added to ``failures`` (the run would fail there too)."""
    if isinstance(value, dict):
        return {
            k: _resolve(v, context, runbook, failures, f"{where}.{k}") for k, v in value.items()
        }
    if isinstance(value, list):
        return [
            _resolve(v, context, runbook, failures, f"{where}.{i}") for i, v in enumerate(value)
        ]
    if not contains_expression(value):
        return value
    refs = compile_expression(value).references
    if any(r.root == "steps" for r in refs):
        return f"{value} {AT_RUN_TIME}"
    secret = any(
        r.root == "inputs" and r.name in runbook.inputs and runbook.inputs[r.name].secret
        for r in refs
    )
    try:
        resolved = evaluate(value, context)
    except ExpressionError as exc:
        if all(r.root != "inputs" or r.name in context["inputs"] for r in refs):
            failures.append(f"{where}: {exc.message}")
            return f"{value} {FAILS}"
        return f"{value} {AT_RUN_TIME}"
    return inputs_mod.SECRET_MASK if secret else resolved


__all__ = ["AT_RUN_TIME", "InputError", "Plan", "PlannedStep", "build"]
