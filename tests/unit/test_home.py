"""The paths under CLAMPDOWN_HOME (one object owns them) and settings read once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from clampdown.core.diagnostics import ClampdownError
from clampdown.core.home import Home
from clampdown.core.settings import Settings


def test_layout_is_exact(tmp_path: Path) -> None:
    home = Home(tmp_path)
    run = home.run("abc123")
    assert home.root == tmp_path
    assert home.runs_dir == tmp_path / "runs"
    assert home.drills_dir == tmp_path / "drills"
    assert home.state_db == tmp_path / "state.sqlite3"
    assert run.dir == tmp_path / "runs" / "abc123"
    assert run.ledger == tmp_path / "runs" / "abc123" / "ledger.jsonl"
    assert run.approvals_dir == tmp_path / "runs" / "abc123" / "approvals"
    assert run.approval_request("gate") == tmp_path / "runs" / "abc123" / "approvals" / "gate.json"
    assert run.approval_key == tmp_path / "runs" / "abc123" / "approvals" / ".key"
    assert run.slack_thread_state == tmp_path / "runs" / "abc123" / "slack.json"
    assert run.rolled_back_mark == tmp_path / "runs" / "abc123" / "rolled-back.json"
    assert run.rollback_lock == tmp_path / "runs" / "abc123" / "rollback.lock"
    assert run.start == tmp_path / "runs" / "abc123" / "start.json"
    assert run.owner_lock == tmp_path / "runs" / "abc123" / "owner.lock"
    assert run.decision_inbox == tmp_path / "runs" / "abc123" / "decisions"


def test_home_expands_user_but_messages_keep_the_configured_form() -> None:
    home = Home(Path("~/.clampdown"))
    assert home.root == Path("~/.clampdown").expanduser()
    with pytest.raises(ClampdownError) as caught:
        home.existing_ledger("nosuchrun")
    assert caught.value.message == "no ledger for run 'nosuchrun'"
    assert "~/.clampdown/runs/<run-id>/ledger.jsonl" in str(caught.value.hint)


def test_settings_paths_is_the_home_object(tmp_path: Path) -> None:
    conf = Settings(home=tmp_path)
    assert conf.paths == Home(tmp_path)
    assert conf.ledger_path("r1") == Home(tmp_path).run("r1").ledger
    assert conf.run_dir("r1") == tmp_path / "runs" / "r1"


def test_existing_ledger_found(tmp_path: Path) -> None:
    ledger = Home(tmp_path).run("r2").ledger
    ledger.parent.mkdir(parents=True)
    ledger.write_text("")
    assert Home(tmp_path).existing_ledger("r2") == ledger


# --- serve's app reads its settings once ------------------------------------------------------

TRIGGERS = """\
apiVersion: clampdown/v1
kind: TriggerSet
triggers:
  - name: any-generic
    match: alert.source == 'generic'
    runbook: engine-self-check
    dedup_key: "generic:{{ alert.id }}"
"""
BROKEN_ENV = {  # each makes Settings() or AlertSettings() refuse to build
    "CLAMPDOWN_EXECUTION": "nowhere",
    "CLAMPDOWN_EVIDENCE_RETENTION_DAYS": "0",
    "CLAMPDOWN_SNS_CERT_TIMEOUT": "999",
}


def test_create_app_with_explicit_settings_does_not_consult_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hashlib
    import hmac
    import json
    import time

    from fastapi.testclient import TestClient
    from pydantic import SecretStr

    from clampdown.app.serve import create_app
    from clampdown_alerts import AlertSettings
    from clampdown_slack.app import SlackAppSettings
    from tests.paths import LIBRARY

    triggers = tmp_path / "triggers.yaml"
    triggers.write_text(TRIGGERS)
    conf = Settings(home=tmp_path / "home", library=LIBRARY, triggers=triggers)
    alerts = AlertSettings(alert_hmac_secret=SecretStr("hmac-secret"))
    slack = SlackAppSettings(slack_signing_secret=None, slack_bot_token=None)
    for name, value in BROKEN_ENV.items():  # before: create_app must not read them
        monkeypatch.setenv(name, value)
    with pytest.raises(ClampdownError):
        from clampdown.core.settings import settings

        settings()
    started: list[tuple[Any, ...]] = []

    def start_run(runbook: Path, inputs: dict[str, Any], trigger: dict[str, Any]) -> str:
        started.append((runbook, inputs, trigger))
        return "run0000000001"

    app = create_app(slack, start_run, clampdown=conf, alerts=alerts)
    monkeypatch.setenv("CLAMPDOWN_HOME", str(tmp_path / "elsewhere"))  # after: not seen either
    body = json.dumps({"id": "a-1", "type": "Probe", "title": "probe", "severity": "high"})
    stamp = str(int(time.time()))
    digest = hmac.new(b"hmac-secret", f"v1:{stamp}:{body}".encode(), hashlib.sha256).hexdigest()
    headers = {"X-Clampdown-Timestamp": stamp, "X-Clampdown-Signature": f"v1={digest}"}
    with TestClient(app) as client:
        answer = client.post("/alerts/generic", content=body, headers=headers)
    assert answer.status_code == 202, answer.text
    assert [(runbook.stem, trigger["type"]) for runbook, _, trigger in started] == [
        ("engine-self-check", "alert")
    ]
    assert (tmp_path / "home" / "state.sqlite3").is_file()
    assert not (tmp_path / "elsewhere").exists()


def test_private_dirs_and_files_ignore_a_loose_umask(tmp_path: Path) -> None:
    import os
    import stat

    from clampdown.core.home import private_dirs, private_opener, tighten, write_private

    old = os.umask(0o002)  # a umask that would leave files group-writable and world-readable
    try:
        private_dirs(tmp_path / "a" / "b" / "c")
        with open(tmp_path / "a" / "f", "w", opener=private_opener) as handle:
            handle.write("x")
        write_private(tmp_path / "a" / "b" / "g.json", "{}")
    finally:
        os.umask(old)

    def mode(p: Path) -> int:
        return stat.S_IMODE(p.stat().st_mode)

    assert [mode(tmp_path / p) for p in ("a", "a/b", "a/b/c")] == [0o700] * 3
    assert mode(tmp_path / "a" / "f") == 0o600
    assert mode(tmp_path / "a" / "b" / "g.json") == 0o600
    assert (tmp_path / "a" / "b" / "g.json").read_text() == "{}"
    loose = tmp_path / "loose"
    loose.write_text("")
    loose.chmod(0o640)
    assert tighten(loose, 0o600) == f"{loose} was 640, now 600"
    assert tighten(loose, 0o600) is None
    assert tighten(tmp_path / "missing", 0o600) is None
