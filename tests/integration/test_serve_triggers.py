"""No alert is lost to the trigger file: serve and a broken, missing or broken-by-an-edit file.

* A trigger file with lint errors: a real ``clampdown serve`` process refuses to start, with
  lint's ``file:line:col`` errors and what to do, exit 2, before anything listens (its own
  local Prefect API not started: the Prefect home stays empty; no state store opened).
  ``CLAMPDOWN_TRIGGERS`` naming no file is refused the same way.
* No trigger file at the library's default place (serve for Slack only): serve starts, says
  so once, and answers alerts 503 + ``Retry-After`` (never 200 "ignored", which senders do
  not retry); the file written while serve runs is read, and the same delivery's retry
  starts its run.
* An edit that does not lint while serve runs: said once per change, the triggers in force
  stay (alerts keep starting runs), /healthz says so; the fixed file is read.

Through serve's real app (create_app: the alert router, TriggerTriage, the SQLite state
store) with signed generic alerts, except the start-up refusal, where the process is the
subject. No run is started: a stand-in starter hands out run ids.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from clampdown.core.runs import RunNotStarted
from tests.paths import LIBRARY
from tests.pg import free_port
from tests.serve_process import exit_or_answer, serve_process

HMAC_SECRET = "triggers-hmac-secret"
CLI = str(Path(sys.executable).parent / "clampdown")
TRIGGERS = """\
apiVersion: clampdown/v1
kind: TriggerSet
triggers:
  - name: self-check
    match: "alert.source == 'generic'"
    runbook: engine-self-check
    inputs: {responder: "{{ alert.title }}"}
