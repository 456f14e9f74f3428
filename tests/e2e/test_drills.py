"""Every shipped drill, end to end: moto server, Slack stand-in, serve, real Prefect runs.

Each drill must come out as its file says (``expect.missed``), and the end state
behind the score is checked here too, so a checker that always said "met" would
fail. Each drill runs once per session (the library-coverage test reuses the
results). Slow by nature (approval waits, a 20 s Slack outage): about 2.5 minutes.
"""

from __future__ import annotations

import contextlib
import sqlite3
import stat
from pathlib import Path

import pytest

from clampdown.app.drill.runner import DrillResult
from clampdown.core.drill_library import drill_files, runbook_names
from clampdown.core.ledger import read, verify_file
from tests.paths import REPO

LIBRARY = REPO / "runbooks"
# A no-cloud demo of the engine, not a response: no drill needs to reach it.
NOT_DRILLED = {"engine-self-check"}


def ledger_of(result: DrillResult, run_id: str | None = None) -> list[dict]:
    path = result.workspace / "runs" / str(run_id or result.report.run_id) / "ledger.jsonl"
    assert verify_file(path).complete
    return read(path)


def runs_of(result: DrillResult) -> dict[str, list[dict]]:
    """Every run of the drill, from the ledgers in its workspace: run id -> records."""
    found = {}
    for path in sorted((result.workspace / "runs").glob("*/ledger.jsonl")):
        found[path.parent.name] = read(path)
    return found


def runbook_run(result: DrillResult, runbook: str) -> list[dict]:
    (records,) = [r for r in runs_of(result).values() if r[0]["run"]["runbook"] == runbook]
    return records


def step_end(records: list[dict], step: str) -> dict:
    return next(r for r in records if r["type"] == "step.end" and r["step"] == step)


def check_report_files(result: DrillResult) -> None:
    assert result.html.is_file() and result.markdown.is_file()
    page = result.html.read_text()
    assert '<svg id="timeline"' in page and '<table id="objectives">' in page
    for objective in result.report.objectives:
        assert objective.title.split(" ")[0] in page


@pytest.mark.drills("model-theft")
def test_model_theft_default_drill_goes_green(drill):
    result = drill("model-theft")
    check_report_files(result)
    assert result.report.missed == [], result.report.failures
    assert result.exit_code == 0
    # the PagerDuty incident about the same key joined the GuardDuty run: one run only
    assert list(runs_of(result)) == [result.report.run_id]
    joined = [r for r in ledger_of(result) if r["type"] == "alert.joined"]
    assert [(j["how"], j["alert"]["source"]) for j in joined] == [("joined", "pagerduty")]
    # the drill made its workspace, drills/ and the home private (0700), whatever the umask
    for folder in (result.workspace, *result.workspace.parents[:2]):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder


@pytest.mark.drills("inference-extraction")
def test_inference_extraction_drill(drill):
    result = drill("inference-extraction")
    assert result.report.missed == [], result.report.failures
    assert result.exit_code == 0


@pytest.mark.drills("role-session-theft")
def test_role_session_theft_denial_is_scored_as_missed(drill):
    result = drill("role-session-theft")
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


@pytest.mark.drills("slack-outage")
def test_slack_outage_still_contains_and_records_misses(drill):
    result = drill("slack-outage")
    check_report_files(result)
    report = result.report
    assert report.missed == [], (report.objectives, report.failures)
    assert result.exit_code == 0
    records = ledger_of(result)
    misses = [r for r in records if r["type"] == "slack.miss"]
    assert misses and misses[0]["count"] >= 1
    # no card reached Slack: the approver decided from the terminal, and the run took the
    # signature of their own drill key (refused meanwhile only if the group was unresolvable)
    terminal = [
        r for r in records if r["type"] == "approval.decision" and r["source"] == "terminal"
    ]
    assert terminal, [r for r in records if r["type"] == "approval.decision"]
    assert all(r["authenticated_by"].startswith("ssh key SHA256:") for r in terminal), terminal
    # the key the attacker minted at T+2s was found and deactivated with the old one
    revoke = next(r for r in records if r["type"] == "step.end" and r["step"] == "revoke")
    assert revoke["status"] == "succeeded"
    assert len(revoke["outputs"]["deactivated_keys"]) == 2
    assert "AWS throttling is simulated: 3 iam calls" in " ".join(report.notes)
    assert any("Slack server_error for 20s" in m.label for m in report.markers)
    manifest = next(e for e in report.evidence if e.key.endswith("ledger.jsonl"))
    assert manifest.size and len(manifest.sha256) == 64
    assert result.markdown.read_text().count("✅ met") == 6


