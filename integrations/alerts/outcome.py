"""The contract between the alert endpoints and the triage that decides what to run.

The endpoints authenticate and normalise; a :data:`Triage` (built elsewhere: it
matches triggers, deduplicates, correlates and starts runs) answers for each alert
with a :class:`TriageOutcome`. The endpoint turns the outcomes into its HTTP answer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from clampdown.alert import Alert

TriageStatus = Literal["started", "joined", "deduplicated", "ignored"]


@dataclass(frozen=True)
class TriageOutcome:
    """What happened to one alert.

    ``run_id`` is the run started or joined (None when ignored); ``trigger`` the name
    of the trigger that matched; ``reason`` a short sentence for the sender and the log.
    """

    status: TriageStatus
    run_id: str | None = None
    trigger: str | None = None
    reason: str = ""


Triage = Callable[[Alert], TriageOutcome]
"""``triage(alert) -> outcome``: may block briefly (it starts a run and returns its id);
the endpoints call it in a worker thread."""
