"""Report sections both reports share, as Markdown and as HTML: the measured times, the
decisions, the changes and their rollback, the evidence, the inputs and the scoping results.

The incident report of any run (:mod:`clampdown.core.incident_report_render`) and a
drill's after-action report (:mod:`clampdown.core.report_markdown`,
:mod:`clampdown.core.report_html`) render these parts with these functions, so they
look and read the same in both. Every value from a ledger is escaped here: in Markdown
no pipe, newline or HTML survives in a cell (artifact viewers render HTML); in HTML
everything goes through :func:`clampdown.core.report.html_text`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from clampdown.core.report import Marker, StepSpan, html_text, seconds_text
from clampdown.core.report_facts import (
    Change,
    Decision,
    EvidenceItem,
    GateEnd,
    ScopingResult,
    Times,
)

TIME_LABELS = {
    "notify": "time to notify: first message to the responders",
    "approve": "time to approve: an approval reached quorum (denials excluded)",
    "contain": "time to contain: the last containment step done",
}


def md(text: Any) -> str:
    """One table cell of run data: no pipe, no newline, no HTML (artifact viewers render it)."""
    return (
        str(text)
        .replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace("|", "\\|")
        .replace("\n", " ")
        .replace("`", "'")
    )


def value_text(value: Any) -> str:
    """A value from the run as one line (lists joined, objects as compact JSON)."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list) and all(isinstance(v, str | int | float) for v in value):
        return ", ".join(str(v) for v in value) or "—"
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def _when(at: float | None) -> str:
    return "—" if at is None else f"T+{at:.1f}s"


def decision_verb(d: Decision) -> str:
    return "deny" if d.denial else "approve"


# --- times ------------------------------------------------------------------------------------


def md_times(times: Times, origin: str) -> list[str]:
    denied = f" (a denial at {_when(times.denied)})" if times.denied is not None else ""
    return [
        f"Clock: T+0 is {md(origin)}.",
        "",
        "| time to notify | time to approve | time to contain |",
        "|---|---|---|",
        f"| {seconds_text(times.notify)} | {seconds_text(times.approve)}{denied} "
        f"| {seconds_text(times.contain)} |",
        "",
    ]


def html_times(times: Times, origin: str) -> str:
    cards = []
    for key, value in (
        ("notify", times.notify),
        ("approve", times.approve),
        ("contain", times.contain),
    ):
        extra = ""
        if key == "approve" and times.denied is not None:
            extra = (
                f'<em class="denied" id="time-to-deny">denied at '
                f"{html_text(_when(times.denied))}</em>"
            )
        cards.append(
            f'<div class="kpi"><b id="time-to-{key}">{html_text(seconds_text(value))}</b>'
            f"<span>{html_text(TIME_LABELS[key])}</span>{extra}</div>"
        )
    return (
        f'<p class="clock">T+0 is {html_text(origin)}.</p><div class="kpis">{"".join(cards)}</div>'
    )


# --- steps ------------------------------------------------------------------------------------


def md_steps(steps: Sequence[StepSpan], markers: Sequence[Marker] = ()) -> list[str]:
    """The timeline as a table (seconds after T+0), then the markers as a list."""
    lines = ["| step | action | status | start | end | note |", "|---|---|---|---|---|---|"]
    for s in steps:
        tag = " (approval)" if s.approval else " (containment)" if s.containment else ""
        lines.append(
            f"| `{md(s.id)}`{tag} | `{md(s.uses)}` | {md(s.status)} | {_when(s.start)} "
            f"| {_when(s.end)} | {md(s.note)} |"
        )
    if markers:
        lines += ["", *(f"- T+{m.at:.1f}s: {md(m.label)}" for m in markers)]
    return lines


# --- inputs -----------------------------------------------------------------------------------


def md_inputs(inputs: Mapping[str, Any]) -> list[str]:
    if not inputs:
        return ["The run got no inputs."]
    rows = [f"| `{md(k)}` | {md(value_text(v))} |" for k, v in inputs.items()]
    return ["| input | value |", "|---|---|", *rows]


