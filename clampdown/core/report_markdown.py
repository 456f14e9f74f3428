"""The after-action report as Markdown (for the terminal, a ticket or a pull request)."""

from __future__ import annotations

from typing import Any

from clampdown.core.report import DrillReport, seconds_text
from clampdown.core.report_advice import recommendations


def _md(text: Any) -> str:
    """One table cell of run data: no pipe, no newline, no HTML (artifact viewers render it)."""
    return (
        str(text)
        .replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace("|", "\\|")
        .replace("\n", " ")
    )


def to_markdown(report: DrillReport) -> str:
    r = report
    expected = "as expected" if r.as_expected else "NOT as expected"
    lines = [
        f"# After-action report: {_md(r.title)}",
        "",
        f"Drill `{r.drill}` ({r.family}) · run `{r.run_id or '—'}` of `{r.runbook or '—'}` · "
        f"alert from {r.alert_source} at {r.alert_time:%Y-%m-%d %H:%M:%S} UTC",
        "",
        f"**Result: {r.verdict}** ({expected}"
        + (
            f"; the drill expects {', '.join(r.expected_missed)} missed"
            if r.expected_missed
            else ""
        )
        + ")",
        "",
        "| time to notify | time to approve | time to contain |",
        "|---|---|---|",
        f"| {seconds_text(r.time_to_notify)} | {seconds_text(r.time_to_approve)} "
        f"| {seconds_text(r.time_to_contain)} |",
        "",
    ]
    if len(r.runs) > 1:
        lines += ["## Runs", "", *(f"- {_md(line)}" for line in r.runs), ""]
    lines += [
        "## Objectives",
        "",
        "| | objective | measured | why |",
        "|---|---|---|---|",
    ]
    for o in r.objectives:
        mark = "✅ met" if o.met else "❌ missed"
        lines.append(
            f"| {mark} | {_md(o.title)} (`{o.id}`) | {_md(o.measured)} | {_md(o.reason)} |"
        )
    lines += ["", "## Timeline (seconds after the alert)", ""]
    lines += ["| step | action | status | start | end | note |", "|---|---|---|---|---|---|"]
    for s in r.steps:
        start = "—" if s.start is None else f"T+{s.start:.1f}s"
        end = "—" if s.end is None else f"T+{s.end:.1f}s"
        tag = " (approval)" if s.approval else " (containment)" if s.containment else ""
        lines.append(
            f"| `{s.id}`{tag} | `{s.uses}` | {s.status} | {start} | {end} | {_md(s.note)} |"
        )
    if r.markers:
        lines += ["", *(f"- T+{m.at:.1f}s: {_md(m.label)}" for m in r.markers)]
    if r.decisions:
        lines += ["", "## Decisions", "", *(f"- {_md(d)}" for d in r.decisions)]
    lines += ["", "## What failed", ""]
    lines += [f"- {_md(f)}" for f in r.failures] or ["Nothing failed."]
    lines += ["", "## Evidence", ""]
    if r.manifest_uri:
        lines.append(f"Manifest: `{r.manifest_uri}`")
        lines.append("")
    if r.evidence:
        lines += ["| object | SHA-256 | bytes |", "|---|---|---|"]
        lines += [
            f"| `{_md(e.get('key'))}` | `{str(e.get('sha256', ''))[:16]}…` | {e.get('size', '')} |"
            for e in r.evidence
        ]
    else:
        lines.append("No evidence manifest was written.")
    lines += ["", "## Recommendations", "", *(f"- {t}" for t in recommendations(r))]
    if r.roles:
        lines += ["", "## Roles", "", *(f"- {k}: {_md(v)}" for k, v in r.roles.items())]
    if r.notes:
        lines += ["", "## Notes on the simulation", "", *(f"- {_md(n)}" for n in r.notes)]
    return "\n".join(lines) + "\n"