@pytest.mark.drills("artifact-exfiltration")
def test_artifact_exfiltration_locks_preserves_and_rotates(drill):
    """Three runbooks, three ways in: the DLP alert, a second alert, the lead's command."""
    result = drill("artifact-exfiltration")
    check_report_files(result)
    report = result.report
    assert report.missed == [], (report.objectives, report.failures)
    assert report.runbook == "lock-model-artifacts" and result.exit_code == 0
    lock = ledger_of(result)
    statement = step_end(lock, "lock")["outputs"]
    assert statement["changed"] is True and statement["statement_sid"]
    # StopLogging through EventBridge started preserve-evidence, which kept the suspect's story
    evidence = runbook_run(result, "preserve-evidence")
    assert evidence[0]["run"]["trigger"]["source"] == "eventbridge"
    assert step_end(evidence, "trail")["status"] == "succeeded"
    assert step_end(evidence, "describe")["status"] == "succeeded"
    # the lead's /clampdown command started the rotation; the approver (not the lead) approved
    rotation = runbook_run(result, "rotate-model-secrets")
    trigger = rotation[0]["run"]["trigger"]
    assert trigger == {**trigger, "type": "slack", "user": "U0LEAD0005"}
    decision = next(r for r in rotation if r["type"] == "approval.end")
    assert decision["outcome"] == "approved" and decision["approvers"] == ["U0APPROVE5"]
    assert step_end(rotation, "rotate_key")["outputs"]["rotated_on_demand"] is True
    assert step_end(rotation, "rotate_secret")["outputs"]["changed"] is True
    assert "drill-only-not-a-real-password" not in "".join(
        str(r) for records in runs_of(result).values() for r in records
    )
    # the report shows every run and how it started
    assert len(report.runs) == 3 and "by a second alert (eventbridge)" in " ".join(report.runs)
    page = result.html.read_text()
    assert '<ul id="runs">' in page and "/clampdown run by U0LEAD0005" in page


@pytest.mark.drills("containment-release")
def test_containment_release_contains_then_restores(drill):
    result = drill("containment-release")
    check_report_files(result)
    report = result.report
    assert report.missed == [], (report.objectives, report.failures)
    assert result.exit_code == 0
    contain = ledger_of(result)
    assert contain[0]["run"]["trigger"]["source"] == "eventbridge"
    revoke = step_end(contain, "revoke")
    assert len(revoke["outputs"]["deactivated_keys"]) == 2
    release = runbook_run(result, "release-containment")
    rollback = step_end(release, "rollback")["outputs"]
    assert rollback["rolled_back_run"] == report.run_id
    assert len(rollback["restored"]) >= 3  # two keys reactivated, the quarantine policy removed
    assert rollback["still_in_place"] == []
    # the release is its own run in the report, and the rollback ledger is there too
    undo = runbook_run(result, "rollback")
    assert undo[0]["rollback_of"] == report.run_id and undo[-1]["status"] == "succeeded"
    assert any("release-containment" in line and "succeeded" in line for line in report.runs)
    access = next(o for o in report.objectives if o.id == "access_back")
    assert access.measured == "2 of 2 active"


@pytest.mark.drills(*drill_files(LIBRARY))
def test_every_shipped_runbook_is_exercised_by_a_drill(drill):
    """Computed from the runs the drills actually made, not from what the drill files say."""
    exercised: dict[str, list[str]] = {}
    for name in drill_files(LIBRARY):
        for records in runs_of(drill(name)).values():
            ran = any(r["type"] == "step.end" and r["status"] == "succeeded" for r in records)
            if ran and records[-1]["type"] == "run.end":
                exercised.setdefault(records[0]["run"]["runbook"], []).append(name)
    missing = runbook_names(LIBRARY) - NOT_DRILLED - set(exercised)
    assert not missing, f"no drill runs {sorted(missing)}; exercised: {exercised}"


# --- the new checkers can fail: scored on moto in-process, before and after the change -------

CHECKED = """\
apiVersion: clampdown/v1
kind: Drill
metadata: {name: checked, title: Checkers, family: recovery}
runbook: release-containment
roles:
  incident_lead: {name: Lee, slack_user: U0LEAD0001}
  approver: {name: Ann, slack_user: U0APPROVE1}
seed:
  users: [{name: svc, access_keys: 2}]
  kms_keys: [{alias: weights}]
  secrets: [{name: api-token, value: {username: api, password: old-value}}]
alert: {source: generic, payload: {id: x, title: x}}
objectives:
  - {id: access_back, kind: access_restored, user: svc}
  - {id: key_rotated, kind: kms_key_rotated, key: weights}
  - {id: token_rotated, kind: secret_rotated, secret: api-token}
  - {id: released, kind: runbook_completed, runbook: release-containment}
  - {id: thread, kind: slack_thread_complete, runbook: release-containment}
"""


