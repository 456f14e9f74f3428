"""``clampdown report`` and ``clampdown export`` from the command line: a run's signed ledger
in CLAMPDOWN_HOME, its evidence in an Object Lock bucket (moto in-process), the package
uploaded and verified, and tampered packages refused by ``clampdown verify``. Forged
ledgers and forged packages: tests/integration/test_export_forged.py."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from clampdown.app.cli import app
from tests.ledger_forgery import write_signed
from tests.unit.test_incident_report import (
    KEY_HASH,
    rewrite,
    rollback_records,
    run_records,
)

runner = CliRunner()
RUN = "a1b2c3d4e5f6"
BUCKET = "evidence"
PACKAGE = f"clampdown-{RUN}-evidence.tar.gz"
PACKAGE_URI = f"s3://{BUCKET}/incidents/{RUN}/exports/{PACKAGE}"


@pytest.fixture
def signer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The ledger key (a local Ed25519 key outside CLAMPDOWN_HOME), configured for the CLI."""
    from clampdown.core.ledger_signing import generate_local_key, load_local_key

    path = generate_local_key(tmp_path / "keys" / "ledger.pem")
    monkeypatch.setenv("CLAMPDOWN_LEDGER_KEY", str(path))
    monkeypatch.delenv("CLAMPDOWN_LEDGER_KMS_KEY_ID", raising=False)
    return load_local_key(path, tmp_path / "clampdown-home")


def write_ledger(path: Path, records: list[dict[str, Any]], monkeypatch: Any, signer: Any) -> None:
    run_id = records[0]["run"]["id"]
    write_signed(path, records, signer, run_id, monkeypatch)


@pytest.fixture
def home(clampdown_home: Path, monkeypatch: pytest.MonkeyPatch, signer: Any) -> Path:
    """A finished, signed run, and a rollback of it, in CLAMPDOWN_HOME (no Slack: ids stay
    ids)."""
    monkeypatch.delenv("CLAMPDOWN_SLACK_BOT_TOKEN", raising=False)
    monkeypatch.delenv("CLAMPDOWN_EVIDENCE_BUCKET", raising=False)
    monkeypatch.setenv("CLAMPDOWN_EVIDENCE_LOCK_MODE", "GOVERNANCE")  # moto, and a test: not
    monkeypatch.setenv("CLAMPDOWN_EVIDENCE_RETENTION_DAYS", "30")  # COMPLIANCE for a year
    write_ledger(clampdown_home / "runs" / RUN / "ledger.jsonl", run_records(), monkeypatch, signer)
    write_ledger(
        clampdown_home / "runs" / "rb0000000001" / "ledger.jsonl",
        rollback_records(False),
        monkeypatch,
        signer,
    )
    return clampdown_home


@pytest.fixture
def evidence(mocked_aws: None, home: Path) -> Any:
    """The run's evidence in an Object Lock bucket, written by the store the run uses."""
    import boto3

    from clampdown_aws.evidence_store import EvidenceStore

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET, ObjectLockEnabledForBucket=True)
    store = EvidenceStore(s3, BUCKET, RUN, retention_days=30, lock_mode="GOVERNANCE")
    store.put("trail/ct.json.gz", [b"trail bytes"])
    store.put("ledger.jsonl", [(home / "runs" / RUN / "ledger.jsonl").read_bytes()])
    store.write_manifest()
    return s3


def invoke(*args: str) -> Any:
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_report_in_each_format(home: Path, tmp_path: Path):
    md = invoke("report", RUN)
    assert md.exit_code == 0, md.output
    assert md.output.startswith(f"# Incident report: run {RUN} of contain-model-theft")
    assert "rolled back by run rb0000000001" in md.output
    assert "> **⚠ 2 blind spot(s) in the scoping**" in md.output
    assert (
        "Ledger: **OK: intact, signed (no evidence bucket configured)**: chain intact" in md.output
    )
    assert "warning" not in md.output
    page = tmp_path / "report.html"
    html = invoke("report", RUN, "--format", "html", "-o", str(page))
    assert html.exit_code == 0 and page.read_text().startswith("<!DOCTYPE html>")
    data = json.loads(invoke("report", RUN, "--format", "json").stdout)
    assert data["run_id"] == RUN and data["rollbacks"] == ["rb0000000001"]
    assert data["verdict"]["ok"] and data["verdict"]["status"] == "intact"


def test_report_errors_say_what_to_do(home: Path, tmp_path: Path):
    unknown = runner.invoke(app, ["report", "ffffffffffff"])
    assert unknown.exit_code == 1
    assert "no ledger for run 'ffffffffffff'" in unknown.output and "hint:" in unknown.output
    odd = runner.invoke(app, ["report", "../../etc"])
    assert odd.exit_code == 1 and "is not a run id" in odd.output
    nowhere = runner.invoke(app, ["report", RUN, "-o", str(tmp_path / "no" / "such" / "r.md")])
    assert nowhere.exit_code == 1 and "cannot write" in nowhere.output
    bad = runner.invoke(app, ["report", RUN, "--format", "pdf"])
    assert bad.exit_code == 2 and "pdf" in bad.output


