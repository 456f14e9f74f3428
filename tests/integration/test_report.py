"""After-action report: facts from a ledger, Markdown, self-contained HTML, and Chromium rendering.

The Chromium tests need Debian's ``chromium`` package (``apt-get install -y chromium``);
without it they skip and say so.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from clampdown.core.report import DrillReport, ObjectiveResult, timeline_from_ledger
from clampdown.core.report_advice import action_items, recommendations
from clampdown.core.report_facts import EvidenceItem, gate_ends, measured_times
from clampdown.core.report_html import to_html
from clampdown.core.report_markdown import to_markdown

ALERT = datetime(2026, 3, 14, 9, 26, 53, tzinfo=UTC)
CONTAIN = ("aws.iam.revoke_credentials", "aws.s3.lock_model_artifacts")
GATES = ("approval.request",)


def ts(seconds: float) -> str:
    return (ALERT + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def ledger(denied: bool = False) -> list[dict[str, Any]]:
    """A run as the ledger records it: evidence, an approval wait, then containment."""
    records = [
        {"type": "run.start", "ts": ts(0.4)},
        {
            "type": "step.start",
            "ts": ts(0.5),
            "step": "snapshot_trail",
            "uses": "aws.evidence.snapshot_cloudtrail",
        },
        {"type": "step.start", "ts": ts(0.6), "step": "approve", "uses": "approval.request"},
        {"type": "approval.request", "ts": ts(0.7), "step": "approve"},
        {"type": "step.end", "ts": ts(2.1), "step": "snapshot_trail", "status": "succeeded"},
    ]
    if denied:
        records += [
            {
                "type": "approval.decision",
                "ts": ts(6.6),
                "step": "approve",
                "approver": "U0APPROVE3",
                "decision": "deny",
                "reason": "training <job> running",
                "accepted": True,
            },
            {"type": "approval.end", "ts": ts(6.6), "step": "approve", "outcome": "denied"},
            {"type": "step.end", "ts": ts(6.7), "step": "approve", "status": "succeeded"},
            {
                "type": "step.skip",
                "ts": ts(6.8),
                "step": "revoke",
                "uses": "aws.iam.revoke_credentials",
                "reason": "if: approved is false",
            },
        ]
    else:
        records += [
            {
                "type": "approval.decision",
                "ts": ts(4.0),
                "step": "approve",
                "approver": "U0LEAD0001",
                "decision": "approve",
                "accepted": False,
                "refusal": "U0LEAD0001 is not an approver of this step",
            },
            {
                "type": "approval.decision",
                "ts": ts(5.6),
                "step": "approve",
                "approver": "U0APPROVE1",
                "decision": "approve",
                "accepted": True,
            },
            {"type": "approval.end", "ts": ts(5.7), "step": "approve", "outcome": "approved"},
            {"type": "step.end", "ts": ts(5.7), "step": "approve", "status": "succeeded"},
            {
                "type": "step.start",
                "ts": ts(5.8),
                "step": "revoke",
                "uses": "aws.iam.revoke_credentials",
            },
            {
                "type": "step.start",
                "ts": ts(5.8),
                "step": "lock",
                "uses": "aws.s3.lock_model_artifacts",
            },
            {"type": "step.end", "ts": ts(7.9), "step": "revoke", "status": "succeeded"},
            {
                "type": "step.end",
                "ts": ts(6.9),
                "step": "lock",
                "status": "failed",
                "error": "AccessDenied: s3:PutBucketPolicy",
            },
        ]
    return records


NAMES = {"U0APPROVE1": "Sam Okafor", "U0APPROVE3": "Tomasz Nowak"}


def make_report(denied: bool = False) -> DrillReport:
    records = ledger(denied)
    steps, markers, decisions = timeline_from_ledger(
        records, ALERT.timestamp(), containment=CONTAIN, approvals=GATES, names=NAMES
    )
    times = measured_times(records, ALERT.timestamp(), CONTAIN)
    contained = (
        None if denied else max(s.end for s in steps if s.containment and s.status == "succeeded")
    )
    objectives = [
        ObjectiveResult(
            "contained",
            "contained_within",
            "Contained within 120 s",
            not denied,
            "—" if denied else f"{contained:.1f} s",
            "denied by U0APPROVE3" if denied else "within target",
        ),
        ObjectiveResult(
            "keys_dead",
            "no_active_keys",
            "No access key left active",
            not denied,
            "1 active" if denied else "0 active",
            "AKIA…7QXZ is active" if denied else "every key inactive",
        ),
        ObjectiveResult(
            "evidence",
            "evidence_manifest_complete",
            "Evidence <manifest> complete",
            True,
            "4 objects",
            "cloudtrail and ledger present",
        ),
    ]
    report = DrillReport(
        drill="role-session-theft" if denied else "model-theft",
        title="Stolen CI key <pulling> model artifacts",
        family="model-theft",
        run_id="a1b2c3d4e5f6",
        runbook="contain-model-theft",
        alert_source="guardduty",
        alert_time=ALERT,
        roles={"incident_lead": "Dana Reyes (U0LEAD0001)", "approver": "Sam Okafor (U0APPROVE1)"},
        time_to_notify=0.9,
        time_to_approve=times.approve,
        time_to_contain=contained,
        time_to_deny=times.denied,
        steps=steps,
        markers=markers,
        objectives=objectives,
        expected_missed=["contained", "keys_dead"] if denied else [],
        failures=[
            f"step {s.id} ({s.uses}) failed: {s.note}" for s in steps if s.status == "failed"
        ],
        evidence=[
            EvidenceItem(
                "incidents/a1b2c3d4e5f6/ledger.jsonl",
                "ab" * 32,
                5120,
                version_id="3HL4kqtJlcpXroDTDmJ",
                lock_mode="GOVERNANCE",
                retain_until="2027-03-14T09:27:00+00:00",
            )
        ],
        manifest_uri="s3://clampdown-drill-evidence/incidents/a1b2c3d4e5f6/manifest.json",
        decisions=decisions,
        gates=gate_ends(records, ALERT.timestamp()),
        narrative="A CI key <leaked>; the approver has to choose.",
        facilitator_notes=["Ask the approver what they checked first"],
        notes=["CloudTrail LookupEvents answered by the drill from the seeded story"],
    )
    report.action_items = action_items(report)
    return report


def test_timeline_from_ledger_places_steps_on_the_alert_clock():
    steps, markers, decisions = timeline_from_ledger(
        ledger(), ALERT.timestamp(), containment=CONTAIN, approvals=GATES, names=NAMES
    )
    by_id = {s.id: s for s in steps}
    assert [s.id for s in steps] == ["snapshot_trail", "approve", "revoke", "lock"]
    assert by_id["approve"].approval and not by_id["approve"].containment
    assert by_id["revoke"].containment and by_id["revoke"].status == "succeeded"
    assert by_id["revoke"].start == pytest.approx(5.8) and by_id["revoke"].end == pytest.approx(7.9)
    assert by_id["lock"].status == "failed" and "PutBucketPolicy" in by_id["lock"].note
    # the refused decision is on the chart as not counted, the counted one as an approval
    assert [(m.kind, m.label) for m in markers] == [
        ("refused", "approve by U0LEAD0001 not counted"),
        ("approve", "approved by Sam Okafor (U0APPROVE1)"),
    ]
    assert markers[1].at == pytest.approx(5.6)
    assert [(d.approver, d.accepted, d.refusal) for d in decisions] == [
        ("U0LEAD0001", False, "U0LEAD0001 is not an approver of this step"),
        ("U0APPROVE1", True, ""),
    ]
    assert decisions[1].who == "Sam Okafor (U0APPROVE1)"


def test_a_denial_is_drawn_and_counted_as_a_denial():
    report = make_report(denied=True)
    assert report.time_to_approve is None  # a denial is not an approval
    assert report.time_to_deny == pytest.approx(6.6)
    (decision,) = report.decisions
    assert decision.denial and decision.who == "Tomasz Nowak (U0APPROVE3)"
    page = to_html(report)
    assert 'id="time-to-approve">—<' in page and "denied at T+6.6s" in page
    assert 'class="marker marker-deny"' in page and "marker-approve" not in page
    assert "T+6.6s denied by Tomasz Nowak (U0APPROVE3)" in page
    assert 'class="bar bar-succeeded bar-denied"' in page  # the wait ended in a denial
    assert "approval wait 6.1s → denied" in page
    assert '<td class="deny">deny</td>' in page
    text = to_markdown(report)
    assert "| — (a denial at T+6.6s) |" in text
    assert (
        "| T+6.6s | `approve` | ❌ deny | Tomasz Nowak (U0APPROVE3) | training &lt;job&gt; running |"
        in text
    )


def test_timeline_marks_skipped_and_unfinished_steps():
    records = [
        *ledger(denied=True),
        {"type": "step.start", "ts": ts(7.0), "step": "report", "uses": "slack.status"},
    ]
    steps, _, decisions = timeline_from_ledger(
        records, ALERT.timestamp(), containment=CONTAIN, approvals=GATES
    )
    by_id = {s.id: s for s in steps}
    assert by_id["revoke"].status == "skipped" and by_id["revoke"].start is None
    assert by_id["report"].status == "running" and by_id["report"].end is None
    assert decisions[0].reason == "training <job> running" and decisions[0].denial


def test_markdown_has_objectives_times_failures_evidence_and_recommendations():
    text = to_markdown(make_report())
    assert "**Result: 2 of 3 objectives missed**" not in text  # the approved run meets all three
    assert "**Result: all objectives met**" in text
    assert "| 900ms | 5.7s | 7.9s |" in text  # approve: approval.end, when quorum was reached
    assert "| ab" + "ab" * 31 + " |" not in text and "`" + "ab" * 32 + "`" in text  # full hash
    assert "| 3HL4kqtJlcpXroDTDmJ | GOVERNANCE until 2027-03-14T09:27:00+00:00 |" in text
    assert "| ✅ met | Contained within 120 s (`contained`) | 7.9 s | within target |" in text
    assert (
        "step lock (aws.s3.lock_model_artifacts) failed: AccessDenied: s3:PutBucketPolicy" in text
    )
    assert "`incidents/a1b2c3d4e5f6/ledger.jsonl`" in text
    assert (
        "| `revoke` (containment) | `aws.iam.revoke_credentials` | succeeded | T+5.8s | T+7.9s |"
        in text
    )
    assert "Steps failed during the run" in text
    assert "decision(s) were not counted" in text
    assert "<pulling>" not in text and "&lt;pulling&gt;" in text  # no raw HTML from run data


def test_denied_drill_reports_misses_as_expected_with_advice():
    report = make_report(denied=True)
    assert report.missed == ["contained", "keys_dead"] and report.as_expected and not report.all_met
    text = to_markdown(report)
    assert (
        "**Result: 2 of 3 objectives missed** (as expected; the drill expects contained, keys_dead missed)"
        in text
    )
    assert "| ❌ missed | Contained within 120 s (`contained`) | — | denied by U0APPROVE3 |" in text
    recs = recommendations(report)
    assert any(r.startswith("Contained within 120 s: denied by U0APPROVE3 Shorten") for r in recs)
    assert any("No access key left active" in r and "deactivates every key" in r for r in recs)
    owners = {item.source: item.owner for item in action_items(report)}
    # an owner that is one of the drill's roles is named; runbook_owner is not a drill role
    assert owners == {
        "contained": "incident_lead: Dana Reyes (U0LEAD0001)",
        "keys_dead": "runbook_owner",
    }


def test_unexpected_outcome_is_called_out():
    report = make_report()
    report.expected_missed = ["contained"]
    assert not report.as_expected
    assert "NOT as expected" in to_markdown(report)
    assert "NOT what the drill expects" in to_html(report)


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def test_html_is_self_contained_and_escapes_run_values():
    page = to_html(make_report())
    parser = _Collect()
    parser.feed(page)
    tags = [t for t, _ in parser.tags]
    assert "script" not in tags and "link" not in tags and "img" not in tags
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "url(" not in page  # no external fonts or images from CSS
    # values from the run are escaped, never markup
    assert "<pulling>" not in page and "&lt;pulling&gt;" in page
    assert "Evidence &lt;manifest&gt; complete" in page
    assert ("svg", {"id": "timeline"}) not in parser.tags  # it has more attributes
    assert any(t == "svg" and a.get("id") == "timeline" for t, a in parser.tags)
    bars = [a for t, a in parser.tags if t == "rect" and "bar" in (a.get("class") or "")]
    assert len(bars) == 4  # one per step that started
    assert any(t == "line" and a.get("id") == "contained-marker" for t, a in parser.tags)
    assert any(t == "line" and a.get("id") == "alert-marker" for t, a in parser.tags)


def test_html_without_containment_has_no_contained_marker():
    page = to_html(make_report(denied=True))
    assert 'id="contained-marker"' not in page
    assert 'id="alert-marker"' in page
    assert "approval wait 6.1s" in page  # the approval bar says how long it waited


# --- headless Chromium -------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Debian's chromium is not installed (apt-get install -y chromium); "
    "the HTML report is not checked in a browser",
)


def chromium(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


@needs_chromium
def test_chromium_renders_timeline_and_objectives(tmp_path: Path):
    page = tmp_path / "report.html"
    page.write_text(to_html(make_report()), encoding="utf-8")
    shot = tmp_path / "report.png"
    # one browser start for both: the screenshot and the DOM of the same render
    result = chromium(
        f"--screenshot={shot}", "--window-size=1280,1600", "--dump-dom", page.as_uri()
    )
    assert shot.is_file(), result.stderr[-2000:]
    assert png_size(shot) == (1280, 1600)
    assert shot.stat().st_size > 40_000  # a blank page compresses to a few KB
    dom = result.stdout
    parser = _Collect()
    parser.feed(dom)
    svg = [a for t, a in parser.tags if t == "svg" and a.get("id") == "timeline"]
    assert svg, "the browser's DOM has no timeline SVG"
    assert sum(1 for t, a in parser.tags if t == "rect" and "bar" in (a.get("class") or "")) == 4
    rows = re.search(r'<table id="objectives">(.*?)</table>', dom, re.S)
    assert rows is not None
    assert rows.group(1).count("<tr>") == 4  # header + three objectives
    assert rows.group(1).count('class="met"') == 3


def crowded_report() -> DrillReport:
    """Markers close together with long labels, and containment right after the alert: the
    layout the old chart drew on top of each other."""
    from clampdown.core.report import Marker

    report = make_report()
    report.markers = [
        Marker(0.2, "second alert (pagerduty): HTTP 200 joined a1b2c3d4e5f6", "event"),
        Marker(0.3, "Slack server_error for 20s", "event"),
        Marker(0.4, "approve by U0LEAD0001 not counted", "refused"),
        Marker(5.6, "approved by Sam Okafor (U0APPROVE1)", "approve"),
        Marker(5.65, "denied by Tomasz Nowak (U0APPROVE3)", "deny"),
        Marker(7.85, "the attacker minted key AKIA0000000000000002", "event"),
    ]
    return report


MEASURE = """
<script>
const boxes = [...document.querySelectorAll('#timeline text.label')].map(t => t.getBBox());
const clash = [];
for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
  const a = boxes[i], b = boxes[j];
  if (a.x < b.x + b.width && b.x < a.x + a.width && a.y < b.y + b.height && b.y < a.y + a.height)
    clash.push(i + '/' + j);
}
const svg = document.querySelector('#timeline').viewBox.baseVal;
const out = boxes.filter(b => b.x < 0 || b.x + b.width > svg.width).length;
document.body.insertAdjacentHTML('beforeend',
  '<pre id="measured">labels=' + boxes.length + ' clashes=' + clash.join(',') + ' outside=' + out + '</pre>');