def test_new_checkers_miss_until_the_change_is_made(mocked_aws, tmp_path: Path):
    import time
    from datetime import UTC, datetime

    import boto3

    from clampdown.app.drill.objectives import DrillFacts, RunFacts, score
    from clampdown.core.drill_library import load_drill
    from clampdown_aws.testing.seed import seed

    path = tmp_path / "checked.yaml"
    path.write_text(CHECKED, encoding="utf-8")
    spec, _ = load_drill(path)
    client = boto3.session.Session(region_name="us-east-1").client
    seeded = seed(spec.seed, datetime.now(UTC), client)
    iam, kms, sm = client("iam"), client("kms"), client("secretsmanager")
    keys = seeded.users["svc"]["access_keys"]
    iam.update_access_key(UserName="svc", AccessKeyId=keys[0], Status="Inactive")
    iam.put_user_policy(
        UserName="svc",
        PolicyName="clampdown-quarantine",
        PolicyDocument='{"Version": "2012-10-17", "Statement": '
        '[{"Effect": "Deny", "Action": "*", "Resource": "*"}]}',
    )
    facts = DrillFacts(drill=spec, seeded=seeded, alert_epoch=time.time() - 1, client=client)

    def verdicts() -> dict[str, tuple[bool, str]]:
        return {o.id: (o.met, o.reason) for o in score(facts)}

    before = verdicts()
    assert not any(met for met, _ in before.values()), before
    assert "still inactive" in before["access_back"][1]
    assert "no run of release-containment" in before["released"][1]
    assert "no run of release-containment" in before["thread"][1]

    iam.update_access_key(UserName="svc", AccessKeyId=keys[0], Status="Active")
    assert "still denies everything" in verdicts()["access_back"][1]
    iam.delete_user_policy(UserName="svc", PolicyName="clampdown-quarantine")
    kms.rotate_key_on_demand(KeyId=seeded.kms_keys["weights"]["id"])
    sm.put_secret_value(SecretId="api-token", SecretString='{"password": "new-value"}')
    end = {"type": "run.end", "status": "failed", "ts": "2025-01-01T00:00:00Z"}
    facts.runs = [RunFacts("r1", "release-containment", "/clampdown run by U0LEAD0001", [end])]
    after = verdicts()
    assert after["access_back"][0] and after["key_rotated"][0] and after["token_rotated"][0]
    assert after["released"] == (False, "run r1 failed; failed: none")
    assert "old-value" not in str(after) and "new-value" not in str(after)


@pytest.mark.drills("model-theft")
def test_a_drill_keeps_its_prefect_runs_out_of_the_real_prefect_database(drill, prefect_server):
    """The drill's flow runs go to a Prefect API of the drills' own, beside its workspace;
    the Prefect server real incidents use (here: the session's, named by PREFECT_API_URL)
    never sees them."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    result = drill("model-theft")
    run_id = result.report.run_id
    assert run_id
    database = result.workspace.parent / "prefect" / "prefect.db"  # the drills' own
    with contextlib.closing(sqlite3.connect(database)) as db:
        names = [row[0] for row in db.execute("SELECT name FROM flow_run")]
    assert any(name.endswith(run_id) for name in names), names
    with get_client(sync_client=True) as client:
        assert str(client.api_url).startswith(prefect_server.rstrip("/"))
        found = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(like_=run_id))
        )
    assert found == []


def test_interactive_drill_asks_the_terminal_and_scores_the_denial(
    prefect_server, in_drills_home, tmp_path: Path
) -> None:
    """``clampdown drill --interactive``: the person at the terminal decides (here: denies).

    The terminal denies the moment it is asked, so the run may end before the drill's
    PagerDuty page (T+2 s) arrives; a finished run is not joined (docs/triggers.md), so
    that page then starts contain-iam-user, which asks again. The input answers both:
    with one answer only, the second question met the end of input and the drill was
    aborted without a report (CI of stop 25).
    """
    from typer.testing import CliRunner

    from clampdown.app.cli import app

    result = CliRunner().invoke(
        app,
        ["drill", "model-theft", "--interactive", "--report-dir", str(tmp_path / "report")],
        input="deny\nnot in a drill, please\n" * 2,
    )
    assert result.exit_code == 1, result.output  # containment denied: objectives missed
    assert result.output.count("approve or deny?") in (1, 2), result.output
    # the question shows what is decided, as `clampdown approve` does, before the prompt
    asked = result.output[: result.output.index("approve or deny?")]
    assert "Approval needed in run" in asked and "step approve_containment" in asked, asked
    assert "Contain suspected model theft: revoke arn:aws:iam::" in asked, asked
    assert "  revoke (aws.iam.revoke_credentials, reversible): {" in asked, asked
    assert '"principal_arn": "arn:aws:iam::' in asked, asked
    assert (tmp_path / "report" / "report.md").is_file(), result.output
    report = (tmp_path / "report" / "report.md").read_text()
    assert "not in a drill, please" in report, result.output  # the drill's lines say why not
    assert "missed" in report
    # sent once the run had saved its request, and taken at once: no failed delivery
    assert "could not be delivered" not in report and "was clicked in Slack" not in report, report
