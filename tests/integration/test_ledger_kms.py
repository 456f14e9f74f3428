"""The KMS ledger signer on moto (in-process): chosen by settings, refused when it cannot
sign, and its signatures checked against the key's public half."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest

from clampdown.core.diagnostics import ClampdownError
from clampdown.core.extensions import ledger_signer
from clampdown.core.ledger_signing import generate_local_key, open_ledger, verify_ledger
from clampdown.core.settings import Settings
from clampdown_aws.ledger_signer import KmsSigner


@pytest.fixture
def kms(mocked_aws: None):
    return boto3.client("kms", region_name="us-east-1")


def test_a_kms_key_signs_every_record_and_the_public_key_checks_them(kms, tmp_path: Path):
    key = kms.create_key(KeyUsage="SIGN_VERIFY", KeySpec="ECC_NIST_P256")["KeyMetadata"]
    signer = ledger_signer(Settings(home=tmp_path / "home", ledger_kms_key_id=key["KeyId"]))
    assert isinstance(signer, KmsSigner) and signer.key_id == key["Arn"]
    ledger = open_ledger(tmp_path / "l.jsonl", "r1", signer)
    ledger.append("run.start", run={"id": "r1"})
    ledger.append("run.end", status="succeeded")
    ledger.close()
    verdict = verify_ledger(ledger.path.read_bytes().splitlines(), signer)
    assert verdict.status == "intact" and verdict.key_id == key["Arn"], verdict.message
    other = kms.create_key(KeyUsage="SIGN_VERIFY", KeySpec="ECC_NIST_P256")["KeyMetadata"]["KeyId"]
    refused = verify_ledger(ledger.path.read_bytes().splitlines(), KmsSigner(kms, other))
    assert refused.status == "tampered" and f"signed by key {key['Arn']}" in refused.message


def test_a_key_that_cannot_sign_or_does_not_exist_is_refused(kms, tmp_path: Path):
    symmetric = kms.create_key()["KeyMetadata"]["KeyId"]
    with pytest.raises(ClampdownError, match="is not an ECC_NIST_P256 signing key"):
        ledger_signer(Settings(home=tmp_path, ledger_kms_key_id=symmetric))
    with pytest.raises(ClampdownError, match="cannot describe the key"):
        ledger_signer(Settings(home=tmp_path, ledger_kms_key_id="alias/nope"))


def test_two_keys_configured_is_refused(kms, tmp_path: Path):
    key = kms.create_key(KeyUsage="SIGN_VERIFY", KeySpec="ECC_NIST_P256")["KeyMetadata"]
    local = generate_local_key(tmp_path / "keys" / "ledger.pem")
    conf = Settings(home=tmp_path / "home", ledger_kms_key_id=key["KeyId"], ledger_key=local)
    with pytest.raises(ClampdownError, match="more than one ledger signing key"):
        ledger_signer(conf)


def test_a_drill_gets_a_key_of_its_own_beside_its_workspace(tmp_path: Path):
    workspace = tmp_path / "drills" / "model-theft-1"
    signer = ledger_signer(Settings(home=workspace, drill=True))
    assert signer is not None and signer.key_id.startswith("ed25519:")
    key = tmp_path / "drills" / "model-theft-1.ledger-key" / "ed25519.pem"
    assert key.is_file() and (key.stat().st_mode & 0o077) == 0
    again = ledger_signer(Settings(home=workspace, drill=True))
    assert again is not None and again.key_id == signer.key_id
    assert ledger_signer(Settings(home=workspace)) is None, "outside drills: none by default"
