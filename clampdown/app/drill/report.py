"""Scoring a drill and assembling its after-action report from what the drill saw.

The objectives are judged by :mod:`clampdown.app.drill.objectives` against the simulated AWS end
state and the ledgers; this module gathers those facts, the timeline, the failures and
the notes into a :class:`clampdown.core.report.DrillReport`, and attaches the Markdown to
the Prefect run.
"""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from clampdown.app.drill.evidence_reads import EvidenceReader
from clampdown.app.drill.follower import RunFollower
from clampdown.app.drill.session import DrillSession
from clampdown.app.drill.timeline import Timeline
from clampdown.app.drill.world import SLACK_CHANNEL
from clampdown.core.drill_placeholders import fill_placeholders
from clampdown.core.incident_report import action_kinds, rollback_ledgers
from clampdown.core.report import DrillReport, Marker, timeline_from_ledger
from clampdown.core.report_advice import action_items
from clampdown.core.report_facts import (
    EvidenceItem,
    changes,
    evidence,
    gate_ends,
    inputs,
    measured_times,
    merge_evidence,
)
from clampdown.core.report_html import to_html
from clampdown.core.report_markdown import to_markdown


@dataclass
class DrillResult:
    """What the command prints and returns: the report, where it is, the exit code."""

    report: DrillReport
    markdown: Path
    html: Path
    workspace: Path

    @property
    def exit_code(self) -> int:
        return 0 if self.report.all_met else 1


