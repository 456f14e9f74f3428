"""The after-action report as one self-contained HTML page: inline CSS and SVG, no script.

The sections a drill shares with the incident report of any run (times, inputs,
decisions, changes, evidence) come from :mod:`clampdown.core.report_sections`.
"""

from __future__ import annotations

from clampdown.core.report import DrillReport, html_text
from clampdown.core.report_chart import timeline_svg
from clampdown.core.report_markdown import origin_of, times_of
from clampdown.core.report_sections import (
    CSS,
    html_changes,
    html_decisions,
    html_evidence,
    html_inputs,
    html_times,
)


def _items(values: list[str], ident: str = "") -> str:
    attr = f' id="{ident}"' if ident else ""
    return f"<ul{attr}>" + "".join(f"<li>{html_text(v)}</li>" for v in values) + "</ul>"


def to_html(report: DrillReport) -> str:
    r = report
    verdict_class = "ok" if r.all_met else "bad"
    expected = "as the drill expects" if r.as_expected else "NOT what the drill expects"
    objective_rows = "".join(
        f"<tr><td class='{'met' if o.met else 'missed'}'>{'met' if o.met else 'missed'}</td>"
        f"<td>{html_text(o.title)}<br><code>{html_text(o.id)}</code></td>"
        f"<td>{html_text(o.measured)}</td><td>{html_text(o.reason)}</td></tr>"
        for o in r.objectives
    )
    actions = "".join(
        f"<tr><td>{n}</td><td>{html_text(a.text)}</td><td>{html_text(a.owner)}</td>"
        f"<td>{html_text(a.source)}</td></tr>"
        for n, a in enumerate(r.action_items, start=1)
    )
    failures = _items(r.failures) if r.failures else "<p>Nothing failed.</p>"
    roles = _items([f"{k}: {v}" for k, v in r.roles.items()])
    runs = f"<h2>Runs</h2>{_items(r.runs, 'runs')}" if len(r.runs) > 1 else ""
    narrative = (
        '<h2>Scenario</h2><div class="narrative" id="narrative">'
        + "".join(f"<p>{html_text(p)}</p>" for p in r.narrative.split("\n\n"))
        + "</div>"
        if r.narrative
        else ""
    )
    facilitator = (
        f"<h2>Facilitator notes</h2>{_items(r.facilitator_notes, 'facilitator-notes')}"
        if r.facilitator_notes
        else ""
    )
    notes = f"<h2>Notes on the simulation</h2>{_items(r.notes)}" if r.notes else ""
    expect_note = (
        f" (the drill expects {html_text(', '.join(r.expected_missed))} to be missed)"
        if r.expected_missed
        else ""
    )
    chart = timeline_svg(
        r.steps,
        r.markers,
        origin=f"alert ({r.alert_source})",
        contained_at=r.time_to_contain,
        outcomes={g.step: g.outcome for g in r.gates},
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>After-action report: {html_text(r.title)}</title>
<style>{CSS}</style></head>
<body><main>
<h1>After-action report: {html_text(r.title)}</h1>
<p class="meta">Drill <code>{html_text(r.drill)}</code> ({html_text(r.family)}) ·
run <code>{html_text(r.run_id or "—")}</code> of <code>{html_text(r.runbook or "—")}</code> ·
alert from {html_text(r.alert_source)} at
{html_text(f"{r.alert_time:%Y-%m-%d %H:%M:%S}")} UTC</p>
<p><span class="verdict {verdict_class}" id="verdict">{html_text(r.verdict)}</span>
<span class="expect">{html_text(expected)}{expect_note}</span></p>
{html_times(times_of(r), origin_of(r))}
{narrative}
{runs}
<h2>Objectives</h2>
<table id="objectives"><tr><th></th><th>objective</th><th>measured</th><th>why</th></tr>
{objective_rows}</table>
<h2>Action items</h2>
<table id="action-items"><tr><th>#</th><th>action</th><th>owner</th><th>from</th></tr>
{actions}</table>
<h2>Timeline</h2>
{chart}
<h2>Decisions</h2>{html_decisions(r.decisions, r.gates)}
<h2>What changed</h2>{html_changes(r.changes)}
<h2>Inputs the run got</h2>{html_inputs(r.inputs)}
<h2>What failed</h2>{failures}
<h2>Evidence</h2>{html_evidence(r.evidence, r.manifest_uri)}
<h2>Roles</h2>{roles}
{facilitator}
{notes}
</main></body></html>
"""
