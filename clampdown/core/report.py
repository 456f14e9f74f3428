"""The after-action report of a drill: Markdown, and one self-contained HTML page.

A tabletop ends with a conversation about what went well and what did not; the
report is what that conversation reads. It answers, in this order: did we meet
the objectives (and was that the outcome the drill was built to show), how long
did notifying, approving and containing take, what happened when (a timeline
chart: the alert at T+0, each step as a bar, approval waits, containment done),
what failed, what evidence we kept, and what to change next time.

The HTML page has no external asset and no script: inline CSS and an inline SVG
chart, so it can be mailed, attached to a ticket or opened offline years later.
Every value from the run is escaped. The facts come from the ledger (the one
record of the run) through :func:`timeline_from_ledger`; this module computes
nothing from AWS.

This module is the report's data and the ledger reading; the renderings are
:mod:`clampdown.core.report_markdown` and :mod:`clampdown.core.report_html` (with its
chart, :mod:`clampdown.core.report_chart`), and the advice is
:mod:`clampdown.core.report_advice`.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from clampdown.core.durations import format_duration
from clampdown.core.report_facts import (
    Change,
    Decision,
    EvidenceItem,
    GateEnd,
    decisions,
    epoch,
)

STATUS_COLOUR = {
    "succeeded": "#2f9e44",
    "failed": "#e03131",
    "skipped": "#868e96",
    "cancelled": "#ae3ec9",
    "running": "#f08c00",
    "pending": "#ced4da",
    "waiting": "#f59f00",
}


@dataclass(frozen=True)
class ObjectiveResult:
    """One objective, scored: met or missed, the measured value, and why."""

    id: str
    kind: str
    title: str
    met: bool
    measured: str = ""
    reason: str = ""


@dataclass(frozen=True)
class StepSpan:
    """One step of the run on the drill's clock (seconds after the alert)."""

    id: str
    uses: str
    status: str
    start: float | None
    end: float | None
    note: str = ""
    containment: bool = False
    approval: bool = False


@dataclass(frozen=True)
class Marker:
    """A moment on the timeline: an inject, a decision, a second alert.

    ``kind`` tells the chart how to draw it: ``approve`` and ``deny`` (a counted
    decision), ``refused`` (a decision the run did not count), ``event`` (anything else).
    """

    at: float
    label: str
    kind: str = "event"


@dataclass(frozen=True)
class ActionItem:
    """Something to change after the drill, and who owns it (a role, and the person when the
    drill names one)."""

    text: str
    owner: str
    source: str  # the missed objective's id, or what the item was derived from


@dataclass
class DrillReport:
    drill: str
    title: str
    family: str
    run_id: str | None
    runbook: str | None
    alert_source: str
    alert_time: datetime
    roles: dict[str, str] = field(default_factory=dict)
    time_to_notify: float | None = None
    time_to_approve: float | None = None
    time_to_contain: float | None = None
    time_to_deny: float | None = None
    steps: list[StepSpan] = field(default_factory=list)
    markers: list[Marker] = field(default_factory=list)
    objectives: list[ObjectiveResult] = field(default_factory=list)
    expected_missed: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    evidence: list[EvidenceItem] = field(default_factory=list)
    manifest_uri: str | None = None
    decisions: list[Decision] = field(default_factory=list)
    gates: list[GateEnd] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # Every run of the drill, one line each (the alert's first): shown when there are several.
    runs: list[str] = field(default_factory=list)
    inputs: dict[str, Any] = field(default_factory=dict)
    changes: list[Change] = field(default_factory=list)
    narrative: str | None = None
    facilitator_notes: list[str] = field(default_factory=list)
    action_items: list[ActionItem] = field(default_factory=list)

    @property
    def all_met(self) -> bool:
        return all(o.met for o in self.objectives)

    @property
    def missed(self) -> list[str]:
        return [o.id for o in self.objectives if not o.met]

    @property
    def as_expected(self) -> bool:
        """The outcome the drill was written to show (a denial drill expects misses)."""
        return sorted(self.missed) == sorted(self.expected_missed)

    @property
    def verdict(self) -> str:
        if self.all_met:
            return "all objectives met"
        return f"{len(self.missed)} of {len(self.objectives)} objectives missed"


# --- facts from the ledger ---------------------------------------------------------------------


def timeline_from_ledger(
    records: Sequence[dict[str, Any]],
    alert_epoch: float,
    *,
    containment: Iterable[str] = (),
    approvals: Iterable[str] = (),
    names: Mapping[str, str] | None = None,
) -> tuple[list[StepSpan], list[Marker], list[Decision]]:
    """Step spans, decision markers and the decisions from a run's ledger records.

    ``containment`` and ``approvals`` name the actions that contain (destructive
    actions) and the approval gates, so the chart and the clock can tell them apart;
    ``names`` maps approver ids to people's names.
    """
    containment, approvals = set(containment), set(approvals)
    starts: dict[str, tuple[float, str]] = {}
    spans: dict[str, StepSpan] = {}
    order: list[str] = []
    for record in records:
        kind, step = record.get("type", ""), record.get("step")
        at = epoch(record["ts"]) - alert_epoch if "ts" in record else None
        if kind == "step.start" and step:
            if step not in starts:
                starts[step] = (at or 0.0, record.get("uses", ""))
                order.append(step)
        elif kind in ("step.end", "step.skip", "step.cancel") and step:
            start, uses = starts.get(step, (None, record.get("uses", "")))
            status = record.get("status") or ("skipped" if kind == "step.skip" else "cancelled")
            if step not in order:
                order.append(step)
            spans[step] = StepSpan(
                step,
                uses,
                status,
                start,
                at if start is not None else None,
                str(record.get("error") or record.get("reason") or ""),
                uses in containment,
                uses in approvals,
            )
    for step in order:
        if step not in spans:  # started, never ended: the run was cut short
            start, uses = starts[step]
            spans[step] = StepSpan(
                step, uses, "running", start, None, "", uses in containment, uses in approvals
            )
    said = decisions(records, alert_epoch, names)
    markers = [decision_marker(d) for d in said if d.at is not None]
    return [spans[s] for s in order], markers, said


def decision_marker(d: Decision) -> Marker:
    """A decision on the timeline: a denial is drawn as a denial, a refusal as a refusal."""
    if not d.accepted:
        return Marker(d.at or 0.0, f"{d.decision} by {d.who} not counted", "refused")
    verb = "denied" if d.denial else "approved"
    return Marker(d.at or 0.0, f"{verb} by {d.who}", "deny" if d.denial else "approve")


def decision_line(d: Decision) -> str:
    """One decision as a sentence: when, which step, who, what, why, counted or not."""
    when = "T+?" if d.at is None else f"T+{d.at:.1f}s"
    prefix = f"{d.run}: " if d.run else ""
    said = f" — “{d.reason}”" if d.reason else ""
    verb = "denied" if d.denial else "approved"
    line = f"{when} {prefix}{d.step}: {verb} by {d.who}{said}"
    if d.source:
        line += f" (via {d.source})"
    return line if d.accepted else f"{line} — NOT counted: {d.refusal or 'refused'}"


# --- shared by the Markdown and HTML renderings ------------------------------------------------


def seconds_text(value: float | None) -> str:
    """A measured time as the report shows it ("—" when not measured)."""
    return "—" if value is None else format_duration(round(value, 1))


def html_text(value: Any) -> str:
    """One value from the run, escaped for HTML text and attributes."""
    return html.escape(str(value), quote=True)
