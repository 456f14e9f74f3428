"""The reports' timeline chart as inline SVG: T+0, a bar per step, approval waits, decisions
(approvals, denials and refused decisions drawn apart) and the moment containment was done.

Labels above the bars (T+0, "contained", each marker) are laid out in lanes: a label
goes into the first lane where it overlaps no label already there, and flips to the
left of its marker when it would leave the chart on the right. Text widths are
estimated (:data:`CHAR_W` per character at the chart's 12 px font, an upper bound for
system sans-serif fonts); the Chromium test measures the real boxes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from clampdown.core.report import STATUS_COLOUR, Marker, StepSpan, html_text, seconds_text

CHAR_W = 7.2  # px per character of 12 px text (bold included), generous on purpose
LANE_H = 16
LABEL_W = 230
RIGHT_MARGIN = 210  # room for the label after the last bar ("approval wait … → denied")
ROW_H = 26
STEP_ID_CHARS = 30

MARKER_STYLE = {  # kind -> (colour, SVG path drawn at (x, y), legend text)
    "approve": ("#2b8a3e", "M{x},{y0} l5,5 l-5,5 l-5,-5 z", "approval"),
    "deny": ("#c92a2a", "M{xl},{y0} l10,10 m0,-10 l-10,10", "denial"),
    "refused": ("#868e96", "M{xl},{y1} a5,5 0 1,0 10,0 a5,5 0 1,0 -10,0", "not counted"),
    "event": ("#1971c2", "M{x},{y0} l5,5 l-5,5 l-5,-5 z", "event"),
}


@dataclass
class _Label:
    x: float  # where the marker is
    text: str
    colour: str
    kind: str  # a MARKER_STYLE key, or "origin" / "contained" (a vertical line, no glyph)
    bold: bool = False
    lane: int = 0
    left: float = 0.0  # the text's box, once placed
    right: float = 0.0
    anchor_end: bool = False


def text_width(text: str) -> float:
    return len(text) * CHAR_W


def _place(labels: list[_Label], width: float) -> int:
    """Put each label in the first lane where its text overlaps none; returns lanes used."""
    lanes: list[list[tuple[float, float]]] = []
    for label in labels:
        w = text_width(label.text)
        left, right, end = label.x + 8, label.x + 8 + w, False
        if right > width - 4:  # would leave the chart: write it to the left of its mark
            left, right, end = label.x - 8 - w, label.x - 8, True
        if left < 4:  # too long for either side: start it at the chart's edge
            left, right, end = 4.0, 4.0 + w, False
        for number, taken in enumerate([*lanes, []]):
            if all(right + 6 <= a or left >= b + 6 for a, b in taken):
                if number == len(lanes):
                    lanes.append([])
                lanes[number].append((left, right))
                label.lane, label.left, label.right, label.anchor_end = number, left, right, end
                break
    return len(lanes)


def timeline_svg(
    steps: Sequence[StepSpan],
    markers: Sequence[Marker],
    *,
    origin: str,
    contained_at: float | None = None,
    outcomes: Mapping[str, str] | None = None,
    width: int = 1000,
) -> str:
    """The timeline as inline SVG. ``origin``: what T+0 is ("alert (guardduty)");
    ``outcomes``: approval step -> how it ended, so a denied wait is drawn as one."""
    outcomes = outcomes or {}
    plot_w = width - LABEL_W - RIGHT_MARGIN
    ends = [s.end for s in steps if s.end is not None] + [m.at for m in markers]
    ends += [contained_at] if contained_at is not None else []
    span = max([*ends, 1.0]) * 1.05

    def x(seconds: float) -> float:
        return LABEL_W + max(0.0, seconds) / span * plot_w

    labels = [_Label(x(0), f"{origin} T+0", "#c92a2a", "origin", True)]
    if contained_at is not None:
        labels.append(
            _Label(
                x(contained_at), f"contained T+{contained_at:.1f}s", "#2b8a3e", "contained", True
            )
        )
    for m in sorted(markers, key=lambda m: m.at):
        colour = MARKER_STYLE.get(m.kind, MARKER_STYLE["event"])[0]
        labels.append(_Label(x(m.at), f"T+{m.at:.1f}s {m.label}", colour, m.kind))
    lanes = _place(labels, width)
    top = 14 + LANE_H * lanes + 10
    bottom = 48
    height = top + ROW_H * max(len(steps), 1) + bottom
    bottom_y = height - bottom + 4

    parts = [
        f'<svg id="timeline" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="Run timeline" '
        'font-family="system-ui,sans-serif" font-size="12">',
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
    ]
    parts += _ticks(span, x, top, bottom_y, height - bottom + 18)
    for i, s in enumerate(steps):
        parts += _step_row(s, top + i * ROW_H, x, span, outcomes.get(s.id))
    parts += [_label_svg(label, top, bottom_y) for label in labels]
    parts += _legend(height)
    parts.append("</svg>")
    return "".join(parts)


def _ticks(
    span: float, x: Callable[[float], float], top: int, bottom_y: int, text_y: int
) -> list[str]:
    step = _tick(span)
    found, tick = [], 0.0
    while tick <= span:
        tx = x(tick)
        found.append(
            f'<line x1="{tx:.1f}" y1="{top - 6}" x2="{tx:.1f}" y2="{bottom_y}" stroke="#e9ecef"/>'
            f'<text class="tick" x="{tx:.1f}" y="{text_y}" text-anchor="middle" '
            f'fill="#495057">T+{tick:g}s</text>'
        )
        tick += step
    return found


def _step_row(
    s: StepSpan, y: int, x: Callable[[float], float], span: float, outcome: str | None
) -> list[str]:
    weight = ' font-weight="700"' if s.containment else ""
    shown = s.id if len(s.id) <= STEP_ID_CHARS else s.id[: STEP_ID_CHARS - 1] + "…"
    parts = [
        f'<text class="step" x="{LABEL_W - 8}" y="{y + 17}" text-anchor="end" fill="#212529"'
        f"{weight}><title>{html_text(s.id)}</title>{html_text(shown)}</text>"
    ]
    if s.start is None:
        parts.append(
            f'<text class="bar-{html_text(s.status)}" x="{LABEL_W + 4}" y="{y + 17}" '
            f'fill="#868e96">{html_text(s.status)}</text>'
        )
        return parts
    end = s.end if s.end is not None else span
    denied = s.approval and outcome in ("denied", "timed_out")
    if s.approval:
        colour = "#ffc9c9" if denied else STATUS_COLOUR["waiting"]
        pattern = f' stroke="{"#c92a2a" if denied else "#e67700"}" stroke-dasharray="4 2"'
    else:
        colour, pattern = STATUS_COLOUR.get(s.status, "#adb5bd"), ""
    bar_w = max(x(end) - x(s.start), 3.0)
    title = f"{s.id} ({s.uses}): {s.status}, T+{s.start:.1f}s → " + (
        f"T+{s.end:.1f}s" if s.end is not None else "not finished"
    )
    if s.approval and outcome:
        title += f", {outcome.replace('_', ' ')}"
    kind = " bar-denied" if denied else ""
    parts.append(
        f'<rect class="bar bar-{html_text(s.status)}{kind}" x="{x(s.start):.1f}" y="{y + 5}" '
        f'width="{bar_w:.1f}" height="{ROW_H - 10}" rx="3" fill="{colour}"{pattern}>'
        f"<title>{html_text(title)}</title></rect>"
    )
    after = x(s.start) + bar_w + 4
    if s.approval:
        said = f"approval wait {seconds_text(end - s.start)}"
        if outcome:
            said += f" → {outcome.replace('_', ' ')}"
        fill = "#c92a2a" if denied else "#e67700"
        weight = ' font-weight="700"' if denied else ""
        parts.append(
            f'<text class="wait" x="{after:.1f}" y="{y + 17}" fill="{fill}"{weight}>'
            f"{html_text(said)}</text>"
        )
    elif s.status != "succeeded":
        parts.append(
            f'<text class="status" x="{after:.1f}" y="{y + 17}" '
            f'fill="{STATUS_COLOUR.get(s.status, "#495057")}">{html_text(s.status)}</text>'
        )
    return parts


def _label_svg(label: _Label, top: int, bottom_y: int) -> str:
    ly = 14 + LANE_H * label.lane  # the lane's middle
    tx = label.right if label.anchor_end else label.left
    anchor = ' text-anchor="end"' if label.anchor_end else ""
    weight = ' font-weight="600"' if label.bold else ""
    text = (
        f'<text class="label" x="{tx:.1f}" y="{ly + 4}" fill="{label.colour}"{anchor}{weight}>'
        f"{html_text(label.text)}</text>"
    )
    mx = label.x
    if label.kind in ("origin", "contained"):
        ident = "alert-marker" if label.kind == "origin" else "contained-marker"
        dash = ' stroke-dasharray="6 3"' if label.kind == "contained" else ""
        return (
            f'<line id="{ident}" x1="{mx:.1f}" y1="{ly - 6}" x2="{mx:.1f}" y2="{bottom_y}" '
            f'stroke="{label.colour}" stroke-width="2"{dash}/>{text}'
        )
    path = MARKER_STYLE.get(label.kind, MARKER_STYLE["event"])[1].format(
        x=f"{mx:.1f}", xl=f"{mx - 5:.1f}", y0=ly - 5, y1=ly
    )
    fill = "none" if label.kind in ("deny", "refused") else label.colour
    return (
        f'<line x1="{mx:.1f}" y1="{ly + 5}" x2="{mx:.1f}" y2="{top - 4}" stroke="#dee2e6"/>'
        f'<path class="marker marker-{html_text(label.kind)}" d="{path}" fill="{fill}" '
        f'stroke="{label.colour}" stroke-width="2"><title>{html_text(label.text)}</title></path>'
        f"{text}"
    )


def _legend(height: int) -> list[str]:
    entries = [
        ("#2f9e44", "succeeded", "rect"),
        ("#e03131", "failed", "rect"),
        ("#f59f00", "approval wait", "rect"),
        ("#ffc9c9", "denied wait", "rect"),
        *((colour, text, kind) for kind, (colour, _p, text) in MARKER_STYLE.items()),
    ]
    parts, lx = [], 10.0
    for colour, text, kind in entries:
        if kind == "rect":
            parts.append(
                f'<rect x="{lx:.1f}" y="{height - 14}" width="10" height="10" fill="{colour}"/>'
            )
        else:
            path = MARKER_STYLE[kind][1].format(
                x=f"{lx + 5:.1f}", xl=f"{lx:.1f}", y0=height - 14, y1=height - 9
            )
            fill = "none" if kind in ("deny", "refused") else colour
            parts.append(f'<path d="{path}" fill="{fill}" stroke="{colour}" stroke-width="2"/>')
        parts.append(
            f'<text x="{lx + 14:.1f}" y="{height - 5}" fill="#495057">{html_text(text)}</text>'
        )
        lx += 24 + text_width(text) * 0.85
    parts.append(
        f'<text x="{lx:.1f}" y="{height - 5}" fill="#495057" font-weight="700">'
        "bold: containment step</text>"
    )
    return parts


def _tick(span: float) -> float:
    """A round tick interval giving about eight ticks."""
    for step in (0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400):
        if span / step <= 10:
            return float(step)
    return 86400.0 * max(1, round(span / 86400 / 10))
