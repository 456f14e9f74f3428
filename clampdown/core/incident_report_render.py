"""The incident report as Markdown, as one self-contained HTML page, as JSON, and as the
short summary posted in the run's Slack thread.

The HTML page has no external asset and no script (inline CSS, inline SVG chart), so
it can be mailed to counsel or opened offline years later. Every value from the
ledger is escaped (the shared sections of :mod:`clampdown.core.report_sections`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from clampdown.core.incident_report import IncidentReport, trigger_text
from clampdown.core.report import html_text, seconds_text
from clampdown.core.report_chart import timeline_svg
from clampdown.core.report_sections import (
    CSS,
    html_changes,
    html_decisions,
    html_evidence,
    html_inputs,
    html_scoping,
    html_times,
    md,
    md_changes,
    md_decisions,
    md_evidence,
    md_inputs,
    md_scoping,
    md_steps,
    md_times,
)


def _chain_text(r: IncidentReport) -> str:
    """The ledger's standing in one line: ``clampdown verify``'s verdict when the report
    was given one, else the hash chain alone, saying that the signatures were not checked
    (a chain is easy to recompute after a rewrite; only the signatures show it)."""
    if r.verdict is not None:
        v = r.verdict
        copy = f"; {v.copy.message}" if v.copy is not None else ""
        return f"{v.ledger.message}{copy}"
    if r.chain is None:
        return "not checked"
    if not r.chain.ok:
        return "BROKEN: " + r.chain.message
    return f"{r.chain.message} (the hash chain only: signatures NOT checked here)"


def _ledger_trusted(r: IncidentReport) -> bool:
    return r.verdict.ok if r.verdict is not None else bool(r.chain and r.chain.ok)


def _ledger_class(r: IncidentReport) -> str:
    """Green only for verify's OK; red for a verdict that is not OK or a broken chain;
    neither for a chain whose signatures were not checked."""
    if r.verdict is not None:
        return "verdict ok" if r.verdict.ok else "verdict bad"
    return "expect" if _ledger_trusted(r) else "verdict bad"


def to_markdown(r: IncidentReport) -> str:
    """The whole report as Markdown (a ticket, a pull request, a Prefect artifact)."""
    drill = " (drill)" if r.drill else ""
    lines = [
        f"# {md(r.title)}{drill}",
        "",
        f"Status **{md(r.status)}** · started {r.started_at:%Y-%m-%d %H:%M:%S} UTC"
        + (f" · ended {r.ended_at:%Y-%m-%d %H:%M:%S} UTC" if r.ended_at else "")
        + f" · trigger: {md(trigger_text(r.trigger))}"
        + (f" · started by {md(r.started_by)}" if r.started_by else ""),
        "",
        *_md_ledger(r),
        "",
        *md_times(r.times, r.origin),
    ]
    if r.blind_spots:
        lines += [
            f"> **⚠ {r.blind_spots} blind spot(s) in the scoping**: see *What was taken*.",
            "",
        ]
    lines += ["## Inputs", "", *md_inputs(r.inputs), ""]
    lines += ["## Timeline (seconds after T+0)", "", *md_steps(r.steps, r.markers), ""]
    lines += ["## Decisions", "", *md_decisions(r.decisions, r.gates), ""]
    lines += ["## Changes made and their rollback state", "", *md_changes(r.changes), ""]
    lines += ["## What was taken (scoping)", "", *md_scoping(r.scoping), ""]
    lines += ["## Evidence", "", *md_evidence(r.evidence, r.manifest_uri, r.manifest_pin), ""]
    lines += ["## What failed", ""]
    lines += [f"- {md(f)}" for f in r.failures] or ["Nothing failed."]
    return "\n".join(lines) + "\n"


def _ledger_badge(r: IncidentReport) -> str:
    if r.verdict is not None:
        return r.verdict.result
    return "chain intact (signatures not checked)" if _ledger_trusted(r) else "chain BROKEN"


def _md_ledger(r: IncidentReport) -> list[str]:
    if r.verdict is None:
        hint = f"; `clampdown verify {md(r.run_id)}` checks them" if _ledger_trusted(r) else ""
        return [f"Ledger chain: {md(_chain_text(r))}{hint}"]
    if r.verdict.ok:
        return [
            f"Ledger: **{md(r.verdict.result)}**: {md(_chain_text(r))} "
            f"(as `clampdown verify {md(r.run_id)}` says)"
        ]
    return [
        f"> **⚠ Ledger: {md(r.verdict.result)}**: {md(_chain_text(r))}. This report is built "
        "from that ledger: nothing in it can be vouched for "
        f"(`clampdown verify {md(r.run_id)}` says why).",
    ]


def _steps_html(r: IncidentReport) -> str:
    rows = "".join(
        f"<tr><td><code>{html_text(s.id)}</code>"
        f"{' (approval)' if s.approval else ' (containment)' if s.containment else ''}</td>"
        f"<td><code>{html_text(s.uses)}</code></td><td>{html_text(s.status)}</td>"
        f"<td>{'—' if s.start is None else f'T+{s.start:.1f}s'}</td>"
        f"<td>{'—' if s.end is None else f'T+{s.end:.1f}s'}</td>"
        f"<td>{html_text(s.note)}</td></tr>"
        for s in r.steps
    )
    return (
        '<table id="steps"><tr><th>step</th><th>action</th><th>status</th><th>start</th>'
        f"<th>end</th><th>note</th></tr>{rows}</table>"
    )


def to_html(r: IncidentReport) -> str:
    """The whole report as one HTML page: inline CSS and SVG, no script, no external asset."""
    status_class = "ok" if r.status == "succeeded" else "bad"
    blind = (
        f'<p class="blind" id="blind-banner"><b>⚠ {r.blind_spots} blind spot(s) in the '
        "scoping</b>: parts of the window or the data were not visible; see What was taken.</p>"
        if r.blind_spots
        else ""
    )
    failures = (
        "<ul>" + "".join(f"<li>{html_text(f)}</li>" for f in r.failures) + "</ul>"
        if r.failures
        else "<p>Nothing failed.</p>"
    )
    ended = f" · ended {html_text(f'{r.ended_at:%Y-%m-%d %H:%M:%S}')} UTC" if r.ended_at else ""
    starter = f" · started by {html_text(r.started_by)}" if r.started_by else ""
    badge = html_text(f"ledger {_ledger_badge(r)}")
    chart = timeline_svg(
        r.steps,
        r.markers,
        origin="run start",
        contained_at=r.times.contain,
        outcomes=r.outcomes,
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html_text(r.title)}</title>
<style>{CSS}</style></head>
<body><main>
<h1>{html_text(r.title)}{" (drill)" if r.drill else ""}</h1>
<p class="meta">started {html_text(f"{r.started_at:%Y-%m-%d %H:%M:%S}")} UTC{ended} ·
trigger: {html_text(trigger_text(r.trigger))}{starter}</p>
<p><span class="verdict {status_class}" id="status">{html_text(r.status)}</span>
<span class="{_ledger_class(r)}" id="ledger">{badge}</span>
<span class="expect" id="chain">{html_text(_chain_text(r))}</span></p>
{html_times(r.times, r.origin)}
{blind}
<h2>Inputs</h2>{html_inputs(r.inputs)}
<h2>Timeline</h2>
{chart}
{_steps_html(r)}
<h2>Decisions</h2>{html_decisions(r.decisions, r.gates)}
<h2>Changes made and their rollback state</h2>{html_changes(r.changes)}
<h2>What was taken (scoping)</h2>{html_scoping(r.scoping)}
<h2>Evidence</h2>{html_evidence(r.evidence, r.manifest_uri, r.manifest_pin)}
<h2>What failed</h2>{failures}
</main></body></html>
"""


