"""What the objectives of a drill are judged on, gathered once every run has ended."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from clampdown.app.drill.evidence_reads import EvidenceReader, ReadBack
from clampdown.core.drill_model import Drill
from clampdown.core.report import StepSpan
from clampdown_aws.testing.seeded import Seeded

ObjectiveCheck = tuple[bool, str, str]  # met, what was measured, why


@dataclass
class RunFacts:
    """One run that took place during the drill, and how it started."""

    run_id: str
    runbook: str | None
    origin: str  # "the alert", "a second alert (eventbridge)", "/clampdown by U0…"
    records: list[dict[str, Any]] = field(default_factory=list)
    steps: list[StepSpan] = field(default_factory=list)

    @property
    def status(self) -> str | None:
        """The run's end status (None: it had not ended when the drill stopped)."""
        end = next((r for r in reversed(self.records) if r.get("type") == "run.end"), None)
        return None if end is None else str(end.get("status"))


@dataclass
class DrillFacts:
    """Everything the checkers may read once the run is over.

    ``run_id``, ``runbook``, ``records`` and ``steps`` are the alert's run; ``runs``
    lists every run of the drill (the alert's first). An objective that names a
    ``runbook`` is judged on :meth:`for_runbook`, the same facts about that run.
    """

    drill: Drill
    seeded: Seeded
    alert_epoch: float
    client: Callable[[str], Any]
    run_id: str | None = None
    runbook: str | None = None
    records: list[dict[str, Any]] = field(default_factory=list)
    steps: list[StepSpan] = field(default_factory=list)
    slack_messages: list[dict[str, Any]] = field(default_factory=list)
    runs: list[RunFacts] = field(default_factory=list)
    posted_alerts: list[str] = field(default_factory=list)  # ids the endpoint accepted
    evidence: EvidenceReader | None = None  # the report's read-back, shared (read_evidence)

    def run_of(self, runbook: str) -> RunFacts | None:
        """The drill's (first) run of ``runbook``."""
        return next((r for r in self.runs if r.runbook == runbook), None)

    def for_runbook(self, runbook: str | None) -> DrillFacts:
        """These facts about the drill's run of ``runbook`` (None: the alert's run)."""
        if runbook is None:
            return self
        run = self.run_of(runbook)
        if run is None:
            return dataclasses.replace(self, run_id=None, runbook=None, records=[], steps=[])
        return dataclasses.replace(
            self, run_id=run.run_id, runbook=run.runbook, records=run.records, steps=run.steps
        )

    def read_evidence(self) -> ReadBack:
        """This run's evidence read back once: with the report's reader (``evidence``)
        when given, so the objective and the report's evidence list share one read of
        each object; else a read of its own."""
        reader = self.evidence or EvidenceReader(self.client, self.seeded.evidence_bucket)
        return reader.read(str(self.run_id))

    def outputs(self, step: str) -> dict[str, Any]:
        for record in self.records:
            if record.get("type") == "step.end" and record.get("step") == step:
                return dict(record.get("outputs") or {})
        return {}