class AfterAction:
    """The after-action report, once every run has ended: scored, written, attached."""

    def __init__(self, session: DrillSession, timeline: Timeline, runs: RunFollower) -> None:
        self._session = session
        self._drill = session.drill
        self._timeline = timeline
        self._runs = runs

    def report(self) -> DrillReport:
        """Score the objectives and gather the timeline, failures and notes."""
        from clampdown.app.drill.objectives import DrillFacts, RunFacts, score
        from clampdown.core.ledger import read

        session, drill, alert_epoch = self._session, self._drill, self._session.clock.alert_epoch
        ledger = self._runs.ledger
        run_id = self._runs.run_id
        records = read(ledger) if ledger and ledger.exists() else []
        containment, gates = action_kinds()
        names = self._names()
        steps, ledger_markers, decisions = timeline_from_ledger(
            records, alert_epoch, containment=containment, approvals=gates, names=names
        )
        runs: list[RunFacts] = []
        later_failures: list[str] = []
        for tracked in self._runs.runs():
            if tracked.run_id == run_id:
                runs.append(
                    RunFacts(tracked.run_id, tracked.runbook, tracked.origin, records, steps)
                )
                continue
            more = read(tracked.ledger)
            spans, marks, said = timeline_from_ledger(
                more, alert_epoch, containment=containment, approvals=gates, names=names
            )
            runs.append(RunFacts(tracked.run_id, tracked.runbook, tracked.origin, more, spans))
            ledger_markers += [Marker(m.at, f"{tracked.runbook}: {m.label}", m.kind) for m in marks]
            decisions += [dataclasses.replace(d, run=tracked.runbook or "?") for d in said]
            later_failures += [
                f"{tracked.runbook} step {s.id} ({s.uses}) failed: {s.note}"
                for s in spans
                if s.status == "failed"
            ]
        reader = session.evidence_reader()  # begun when the runs ended (read_evidence_soon)
        facts = DrillFacts(
            drill=drill,
            seeded=session.seeded,
            alert_epoch=alert_epoch,
            client=session.client,
            run_id=run_id,
            runbook=self._runs.runbook,
            records=records,
            steps=steps,
            slack_messages=session.slack.messages(SLACK_CHANNEL) if session.slack else [],
            runs=runs,
            posted_alerts=self._timeline.posted_alerts,
            evidence=reader,
        )
        # the evidence list (each object's retention) is gathered while the objectives are
        # checked; it and the evidence objective share one read of each object (reader)
        with ThreadPoolExecutor(1, thread_name_prefix="drill-evidence") as pool:
            reading = pool.submit(self._evidence, records, reader)
            objectives = score(facts)
            items, manifest_uri = reading.result()
        self._check_inputs(records)
        times = measured_times(records, alert_epoch, containment)
        failures = [
            f"step {s.id} ({s.uses}) failed: {s.note}" for s in steps if s.status == "failed"
        ]
        failures += [
            f"Slack: {r.get('count')} update(s) missed, last error: {r.get('last_error')}"
            for r in records
            if r.get("type") == "slack.miss"
        ]
        failures += later_failures + self._timeline.failures
        report = DrillReport(
            drill=drill.metadata.name,
            title=drill.metadata.title,
            family=drill.metadata.family,
            run_id=run_id,
            runbook=self._runs.runbook,
            alert_source=drill.alert.source,
            alert_time=datetime.fromtimestamp(alert_epoch, UTC),
            roles=self._roles(),
            time_to_notify=self._timeline.notified_at,
            time_to_approve=times.approve,
            time_to_contain=times.contain,
            time_to_deny=times.denied,
            steps=steps,
            markers=sorted([*self._timeline.markers, *ledger_markers], key=lambda m: m.at),
            objectives=objectives,
            expected_missed=list(drill.expect.missed),
            failures=failures,
            evidence=items,
            manifest_uri=manifest_uri,
            decisions=decisions,
            gates=gate_ends(records, alert_epoch),
            notes=self._notes(),
            runs=[self._run_line(run) for run in runs],
            inputs=inputs(records),
            changes=self._changes(records, alert_epoch),
            narrative=drill.narrative,
            facilitator_notes=list(drill.facilitator_notes),
        )
        report.action_items = action_items(report)
        return report

    def _names(self) -> dict[str, str]:
        """Slack user id -> the person's name, from the drill's roles."""
        roles = self._drill.roles
        return {
            person.slack_user: person.name
            for name in roles.names()
            if (person := roles.get(name)) is not None
        }

    def _changes(self, records: list[dict[str, Any]], alert_epoch: float) -> list[Any]:
        """What the alert's run changed, with the rollback state from the drill's rollbacks."""
        ledger, run_id = self._runs.ledger, self._runs.run_id
        if ledger is None or run_id is None:
            return []
        return changes(records, alert_epoch, rollback_ledgers(ledger.parent.parent, run_id))

    def write(self, report: DrillReport, report_dir: Path | None = None) -> DrillResult:
        """report.md and report.html (in ``report_dir``, else next to the workspace)."""
        workspace = self._session.workspace
        folder = report_dir or workspace.parent / (report.run_id or workspace.name)
        folder.mkdir(parents=True, exist_ok=True)
        markdown = folder / "report.md"
        page = folder / "report.html"
        text = to_markdown(report)
        with ThreadPoolExecutor(1, thread_name_prefix="drill-attach") as pool:
            # the artifact's request waits on the Prefect API; the HTML renders meanwhile
            attaching = pool.submit(self._attach, text, report)
            markdown.write_text(text, encoding="utf-8")
            page.write_text(to_html(report), encoding="utf-8")
            note = attaching.result()
        if note is not None:  # after the files, as before: they never showed it
            report.notes.append(note)
        return DrillResult(report, markdown, page, workspace)

    def _check_inputs(self, records: list[dict[str, Any]]) -> None:
        """The inputs the triggers gave the runbook are the ones the drill expects."""
        start = next((r for r in records if r.get("type") == "run.start"), None)
        if start is None or not self._drill.inputs:
            return
        expected = fill_placeholders(self._drill.inputs, self._session.context())
        given = start.get("inputs", {})
        for name, value in expected.items():
            if given.get(name) != value:
                self._timeline.fail(
                    f"the triggers gave {self._drill.runbook} {name}={given.get(name)!r}, "
                    f"the drill expects {value!r}: check runbooks/triggers.yaml"
                )

    def _notes(self) -> list[str]:
        notes = self._timeline.notes
        sim = self._session.sim
        if sim.lookups:
            notes.append(
                "CloudTrail LookupEvents (not implemented by moto) was answered "
                f"{sim.lookups} time(s) by the drill from the seeded story"
            )
        if sim.throttled:
            notes.append(f"AWS calls answered Throttling by the drill: {sim.throttled}")
        return notes

    def _roles(self) -> dict[str, str]:
        roles = self._drill.roles
        return {
            name: f"{person.name} ({person.slack_user})"
            for name in roles.names()
            if (person := roles.get(name)) is not None
        }

    def _run_line(self, run: Any) -> str:
        """One line of the report's run list: what ran, how it started, how it ended."""
        tracked = next(t for t in self._runs.runs() if t.run_id == run.run_id)
        alert_epoch = self._session.clock.alert_epoch
        start = tracked.started_at - alert_epoch
        end = (
            f", ended T+{tracked.ended_at - alert_epoch:.1f}s"
            if tracked.ended_at is not None
            else ""
        )
        return (
            f"run {run.run_id} of {run.runbook}: {run.status or 'not ended'} "
            f"(started T+{start:.1f}s by {run.origin}{end})"
        )

    def _evidence(
        self, records: list[dict[str, Any]], reader: EvidenceReader
    ) -> tuple[list[EvidenceItem], str | None]:
        """The ledger's evidence, completed from the S3 manifest (version ids) and each
        object's retention (mode and retain-until), as ``reader`` read them back."""
        items, manifest_uri = evidence(records)
        run_id = self._runs.run_id
        if run_id is None:
            return items, manifest_uri
        try:
            back = reader.read(run_id)
            entries = back.with_retention()
        except Exception:
            return items, manifest_uri
        return merge_evidence(items, entries), f"s3://{back.bucket}/{back.key}"

    def _attach(self, markdown: str, report: DrillReport) -> str | None:
        """The report as a markdown artifact of the run's Prefect flow run; a note for the
        report when it could not be attached (the files are written: a convenience)."""
        from uuid import UUID

        from clampdown.core.ledger import read

        ledger = self._runs.ledger
        if ledger is None or not ledger.exists():
            return None
        flow_run_id = read(ledger)[0].get("flow_run_id")
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
            return f"the report could not be attached to the Prefect run: {exc}"
        return None