def to_json(r: IncidentReport) -> str:
    return json.dumps(r.to_dict(), indent=2, sort_keys=True)


def _slack(text: object) -> str:
    """Ledger text made inert for Slack mrkdwn (no mention, link or channel ping from it)."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def short_summary(r: IncidentReport, outcome: str | None = None) -> str:
    """A few lines for the run's Slack thread: outcome, times, decisions, changes, blind spots,
    and where the full report is. ``outcome``: the run's outcome when the ledger has no
    ``run.end`` yet (the observer is told before it is written)."""
    status = outcome or r.status
    t = r.times
    lines = [
        f"*Incident report* for run `{_slack(r.run_id)}` ({_slack(r.runbook)}): *{_slack(status)}*",
        f"time to notify {seconds_text(t.notify)} · to approve {seconds_text(t.approve)}"
        + (f" (denied at T+{t.denied:.1f}s)" if t.denied is not None else "")
        + f" · to contain {seconds_text(t.contain)}",
    ]
    for d in r.decisions:
        verb = "denied" if d.denial else "approved"
        counted = "" if d.accepted else f" (not counted: {d.refusal})"
        why = f": {d.reason}" if d.reason else ""
        who = d.approver if d.approver.isalnum() else "?"
        lines.append(_slack(f"• {d.step}: {verb} by ") + f"<@{who}>" + _slack(f"{why}{counted}"))
    if r.changes:
        rolled = sum(c.rollback.state == "rolled back" for c in r.changes)
        lines.append(f"{len(r.changes)} change(s) made, {rolled} rolled back")
    if r.evidence:
        lines.append(f"{len(r.evidence)} evidence object(s) hashed")
    for s in r.scoping:
        total = s.totals
        lines.append(
            _slack(
                f"Scoping {s.step}: {total.get('objects', len(s.objects))} object(s), "
                f"{total.get('bytes_out', '?')} bytes out, confidence {s.confidence}"
            )
        )
    if r.blind_spots:
        lines.append(f":warning: {r.blind_spots} blind spot(s) in the scoping: read the report")
    lines += [_slack(f"• failed: {f}") for f in r.failures[:5]]
    lines.append(
        f"Full report: `clampdown report {r.run_id}` (Markdown, `--format html`), "
        f"and the Prefect artifact `clampdown-report-{r.run_id}`"
    )
    return "\n".join(lines)


def summary_from_ledger(ledger: Path, outcome: str | None = None) -> str:
    """:func:`short_summary` of the run whose ledger is at ``ledger`` (as written so far)."""
    from clampdown.core.incident_report import load_incident_report

    return short_summary(load_incident_report(ledger, find_rollbacks=False), outcome)


def markdown_from_ledger(ledger: Path, names: Mapping[str, str] | None = None) -> str:
    """The whole report of the run that just ended (ledger at ``ledger``), as Markdown."""
    from clampdown.core.incident_report import load_incident_report

    return to_markdown(load_incident_report(ledger, names=names, find_rollbacks=False))
