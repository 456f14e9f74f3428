"""Lint rule: a destructive step should be a direct need of the approval that guards it.

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
from clampdown.core.models import Runbook
from clampdown.core.yamlsource import Source

CODE = "indirect-gate"


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
