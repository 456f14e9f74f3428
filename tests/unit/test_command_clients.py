"""A command's AWS client that cannot be made is an error that names the setting, never
botocore's traceback (``clampdown verify s3://…``, ``report``, ``export`` with
``AWS_PROFILE`` naming no profile, or no region for a regional service)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from clampdown.app.cli import app
from clampdown.core.diagnostics import ClampdownError
from clampdown_aws.command_clients import command_client


@pytest.fixture
def no_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))  # no such file
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_PROFILE", "nosuch")


@pytest.mark.usefixtures("no_profile")
def test_a_profile_that_does_not_exist_names_the_setting() -> None:
    with pytest.raises(ClampdownError) as caught:
        command_client("s3", "read the evidence bucket")
    assert "cannot make an AWS s3 client to read the evidence bucket" in caught.value.message
    assert "(nosuch) could not be found" in caught.value.message
    assert "AWS_PROFILE" in caught.value.hint


def test_no_region_for_a_regional_service_says_to_set_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # not on EC2: no region to find
    for name in ("AWS_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ClampdownError) as caught:
        command_client("kms", "check the ledger's signatures")
    assert "AWS_REGION" in caught.value.hint


@pytest.mark.usefixtures("no_profile")
def test_verify_of_a_manifest_with_no_profile_is_an_error_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLAMPDOWN_HOME", str(tmp_path / "home"))
    result = CliRunner().invoke(app, ["verify", "s3://evidence/incidents/abc/manifest.json"])
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)  # an exit, not botocore's exception
    assert "Traceback" not in result.output
    assert "cannot make an AWS s3 client" in result.output
