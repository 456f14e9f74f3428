"""The after-action report as Markdown (for the terminal, a ticket or a pull request).

The sections a drill shares with the incident report of any run (times, inputs,
decisions, changes, evidence) come from :mod:`clampdown.core.report_sections`.
"""

from __future__ import annotations

from clampdown.core.report import DrillReport
from clampdown.core.report_facts import Times
from clampdown.core.report_sections import (
    md,
    md_changes,
    md_decisions,
    md_evidence,
    md_inputs,
    md_steps,
    md_times,
)


def times_of(r: DrillReport) -> Times:
    return Times(r.time_to_notify, r.time_to_approve, r.time_to_contain, r.time_to_deny)


def origin_of(r: DrillReport) -> str:
    return f"the alert from {r.alert_source} being posted"


def to_markdown(report: DrillReport) -> str:
    r = report
    expected = "as expected" if r.as_expected else "NOT as expected"
    lines = [
        f"# After-action report: {md(r.title)}",
        "",
        f"Drill `{md(r.drill)}` ({md(r.family)}) · run `{md(r.run_id or '—')}` of "
        f"`{md(r.runbook or '—')}` · alert from {md(r.alert_source)} at "
        f"{r.alert_time:%Y-%m-%d %H:%M:%S} UTC",
        "",
        f"**Result: {r.verdict}** ({expected}"
        + (
            f"; the drill expects {', '.join(r.expected_missed)} missed"
            if r.expected_missed
            else ""
        )
        + ")",
        "",
        *md_times(times_of(r), origin_of(r)),
    ]
    if r.narrative:
        lines += ["## Scenario", "", *(f"> {md(line)}" for line in r.narrative.splitlines()), ""]
    if len(r.runs) > 1:
        lines += ["## Runs", "", *(f"- {md(line)}" for line in r.runs), ""]
    lines += [
        "## Objectives",
        "",
        "| | objective | measured | why |",
        "|---|---|---|---|",
    ]
    for o in r.objectives:
        mark = "✅ met" if o.met else "❌ missed"
        lines.append(
            f"| {mark} | {md(o.title)} (`{md(o.id)}`) | {md(o.measured)} | {md(o.reason)} |"
        )
    lines += ["", "## Action items", ""]
    lines += ["| # | action | owner | from |", "|---|---|---|---|"]
    lines += [
        f"| {n} | {md(a.text)} | {md(a.owner)} | {md(a.source)} |"
        for n, a in enumerate(r.action_items, start=1)
    ]
    lines += ["", "## Inputs the run got", "", *md_inputs(r.inputs)]
    lines += ["", "## Timeline (seconds after the alert)", ""]
    lines += md_steps(r.steps, r.markers)
    lines += ["", "## Decisions", "", *md_decisions(r.decisions, r.gates)]
    lines += ["", "## What changed", "", *md_changes(r.changes)]
    lines += ["", "## What failed", ""]
    lines += [f"- {md(f)}" for f in r.failures] or ["Nothing failed."]
    lines += ["", "## Evidence", "", *md_evidence(r.evidence, r.manifest_uri)]
    if r.roles:
        lines += ["", "## Roles", "", *(f"- {md(k)}: {md(v)}" for k, v in r.roles.items())]
    if r.facilitator_notes:
        lines += ["", "## Facilitator notes", "", *(f"- {md(n)}" for n in r.facilitator_notes)]
    if r.notes:
        lines += ["", "## Notes on the simulation", "", *(f"- {md(n)}" for n in r.notes)]
    return "\n".join(lines) + "\n"