def html_inputs(inputs: Mapping[str, Any]) -> str:
    if not inputs:
        return "<p>The run got no inputs.</p>"
    rows = "".join(
        f"<tr><td><code>{html_text(k)}</code></td><td>{html_text(value_text(v))}</td></tr>"
        for k, v in inputs.items()
    )
    return f'<table id="inputs"><tr><th>input</th><th>value</th></tr>{rows}</table>'


# --- decisions --------------------------------------------------------------------------------


def _gate_line(g: GateEnd) -> str:
    text = f"{_when(g.at)} {g.step}: {g.outcome.replace('_', ' ')}"
    if g.outcome == "approved" and g.approvers:
        text += f" (by {', '.join(g.approvers)})"
    if g.denied_by:
        text += f" by {g.denied_by}"
    if g.reason:
        text += f": “{g.reason}”"
    return text


def md_decisions(decisions: Sequence[Decision], gates: Sequence[GateEnd]) -> list[str]:
    if not decisions and not gates:
        return ["No approval decision was recorded."]
    lines = [
        "| when | step | decision | who | reason | via | counted |",
        "|---|---|---|---|---|---|---|",
    ]
    for d in decisions:
        step = f"{d.run}: {d.step}" if d.run else d.step
        counted = "yes" if d.accepted else f"**no**: {md(d.refusal or 'refused')}"
        mark = "❌ deny" if d.denial else "✅ approve"
        lines.append(
            f"| {_when(d.at)} | `{md(step)}` | {mark} | {md(d.who)} | {md(d.reason) or '—'} "
            f"| {md(d.source) or '—'} | {counted} |"
        )
    if gates:
        lines += ["", "Outcome of each approval:", "", *(f"- {md(_gate_line(g))}" for g in gates)]
    return lines


def html_decisions(decisions: Sequence[Decision], gates: Sequence[GateEnd]) -> str:
    if not decisions and not gates:
        return "<p>No approval decision was recorded.</p>"
    rows = []
    for d in decisions:
        step = f"{d.run}: {d.step}" if d.run else d.step
        kind = "deny" if d.denial else "approve"
        counted = "yes" if d.accepted else f"no: {d.refusal or 'refused'}"
        rows.append(
            f'<tr class="decision {kind}{"" if d.accepted else " refused"}">'
            f"<td>{html_text(_when(d.at))}</td><td><code>{html_text(step)}</code></td>"
            f'<td class="{kind}">{kind}</td><td>{html_text(d.who)}</td>'
            f"<td>{html_text(d.reason or '—')}</td><td>{html_text(d.source or '—')}</td>"
            f"<td>{html_text(counted)}</td></tr>"
        )
    table = (
        '<table id="decisions"><tr><th>when</th><th>step</th><th>decision</th><th>who</th>'
        f"<th>reason</th><th>via</th><th>counted</th></tr>{''.join(rows)}</table>"
        if rows
        else ""
    )
    outcomes = "".join(
        f'<li class="gate {html_text(g.outcome)}">{html_text(_gate_line(g))}</li>' for g in gates
    )
    return table + (f'<ul id="gate-outcomes">{outcomes}</ul>' if outcomes else "")


# --- changes ----------------------------------------------------------------------------------


def md_changes(changes: Sequence[Change]) -> list[str]:
    if not changes:
        return ["The run changed nothing (no undo record)."]
    lines = [
        "| when | step | action | what (names in the undo record) | undo | rollback state |",
        "|---|---|---|---|---|---|",
    ]
    for c in changes:
        note = " (attempt that then failed)" if c.failed_attempt else ""
        lines.append(
            f"| {_when(c.at)} | `{md(c.step)}`{note} | `{md(c.uses)}` | {md(c.target_text)} "
            f"| {md(c.undo)} | {md(c.rollback.text)} |"
        )
    return lines


