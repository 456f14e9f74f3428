"""The report's timeline chart as inline SVG: the alert at T+0, a bar per step, approval
waits, decision markers and the moment containment was done."""

from __future__ import annotations

from clampdown.core.report import STATUS_COLOUR, DrillReport, html_text, seconds_text


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
            f"{html_text(s.id)}</text>"
        )
        if s.start is None:
            parts.append(
                f'<text x="{label_w + 4}" y="{y + 17}" fill="#868e96" '
                f'class="bar-{html_text(s.status)}">'
                f"{html_text(s.status)}</text>"
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
            f'<rect class="bar bar-{html_text(s.status)}" x="{x(s.start):.1f}" y="{y + 5}" '
            f'width="{bar_w:.1f}" height="{row_h - 10}" rx="3" fill="{colour}"{pattern}>'
            f"<title>{html_text(title)}</title></rect>"
        )
        if s.approval:
            parts.append(
                f'<text x="{x(s.start) + bar_w + 4:.1f}" y="{y + 17}" fill="#e67700">'
                f"approval wait {html_text(seconds_text(end - s.start))}</text>"
            )
        elif s.status != "succeeded":
            parts.append(
                f'<text x="{x(s.start) + bar_w + 4:.1f}" y="{y + 17}" '
                f'fill="{STATUS_COLOUR.get(s.status, "#495057")}">{html_text(s.status)}</text>'
            )
    bottom_y = height - bottom + 4
    parts.append(
        f'<line id="alert-marker" x1="{x(0):.1f}" y1="22" x2="{x(0):.1f}" y2="{bottom_y}" '
        'stroke="#c92a2a" stroke-width="2"/>'
        f'<text x="{x(0) + 4:.1f}" y="18" fill="#c92a2a" font-weight="600">'
        f"alert ({html_text(r.alert_source)}) T+0</text>"
    )
    for i, m in enumerate(sorted(r.markers, key=lambda m: m.at)):
        mx, my = x(m.at), 40 + lane * i
        right = mx > label_w + plot_w * 0.6
        anchor = ' text-anchor="end"' if right else ""
        tx = mx - 8 if right else mx + 8
        parts.append(
            f'<line x1="{mx:.1f}" y1="{my}" x2="{mx:.1f}" y2="{top - 4}" stroke="#a5d8ff"/>'
            f'<path class="marker" d="M{mx:.1f},{my - 5} l5,5 l-5,5 l-5,-5 z" fill="#1971c2">'
            f"<title>{html_text(f'T+{m.at:.1f}s {m.label}')}</title></path>"
            f'<text x="{tx:.1f}" y="{my + 4}" fill="#1971c2"{anchor}>'
            f"{html_text(f'T+{m.at:.1f}s {m.label}')}</text>"
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
