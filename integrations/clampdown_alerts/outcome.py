"""The contract between the alert endpoints and the triage that decides what to run.

The endpoints authenticate and normalise; an :data:`AlertTriage` (in ``clampdown serve``,
:class:`clampdown_flows.triage.TriggerTriage`: it matches triggers, deduplicates,
correlates and starts runs) answers for each
alert with a :class:`~clampdown.core.triggers.TriageOutcome`, which lives in the core so
both sides share it; the endpoint turns the outcomes into its HTTP answer.
"""

from __future__ import annotations

from collections.abc import Callable

from clampdown.core.alert import Alert
from clampdown.core.triggers import TriageOutcome, TriageStatus

AlertTriage = Callable[[Alert], TriageOutcome]
"""``triage(alert) -> outcome``: may block briefly (it starts a run and returns its id);
the endpoints call it in a worker thread."""

__all__ = ["AlertTriage", "TriageOutcome", "TriageStatus"]
