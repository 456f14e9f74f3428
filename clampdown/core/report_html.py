"""The after-action report as one self-contained HTML page: inline CSS and SVG, no script."""

from __future__ import annotations

from clampdown.core.report import DrillReport, html_text, seconds_text
from clampdown.core.report_advice import recommendations
from clampdown.core.report_chart import timeline_svg

CSS = """
body{font:15px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;
  color:#212529;background:#f8f9fa}
main{max-width:1100px;margin:0 auto;padding:24px 32px;background:#fff}
h1{font-size:24px;margin:0 0 4px}
h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #dee2e6;padding-bottom:4px}
.meta{color:#495057;margin:0 0 16px}
.verdict{display:inline-block;padding:6px 12px;border-radius:6px;font-weight:600;color:#fff}
.ok{background:#2f9e44}.bad{background:#e03131}.expect{margin-left:8px;color:#495057}
.kpis{display:flex;gap:16px;margin:16px 0}
.kpi{flex:1;border:1px solid #dee2e6;border-radius:8px;padding:10px 14px}
.kpi b{display:block;font-size:22px}.kpi span{color:#495057;font-size:13px}
table{border-collapse:collapse;width:100%;font-size:14px}
th,td{text-align:left;padding:6px 8px;border-bottom:1px solid #e9ecef;vertical-align:top}
th{background:#f1f3f5}td.met{color:#2b8a3e;font-weight:600}td.missed{color:#c92a2a;font-weight:600}
code{font:13px ui-monospace,SFMono-Regular,Menlo,monospace;background:#f1f3f5;padding:1px 4px;
  border-radius:3px}
ul{padding-left:20px}li{margin:4px 0}svg{display:block;max-width:100%;height:auto}
"""


def to_html(report: DrillReport) -> str:
    r = report
    verdict_class = "ok" if r.all_met else "bad"
    expected = "as the drill expects" if r.as_expected else "NOT what the drill expects"
    objective_rows = "".join(
        f"<tr><td class='{'met' if o.met else 'missed'}'>{'met' if o.met else 'missed'}</td>"
        f"<td>{html_text(o.title)}<br><code>{html_text(o.id)}</code></td><td>{html_text(o.measured)}</td>"
        f"<td>{html_text(o.reason)}</td></tr>"
        for o in r.objectives
    )
    failures = (
        "<ul>" + "".join(f"<li>{html_text(f)}</li>" for f in r.failures) + "</ul>"
        if r.failures
        else "<p>Nothing failed.</p>"
    )
    decisions = (
        "<ul>" + "".join(f"<li>{html_text(d)}</li>" for d in r.decisions) + "</ul>"
        if r.decisions
        else "<p>No approval decision was recorded.</p>"
    )
    evidence = (
        "<table><tr><th>object</th><th>SHA-256</th><th>bytes</th></tr>"
        + "".join(
            f"<tr><td><code>{html_text(e.get('key'))}</code></td>"
            f"<td><code>{html_text(str(e.get('sha256', ''))[:16])}…</code></td>"
            f"<td>{html_text(e.get('size', ''))}</td></tr>"
            for e in r.evidence
        )
        + "</table>"
        if r.evidence
        else "<p>No evidence manifest was written.</p>"
    )
    manifest = (
        f"<p>Manifest: <code>{html_text(r.manifest_uri)}</code></p>" if r.manifest_uri else ""
    )
    recs = "".join(f"<li>{html_text(t).replace('**', '')}</li>" for t in recommendations(r))
    roles = "".join(f"<li>{html_text(k)}: {html_text(v)}</li>" for k, v in r.roles.items())
    notes = "".join(f"<li>{html_text(n)}</li>" for n in r.notes)
    runs = (
        '<h2>Runs</h2><ul id="runs">'
        + "".join(f"<li>{html_text(x)}</li>" for x in r.runs)
        + "</ul>"
        if len(r.runs) > 1
        else ""
    )
    expect_note = (
        f" (the drill expects {html_text(', '.join(r.expected_missed))} to be missed)"
        if r.expected_missed
        else ""
    )
    kpis = "".join(
        f'<div class="kpi"><b id="{key}">{html_text(seconds_text(value))}</b>'
        f"<span>{html_text(label)}</span></div>"
        for key, value, label in (
            ("time-to-notify", r.time_to_notify, "time to notify (alert → first Slack message)"),
            ("time-to-approve", r.time_to_approve, "time to approve (alert → decision)"),
            (
                "time-to-contain",
                r.time_to_contain,
                "time to contain (alert → last containment step done)",
            ),
        )
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
<div class="kpis">{kpis}
</div>
{runs}
<h2>Objectives</h2>
<table id="objectives"><tr><th></th><th>objective</th><th>measured</th><th>why</th></tr>
{objective_rows}</table>
<h2>Timeline</h2>
{timeline_svg(r)}
<h2>Decisions</h2>{decisions}
<h2>What failed</h2>{failures}
<h2>Evidence</h2>{manifest}{evidence}
<h2>Recommendations</h2><ul>{recs}</ul>
<h2>Roles</h2><ul>{roles}</ul>
{f"<h2>Notes on the simulation</h2><ul>{notes}</ul>" if notes else ""}
</main></body></html>
"""
