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
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from clampdown.core.durations import format_duration

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
    """A moment on the timeline: an inject, a decision, a second alert."""

    at: float
    label: str


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
    steps: list[StepSpan] = field(default_factory=list)
    markers: list[Marker] = field(default_factory=list)
    objectives: list[ObjectiveResult] = field(default_factory=list)
    expected_missed: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    evidence: list[dict[str, Any]] = field(default_factory=list)
    manifest_uri: str | None = None
    decisions: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # Every run of the drill, one line each (the alert's first): shown when there are several.
    runs: list[str] = field(default_factory=list)

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


def _epoch(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def timeline_from_ledger(
    records: Sequence[dict[str, Any]],
    alert_epoch: float,
    *,
    containment: Iterable[str] = (),
    approvals: Iterable[str] = (),
) -> tuple[list[StepSpan], list[Marker], list[str]]:
    """Step spans, decision markers and decision lines from a run's ledger records.

    ``containment`` and ``approvals`` name the actions that contain (destructive
    actions) and the approval gates, so the chart and the clock can tell them apart.
    """
    containment, approvals = set(containment), set(approvals)
    starts: dict[str, tuple[float, str]] = {}
    spans: dict[str, StepSpan] = {}
    order: list[str] = []
    markers: list[Marker] = []
    decisions: list[str] = []
    for record in records:
        kind, step = record.get("type", ""), record.get("step")
        at = _epoch(record["ts"]) - alert_epoch if "ts" in record else None
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
        elif kind == "approval.decision" and at is not None:
            who, what = record.get("approver") or "?", record.get("decision") or "?"
            reason = record.get("reason") or ""
            said = f" — “{reason}”" if reason else ""
            if record.get("accepted", True):
                markers.append(Marker(at, f"{what} by {who}"))
                decisions.append(f"T+{at:.1f}s {step}: {what} by {who}{said}")
            else:
                refusal = record.get("refusal") or "refused"
                decisions.append(f"T+{at:.1f}s {step}: {what} by {who} NOT counted: {refusal}")
        elif kind == "approval.end" and at is not None:
            decisions.append(f"T+{at:.1f}s {step}: {record.get('outcome') or '?'}")
    for step in order:
        if step not in spans:  # started, never ended: the run was cut short
            start, uses = starts[step]
            spans[step] = StepSpan(
                step, uses, "running", start, None, "", uses in containment, uses in approvals
            )
    return [spans[s] for s in order], markers, decisions


# --- recommendations ---------------------------------------------------------------------------


def recommendations(report: DrillReport) -> list[str]:
    """What to change, derived from each missed objective (and from what failed)."""
    found: list[str] = []
    for o in report.objectives:
        if o.met:
            continue
        text = _ADVICE.get(o.kind)
        if text:
            found.append(f"**{o.title}** — {o.reason} {text}".strip())
    refused = [d for d in report.decisions if "NOT counted" in d]
    if any("could not be resolved" in d for d in refused):
        found.append(
            "Decisions were refused because the approver group could not be resolved (Slack "
            "was unreachable): list the approvers' user ids in the runbook (approvers.users) "
            "or CLAMPDOWN_APPROVERS, so a decision from the terminal still counts."
        )
    elif refused:
        found.append(
            f"{len(refused)} decision(s) were not counted: make sure every approver knows "
            "who may approve which step, and that the run's starter cannot approve it."
        )
    if any(f.startswith("Slack:") for f in report.failures):
        found.append(
            "Slack updates were missed: agree on a fallback channel (phone bridge, "
            "`clampdown runs` in a terminal) for when Slack is down."
        )
    if any(s.status == "failed" for s in report.steps):
        found.append(
            "Steps failed during the run: read their errors above, fix the permission or "
            "input at fault, and re-run this drill until the run is clean."
        )
    if not found:
        found.append(
            "Every objective was met. Make the drill harder: shorten the containment target, "
            "add a Slack outage or AWS throttling, or rehearse with a different approver."
        )
    return found


_ADVICE = {
    "contained_within": (
        "Shorten the path to containment: pre-authorise the quarantine of confirmed "
        "credential theft (a standing order as `preapproved:`), widen the approver group so "
        "someone is always reachable, and agree in advance when a denial is acceptable."
    ),
    "approval_within": (
        "Approvers were slow or absent: page the approver group with the alert, and give "
        "the approval a timeout whose `on_timeout` matches the risk."
    ),
    "no_active_keys": (
        "A key of the suspect is still active: make sure the runbook deactivates every key "
        "of the user (including ones created after the alert) and re-checks at the end."
    ),
    "endpoint_not_invocable_by": (
        "The suspect can still call the endpoint: deny invoke to the principal (identity "
        "policy or role session revocation) or freeze the endpoint as a last resort."
    ),
    "endpoint_frozen": (
        "The endpoint still serves traffic: add aws.sagemaker.freeze_endpoint behind the "
        "approval, or check why it failed."
    ),
    "bucket_locked": (
        "The model prefix is still readable by the suspect: run lock-model-artifacts (or "
        "its step) for the bucket and prefix in the alert."
    ),
    "evidence_manifest_complete": (
        "Evidence is incomplete: set CLAMPDOWN_EVIDENCE_BUCKET to an Object Lock bucket and "
        "run preserve-evidence first, before anything changes."
    ),
    "runbook_started": (
        "The alert did not start the expected runbook: run `clampdown triggers test` on the "
        "alert payload and fix the trigger's match expression."
    ),
    "runbook_completed": (
        "A follow-up run did not finish its job: read its steps and decisions above; a "
        "release or rotation left half done needs a person to finish it by hand."
    ),
    "access_restored": (
        "The release did not give the user its access back: check the release run's "
        "rollback ledger for undo steps that failed, then `clampdown rollback <run-id>`."
    ),
    "kms_key_rotated": (
        "The model's KMS key was not rotated: run rotate-model-secrets with the key's alias "
        "and check the key is customer managed and allows kms:RotateKeyOnDemand."
    ),
    "secret_rotated": (
        "The secret still holds the value the suspect could read: run rotate-model-secrets "
        "for it, and make sure whatever uses it accepts the new value."
    ),
    "slack_thread_complete": (
        "The Slack thread is missing parts of the story: check the Slack settings and that "
        "the bot is in the channel."
    ),
    "slack_misses_recorded": (
        "Slack failures were not recorded: the ledger must say which updates never reached "
        "the responders, or the after-action review cannot trust the thread."
    ),
    "alerts_recorded": (
        "An alert the endpoint accepted is in no run's ledger: check the triggers' dedup_key "
        "and correlate_by, and the state store (CLAMPDOWN_STATE_URL)."
    ),
}


# --- Markdown -----------------------------------------------------------------------------------


def _secs(value: float | None) -> str:
    return "—" if value is None else format_duration(round(value, 1))


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
        f"| {_secs(r.time_to_notify)} | {_secs(r.time_to_approve)} | {_secs(r.time_to_contain)} |",
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


# --- HTML ---------------------------------------------------------------------------------------

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


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def to_html(report: DrillReport) -> str:
    r = report
    verdict_class = "ok" if r.all_met else "bad"
    expected = "as the drill expects" if r.as_expected else "NOT what the drill expects"
    objective_rows = "".join(
        f"<tr><td class='{'met' if o.met else 'missed'}'>{'met' if o.met else 'missed'}</td>"
        f"<td>{_e(o.title)}<br><code>{_e(o.id)}</code></td><td>{_e(o.measured)}</td>"
        f"<td>{_e(o.reason)}</td></tr>"
        for o in r.objectives
    )
    failures = (
        "<ul>" + "".join(f"<li>{_e(f)}</li>" for f in r.failures) + "</ul>"
        if r.failures
        else "<p>Nothing failed.</p>"
    )
    decisions = (
        "<ul>" + "".join(f"<li>{_e(d)}</li>" for d in r.decisions) + "</ul>"
        if r.decisions
        else "<p>No approval decision was recorded.</p>"
    )
    evidence = (
        "<table><tr><th>object</th><th>SHA-256</th><th>bytes</th></tr>"
        + "".join(
            f"<tr><td><code>{_e(e.get('key'))}</code></td>"
            f"<td><code>{_e(str(e.get('sha256', ''))[:16])}…</code></td>"
            f"<td>{_e(e.get('size', ''))}</td></tr>"
            for e in r.evidence
        )
        + "</table>"
        if r.evidence
        else "<p>No evidence manifest was written.</p>"
    )
    manifest = f"<p>Manifest: <code>{_e(r.manifest_uri)}</code></p>" if r.manifest_uri else ""
    recs = "".join(f"<li>{_e(t).replace('**', '')}</li>" for t in recommendations(r))
    roles = "".join(f"<li>{_e(k)}: {_e(v)}</li>" for k, v in r.roles.items())
    notes = "".join(f"<li>{_e(n)}</li>" for n in r.notes)
    runs = (
        '<h2>Runs</h2><ul id="runs">' + "".join(f"<li>{_e(x)}</li>" for x in r.runs) + "</ul>"
        if len(r.runs) > 1
        else ""
    )
    expect_note = (
        f" (the drill expects {_e(', '.join(r.expected_missed))} to be missed)"
        if r.expected_missed
        else ""
    )
    kpis = "".join(
        f'<div class="kpi"><b id="{key}">{_e(_secs(value))}</b><span>{_e(label)}</span></div>'
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
<title>After-action report: {_e(r.title)}</title>
<style>{CSS}</style></head>
<body><main>
<h1>After-action report: {_e(r.title)}</h1>
<p class="meta">Drill <code>{_e(r.drill)}</code> ({_e(r.family)}) ·
run <code>{_e(r.run_id or "—")}</code> of <code>{_e(r.runbook or "—")}</code> ·
alert from {_e(r.alert_source)} at
{_e(f"{r.alert_time:%Y-%m-%d %H:%M:%S}")} UTC</p>
<p><span class="verdict {verdict_class}" id="verdict">{_e(r.verdict)}</span>
<span class="expect">{_e(expected)}{expect_note}</span></p>
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


def timeline_svg(report: DrillReport, width: int = 1000) -> str:
    """The timeline as inline SVG: one row per step, approval waits, markers, containment done."""
    r = report
    label_w, row_h, bottom = 230, 26, 48
    lane = 15  # one line per marker above the bars, so their labels never overlap
    top = 44 + lane * len(r.markers)
    ends = [s.end for s in r.steps if s.end is not None] + [m.at for m in r.markers]
    ends += [v for v in (r.time_to_contain, r.time_to_approve, r.time_to_notify) if v is not None]
    span = max([*ends, 1.0]) * 1.08
    plot_w = width - label_w - 160  # room on the right for the labels after the last bar
    height = top + row_h * max(len(r.steps), 1) + bottom

    def x(seconds: float) -> float:
        return label_w + max(0.0, seconds) / span * plot_w

    parts = [
        f'<svg id="timeline" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="Drill timeline" '
        'font-family="system-ui,sans-serif" font-size="12">',
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
    ]
    step = _tick(span)
    tick = 0.0
    while tick <= span:
        tx = x(tick)
        parts.append(
            f'<line x1="{tx:.1f}" y1="{top - 6}" x2="{tx:.1f}" y2="{height - bottom + 4}" '
            'stroke="#e9ecef"/>'
            f'<text x="{tx:.1f}" y="{height - bottom + 18}" text-anchor="middle" '
            f'fill="#495057">T+{tick:g}s</text>'
        )
        tick += step
    for i, s in enumerate(r.steps):
        y = top + i * row_h
        weight = ' font-weight="700"' if s.containment else ""
        parts.append(
            f'<text x="{label_w - 8}" y="{y + 17}" text-anchor="end" fill="#212529"{weight}>'
            f"{_e(s.id)}</text>"
        )
        if s.start is None:
            parts.append(
                f'<text x="{label_w + 4}" y="{y + 17}" fill="#868e96" class="bar-{_e(s.status)}">'
                f"{_e(s.status)}</text>"
            )
            continue
        end = s.end if s.end is not None else span
        colour = STATUS_COLOUR["waiting"] if s.approval else STATUS_COLOUR.get(s.status, "#adb5bd")
        bar_w = max(x(end) - x(s.start), 3.0)
        title = f"{s.id} ({s.uses}): {s.status}, T+{s.start:.1f}s → " + (
            f"T+{s.end:.1f}s" if s.end is not None else "not finished"
        )
        pattern = ' stroke="#e67700" stroke-dasharray="4 2"' if s.approval else ""
        parts.append(
            f'<rect class="bar bar-{_e(s.status)}" x="{x(s.start):.1f}" y="{y + 5}" '
            f'width="{bar_w:.1f}" height="{row_h - 10}" rx="3" fill="{colour}"{pattern}>'
            f"<title>{_e(title)}</title></rect>"
        )
        if s.approval:
            parts.append(
                f'<text x="{x(s.start) + bar_w + 4:.1f}" y="{y + 17}" fill="#e67700">'
                f"approval wait {_e(_secs(end - s.start))}</text>"
            )
        elif s.status != "succeeded":
            parts.append(
                f'<text x="{x(s.start) + bar_w + 4:.1f}" y="{y + 17}" '
                f'fill="{STATUS_COLOUR.get(s.status, "#495057")}">{_e(s.status)}</text>'
            )
    bottom_y = height - bottom + 4
    parts.append(
        f'<line id="alert-marker" x1="{x(0):.1f}" y1="22" x2="{x(0):.1f}" y2="{bottom_y}" '
        'stroke="#c92a2a" stroke-width="2"/>'
        f'<text x="{x(0) + 4:.1f}" y="18" fill="#c92a2a" font-weight="600">'
        f"alert ({_e(r.alert_source)}) T+0</text>"
    )
    for i, m in enumerate(sorted(r.markers, key=lambda m: m.at)):
        mx, my = x(m.at), 40 + lane * i
        right = mx > label_w + plot_w * 0.6
        anchor = ' text-anchor="end"' if right else ""
        tx = mx - 8 if right else mx + 8
        parts.append(
            f'<line x1="{mx:.1f}" y1="{my}" x2="{mx:.1f}" y2="{top - 4}" stroke="#a5d8ff"/>'
            f'<path class="marker" d="M{mx:.1f},{my - 5} l5,5 l-5,5 l-5,-5 z" fill="#1971c2">'
            f"<title>{_e(f'T+{m.at:.1f}s {m.label}')}</title></path>"
            f'<text x="{tx:.1f}" y="{my + 4}" fill="#1971c2"{anchor}>'
            f"{_e(f'T+{m.at:.1f}s {m.label}')}</text>"
        )
    if r.time_to_contain is not None:
        cx = x(r.time_to_contain)
        parts.append(
            f'<line id="contained-marker" x1="{cx:.1f}" y1="22" x2="{cx:.1f}" '
            f'y2="{bottom_y}" stroke="#2b8a3e" stroke-width="2" stroke-dasharray="6 3"/>'
            f'<text x="{cx + 4:.1f}" y="18" fill="#2b8a3e" '
            f'font-weight="600">contained T+{r.time_to_contain:.1f}s</text>'
        )
    legend = (
        ("#2f9e44", "succeeded"),
        ("#e03131", "failed"),
        ("#f59f00", "approval wait"),
        ("#1971c2", "decision"),
    )
    lx = label_w
    for colour, text in legend:
        parts.append(
            f'<rect x="{lx}" y="{height - 14}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{lx + 14}" y="{height - 5}" fill="#495057">{text}</text>'
        )
        lx += 24 + 7 * len(text)
    parts.append(
        f'<text x="{lx}" y="{height - 5}" fill="#495057" font-weight="700">bold: containment step'
        "</text></svg>"
    )
    return "".join(parts)


def _tick(span: float) -> float:
    """A round tick interval giving about eight ticks."""
    for step in (0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600):
        if span / step <= 10:
            return float(step)
    return 7200.0