"""
TYPO = TRIGGERS.replace("runbook: engine-self-check", "runbook: engine-self-chek")


@pytest.fixture
def library(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A library with engine-self-check and no trigger file; generic alerts configured."""
    folder = tmp_path / "library"
    folder.mkdir()
    shutil.copy(LIBRARY / "engine-self-check.yaml", folder)
    monkeypatch.setenv("CLAMPDOWN_LIBRARY", str(folder))
    monkeypatch.delenv("CLAMPDOWN_TRIGGERS", raising=False)
    monkeypatch.setenv("CLAMPDOWN_ALERT_HMAC_SECRET", HMAC_SECRET)
    for name in ("CLAMPDOWN_SLACK_SIGNING_SECRET", "CLAMPDOWN_SLACK_BOT_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return folder


class Starter:
    """Hands out run ids (no run is executed): what the alert was answered is the subject."""

    def __init__(self) -> None:
        self.started: list[dict[str, Any]] = []

    def __call__(self, runbook: Path, inputs: dict[str, Any], trigger: dict[str, Any]) -> str:
        self.started.append(trigger)
        return f"{len(self.started):012x}"

    def is_finished(self, run_id: str) -> bool:
        return False


def signed(alert_id: str, title: str = "on-call") -> tuple[bytes, dict[str, str]]:
    from clampdown_alerts.signatures import generic_signature

    body = json.dumps({"id": alert_id, "title": title, "severity": "high"}).encode()
    stamp = str(int(time.time()))
    return body, {
        "X-Clampdown-Timestamp": stamp,
        "X-Clampdown-Signature": generic_signature(HMAC_SECRET.encode(), stamp, body),
    }


def changed(path: Path, text: str, step: int) -> None:
    """Write ``text`` with an mtime ``step`` seconds ahead: a change serve cannot miss,
    whatever the filesystem's timestamp granularity."""
    path.write_text(text)
    ahead = time.time() + step
    os.utime(path, (ahead, ahead))


# --- a trigger file with errors: serve does not start ---------------------------------------


def _env(tmp_path: Path, library: Path, **more: str) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("CLAMPDOWN_", "PREFECT_API", "PREFECT_HOME", "PREFECT_SERVER"))
    }
    prefect_home = tmp_path / "prefect-home"
    prefect_home.mkdir()
    return env | {
        "CLAMPDOWN_HOME": str(tmp_path / "home"),
        "CLAMPDOWN_LIBRARY": str(library),
        "CLAMPDOWN_ALERT_HMAC_SECRET": HMAC_SECRET,
        "PREFECT_HOME": str(prefect_home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        **more,
    }


def test_serve_refuses_to_start_with_a_trigger_file_that_has_errors(
    library: Path, tmp_path: Path
) -> None:
    triggers = library / "triggers.yaml"
    triggers.write_text(TYPO)
    env = _env(tmp_path, library)
    log = tmp_path / "serve.log"
    port = free_port()
    with serve_process(env, log, port) as proc:
        outcome = exit_or_answer(proc, port)
    said = log.read_text()
    assert outcome == 2, f"{outcome}\n{said}"
    assert f"serve did not start: the trigger file {triggers} has 1 error:" in said
    line = next(n for n, text in enumerate(TYPO.splitlines(), 1) if "engine-self-chek" in text)
    assert f"{triggers}:{line}:" in said and "no runbook named 'engine-self-chek'" in said
    assert "did you mean 'engine-self-check'?" in said
    assert f"hint: fix the file (`clampdown lint {triggers}` checks it)" in said
    assert "Traceback" not in said
    # before anything listens: its local Prefect API was not started, no state store opened
    assert list((tmp_path / "prefect-home").iterdir()) == []
    assert not (tmp_path / "home" / "state.sqlite3").exists()


@pytest.mark.usefixtures("library")
def test_a_trigger_setting_naming_no_file_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CLAMPDOWN_TRIGGERS names a file that is not there (a typo, a volume not mounted):
    refused, not taken for "serve for Slack only"."""
    from clampdown.app.serve import TriggersRefused, create_app

    missing = tmp_path / "mounted" / "triggers.yaml"
    monkeypatch.setenv("CLAMPDOWN_TRIGGERS", str(missing))
    with pytest.raises(TriggersRefused) as refused:
        create_app(start_run=Starter())
    assert f"CLAMPDOWN_TRIGGERS names {missing}, which does not exist" in refused.value.message
    assert refused.value.exit_code == 2


def test_create_app_refuses_a_trigger_file_that_has_errors(library: Path) -> None:
    """What a drill (create_app in its own process) gets: the same refusal, nothing served."""
    from clampdown.app.serve import TriggersRefused, create_app

    (library / "triggers.yaml").write_text(TYPO)
    with pytest.raises(TriggersRefused) as refused:
        create_app(start_run=Starter())
    assert "no runbook named 'engine-self-chek'" in refused.value.message


# --- no trigger file: 503 until there is one ------------------------------------------------


def test_without_a_trigger_file_alerts_are_answered_503_until_it_is_written(
    library: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from clampdown.app.serve import create_app

    starter = Starter()
    with caplog.at_level(logging.WARNING, "clampdown"):
        app = create_app(start_run=starter)
    said = [r for r in caplog.records if "no trigger file" in r.getMessage()]
    assert len(said) == 1 and str(library / "triggers.yaml") in said[0].getMessage()
    assert "answer 503" in said[0].getMessage()
    store = app.state.store
    body, headers = signed("before-the-file")
    with TestClient(app) as client:
        health = client.get("/healthz").json()
        assert health["ok"] is True and health["triggers"].startswith("no trigger file")
        first = client.post("/alerts/generic", content=body, headers=headers)
        assert first.status_code == 503, first.text
        assert first.headers["Retry-After"] == str(RunNotStarted.retry_after)
        answer = first.json()
        assert "no usable trigger file" in answer["error"]
        assert answer["alerts"][0]["status"] == "not-started"
        assert str(library) not in first.text  # the path is for the log, not the sender
        assert store.held_alerts() == [] and starter.started == []

        changed(library / "triggers.yaml", TRIGGERS, 5)  # written while serve runs
        retried = client.post("/alerts/generic", content=body, headers=headers)
        assert retried.status_code == 202, retried.text  # the same delivery: not a 409
        assert retried.json()["alerts"][0]["status"] == "started"
        assert "triggers" not in client.get("/healthz").json()
    assert [t["alert_id"] for t in starter.started] == ["before-the-file"]


# --- an edit that does not lint while serve runs --------------------------------------------


def test_an_edit_that_does_not_lint_keeps_the_triggers_in_force_and_is_said_once(
    library: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from clampdown.app.serve import create_app

    triggers = library / "triggers.yaml"
    triggers.write_text(TRIGGERS)
    starter = Starter()
    app = create_app(start_run=starter)
    with TestClient(app) as client, caplog.at_level(logging.INFO, "clampdown.triage"):
        assert "triggers" not in client.get("/healthz").json()
        changed(triggers, TYPO, 5)
        for n in range(3):  # every alert meanwhile: the triggers read before
            body, headers = signed(f"during-the-typo-{n}")
            answer = client.post("/alerts/generic", content=body, headers=headers)
            assert answer.status_code == 202, answer.text
            assert answer.json()["alerts"][0]["trigger"] == "self-check"
        health = client.get("/healthz").json()
        assert health["ok"] is True
        assert "the triggers read before stay in force" in health["triggers"]
        kept = [r for r in caplog.records if "kept the previous triggers" in r.getMessage()]
        assert len(kept) == 1 and kept[0].levelno == logging.ERROR  # once per change
        assert "no runbook named 'engine-self-chek'" in kept[0].getMessage()
        assert f"{triggers}:" in kept[0].getMessage()  # with lint's positions

        changed(triggers, TRIGGERS.replace("name: self-check", "name: fixed"), 10)
        body, headers = signed("after-the-fix")
        answer = client.post("/alerts/generic", content=body, headers=headers)
        assert answer.status_code == 202 and answer.json()["alerts"][0]["trigger"] == "fixed"
        assert "triggers" not in client.get("/healthz").json()
    assert len(starter.started) == 4