def test_export_uploads_under_object_lock_and_verifies(evidence: Any, tmp_path: Path):
    local = tmp_path / PACKAGE
    result = invoke("export", RUN, "--bucket", BUCKET, "-o", str(local))
    assert result.exit_code == 0, result.output
    assert f"package: {PACKAGE_URI}" in result.output
    assert "Object Lock GOVERNANCE until" in result.output, result.output
    assert "verified after upload" in result.output
    head = evidence.head_object(Bucket=BUCKET, Key=PACKAGE_URI.split("/", 3)[3])
    assert head["ObjectLockMode"] == "GOVERNANCE"
    # the package's evidence names each object's version and retention, read from S3
    with tarfile.open(local, mode="r:gz") as tar:
        custody = json.loads(tar.extractfile("chain-of-custody.json").read())  # type: ignore[union-attr]
        names = tar.getnames()
    assert "evidence-manifest.json" in names and "scoping/scope.json" in names
    entries = {e["key"]: e for e in custody["evidence"]}
    trail = entries[f"incidents/{RUN}/trail/ct.json.gz"]
    assert trail["version_id"] and trail["lock_mode"] == "GOVERNANCE" and trail["retain_until"]
    assert entries[f"incidents/{RUN}/trail/ct.json.gz"]["sha256"] != KEY_HASH  # S3's own
    assert any("rollback rb0000000001" in e["what"] for e in custody["events"])

    ok = invoke("verify", PACKAGE_URI)
    assert ok.exit_code == 0, ok.output
    assert "Object Lock GOVERNANCE" in ok.output and "OK" in ok.output
    assert invoke("verify", str(local)).exit_code == 0


def test_verify_refuses_a_tampered_package(evidence: Any, tmp_path: Path):
    local = tmp_path / PACKAGE
    assert invoke("export", RUN, "--bucket", BUCKET, "-o", str(local)).exit_code == 0
    forged = tmp_path / f"forged-{PACKAGE}"
    forged.write_bytes(rewrite(local.read_bytes(), {"report.md": b"# all fine, nothing taken\n"}))
    result = runner.invoke(app, ["verify", str(forged)])
    assert result.exit_code == 1
    assert "CHANGED  report.md" in result.output and "TAMPERED" in result.output
    # a new version over the locked one in S3: the hash recorded at upload gives it away
    key = PACKAGE_URI.split("/", 3)[3]
    evidence.put_object(Bucket=BUCKET, Key=key, Body=forged.read_bytes())
    remote = runner.invoke(app, ["verify", PACKAGE_URI])
    assert remote.exit_code == 1 and "TAMPERED" in remote.output


def test_export_without_a_bucket_says_what_to_do(home: Path, tmp_path: Path):
    result = runner.invoke(app, ["export", RUN])
    assert result.exit_code == 1
    assert "no evidence bucket to export to" in result.output and "--bucket" in result.output
    local = tmp_path / PACKAGE
    alone = runner.invoke(app, ["export", RUN, "-o", str(local)])
    assert alone.exit_code == 0, alone.output
    assert "not under Object Lock" in alone.output
    assert invoke("verify", str(local)).exit_code == 0


def test_export_to_a_missing_bucket_is_a_message(mocked_aws: None, home: Path):
    result = runner.invoke(app, ["export", RUN, "--bucket", "no-such-bucket"])
    assert result.exit_code == 1
    assert "error:" in result.output and "Traceback" not in result.output


def test_export_packs_the_manifest_version_the_ledger_pinned(
    mocked_aws: None,
    clampdown_home: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    signer: Any,
):
    """run.end pins the manifest's version and SHA-256: the package holds that version even
    when a newer one was written over it, and a pin that does not match is said loudly."""
    import boto3

    from clampdown_aws.evidence_store import EvidenceStore

    monkeypatch.setenv("CLAMPDOWN_EVIDENCE_LOCK_MODE", "GOVERNANCE")
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET, ObjectLockEnabledForBucket=True)
    store = EvidenceStore(s3, BUCKET, RUN, retention_days=30, lock_mode="GOVERNANCE")
    store.put("trail/ct.json.gz", [b"trail bytes"])
    pinned = store.write_manifest()
    original = s3.get_object(Bucket=BUCKET, Key=pinned.key)["Body"].read()
    s3.put_object(Bucket=BUCKET, Key=pinned.key, Body=b'{"objects": []}')  # a later version

    def export_with(pin: dict[str, Any]) -> tuple[Any, bytes]:
        records = run_records()
        records[-1]["manifest"] = pin
        write_ledger(clampdown_home / "runs" / RUN / "ledger.jsonl", records, monkeypatch, signer)
        local = tmp_path / f"{pin['sha256'][:8]}.tar.gz"
        result = runner.invoke(app, ["export", RUN, "-o", str(local)])
        with tarfile.open(local, mode="r:gz") as tar:
            member = tar.extractfile("evidence-manifest.json")
            return result, member.read() if member else b""

    result, packed = export_with({"version_id": pinned.version_id, "sha256": pinned.sha256})
    assert result.exit_code == 0 and "warning: the evidence manifest" not in result.output
    assert packed == original
    (clampdown_home / "runs" / RUN / "ledger.jsonl").unlink()
    result, _ = export_with({"version_id": pinned.version_id, "sha256": "0" * 64})
    assert "is not the one the ledger pinned" in result.output
