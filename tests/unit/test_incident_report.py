"""The incident report of a run, from ledger fixtures: decisions and denials, the three
times, changes and their rollback state, evidence, scoping and blind spots, escaping of
hostile ledger text in Markdown, HTML and Slack; the evidence package and its checks."""

from __future__ import annotations

import io
import json
import tarfile
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from clampdown.core import ledger as ledger_mod
from clampdown.core.incident_report import build_incident_report, load_incident_report
from clampdown.core.incident_report_package import (
    build_package,
    chain_of_custody,
    verify_package,
)
from clampdown.core.incident_report_render import short_summary, to_html, to_json, to_markdown
from clampdown.core.ledger import Ledger

START = datetime(2026, 3, 14, 9, 26, 53, tzinfo=UTC)
CONTAIN = {"aws.iam.revoke_credentials", "aws.s3.lock_model_artifacts"}
GATES = {"approval.request"}
KEY_HASH = "3f" * 32
HOSTILE = "<script>alert('x')</script> | `rm` <img src=x onerror=alert(1)>\nnext"


def ts(seconds: float) -> str:
    return (START + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


SCOPE_OUTPUTS = {
    "principal": "arn:aws:iam::123456789012:user/ml-pipeline-ci",
    "window_start": "2026-03-14T08:00:00Z",
    "window_end": "2026-03-14T09:30:00Z",
    "objects": [
        {
            "bucket": "acme-model-artifacts",
            "key": "models/fraud-detector-v3/model.tar.gz",
            "version_id": "v3weights",
            "reads": 12,
            "bytes_out": 3145728,
            "first_access": "2026-03-14T08:45:00Z",
            "last_access": "2026-03-14T08:45:11Z",
            "source_ips": ["203.0.113.66"],
            "user_agents": ["aws-cli/2.15.0"],
        }
    ],
    "models": [
        {
            "model": "fraud-detector-v3",
            "bucket": "acme-model-artifacts",
            "prefix": "models/fraud-detector-v3/",
            "objects": 1,
            "bytes_out": 3145728,
            "first_access": "2026-03-14T08:45:00Z",
            "last_access": "2026-03-14T08:45:11Z",
        }
    ],
    "totals": {"objects": 1, "bytes_out": 3145728, "events": 12, "source_ips": 1},
    "management_events": [{"event": "ListBuckets", "time": "2026-03-14T08:36:00Z"}],
    "blind_spots": [
        {"kind": "data_events_off", "detail": "no S3 data events for acme-datasets"},
        {"kind": "gap", "detail": "no trail files 08:00-09:00 us-west-2"},
    ],
    "confidence": "medium",
    "confidence_reason": "one bucket without data events",
    "summary": "1 object (3145728 bytes) of fraud-detector-v3 read from 203.0.113.66",
    "objects_total": 3,
    "objects_truncated": True,
    "engine": "duckdb",
    "files_scanned": 4,
    "records_scanned": 1200,
    "results_uri": "s3://evidence/incidents/a1b2c3d4e5f6/scope/result.json",
    "results_sha256": "9a" * 32,
}


def run_records(*, denied: bool = False, hostile: bool = False) -> list[dict[str, Any]]:
    """A contain-model-theft run as its ledger records it (with ``ts``)."""
    reason = HOSTILE if hostile else "training job running"
    records: list[dict[str, Any]] = [
        {
            "type": "run.start",
            "ts": ts(0),
            "run": {
                "id": "a1b2c3d4e5f6",
                "runbook": "contain-model-theft",
                "trigger": {"type": "manual", "user": "U0LEAD0001"},
                "drill": False,
            },
            "inputs": {"principal_arn": "arn:aws:iam::123456789012:user/ml-pipeline-ci"},
        },
        {"type": "slack.posted", "ts": ts(0.8), "channel": "C0INC", "message_ts": "1.2"},
        {
            "type": "step.start",
            "ts": ts(0.5),
            "step": "trail",
            "uses": "aws.evidence.snapshot_cloudtrail",
        },
        {
            "type": "step.end",
            "ts": ts(2.0),
            "step": "trail",
            "status": "succeeded",
            "outputs": {
                "manifest_uri": "s3://evidence/incidents/a1b2c3d4e5f6/manifest.json",
                "objects": [
                    {
                        "key": "incidents/a1b2c3d4e5f6/trail/ct.json.gz",
                        "sha256": KEY_HASH,
                        "size": 531,
                    }
                ],
            },
            "undo": [],
        },
        {
            "type": "step.start",
            "ts": ts(2.1),
            "step": "scope",
            "uses": "aws.forensics.scope_exfiltration",
        },
        {
            "type": "step.end",
            "ts": ts(3.0),
            "step": "scope",
            "status": "succeeded",
            "outputs": SCOPE_OUTPUTS,
        },
        {"type": "step.start", "ts": ts(0.6), "step": "approve", "uses": "approval.request"},
        {"type": "approval.request", "ts": ts(0.7), "step": "approve"},
        {
            "type": "approval.decision",
            "ts": ts(4.0),
            "step": "approve",
            "approver": "U0LEAD0001",
            "decision": "approve",
            "source": "slack",
            "accepted": False,
            "refusal": "the run's starter cannot approve it (two-person rule)",
        },
    ]
    if denied:
        return [
            *records,
            {
                "type": "approval.decision",
                "ts": ts(6.0),
                "step": "approve",
                "approver": "U0APPROVE3",
                "decision": "deny",
                "reason": reason,
                "source": "terminal",
                "accepted": True,
            },
            {
                "type": "approval.end",
                "ts": ts(6.1),
                "step": "approve",
                "outcome": "denied",
                "denied_by": "U0APPROVE3",
                "reason": reason,
            },
            {"type": "step.end", "ts": ts(6.1), "step": "approve", "status": "succeeded"},
            {
                "type": "step.skip",
                "ts": ts(6.2),
                "step": "revoke",
                "uses": "aws.iam.revoke_credentials",
                "reason": "approval 'approve' denied",
            },
            {
                "type": "run.end",
                "ts": ts(6.3),
                "status": "denied",
                "evidence": "s3://evidence/incidents/a1b2c3d4e5f6/manifest.json",
            },
        ]
    return [
        *records,
        {
            "type": "approval.decision",
            "ts": ts(5.0),
            "step": "approve",
            "approver": "U0APPROVE1",
            "decision": "approve",
            "reason": reason,
            "source": "slack",
            "accepted": True,
        },
        {
            "type": "approval.end",
            "ts": ts(5.1),
            "step": "approve",
            "outcome": "approved",
            "approvers": ["U0APPROVE1"],
        },
        {"type": "step.end", "ts": ts(5.1), "step": "approve", "status": "succeeded"},
        {
            "type": "step.start",
            "ts": ts(5.2),
            "step": "revoke",
            "uses": "aws.iam.revoke_credentials",
        },
        {
            "type": "step.start",
            "ts": ts(5.2),
            "step": "lock",
            "uses": "aws.s3.lock_model_artifacts",
        },
        {
            "type": "step.attempt_failed",
            "ts": ts(5.5),
            "step": "lock",
            "error": "Throttling",
            "undo": [
                {
                    "description": "restore the bucket policy of s3://acme-model-artifacts",
                    "op": "restore_bucket_policy",
                    "bucket": "acme-model-artifacts",
                    "policy_before": '{"Statement": ["a very long saved document"]}',
                }
            ],
        },
        {"type": "step.end", "ts": ts(6.0), "step": "lock", "status": "succeeded", "undo": []},
        {
            "type": "step.end",
            "ts": ts(7.5),
            "step": "revoke",
            "status": "succeeded",
            "undo": [
                {
                    "description": "Delete the quarantine policy clampdown-quarantine from user ml-pipeline-ci",
                    "op": "delete_user_policy",
                    "user_name": "ml-pipeline-ci",
                    "policy_name": "clampdown-quarantine",
                },
                {
                    "description": "Re-activate access key AKIAEXAMPLE0001 of user ml-pipeline-ci",
                    "op": "activate_access_key",
                    "user_name": "ml-pipeline-ci",
                    "access_key_id": "AKIAEXAMPLE0001",
                    "previous_document": {"should": "not be shown"},
                },
            ],
        },
        {
            "type": "run.end",
            "ts": ts(7.6),
            "status": "succeeded",
            "evidence": "s3://evidence/incidents/a1b2c3d4e5f6/manifest.json",
        },
    ]


def rollback_records(failed_key: bool) -> list[dict[str, Any]]:
    """A rollback run of a1b2c3d4e5f6 that undid the quarantine policy and (maybe not) the key."""
    return [
        {
            "type": "run.start",
            "ts": ts(100),
            "run": {
                "id": "rb0000000001",
                "runbook": "rollback",
                "trigger": {"type": "rollback", "of": "a1b2c3d4e5f6"},
            },
            "rollback_of": "a1b2c3d4e5f6",
        },
        {
            "type": "undo.start",
            "ts": ts(101),
            "step": "revoke",
            "description": "Re-activate access key AKIAEXAMPLE0001 of user ml-pipeline-ci",
        },
        {
            "type": "undo.end",
            "ts": ts(102),
            "step": "revoke",
            "status": "failed" if failed_key else "succeeded",
            "error": "AccessDenied",
        },
        {
            "type": "undo.start",
            "ts": ts(103),
            "step": "revoke",
            "description": "Delete the quarantine policy clampdown-quarantine from user ml-pipeline-ci",
        },
        {"type": "undo.end", "ts": ts(104), "step": "revoke", "status": "succeeded"},
        {"type": "run.end", "ts": ts(105), "status": "failed" if failed_key else "succeeded"},
    ]


def report(**kw: Any):
    records = run_records(denied=kw.pop("denied", False), hostile=kw.pop("hostile", False))
    return build_incident_report(records, containment=CONTAIN, approvals=GATES, **kw)


# --- the model ---------------------------------------------------------------------------------


def test_decisions_carry_names_reasons_and_refusals():
    r = report(names={"U0APPROVE1": "Sam Okafor"})
    refused, counted = r.decisions
    assert (refused.approver, refused.accepted, refused.name) == ("U0LEAD0001", False, None)
    assert "two-person rule" in refused.refusal
    assert counted.who == "Sam Okafor (U0APPROVE1)" and counted.reason == "training job running"
    assert counted.at == pytest.approx(5.0)
    assert [g.outcome for g in r.gates] == ["approved"]


def test_the_three_times_follow_their_definitions():
    t = report().times
    assert t.notify == pytest.approx(0.8)  # the thread's header was posted (slack.posted)
    assert t.approve == pytest.approx(5.1)  # approval.end approved, not the decision at 5.0
    assert t.contain == pytest.approx(7.5)  # the last containment step done
    assert t.denied is None


def test_a_denial_is_not_an_approval():
    r = report(denied=True)
    assert r.times.approve is None and r.times.denied == pytest.approx(6.1)
    assert r.times.contain is None  # nothing contained
    assert r.decisions[-1].denial
    assert [(m.kind, m.label) for m in r.markers][-1] == ("deny", "denied by U0APPROVE3")
    md = to_markdown(r)
    assert "| — (a denial at T+6.1s) |" in md
    assert "| ❌ deny | U0APPROVE3 |" in md


def test_a_failed_containment_step_means_not_contained():
    records = run_records()
    for record in records:
        if record.get("step") == "lock" and record["type"] == "step.end":
            record["status"] = "failed"
    r = build_incident_report(records, containment=CONTAIN, approvals=GATES)
    assert r.times.contain is None
    assert "step lock (aws.s3.lock_model_artifacts) failed" in " ".join(r.failures)


def test_changes_name_what_was_changed_and_leave_saved_documents_out():
    r = report()
    by_undo = {c.undo: c for c in r.changes}
    key = by_undo["Re-activate access key AKIAEXAMPLE0001 of user ml-pipeline-ci"]
    assert key.targets == (("user_name", "ml-pipeline-ci"), ("access_key_id", "AKIAEXAMPLE0001"))
    assert key.uses == "aws.iam.revoke_credentials" and key.rollback.state == "in place"
    bucket = by_undo["restore the bucket policy of s3://acme-model-artifacts"]
    assert bucket.failed_attempt and bucket.targets == (("bucket", "acme-model-artifacts"),)
    assert len(r.changes) == 3
    md = to_markdown(r)
    assert "should" not in md and "a very long saved document" not in md
    assert "user_name=ml-pipeline-ci, policy_name=clampdown-quarantine" in md


@pytest.mark.parametrize("failed_key", [False, True])
def test_rollback_state_comes_from_the_rollback_ledgers(failed_key: bool):
    r = report(rollbacks=[rollback_records(failed_key)])
    states = {c.undo.split(" ")[0]: c.rollback for c in r.changes}
    assert (
        states["Delete"].state == "rolled back" and states["Delete"].rollback_id == "rb0000000001"
    )
    assert states["restore"].state == "in place"  # the rollback did not touch it
    key = states["Re-activate"]
    if failed_key:
        assert key.state == "rollback failed" and "AccessDenied" in key.text
    else:
        assert key.state == "rolled back"
    assert r.rollbacks == ["rb0000000001"]
    html = to_html(r)
    assert 'class="rb rolled-back"' in html


def test_evidence_keeps_the_full_hash():
    r = report()
    (item,) = r.evidence
    assert item.sha256 == KEY_HASH and item.size == 531
    assert r.manifest_uri == "s3://evidence/incidents/a1b2c3d4e5f6/manifest.json"
    assert f"`{KEY_HASH}`" in to_markdown(r) and KEY_HASH in to_html(r)


def test_scoping_table_and_blind_spots_are_shown_prominently():
    r = report()
    (scope,) = r.scoping
    assert scope.confidence == "medium" and len(scope.blind_spots) == 2
    md = to_markdown(r)
    assert "> **⚠ 2 blind spot(s) in the scoping**" in md
    assert "> - data_events_off: no S3 data events for acme-datasets" in md
    assert (
        "| acme-model-artifacts | models/fraud-detector-v3/model.tar.gz | v3weights | 12 | 3145728 |"
        in md
    )
    assert (
        "| fraud-detector-v3 | acme-model-artifacts | models/fraud-detector-v3/ | 1 | 3145728 |"
        in md
    )
    html = to_html(r)
    tags = _tags(html)
    ids = {a.get("id") for _t, a in tags}
    assert {"blind-banner", "blind-spots", "scoping-objects", "scoping-models", "changes"} <= ids
    # the banner comes before the timeline: blind spots are the first thing read
    assert html.index('id="blind-banner"') < html.index('id="timeline"')


def test_scoping_says_when_the_ledger_holds_part_of_the_objects_and_how_it_was_scanned():
    md = to_markdown(report())
    assert (
        "**Note: showing 1 of 3 objects; all of them are in "
        "s3://evidence/incidents/a1b2c3d4e5f6/scope/result.json**" in md
    )
    assert "Scan: engine duckdb; files scanned 4; records scanned 1200; full result " in md
    assert f"(SHA-256 {'9a' * 32})" in md
    assert "1 object (3145728 bytes) of fraud-detector-v3 read from 203.0.113.66" in md
    assert 'class="truncated"' in to_html(report())


def test_scoping_is_found_by_its_outputs_shape_too():
    records = run_records()
    for record in records:
        if record.get("uses") == "aws.forensics.scope_exfiltration":
            record["uses"] = "acme.custom_scope"
    r = build_incident_report(records, containment=CONTAIN, approvals=GATES)
    assert [s.step for s in r.scoping] == ["scope"]


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def _tags(page: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = _Tags()
    parser.feed(page)
    return parser.tags


def test_hostile_ledger_text_is_escaped_everywhere():
    r = report(hostile=True)
    page = to_html(r)
    tags = {t for t, _ in _tags(page)}
    assert "script" not in tags and "img" not in tags
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "<img" not in page
    md = to_markdown(r)
    assert "<script>" not in md and "&lt;script&gt;" in md
    row = next(line for line in md.splitlines() if "U0APPROVE1" in line and "✅" in line)
    assert row.count(" | ") == 6  # the reason's pipe is escaped: the row keeps its 7 cells
    assert "\\|" in row and "`rm`" not in row
    said = short_summary(r)
    assert "<script>" not in said and "<img" not in said and "&lt;img" in said
    assert "<@U0APPROVE1>" in said  # the one mention is ours


def test_html_has_no_external_asset():
    page = to_html(report())
    tags = _tags(page)
    assert not [t for t, _ in tags if t in ("script", "link", "img", "iframe")]
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in page and "url(" not in page


def test_json_is_the_same_report_as_data():
    data = json.loads(to_json(report()))
    assert data["run_id"] == "a1b2c3d4e5f6" and data["status"] == "succeeded"
    assert data["times"] == {
        "approve": pytest.approx(5.1),
        "contain": pytest.approx(7.5),
        "denied": None,
        "notify": pytest.approx(0.8),
    }
    assert data["scoping"][0]["outputs"]["confidence"] == "medium"
    assert data["evidence"][0]["sha256"] == KEY_HASH


def test_a_ledger_without_run_start_is_refused_clearly():
    with pytest.raises(ValueError, match=r"no run\.start"):
        build_incident_report([{"type": "step.start", "ts": ts(0)}])


# --- a real ledger file ----------------------------------------------------------------------


def write_ledger(
    path: Path, records: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Write ``records`` through the real Ledger (hash chain), each at its own ``ts``."""
    ledger = Ledger(path)
    for record in records:
        fields = {k: v for k, v in record.items() if k not in ("type", "ts")}
        monkeypatch.setattr(ledger_mod, "now", lambda at=record["ts"]: at)
        ledger.append(record["type"], **fields)
    ledger.close()


def test_load_finds_rollbacks_and_checks_the_chain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    runs = tmp_path / "runs"
    write_ledger(runs / "a1b2c3d4e5f6" / "ledger.jsonl", run_records(), monkeypatch)
    write_ledger(runs / "rb0000000001" / "ledger.jsonl", rollback_records(False), monkeypatch)
    write_ledger(runs / "other0000001" / "ledger.jsonl", run_records(denied=True), monkeypatch)
    r = load_incident_report(runs / "a1b2c3d4e5f6" / "ledger.jsonl")
    assert r.chain is not None and r.chain.ok and r.chain.complete
    assert r.rollbacks == ["rb0000000001"]
    assert {c.rollback.state for c in r.changes} == {"rolled back", "in place"}
    # the installed registry says which actions contain
    assert next(s for s in r.steps if s.id == "revoke").containment
    # a changed byte: the report says the chain is broken
    path = runs / "a1b2c3d4e5f6" / "ledger.jsonl"
    path.write_text(path.read_text().replace("ml-pipeline-ci", "ml-pipeline-cj", 1))
    broken = load_incident_report(path)
    assert broken.chain is not None and not broken.chain.ok
    assert "Ledger chain: BROKEN" in to_markdown(broken)


# --- the evidence package --------------------------------------------------------------------


def package_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[bytes, bytes]:
    path = tmp_path / "runs" / "a1b2c3d4e5f6" / "ledger.jsonl"
    write_ledger(path, run_records(), monkeypatch)
    r = load_incident_report(path)
    raw = path.read_bytes()
    records = [json.loads(line) for line in raw.splitlines()]
    custody = chain_of_custody(
        r, records, raw, exported_by="dana", exported_at=START + timedelta(hours=2)
    )
    return build_package(r, raw, custody=custody, created_at=START + timedelta(hours=2)), raw


def rewrite(data: bytes, change: dict[str, bytes | None]) -> bytes:
    """The package with members replaced (None: removed) or added, manifest untouched."""
    members = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for info in tar:
            handle = tar.extractfile(info)
            members.append((info.name, handle.read() if handle else b""))
    names = [n for n, _ in members]
    members = [(n, change.get(n, b)) for n, b in members if change.get(n, b) is not None]
    members += [(n, b) for n, b in change.items() if n not in names and b is not None]
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, body in members:
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return out.getvalue()


def test_package_holds_every_part_and_verifies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    data, _raw = package_bytes(tmp_path, monkeypatch)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        names = tar.getnames()
        custody = json.loads(tar.extractfile("chain-of-custody.json").read())  # type: ignore[union-attr]
    assert names == [
        "ledger.jsonl",
        "report.md",
        "report.html",
        "report.json",
        "scoping/scope.json",
        "chain-of-custody.json",
        "package-manifest.json",
    ]
    assert custody["exported_by"] == "dana" and custody["ledger"]["chain_ok"]
    assert custody["evidence"][0]["sha256"] == KEY_HASH
    whos = {(e["who"], e["what"]) for e in custody["events"]}
    assert ("U0LEAD0001", "started contain-model-theft") in whos
    assert ("U0APPROVE1", "approve approve via slack") in whos
    assert ("U0LEAD0001", "approve approve via slack (not counted)") in whos
    check = verify_package(data)
    assert check.as_built, check.lines
    assert not check.trusted  # no judge of its signatures here: never trusted unchecked
    assert check.run_id == "a1b2c3d4e5f6"
    again, _ = package_bytes(tmp_path / "again", monkeypatch)
    assert again == data  # deterministic: the same inputs give the same bytes


def test_tampered_packages_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    data, _raw = package_bytes(tmp_path, monkeypatch)
    changed = verify_package(rewrite(data, {"report.md": b"# nothing happened\n"}))
    assert not changed.as_built and any(
        line.startswith("CHANGED  report.md") for line in changed.lines
    )
    extra = verify_package(rewrite(data, {"notes.txt": b"added later"}))
    assert not extra.as_built and any("EXTRA    notes.txt" in line for line in extra.lines)
    missing = verify_package(rewrite(data, {"scoping/scope.json": None}))
    assert not missing.as_built and "MISSING  scoping/scope.json" in missing.lines
    assert (
        "no package-manifest.json"
        in verify_package(rewrite(data, {"package-manifest.json": None})).message
    )
    assert "not a readable .tar.gz" in verify_package(b"not a tarball").message


def test_a_consistent_forgery_is_caught_by_the_ledger_chain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Someone edits the ledger and recomputes the package manifest and custody to match:
    the ledger's own hash chain still shows the edited record."""
    import hashlib

    data, raw = package_bytes(tmp_path, monkeypatch)
    forged = raw.replace(b"U0APPROVE1", b"U0APPROVE9", 1)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        custody = json.loads(tar.extractfile("chain-of-custody.json").read())  # type: ignore[union-attr]
        listing = json.loads(tar.extractfile("package-manifest.json").read())  # type: ignore[union-attr]
    custody["ledger"]["sha256"] = hashlib.sha256(forged).hexdigest()
    custody_bytes = json.dumps(custody).encode()
    bodies = {"ledger.jsonl": forged, "chain-of-custody.json": custody_bytes}
    for member in listing["members"]:
        if member["name"] in bodies:
            member["sha256"] = hashlib.sha256(bodies[member["name"]]).hexdigest()
            member["size"] = len(bodies[member["name"]])
    check = verify_package(
        rewrite(data, {**bodies, "package-manifest.json": json.dumps(listing).encode()})
    )
    assert not check.as_built and not check.trusted
    assert any(line.startswith("BROKEN   ledger chain") for line in check.lines)


# --- names from the member directory -----------------------------------------------------------


class FakeSlack:
    def __init__(self, users: dict[str, dict[str, Any]]) -> None:
        self.users = users

    def users_info(self, user: str) -> dict[str, Any]:
        if user not in self.users:
            raise RuntimeError("user_not_found")
        return {"user": self.users[user]}


def test_slack_directory_names_people_and_keeps_ids_it_cannot_name():
    from clampdown_slack.directory import SlackMemberDirectory

    directory = SlackMemberDirectory(
        FakeSlack(
            {
                "U0APPROVE1": {"name": "sam", "profile": {"real_name": "Sam Okafor"}},
                "U0LEAD0001": {"name": "dana", "profile": {"real_name": " "}},
            }
        )
    )
    assert directory.name_of("U0APPROVE1") == "Sam Okafor"
    assert directory.name_of("U0LEAD0001") == "dana"  # no real name: the handle
    assert directory.name_of("U0GONE0001") is None


def test_people_names_never_fails_the_report(monkeypatch: pytest.MonkeyPatch):
    from clampdown.app import cli_report
    from clampdown.core import members

    class Broken:
        def name_of(self, user_id: str) -> str:
            raise RuntimeError("slack down")

    class Named:
        def name_of(self, user_id: str) -> str | None:
            return {"U0APPROVE1": "Sam Okafor"}.get(user_id)

    class Old:  # a directory from before name_of existed
        def members(self, groups: tuple[str, ...]) -> set[str]:
            return set()

    monkeypatch.setattr(members, "member_directories", lambda conf: [Old(), Broken(), Named()])
    names = cli_report.people_names(["U0APPROVE1", "U0LEAD0001"], conf=None)  # type: ignore[arg-type]
    assert names == {"U0APPROVE1": "Sam Okafor"}


# --- the chart's label layout ------------------------------------------------------------------


def test_chart_labels_are_laid_out_in_lanes_without_overlap():
    """Markers close together with long labels (the layout the old chart drew on top of each
    other): by the layout's own width estimate, no two labels share a lane and a span, and
    none leaves the chart. (tests/integration/test_report.py measures them in Chromium.)"""
    import re

    from clampdown.core.report import Marker, StepSpan
    from clampdown.core.report_chart import text_width, timeline_svg

    markers = [
        Marker(0.1, "second alert (pagerduty): HTTP 200 joined a1b2c3d4e5f6", "event"),
        Marker(0.2, "approve by U0LEAD0001 not counted", "refused"),
        Marker(0.3, "Slack server_error for 20s", "event"),
        Marker(9.9, "denied by Tomasz Nowak (U0APPROVE3)", "deny"),
        Marker(9.95, "the attacker minted key AKIA0000000000000002", "event"),
    ]
    steps = [StepSpan("approve", "approval.request", "succeeded", 0.1, 9.9, approval=True)]
    svg = timeline_svg(steps, markers, origin="alert (guardduty)", contained_at=0.4, width=1000)
    boxes = []
    for attrs, text in re.findall(r'<text class="label"([^>]*)>([^<]*)</text>', svg):
        x = re.search(r' x="([\d.]+)"', attrs).group(1)  # type: ignore[union-attr]
        y = re.search(r' y="(\d+)"', attrs).group(1)  # type: ignore[union-attr]
        end = 'text-anchor="end"' in attrs
        w = text_width(text.replace("&#x27;", "'"))
        left = float(x) - w if end else float(x)
        boxes.append((int(y), left, left + w))
    assert len(boxes) == 7  # T+0, contained, five markers
    assert all(a >= 0 and b <= 1000 for _y, a, b in boxes)
    for i, (y1, a1, b1) in enumerate(boxes):
        for y2, a2, b2 in boxes[i + 1 :]:
            assert y1 != y2 or b1 <= a2 or b2 <= a1, (boxes[i], (y2, a2, b2))
    assert 'class="marker marker-deny"' in svg and 'class="marker marker-refused"' in svg


def test_action_kinds_of_a_ledger_load_only_the_actions_it_uses(monkeypatch):
    """The report at a run's end classifies the actions its steps used, and loads no other:
    a ledger naming one containment action, one gate and one uninstalled action."""
    from clampdown.core import actions
    from clampdown.core.incident_report import action_kinds

    loaded: list[str] = []
    real_get = actions.Registry.get

    def counting_get(self, name):
        loaded.append(name)
        return real_get(self, name)

    monkeypatch.setattr(actions.Registry, "get", counting_get)
    records = [
        {"type": "step.start", "step": "a", "uses": "aws.iam.revoke_credentials"},
        {"type": "step.start", "step": "b", "uses": "approval.request"},
        {"type": "step.start", "step": "c", "uses": "no.such.action"},
        {"type": "run.start"},
    ]
    containment, gates = action_kinds(records)
    assert containment == {"aws.iam.revoke_credentials"} and gates == {"approval.request"}
    assert sorted(loaded) == ["approval.request", "aws.iam.revoke_credentials", "no.such.action"]
    everything, all_gates = action_kinds()
    assert containment < everything and gates <= all_gates
