"""Scoring a drill and assembling its after-action report from what the drill saw.

The objectives are judged by :mod:`clampdown.app.drill.objectives` against the simulated AWS end
state and the ledgers; this module gathers those facts, the timeline, the failures and
the notes into a :class:`clampdown.core.report.DrillReport`, and attaches the Markdown to
the Prefect run.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from clampdown.app.drill.runs import Clock, DrillOutcome, TrackedRun
from clampdown.app.drill.world import SLACK_CHANNEL
from clampdown.core.drill_model import Drill
from clampdown.core.report import DrillReport, Marker, timeline_from_ledger


class AfterActionReport:
    """Mixed into the drill runner: the report, once every run has ended."""

    drill: Drill
    clock: Clock
    run: DrillOutcome
    slack: Any
    sim: Any
    seeded: Any
    tracked: dict[str, TrackedRun]

    def _report(self) -> DrillReport:
        from clampdown.app.drill.objectives import DrillFacts, RunFacts, score
        from clampdown.core.actions import registry
        from clampdown.core.ledger import read

        records = read(self.run.ledger) if self.run.ledger and self.run.ledger.exists() else []
        actions, _ = registry().load_all()
        containment = {a.name for a in actions if a.destructive and not a.approval_gate}
        gates = {a.name for a in actions if a.approval_gate}
        steps, ledger_markers, decisions = timeline_from_ledger(
            records, self.clock.alert_epoch, containment=containment, approvals=gates
        )
        runs: list[RunFacts] = []
        later_failures: list[str] = []
        for tracked in self._runs_in_order():
            if tracked.run_id == self.run.run_id:
                runs.append(
                    RunFacts(tracked.run_id, tracked.runbook, tracked.origin, records, steps)
                )
                continue
            more = read(tracked.ledger)
            spans, marks, said = timeline_from_ledger(
                more, self.clock.alert_epoch, containment=containment, approvals=gates
            )
            runs.append(RunFacts(tracked.run_id, tracked.runbook, tracked.origin, more, spans))
            ledger_markers += [Marker(m.at, f"{tracked.runbook}: {m.label}") for m in marks]
            decisions += [f"{tracked.runbook}: {line}" for line in said]
            later_failures += [
                f"{tracked.runbook} step {s.id} ({s.uses}) failed: {s.note}"
                for s in spans
                if s.status == "failed"
            ]
        facts = DrillFacts(
            drill=self.drill,
            seeded=self.seeded,
            alert_epoch=self.clock.alert_epoch,
            client=self._client,
            run_id=self.run.run_id,
            runbook=self.run.runbook,
            records=records,
            steps=steps,
            slack_messages=self.slack.messages(SLACK_CHANNEL) if self.slack is not None else [],
            runs=runs,
            posted_alerts=list(self.run.posted_alerts),
        )
        objectives = score(facts)
        self._check_inputs(records)
        done = [s for s in steps if s.containment and s.status == "succeeded" and s.end]
        broken = [s for s in steps if s.containment and s.status == "failed"]
        gate_ends = [s.end for s in steps if s.approval and s.end is not None]
        failures = [
            f"step {s.id} ({s.uses}) failed: {s.note}" for s in steps if s.status == "failed"
        ]
        failures += [
            f"Slack: {r.get('count')} update(s) missed, last error: {r.get('last_error')}"
            for r in records
            if r.get("type") == "slack.miss"
        ]
        failures += later_failures + self.run.failures
        evidence, manifest_uri = self._evidence()
        notes = list(self.run.notes)
        if self.sim.lookups:
            notes.append(
                "CloudTrail LookupEvents (not implemented by moto) was answered "
                f"{self.sim.lookups} time(s) by the drill from the seeded story"
            )
        if self.sim.throttled:
            notes.append(f"AWS calls answered Throttling by the drill: {self.sim.throttled}")
        roles = {
            name: f"{person.name} ({person.slack_user})"
            for name in self.drill.roles.names()
            if (person := self.drill.roles.get(name)) is not None
        }
        return DrillReport(
            drill=self.drill.metadata.name,
            title=self.drill.metadata.title,
            family=self.drill.metadata.family,
            run_id=self.run.run_id,
            runbook=self.run.runbook,
            alert_source=self.drill.alert.source,
            alert_time=datetime.fromtimestamp(self.clock.alert_epoch, UTC),
            roles=roles,
            time_to_notify=self.run.notified_at,
            time_to_approve=min(gate_ends) if gate_ends else None,
            time_to_contain=max(s.end for s in done if s.end) if done and not broken else None,
            steps=steps,
            markers=sorted([*self.run.markers, *ledger_markers], key=lambda m: m.at),
            objectives=objectives,
            expected_missed=list(self.drill.expect.missed),
            failures=failures,
            evidence=evidence,
            manifest_uri=manifest_uri,
            decisions=decisions,
            notes=notes,
            runs=[self._run_line(run) for run in runs],
        )

    def _runs_in_order(self) -> list[TrackedRun]:
        """The alert's run first, then the others as they started."""
        return sorted(
            self.tracked.values(), key=lambda t: (t.run_id != self.run.run_id, t.started_at)
        )

    def _run_line(self, run: Any) -> str:
        """One line of the report's run list: what ran, how it started, how it ended."""
        tracked = self.tracked[run.run_id]
        start = tracked.started_at - self.clock.alert_epoch
        end = (
            f", ended T+{tracked.ended_at - self.clock.alert_epoch:.1f}s"
            if tracked.ended_at is not None
            else ""
        )
        return (
            f"run {run.run_id} of {run.runbook}: {run.status or 'not ended'} "
            f"(started T+{start:.1f}s by {run.origin}{end})"
        )

    def _evidence(self) -> tuple[list[dict[str, Any]], str | None]:
        if self.run.run_id is None:
            return [], None
        bucket = self.seeded.evidence_bucket
        key = f"incidents/{self.run.run_id}/manifest.json"
        try:
            body = self._client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
        except Exception:
            return [], None
        return list(json.loads(body).get("objects", [])), f"s3://{bucket}/{key}"

    def _attach(self, markdown: str, report: DrillReport) -> None:
        """The report as a markdown artifact of the run's Prefect flow run."""
        from uuid import UUID

        from clampdown.core.ledger import read

        if self.run.ledger is None or not self.run.ledger.exists():
            return
        flow_run_id = read(self.run.ledger)[0].get("flow_run_id")
        try:
            from prefect.client.orchestration import get_client
            from prefect.client.schemas.actions import ArtifactCreate

            with get_client(sync_client=True) as client:
                client.create_artifact(
                    ArtifactCreate(
                        key=f"drill-report-{report.run_id}".lower(),
                        type="markdown",
                        data=markdown,
                        description=f"after-action report of drill {report.drill}",
                        flow_run_id=UUID(flow_run_id) if flow_run_id else None,
                    )
                )
        except Exception as exc:  # the files are written; the artifact is a convenience
            report.notes.append(f"the report could not be attached to the Prefect run: {exc}")
