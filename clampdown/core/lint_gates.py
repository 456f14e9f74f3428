"""Lint rules of approval gates: a destructive step should be a direct need of the
approval that guards it, and who decides should be written in the runbook.

An approval gates every destructive step downstream of it, and binds their exact
parameters by hash (:mod:`clampdown.core.engine.gate_policy`). A step two or more hops
below its nearest gate is bound only when its parameters can be known when the
approval asks; when they come from a step that runs after the approval, the approver
sees its ``with:`` as written ("known at run time") and nothing binds the values. So a
destructive step whose nearest gate is not a direct need is reported (a warning; an
error with ``lint --strict``), naming the gate to add to its ``needs``.
"""

from __future__ import annotations

from collections.abc import Mapping

from clampdown.core.actions import Action
from clampdown.core.diagnostics import Diagnostic
from clampdown.core.expressions import walk_strings
from clampdown.core.models import Runbook
from clampdown.core.yamlsource import Source

CODE = "indirect-gate"
DECIDERS_CODE = "gate-from-run"
DECIDERS = ("approvers", "min_approvals", "two_person_rule")
"""The fields of an approval that say who decides: computed at run time (from the run's
inputs, which an alert's payload or whoever starts the run supplies, or from steps'
outputs), whoever supplies those values chooses who approves the containment.
(``on_timeout`` is left to its type check: an input whose choices leave out ``approve``
is a fine way to pick deny or fail.)"""


def indirect_gates(
    runbook: Runbook,
    source: Source,
    action_of: Mapping[str, type[Action]],
    ancestors: Mapping[str, set[str]],
) -> list[Diagnostic]:
    """A warning for each destructive step whose nearest approval gates are not its needs."""
    gates = {sid for sid, action in action_of.items() if action.approval_gate}
    found = []
    for i, step in enumerate(runbook.steps):
        action = action_of.get(step.id)
        if action is None or not action.destructive or action.approval_gate:
            continue
        above = ancestors.get(step.id, set()) & gates
        if not above or above & set(step.needs):
            continue
        # the nearest gates: those no other gate above the step comes after
        nearest = sorted(g for g in above if not any(g in ancestors.get(o, set()) for o in above))
        names = ", ".join(f"'{g}'" for g in nearest)
        found.append(
            source.diagnostic(
                ("steps", i, "needs"),
                f"destructive step '{step.id}' is guarded by approval {names} only through "
                "other steps: parameters that come from steps after the approval are shown "
                "as written and not bound",
                f"add {names} to the needs of '{step.id}' so the approver sees and binds its "
                "exact parameters (an error with --strict)",
                code=CODE,
                severity="warning",
            )
        )
    return found


def deciders_from_run(
    runbook: Runbook, source: Source, action_of: Mapping[str, type[Action]]
) -> list[Diagnostic]:
    """A warning for each approval whose approvers, quorum or two-person rule is an
    expression: the run (its inputs, its steps) would choose who decides."""
    found = []
    for i, step in enumerate(runbook.steps):
        action = action_of.get(step.id)
        if action is None or not action.approval_gate:
            continue
        for name in DECIDERS:
            if name not in step.with_:
                continue
            loc = ("steps", i, "with", name)
            if not walk_strings(step.with_[name], loc):  # as written: no expression in it
                continue
            found.append(
                source.diagnostic(
                    loc,
                    f"approval '{step.id}' takes '{name}' from an expression: whoever supplies "
                    "the run's inputs (a person starting it, an alert's payload) or a step's "
                    "outputs would choose who decides",
                    f"write {name} in the runbook (approvers: empty means CLAMPDOWN_APPROVERS); "
                    "an error with --strict",
                    code=DECIDERS_CODE,
                    severity="warning",
                )
            )
    return found
