"""Every shipped drill, end to end: moto server, Slack stand-in, serve, real Prefect runs.

Each drill must come out as its file says (``expect.missed``), and the end state
behind the score is checked here too, so a checker that always said "met" would
fail. Slow by nature (approval waits, a 20 s Slack outage): about 2 minutes.
"""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from clampdown.ledger import read, verify_file
from flows.drill import DrillResult, run_drill

REPO = Path(__file__).resolve().parent.parent
LIBRARY = REPO / "runbooks"

def drill(name: str, tmp_path: Path) -> DrillResult:
    console = Console(file=io.StringIO(), width=200)
    return run_drill(name, report_dir=tmp_path / "report", console=console, library=LIBRARY)


def ledger_of(result: DrillResult) -> list[dict]:
    path = result.workspace / "runs" / str(result.report.run_id) / "ledger.jsonl"
    assert verify_file(path).complete
    return read(path)


def check_report_files(result: DrillResult) -> None:
    assert result.html.is_file() and result.markdown.is_file()
    page = result.html.read_text()
    assert '<svg id="timeline"' in page and '<table id="objectives">' in page
    for objective in result.report.objectives:
        assert objective.title.split(" ")[0] in page


def test_model_theft_default_drill_goes_green(prefect_server, tmp_path: Path):
    result = drill("model-theft", tmp_path)
    check_report_files(result)
    assert result.report.missed == [], result.report.failures
    assert result.exit_code == 0


def test_inference_extraction_drill(prefect_server, tmp_path: Path):
    result = drill("inference-extraction", tmp_path)
    assert result.report.missed == [], result.report.failures
    assert result.exit_code == 0


def test_role_session_theft_denial_is_scored_as_missed(prefect_server, tmp_path: Path):
    result = drill("role-session-theft", tmp_path)
    check_report_files(result)
    report = result.report
    assert report.runbook == "contain-role-session"
    assert sorted(report.missed) == ["cannot_invoke", "contained"], report.failures
    assert report.as_expected and result.exit_code == 1
    records = ledger_of(result)
    end = next(r for r in records if r["type"] == "approval.end")
    assert end["outcome"] == "denied" and end["denied_by"] == "U0APPROVE3"
    assert "training job" in end["reason"]
    contained = next(o for o in report.objectives if o.id == "contained")
    assert "denied by U0APPROVE3" in contained.reason
    assert "NOT as expected" not in result.markdown.read_text()
    assert "Shorten the path to containment" in result.markdown.read_text()


def test_slack_outage_still_contains_and_records_misses(prefect_server, tmp_path: Path):
    result = drill("slack-outage", tmp_path)
    check_report_files(result)
    report = result.report
    assert report.missed == [], (report.objectives, report.failures)
    assert result.exit_code == 0
    records = ledger_of(result)
    misses = [r for r in records if r["type"] == "slack.miss"]
    assert misses and misses[0]["count"] >= 1
    # the key the attacker minted at T+2s was found and deactivated with the old one
    revoke = next(r for r in records if r["type"] == "step.end" and r["step"] == "revoke")
    assert revoke["status"] == "succeeded"
    assert len(revoke["outputs"]["deactivated_keys"]) == 2
    assert "AWS throttling is simulated: 3 iam calls" in " ".join(report.notes)
    assert any("Slack server_error for 20s" in m.label for m in report.markers)
    manifest = next(e for e in report.evidence if e["key"].endswith("ledger.jsonl"))
    assert manifest["size"] > 0
    assert result.markdown.read_text().count("✅ met") == 6
