"""serve refuses to start with a ledger signing key its runs could not use.

Every run signs its ledger's heads with the configured key (CLAMPDOWN_LEDGER_KMS_KEY_ID or
CLAMPDOWN_LEDGER_KEY). A key that cannot be used (no AWS region, two keys at once) used to
pass serve's start and fail every run it started, one alert at a time; now serve says so
at start, with what to fix, before anything listens (a real ``clampdown serve`` process)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.pg import free_port
from tests.serve_process import exit_or_answer, serve_process


def _env(tmp_path: Path, **more: str) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("CLAMPDOWN_", "PREFECT_API", "PREFECT_HOME", "AWS_"))
    }
    (tmp_path / "prefect-home").mkdir()
    return env | {
        "CLAMPDOWN_HOME": str(tmp_path / "home"),
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",  # not on EC2: no region to be found
        **more,
    }


@pytest.mark.parametrize(
    ("setting", "said"),
    [
        (
            {"CLAMPDOWN_LEDGER_KMS_KEY_ID": "alias/ledger"},
            "CLAMPDOWN_LEDGER_KMS_KEY_ID alias/ledger: cannot make a KMS client",
        ),
        (
            {"CLAMPDOWN_LEDGER_KEY": "/nonexistent/ledger.pem"},
            "/nonexistent/ledger.pem",
        ),
    ],
)
def test_serve_refuses_a_signing_key_its_runs_cannot_use(
    tmp_path: Path, setting: dict[str, str], said: str
) -> None:
    log = tmp_path / "serve.log"
    port = free_port()
    with serve_process(_env(tmp_path, **setting), log, port) as proc:
        outcome = exit_or_answer(proc, port)
    text = log.read_text()
    assert outcome not in (0, "answered", "neither"), f"{outcome}\n{text}"
    assert "error: serve did not start:" in text and said in text, text
    assert "Traceback" not in text
    assert list((tmp_path / "prefect-home").iterdir()) == []  # no local Prefect API started


def test_a_worker_refuses_a_signing_key_its_runs_cannot_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same for ``clampdown worker`` (deployment mode: the workers sign), before it
    polls: a Prefect API that is never reached is enough."""
    from typer.testing import CliRunner

    from clampdown.app.cli import app

    for name, value in _env(tmp_path, CLAMPDOWN_LEDGER_KEY="/nonexistent/ledger.pem").items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PREFECT_API_URL", f"http://127.0.0.1:{free_port()}/api")
    result = CliRunner().invoke(app, ["worker"])
    assert result.exit_code == 1, result.output
    assert "cannot read CLAMPDOWN_LEDGER_KEY /nonexistent/ledger.pem" in result.output