def html_changes(changes: Sequence[Change]) -> str:
    if not changes:
        return "<p>The run changed nothing (no undo record).</p>"
    rows = "".join(
        f'<tr class="change"><td>{html_text(_when(c.at))}</td>'
        f"<td><code>{html_text(c.step)}</code>"
        f"{' (attempt that then failed)' if c.failed_attempt else ''}</td>"
        f"<td><code>{html_text(c.uses)}</code></td><td>{html_text(c.target_text)}</td>"
        f"<td>{html_text(c.undo)}</td>"
        f'<td class="rb {html_text(c.rollback.state.replace(" ", "-"))}">'
        f"{html_text(c.rollback.text)}</td></tr>"
        for c in changes
    )
    return (
        '<table id="changes"><tr><th>when</th><th>step</th><th>action</th>'
        "<th>what (names in the undo record)</th><th>undo</th><th>rollback state</th></tr>"
        f"{rows}</table>"
    )


# --- evidence ---------------------------------------------------------------------------------


def _retention(e: EvidenceItem) -> str:
    if not e.lock_mode and not e.retain_until:
        return "—"
    return f"{e.lock_mode or '?'} until {e.retain_until or '?'}"


def _pin_text(pin: Mapping[str, Any] | None) -> str:
    """The manifest version the ledger pinned at run.end, when it did."""
    if not pin or not (pin.get("version_id") or pin.get("sha256")):
        return ""
    version, digest = pin.get("version_id") or "—", pin.get("sha256") or "—"
    return f" (pinned by run.end: version {version}, SHA-256 {digest})"


def md_evidence(
    items: Sequence[EvidenceItem], manifest: str | None, pin: Mapping[str, Any] | None = None
) -> list[str]:
    lines = [f"Manifest: `{md(manifest)}`{md(_pin_text(pin))}", ""] if manifest else []
    if not items:
        return [*lines, "No evidence object is recorded in the ledger."]
    lines += [
        "| object | SHA-256 | bytes | version | Object Lock |",
        "|---|---|---|---|---|",
    ]
    for e in items:
        lines.append(
            f"| `{md(e.key)}` | `{md(e.sha256)}` | {'—' if e.size is None else e.size} "
            f"| {md(e.version_id or '—')} | {md(_retention(e))} |"
        )
    return lines


def html_evidence(
    items: Sequence[EvidenceItem], manifest: str | None, pin: Mapping[str, Any] | None = None
) -> str:
    head = (
        f"<p>Manifest: <code>{html_text(manifest)}</code>{html_text(_pin_text(pin))}</p>"
        if manifest
        else ""
    )
    if not items:
        return head + "<p>No evidence object is recorded in the ledger.</p>"
    rows = "".join(
        f'<tr><td><code class="key">{html_text(e.key)}</code></td>'
        f'<td><code class="hash">{html_text(e.sha256)}</code></td>'
        f"<td>{html_text('—' if e.size is None else e.size)}</td>"
        f"<td><code>{html_text(e.version_id or '—')}</code></td>"
        f"<td>{html_text(_retention(e))}</td></tr>"
        for e in items
    )
    return (
        f'{head}<table id="evidence"><tr><th>object</th><th>SHA-256</th><th>bytes</th>'
        f"<th>version</th><th>Object Lock</th></tr>{rows}</table>"
    )


# --- scoping ----------------------------------------------------------------------------------

OBJECT_COLUMNS = (
    "bucket",
    "key",
    "version_id",
    "reads",
    "bytes_out",
    "first_access",
    "last_access",
    "source_ips",
    "user_agents",
)
MODEL_COLUMNS = ("model", "bucket", "prefix", "objects", "bytes_out", "first_access", "last_access")


def _columns(rows: Sequence[Mapping[str, Any]], preferred: Sequence[str]) -> list[str]:
    """The preferred columns that appear, then any other field the rows carry."""
    seen: dict[str, None] = {}
    for row in rows:
        for key in row:
            seen[key] = None
    return [c for c in preferred if c in seen] + [c for c in seen if c not in preferred]


