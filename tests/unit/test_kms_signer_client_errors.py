"""A ledger KMS key that cannot be reached for want of AWS configuration is a user error
(``error:`` and a hint, exit 1), never botocore's traceback: no region, an unknown
``AWS_PROFILE``, a key whose public half cannot be fetched. Offline: no endpoint is
ever called (making the client fails first), and the last case uses a stand-in client."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from typer.testing import CliRunner

from clampdown.app.cli import app
from clampdown.core.diagnostics import ClampdownError
from clampdown.core.extensions import ledger_signer
from clampdown.core.ledger_signing import open_ledger
from clampdown.core.settings import Settings
from clampdown_aws.ledger_signer import KmsSigner

runner = CliRunner()


@pytest.fixture
def no_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No AWS region, profile or config file anywhere; a session made now, not cached."""
    import boto3

    for name in ("AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance metadata asked
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)


@pytest.mark.usefixtures("no_aws")
def test_no_region_is_a_user_error_saying_to_set_one(tmp_path: Path) -> None:
    with pytest.raises(ClampdownError) as refused:
        ledger_signer(Settings(home=tmp_path / "home", ledger_kms_key_id="alias/x"))
    assert refused.value.message == (
        "CLAMPDOWN_LEDGER_KMS_KEY_ID alias/x: cannot make a KMS client: You must specify a region."
    )
    assert refused.value.hint == "set AWS_REGION (or AWS_DEFAULT_REGION) to the key's region"


@pytest.mark.usefixtures("no_aws")
def test_an_unknown_profile_is_a_user_error_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_PROFILE", "nosuch")
    with pytest.raises(ClampdownError, match=r"profile \(nosuch\) could not be found") as refused:
        ledger_signer(Settings(home=tmp_path / "home", ledger_kms_key_id="alias/x"))
    assert "AWS_PROFILE" in str(refused.value.hint)


@pytest.mark.usefixtures("no_aws")
def test_verify_with_a_kms_key_and_no_region_says_so_and_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = open_ledger(tmp_path / "ledger.jsonl", "r1", None)
    ledger.append("run.start", run={"id": "r1"})
    ledger.close()
    monkeypatch.setenv("CLAMPDOWN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CLAMPDOWN_LEDGER_KMS_KEY_ID", "alias/x")
    result = runner.invoke(app, ["verify", str(ledger.path)])
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "error: CLAMPDOWN_LEDGER_KMS_KEY_ID alias/x: cannot make a KMS client" in result.output


class _NoPublicKey:
    """A KMS client whose key describes as a signing key but whose public half is denied."""

    def describe_key(self, KeyId: str) -> dict[str, Any]:
        return {
            "KeyMetadata": {
                "Arn": f"arn:aws:kms:us-east-1:111122223333:key/{KeyId}",
                "KeyUsage": "SIGN_VERIFY",
                "SigningAlgorithms": ["ECDSA_SHA_256"],
            }
        }

    def get_public_key(self, KeyId: str) -> dict[str, Any]:
        error = {"Error": {"Code": "AccessDeniedException", "Message": "not allowed"}}
        raise ClientError(error, "GetPublicKey")


def test_a_public_key_that_cannot_be_fetched_is_a_user_error() -> None:
    signer = KmsSigner(_NoPublicKey(), "k1")
    with pytest.raises(ClampdownError, match="cannot get the key's public half") as refused:
        signer.verify(b"message", b"signature")
    assert "AccessDeniedException" in refused.value.message
    assert "kms:GetPublicKey" in str(refused.value.hint)