</script>
"""


@needs_chromium
def test_chromium_timeline_labels_do_not_overlap(tmp_path: Path):
    """The browser measures every label above the bars: none overlaps another or leaves the
    chart (real font metrics, not the layout's estimate)."""
    page = tmp_path / "crowded.html"
    page.write_text(
        to_html(crowded_report()).replace("</body>", MEASURE + "</body>"), encoding="utf-8"
    )
    dom = chromium("--dump-dom", page.as_uri()).stdout
    found = re.search(r'<pre id="measured">labels=(\d+) clashes=([^ ]*) outside=(\d+)</pre>', dom)
    assert found, dom[-2000:]
    assert int(found.group(1)) == 8  # T+0, contained, six markers
    assert found.group(2) == "", f"labels overlap: {found.group(2)}"
    assert found.group(3) == "0"


def test_html_after_action_has_the_tabletop_parts():
    page = to_html(make_report())
    parser = _Collect()
    parser.feed(page)
    ids = {a.get("id") for _t, a in parser.tags}
    assert {"narrative", "facilitator-notes", "action-items", "decisions", "evidence"} <= ids
    assert "A CI key &lt;leaked&gt;; the approver has to choose." in page
    assert "<leaked>" not in page
    assert "Ask the approver what they checked first" in page
    assert "ab" * 32 in page  # the full SHA-256, not cut to 16 characters
    assert "GOVERNANCE until 2027-03-14T09:27:00+00:00" in page
    text = to_markdown(make_report())
    assert "## Scenario" in text and "## Facilitator notes" in text and "## Action items" in text
    assert "| 1 | 1 decision(s) were not counted" in text and "| approver: Sam Okafor" in text
    assert (
        "| 2 | Steps failed during the run" in text and "| runbook_owner | failed steps |" in text
    )


@needs_chromium
def test_chromium_renders_the_incident_reports_scoping_and_changes_tables(tmp_path: Path):
    """The incident report of a run with a scoping step and a rollback, in a real browser:
    the scoping table, the per-model roll-up, the blind spots and the changes table are in
    the DOM Chromium built (not only in the HTML text)."""
    from clampdown.core.incident_report_render import to_html as incident_html
    from tests.unit.test_incident_report import report, rollback_records

    page = tmp_path / "incident.html"
    page.write_text(
        incident_html(report(rollbacks=[rollback_records(True)], hostile=True)), encoding="utf-8"
    )
    dom = chromium("--dump-dom", page.as_uri()).stdout

    def rows(table_id: str) -> list[str]:
        found = re.search(rf'<table id="{table_id}"[^>]*>(.*?)</table>', dom, re.S)
        assert found, f"no table #{table_id} in the browser's DOM"
        return re.findall(r"<tr[^>]*>(.*?)</tr>", found.group(1), re.S)

    objects = rows("scoping-objects")
    assert len(objects) == 2 and "models/fraud-detector-v3/model.tar.gz" in objects[1]
    assert "3145728" in objects[1] and "203.0.113.66" in objects[1]
    assert len(rows("scoping-models")) == 2
    changes = rows("changes")
    assert len(changes) == 4  # header + three changes
    assert any("rolled back by run rb0000000001" in r for r in changes)
    assert any("rollback rb0000000001 failed" in r for r in changes)
    blind = re.search(r'<div class="blind" id="blind-spots">(.*?)</div>', dom, re.S)
    assert blind and blind.group(1).count("<li>") == 2
    assert "<script>alert" not in dom  # the hostile reason stayed text in the browser too
