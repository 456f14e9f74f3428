"""Score a drill: check each objective against the simulated AWS end state and the ledger.

Every checker looks at what is true *now* in the simulated account (IAM keys,
policies, the bucket policy, the endpoint) or at what the ledger recorded, never
at what the runbook says it did: a containment step that reports success while a
key is still active must score as missed. Each returns an
:class:`~clampdown.core.report.ObjectiveResult`: met or missed, the measured value,
and a reason a person can act on.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from clampdown.app.drill.facts import DrillFacts, ObjectiveCheck, RunFacts
from clampdown.app.drill.objectives_aws import (
    access_restored,
    bucket_locked,
    endpoint_frozen,
    endpoint_not_invocable_by,
    evidence_manifest_complete,
    kms_key_rotated,
    no_active_keys,
    secret_rotated,
)
from clampdown.app.drill.objectives_ledger import (
    alerts_recorded,
    approval_within,
    contained_within,
    runbook_completed,
    runbook_started,
    slack_misses_recorded,
    slack_thread_complete,
)
from clampdown.app.drill.objectives_scope import scoped_exactly
from clampdown.core.drill_model import RunbookCompleted, RunbookStarted
from clampdown.core.report import ObjectiveResult

__all__ = ["CHECKERS", "DrillFacts", "ObjectiveCheck", "RunFacts", "score"]


SCORERS = 4  # objectives checked at once


def score(facts: DrillFacts) -> list[ObjectiveResult]:
    """Every objective of the drill, in the drill's order; a checker that breaks scores missed.

    The objectives are checked at once, each in a thread: those on the AWS end state wait
    on the simulated account (a process of its own), and each check only reads."""
    with ThreadPoolExecutor(SCORERS, thread_name_prefix="drill-score") as pool:
        return list(pool.map(lambda objective: _scored(objective, facts), facts.drill.objectives))


def _scored(objective: Any, facts: DrillFacts) -> ObjectiveResult:
    title = objective.title or _default_title(objective)
    try:
        met, measured, reason = _check(objective, facts)
    except Exception as exc:  # an objective that cannot be checked is not met
        met, measured, reason = False, "not checked", f"the check failed: {exc}"
    return ObjectiveResult(objective.id, objective.kind, title, met, measured, reason)


def _check(objective: Any, facts: DrillFacts) -> ObjectiveCheck:
    """Run the checker on the run the objective is about (its ``runbook``, else the alert's)."""
    checker = CHECKERS[objective.kind]
    if isinstance(objective, RunbookStarted | RunbookCompleted):
        return checker(objective, facts)  # their runbook is what they look for
    runbook = getattr(objective, "runbook", None)
    about = facts.for_runbook(runbook)
    if runbook is not None and about.run_id is None:
        ran = ", ".join(f"{r.runbook} ({r.origin})" for r in facts.runs) or "none"
        return False, "no run", f"no run of {runbook} during the drill; runs: {ran}"
    return checker(objective, about)


_TITLES: dict[str, Callable[[Any], str]] = {
    "contained_within": lambda o: f"Contained within {o.seconds:g} s of the alert",
    "approval_within": lambda o: f"Decision within {o.seconds:g} s of the alert",
    "no_active_keys": lambda o: f"No active access key for {o.user}",
    "endpoint_not_invocable_by": lambda o: f"{o.principal} cannot invoke {o.endpoint}",
    "endpoint_frozen": lambda o: f"Endpoint {o.endpoint} frozen",
    "bucket_locked": lambda o: f"s3://{o.bucket}/{o.prefix} locked",
    "runbook_started": lambda o: f"The alert starts {o.runbook}",
    "runbook_completed": lambda o: f"A run of {o.runbook} completes",
    "access_restored": lambda o: f"Access of {o.user} restored",
    "kms_key_rotated": lambda o: f"KMS key alias/{o.key} rotated",
    "secret_rotated": lambda o: f"Secret {o.secret} rotated",
    "evidence_manifest_complete": lambda o: "Evidence manifest complete and intact",
    "slack_thread_complete": lambda o: "The Slack thread tells the whole story",
    "scoped_exactly": lambda o: f"The scope names exactly what {o.principal} took, and its bytes",
    "alerts_recorded": lambda o: (
        "Every alert is in a run's ledger (started, joined or deduplicated)"
    ),
}


def _default_title(objective: Any) -> str:
    title = _TITLES.get(objective.kind)
    if title is None:
        return "The ledger records the Slack updates that were missed"
    return title(objective)


CHECKERS: dict[str, Callable[..., ObjectiveCheck]] = {
    "runbook_started": runbook_started,
    "contained_within": contained_within,
    "approval_within": approval_within,
    "no_active_keys": no_active_keys,
    "endpoint_not_invocable_by": endpoint_not_invocable_by,
    "endpoint_frozen": endpoint_frozen,
    "bucket_locked": bucket_locked,
    "access_restored": access_restored,
    "kms_key_rotated": kms_key_rotated,
    "secret_rotated": secret_rotated,
    "runbook_completed": runbook_completed,
    "evidence_manifest_complete": evidence_manifest_complete,
    "slack_thread_complete": slack_thread_complete,
    "slack_misses_recorded": slack_misses_recorded,
    "alerts_recorded": alerts_recorded,
    "scoped_exactly": scoped_exactly,
}