def _blind_spot_text(spot: Mapping[str, Any]) -> str:
    return f"{spot.get('kind') or '?'}: {spot.get('detail') or ''}".strip()


def md_table(rows: Sequence[Mapping[str, Any]], preferred: Sequence[str] = ()) -> list[str]:
    cols = _columns(rows, preferred)
    return [
        "| " + " | ".join(md(c) for c in cols) + " |",
        "|" + "---|" * len(cols),
        *("| " + " | ".join(md(value_text(r.get(c))) for c in cols) + " |" for r in rows),
    ]


def md_scoping(results: Sequence[ScopingResult]) -> list[str]:
    lines: list[str] = []
    for s in results:
        start, end = s.window
        lines += [
            f"### `{md(s.step)}` ({md(s.uses or 'scoping')})",
            "",
            f"Principal `{md(s.principal)}`, window {md(start)} → {md(end)}. "
            f"Confidence: **{md(s.confidence)}**"
            + (f" — {md(s.confidence_reason)}" if s.confidence_reason else ""),
            "",
        ]
        if s.blind_spots:
            lines += [
                "> **⚠ Blind spots: what the scoping could NOT see** (no reads there is not "
                "evidence that nothing was taken)",
                ">",
                *(f"> - {md(_blind_spot_text(b))}" for b in s.blind_spots),
                "",
            ]
        lines += [f"{md(s.summary)}", ""] if s.summary else []
        if s.totals:
            totals = ", ".join(f"{md(k)} {md(value_text(v))}" for k, v in s.totals.items())
            lines += [f"Totals: {totals}", ""]
        lines += [f"Scan: {md(s.scan)}", ""] if s.scan else []
        lines += ["Sources read:", "", *md_table(s.sources), ""] if s.sources else []
        lines += [f"**Note: {md(s.truncated)}**", ""] if s.truncated else []
        lines += ["Objects read:", ""]
        lines += md_table(s.objects, OBJECT_COLUMNS) if s.objects else ["None found."]
        if s.models:
            lines += ["", "Per model:", "", *md_table(s.models, MODEL_COLUMNS)]
        for name, rows in s.other_tables.items():
            lines += ["", f"{md(name)}:", "", *md_table(rows)]
        if s.management_events:
            events = [e if isinstance(e, Mapping) else {"event": e} for e in s.management_events]
            lines += ["", "Management events:", "", *md_table(events)]
        lines.append("")
    return lines or ["No scoping step ran in this run."]


def html_table(
    rows: Sequence[Mapping[str, Any]], preferred: Sequence[str] = (), table_id: str = ""
) -> str:
    cols = _columns(rows, preferred)
    head = "".join(f"<th>{html_text(c)}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{html_text(value_text(r.get(c)))}</td>" for c in cols) + "</tr>"
        for r in rows
    )
    ident = f' id="{html_text(table_id)}"' if table_id else ""
    return f'<table{ident} class="scoping"><tr>{head}</tr>{body}</table>'


