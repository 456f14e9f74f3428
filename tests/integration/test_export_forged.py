"""A forged ledger is never called intact by ``clampdown report``, ``clampdown export`` or
``clampdown verify <package>``: each gives the verdict of ``clampdown verify RUN_ID``.

The attacker can write CLAMPDOWN_HOME (and any copy of a package), edit records and
recompute every hash after them, and recompute a package's manifest and chain of
custody; they cannot sign (tests/ledger_forgery.py). The key to check with is the
verifier's (CLAMPDOWN_LEDGER_KEY here), never one carried in the package.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from clampdown.app.cli import app
from tests.ledger_forgery import (
    drop_signatures,
    edit_run_start,
    forge_undo,
    rewrite,
    write_signed,
)
from tests.unit.test_incident_report import run_records

runner = CliRunner()
RUN = "a1b2c3d4e5f6"
PACKAGE = f"clampdown-{RUN}-evidence.tar.gz"


@pytest.fixture
def key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The ledger key, configured for the CLI (outside CLAMPDOWN_HOME); no bucket, no Slack."""
    from clampdown.core.ledger_signing import generate_local_key, load_local_key

    path = generate_local_key(tmp_path / "keys" / "ledger.pem")
    monkeypatch.setenv("CLAMPDOWN_LEDGER_KEY", str(path))
    for name in ("CLAMPDOWN_LEDGER_KMS_KEY_ID", "CLAMPDOWN_EVIDENCE_BUCKET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("CLAMPDOWN_SLACK_BOT_TOKEN", raising=False)
    return load_local_key(path, tmp_path / "clampdown-home")


@pytest.fixture
def ledger(clampdown_home: Path, key: Any, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A finished run, every record signed as the engine signs it."""
    path = clampdown_home / "runs" / RUN / "ledger.jsonl"
    return write_signed(path, run_records(), key, RUN, monkeypatch)


def invoke(*args: str) -> Any:
    return runner.invoke(app, list(args))


def members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return {i.name: tar.extractfile(i).read() for i in tar}  # type: ignore[union-attr]


def repack(data: bytes, change: Callable[[dict[str, bytes]], None]) -> bytes:
    """The package after ``change`` to its members, with the chain of custody's ledger hash
    and every member's hash in package-manifest.json recomputed: a forger's repack."""
    parts = members(data)
    change(parts)
    custody = json.loads(parts["chain-of-custody.json"])
    custody["ledger"]["sha256"] = hashlib.sha256(parts["ledger.jsonl"]).hexdigest()
    parts["chain-of-custody.json"] = json.dumps(custody).encode()
    listing = json.loads(parts["package-manifest.json"])
    listing["members"] = [
        {"name": n, "sha256": hashlib.sha256(b).hexdigest(), "size": len(b)}
        for n, b in parts.items()
        if n != "package-manifest.json"
    ]
    parts["package-manifest.json"] = json.dumps(listing).encode()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, body in parts.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return out.getvalue()


def edit_ledger(parts: dict[str, bytes], edit: Callable[[Path], None], tmp: Path) -> None:
    """Apply a file edit (tests/ledger_forgery.py) to the package's ledger member."""
    tmp.write_bytes(parts["ledger.jsonl"])
    edit(tmp)
    parts["ledger.jsonl"] = tmp.read_bytes()


def export_ok(tmp_path: Path) -> bytes:
    local = tmp_path / PACKAGE
    result = invoke("export", RUN, "-o", str(local))
    assert result.exit_code == 0, result.output
    assert "does not verify" not in result.output
    ok = invoke("verify", str(local))
    assert ok.exit_code == 0 and f"OK {local}" in ok.output, ok.output
    return local.read_bytes()


def test_a_rewritten_run_start_is_tampered_in_the_report_the_export_and_the_package(
    ledger: Path, tmp_path: Path
):
    """The issue-12 attack on run.start (who started it), chain recomputed."""
    edit_run_start(ledger, runbook="routine-maintenance", trigger={"type": "manual"})
    verdict = invoke("verify", RUN)
    assert verdict.exit_code == 1 and "TAMPERED at record 0 (run.start)" in verdict.output

    md = invoke("report", RUN)
    assert md.exit_code == 0, md.output  # the report is written: it says the verdict
    assert "> **⚠ Ledger: TAMPERED**: TAMPERED at record 0 (run.start): its signature" in md.stdout
    assert "intact" not in md.stdout.split("## Inputs")[0]
    assert "warning: the ledger of run a1b2c3d4e5f6 does not verify: TAMPERED" in md.stderr
    data = json.loads(invoke("report", RUN, "--format", "json").stdout)
    assert data["verdict"]["ok"] is False and data["verdict"]["result"] == "TAMPERED"
    assert data["verdict"]["bad_record"] == 0
    html = invoke("report", RUN, "--format", "html").stdout
    assert '<span class="verdict bad" id="ledger">ledger TAMPERED</span>' in html

    local = tmp_path / PACKAGE
    export = invoke("export", RUN, "-o", str(local))
    assert export.exit_code == 1, export.output
    assert "the ledger of run a1b2c3d4e5f6 does not verify: TAMPERED" in export.output
    assert "The package was written anyway, as evidence" in export.output
    parts = members(local.read_bytes())  # the evidence of the attack is kept, and says so
    listing = json.loads(parts["package-manifest.json"])
    assert listing["ledger_verdict_at_export"]["result"] == "TAMPERED"
    custody = json.loads(parts["chain-of-custody.json"])["ledger"]
    assert custody["result"] == "TAMPERED" and custody["trusted"] is False
    assert custody["chain_ok"] is True  # the chain was recomputed: only the signature shows it
    assert "> **⚠ Ledger: TAMPERED**" in parts["report.md"].decode()

    package = invoke("verify", str(local))
    assert package.exit_code == 1, package.output
    assert "TAMPERED at record 0 (run.start)" in package.output
    assert f"TAMPERED {local}: the package is as it was built" in package.output
    assert "OK" not in package.output


def test_a_package_whose_ledger_is_edited_after_export_is_tampered(ledger: Path, tmp_path: Path):
    data = export_ok(tmp_path)
    forged = tmp_path / f"forged-{PACKAGE}"
    forge = forge_undo("revoke", {"user_name": "someone-else"})
    forged.write_bytes(
        repack(
            data,
            lambda parts: edit_ledger(parts, lambda p: rewrite(p, forge), tmp_path / "l.jsonl"),
        )
    )
    result = invoke("verify", str(forged))
    assert result.exit_code == 1, result.output
    assert "ok       ledger.jsonl" in result.output  # the repack fooled the member check
    assert "ok       ledger chain" in result.output  # and the hash chain
    assert "ledger   TAMPERED at record" in result.output and "(step.end)" in result.output
    assert f"TAMPERED {forged}" in result.output and "OK" not in result.output


def test_a_package_whose_signatures_are_removed_is_not_ok(ledger: Path, tmp_path: Path):
    data = export_ok(tmp_path)
    stripped = tmp_path / f"stripped-{PACKAGE}"
    stripped.write_bytes(
        repack(data, lambda parts: edit_ledger(parts, drop_signatures, tmp_path / "l.jsonl"))
    )
    result = invoke("verify", str(stripped))
    assert result.exit_code == 1, result.output
    assert "UNSIGNED" in result.output and "OK" not in result.output


def test_an_old_package_is_judged_by_the_signatures_its_ledger_carries(
    ledger: Path, tmp_path: Path
):
    """A package made before the verdict was recorded in it: the signatures are in the
    ledger's records, so it is checked all the same (and a forged one is not OK)."""

    def old(parts: dict[str, bytes]) -> None:
        listing = json.loads(parts["package-manifest.json"])
        listing.pop("ledger_verdict_at_export", None)
        parts["package-manifest.json"] = json.dumps(listing).encode()
        custody = json.loads(parts["chain-of-custody.json"])
        for added in ("result", "trusted", "signed_by", "copy"):
            custody["ledger"].pop(added, None)
        parts["chain-of-custody.json"] = json.dumps(custody).encode()

    data = export_ok(tmp_path)
    before = tmp_path / "old.tar.gz"
    before.write_bytes(repack(data, old))
    assert invoke("verify", str(before)).exit_code == 0
    forged = tmp_path / "old-forged.tar.gz"

    def forge(parts: dict[str, bytes]) -> None:
        old(parts)
        edit_ledger(parts, lambda p: edit_run_start(p, runbook="x"), tmp_path / "l.jsonl")

    forged.write_bytes(repack(data, forge))
    result = invoke("verify", str(forged))
    assert result.exit_code == 1 and "TAMPERED at record 0" in result.output


def test_without_a_key_a_signed_package_is_unverified(
    ledger: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    data = export_ok(tmp_path)
    monkeypatch.delenv("CLAMPDOWN_LEDGER_KEY")
    local = tmp_path / "p.tar.gz"
    local.write_bytes(data)
    result = invoke("verify", str(local))
    assert result.exit_code == 1, result.output
    assert f"UNVERIFIED {local}" in result.output and "no key is configured" in result.output


def test_an_unsigned_run_exports_with_exit_1_and_its_package_is_unsigned(
    clampdown_home: Path, key: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    write_signed(
        clampdown_home / "runs" / RUN / "ledger.jsonl", run_records(), None, RUN, monkeypatch
    )
    local = tmp_path / PACKAGE
    export = invoke("export", RUN, "-o", str(local))
    assert export.exit_code == 1 and "does not verify: UNSIGNED" in export.output
    result = invoke("verify", str(local))
    assert result.exit_code == 1 and f"UNSIGNED {local}" in result.output
    assert "OK" not in result.output


def test_the_report_at_the_end_of_a_run_says_the_signatures_were_not_checked(ledger: Path):
    """The flow's artifact has no verdict (no key in hand there): it must not read as one."""
    from clampdown.core.incident_report_render import markdown_from_ledger

    text = markdown_from_ledger(ledger)
    assert "Ledger chain: chain intact over" in text
    assert f"signatures NOT checked here); `clampdown verify {RUN}` checks them" in text


def test_with_an_evidence_bucket_the_report_and_the_package_compare_the_signed_heads(
    mocked_aws: None,
    clampdown_home: Path,
    key: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    """The heads the run anchored in S3 are checked wherever verify checks them: a local
    rewrite is TAMPERED and S3 COPY DIFFERS in the report, the export and its package."""
    import boto3

    from clampdown_aws.evidence_store import EvidenceStore

    monkeypatch.setenv("CLAMPDOWN_EVIDENCE_BUCKET", "evidence")
    monkeypatch.setenv("CLAMPDOWN_EVIDENCE_LOCK_MODE", "GOVERNANCE")
    monkeypatch.setenv("CLAMPDOWN_EVIDENCE_RETENTION_DAYS", "1")
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="evidence", ObjectLockEnabledForBucket=True)
    store = EvidenceStore(s3, "evidence", RUN, retention_days=1, lock_mode="GOVERNANCE")
    path = clampdown_home / "runs" / RUN / "ledger.jsonl"
    write_signed(
        path, run_records(), key, RUN, monkeypatch, [lambda run, seq, h: store.put_head(seq, h)]
    )
    store.put("ledger.jsonl", [path.read_bytes()])
    clean = invoke("report", RUN)
    assert "Ledger: **OK: intact, signed, anchored**" in clean.stdout, clean.output

    edit_run_start(path, runbook="routine-maintenance")
    md = invoke("report", RUN)
    assert "> **⚠ Ledger: TAMPERED, S3 COPY DIFFERS**" in md.stdout, md.output
    assert "signed record 0 (run.start) in the evidence bucket is not the local record" in md.stdout
    export = invoke("export", RUN)
    assert export.exit_code == 1, export.output
    assert "read back as built" in export.output and "its ledger is TAMPERED" in export.output
    uri = f"s3://evidence/incidents/{RUN}/exports/{PACKAGE}"
    package = invoke("verify", uri)
    assert package.exit_code == 1 and "copy     S3 COPY DIFFERS" in package.output
    assert f"TAMPERED, S3 COPY DIFFERS {uri}" in package.output


def test_a_report_without_access_to_the_key_is_written_and_says_the_signatures_were_not_checked(
    ledger: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A responder whose machine cannot reach the verdict (here: the configured KMS key and
    no AWS region; an outage does the same) still gets the report, which says it checked the
    hash chain only; export, which must carry a verdict, refuses (h-review27)."""
    monkeypatch.delenv("CLAMPDOWN_LEDGER_KEY")
    monkeypatch.setenv("CLAMPDOWN_LEDGER_KMS_KEY_ID", "alias/ledger")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    report = invoke("report", RUN)
    assert report.exit_code == 0, report.output
    assert "signatures NOT checked here" in report.stdout
    assert "the ledger's signatures were not checked" in report.stderr
    assert "cannot make a KMS client" in report.stderr
    export = invoke("export", RUN, "-o", str(tmp_path / "p.tar.gz"))
    assert export.exit_code == 1 and "cannot make a KMS client" in export.output