def html_scoping(results: Sequence[ScopingResult]) -> str:
    if not results:
        return "<p>No scoping step ran in this run.</p>"
    parts = []
    for n, s in enumerate(results):
        suffix = "" if n == 0 else f"-{n + 1}"
        start, end = s.window
        parts.append(
            f"<h3><code>{html_text(s.step)}</code> ({html_text(s.uses or 'scoping')})</h3>"
            f"<p>Principal <code>{html_text(s.principal)}</code>, window "
            f"{html_text(start)} → {html_text(end)}. Confidence: "
            f'<b class="confidence">{html_text(s.confidence)}</b>'
            + (f" — {html_text(s.confidence_reason)}" if s.confidence_reason else "")
            + "</p>"
        )
        if s.blind_spots:
            spots = "".join(f"<li>{html_text(_blind_spot_text(b))}</li>" for b in s.blind_spots)
            parts.append(
                f'<div class="blind" id="blind-spots{suffix}"><b>⚠ Blind spots: what the '
                "scoping could NOT see</b> (no reads there is not evidence that nothing was "
                f"taken)<ul>{spots}</ul></div>"
            )
        if s.summary:
            parts.append(f"<p>{html_text(s.summary)}</p>")
        if s.totals:
            parts.append(
                f'<p class="totals" id="scoping-totals{suffix}">Totals: '
                + ", ".join(
                    f"{html_text(k)} <b>{html_text(value_text(v))}</b>" for k, v in s.totals.items()
                )
                + "</p>"
            )
        if s.scan:
            parts.append(f'<p class="scan">Scan: {html_text(s.scan)}</p>')
        if s.sources:
            parts.append("<h4>Sources read</h4>")
            parts.append(html_table(s.sources, (), f"scoping-sources{suffix}"))
        if s.truncated:
            parts.append(f'<p class="truncated"><b>Note: {html_text(s.truncated)}</b></p>')
        parts.append("<h4>Objects read</h4>")
        parts.append(
            html_table(s.objects, OBJECT_COLUMNS, f"scoping-objects{suffix}")
            if s.objects
            else f'<p id="scoping-objects{suffix}">None found.</p>'
        )
        if s.models:
            parts.append("<h4>Per model</h4>")
            parts.append(html_table(s.models, MODEL_COLUMNS, f"scoping-models{suffix}"))
        for name, rows in s.other_tables.items():
            parts.append(f"<h4>{html_text(name)}</h4>{html_table(rows)}")
        if s.management_events:
            events = [e if isinstance(e, Mapping) else {"event": e} for e in s.management_events]
            parts.append(f"<h4>Management events</h4>{html_table(events)}")
    return "".join(parts)


CSS = """
body{font:15px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;
  color:#212529;background:#f8f9fa}
main{max-width:1100px;margin:0 auto;padding:24px 32px;background:#fff}
h1{font-size:24px;margin:0 0 4px}
h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #dee2e6;padding-bottom:4px}
h3{font-size:16px;margin:18px 0 6px}h4{font-size:14px;margin:12px 0 4px}
.meta{color:#495057;margin:0 0 16px}.clock{color:#495057;margin:8px 0 0;font-size:13px}
.verdict{display:inline-block;padding:6px 12px;border-radius:6px;font-weight:600;color:#fff}
.ok{background:#2f9e44}.bad{background:#e03131}.expect{margin-left:8px;color:#495057}
.kpis{display:flex;gap:16px;margin:8px 0 16px}
.kpi{flex:1;border:1px solid #dee2e6;border-radius:8px;padding:10px 14px}
.kpi b{display:block;font-size:22px}.kpi span{color:#495057;font-size:13px}
.kpi em.denied{display:block;color:#c92a2a;font-style:normal;font-size:13px;font-weight:600}
table{border-collapse:collapse;width:100%;font-size:14px;margin:4px 0 8px}
th,td{text-align:left;padding:6px 8px;border-bottom:1px solid #e9ecef;vertical-align:top}
th{background:#f1f3f5}td.met{color:#2b8a3e;font-weight:600}td.missed{color:#c92a2a;font-weight:600}
td.approve{color:#2b8a3e;font-weight:600}td.deny{color:#c92a2a;font-weight:600}
tr.refused td{color:#868e96}td.rb.rolled-back{color:#2b8a3e}td.rb.rollback-failed{color:#c92a2a}
code{font:13px ui-monospace,SFMono-Regular,Menlo,monospace;background:#f1f3f5;padding:1px 4px;
  border-radius:3px;overflow-wrap:break-word}
code.hash,code.key{font-size:12px;word-break:break-all}
.blind{border:2px solid #e03131;background:#fff5f5;border-radius:8px;padding:10px 14px;margin:8px 0}
.blind b{color:#c92a2a}.narrative{background:#f1f3f5;border-left:4px solid #1971c2;padding:8px 14px}
ul{padding-left:20px}li{margin:4px 0}svg{display:block;max-width:100%;height:auto}
li.gate.denied{color:#c92a2a}li.gate.approved{color:#2b8a3e}
"""
