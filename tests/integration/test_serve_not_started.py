"""An alert whose run cannot start now is answered 503 with Retry-After, and its retry starts it.

Through serve's real app (create_app: the alert router, TriggerTriage, the SQLite state
store): the starter raises RunNotStarted (a stand-in; local mode's real InProcessStarter
with CLAMPDOWN_HOME on a full 256 KiB tmpfs; deployment mode's real DeploymentStarter with
the Prefect server down), or the state store itself is on the full disk. Nothing is
remembered that would refuse the sender's retry: not the delivery id, not the incident's
dedup or correlation key, not a run slot, no held alert; and serve's log says so at ERROR.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from clampdown.app.serve import create_app
from clampdown.core.ledger import read, verify_file
from clampdown.core.runs import RunNotStarted
from tests.integration.test_ledger_disk_full import fill, small_disk  # noqa: F401 - a fixture
from tests.paths import FIXTURES

TOKEN = "alert-token-503"
RUN_ID = "0123456789ab"


def guardduty(event_id: str, user: str = "ml-contractor") -> tuple[bytes, dict[str, str]]:
    event = json.loads((FIXTURES / "alerts" / "guardduty_finding.json").read_text())
    event["id"] = event_id
    event["time"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    access_key = event["detail"]["resource"]["accessKeyDetails"]
    access_key["userName"] = user
    access_key["principalId"] = f"AIDA{user.upper().replace('-', '')}"
    event["detail"]["id"] = f"finding-{user}"
    return json.dumps(event).encode(), {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def alert_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLAMPDOWN_ALERT_TOKEN", TOKEN)
    for name in ("CLAMPDOWN_SLACK_SIGNING_SECRET", "CLAMPDOWN_SLACK_BOT_TOKEN"):
        monkeypatch.delenv(name, raising=False)  # Slack is optional for the alert endpoints


class FlakyStarter:
    """Raises RunNotStarted (the start could not be recorded) until ``working`` is set."""

    def __init__(self) -> None:
        self.working = False
        self.started: list[dict[str, Any]] = []
        self.refused = 0

    def __call__(self, runbook: Path, inputs: dict[str, Any], trigger: dict[str, Any]) -> str:
        if not self.working:
            self.refused += 1
            raise RunNotStarted(
                "could not record the start of the run: No space left on device (ENOSPC)",
                "free space on the disk that holds CLAMPDOWN_HOME",
            )
        self.started.append(trigger)
        return RUN_ID

    def is_finished(self, run_id: str) -> bool:
        return False


def test_a_run_that_cannot_start_is_answered_503_and_the_same_delivery_retried_starts_it(
    alert_env: None, caplog: pytest.LogCaptureFixture
) -> None:
    starter = FlakyStarter()
    body, headers = guardduty("delivery-while-disk-full")
    app = create_app(start_run=starter)
    store = app.state.store
    with TestClient(app) as client, caplog.at_level(logging.ERROR, "clampdown"):
        first = client.post("/alerts/guardduty", content=body, headers=headers)
        assert first.status_code == 503, first.text
        assert first.headers["Retry-After"] == str(RunNotStarted.retry_after)
        said = first.json()
        assert said["retry_after"] == RunNotStarted.retry_after
        assert said["error"].startswith("run not started, retry the delivery: could not record")
        assert said["alerts"][0]["status"] == "not-started"
        assert "No space left on device" in said["alerts"][0]["reason"]
        assert "free space" not in json.dumps(said)  # the operator's hint stays in the log
        # nothing remembered: no run slot, no held alert, no key pinned to a phantom run
        assert store.active_run_ids() == [] and store.held_alerts() == []

        again = client.post("/alerts/guardduty", content=body, headers=headers)
        assert again.status_code == 503, again.text  # still failing: still retryable

        starter.working = True  # space was freed
        retried = client.post("/alerts/guardduty", content=body, headers=headers)
        assert retried.status_code == 202, retried.text  # not 409, not "deduplicated"
        assert retried.json()["alerts"][0]["status"] == "started"
        assert retried.json()["alerts"][0]["run_id"] == RUN_ID
        replay = client.post("/alerts/guardduty", content=body, headers=headers)
        assert replay.status_code == 409, replay.text  # once started, the id is kept
    assert starter.refused == 2 and len(starter.started) == 1
    assert store.active_run_ids() == [RUN_ID]
    logged = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(
        r.name == "clampdown.alerts" and "NOT started, answered 503" in r.getMessage()
        for r in logged
    ), [r.getMessage() for r in logged]
    assert any("free space on the disk" in r.getMessage() for r in logged)


def test_another_alert_of_the_incident_after_a_503_starts_the_run(alert_env: None) -> None:
    """The dedup key of the incident is free after a 503: the next alert about the same
    finding (a new delivery) starts the run instead of joining a phantom one."""
    starter = FlakyStarter()
    app = create_app(start_run=starter)
    with TestClient(app) as client:
        body, headers = guardduty("first-delivery")
        assert client.post("/alerts/guardduty", content=body, headers=headers).status_code == 503
        starter.working = True
        body, headers = guardduty("second-delivery")
        second = client.post("/alerts/guardduty", content=body, headers=headers)
    assert second.status_code == 202, second.text
    assert second.json()["alerts"][0]["status"] == "started"


# --- deployment mode: the real DeploymentStarter, the Prefect server down then back -----------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def deployment(prefect_server: str) -> Iterator[str]:
    """A deployment of ``respond`` on the session's Prefect API (no worker: its flow runs
    stay scheduled, which is all "started" promises in deployment mode)."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    name = "not-started-test"
    with (
        temporary_settings({PREFECT_API_URL: prefect_server}),
        get_client(sync_client=True) as client,
    ):
        flow_id = client.create_flow_from_name("respond")
        deployment_id = client.create_deployment(flow_id=flow_id, name=name)
    try:
        yield f"respond/{name}"
    finally:
        with (
            temporary_settings({PREFECT_API_URL: prefect_server}),
            get_client(sync_client=True) as client,
        ):
            client.delete_deployment(deployment_id)


def _flow_runs(api_url: str, deployment: str) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
    from prefect.settings import PREFECT_API_URL, temporary_settings

    name = deployment.split("/", 1)[1]
    with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        return list(
            client.read_flow_runs(
                deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[name]))
            )
        )


@pytest.fixture
def no_connect_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """httpcore's connection retries (Prefect's client transport makes 3 of them) without
    their back-off waits (0.5 s and 1 s after a refused connection): the same attempts, as
    tests/conftest.py's no_backoff keeps botocore's."""
    import httpcore._async.connection
    import httpcore._sync.connection

    for module in (httpcore._async.connection, httpcore._sync.connection):
        monkeypatch.setattr(module, "RETRIES_BACKOFF_FACTOR", 0)


def test_an_alert_while_prefect_is_down_gets_503_and_its_retry_starts_a_flow_run(
    alert_env: None,
    prefect_server: str,
    deployment: str,
    caplog: pytest.LogCaptureFixture,
    no_connect_backoff: None,
) -> None:
    """Deployment mode, Prefect unreachable: 503 (it was 200 "ignored", then 409 for the
    retry); once Prefect answers, the same delivery starts one flow run. Another alert of
    the runbook also gets 503 while it is down (whether the first run ended is asked only at
    the runbook's limit: tests/integration/test_triage_not_started.py)."""
    from clampdown.app.deployment import DeploymentStarter

    down = f"http://127.0.0.1:{_closed_port()}/api"
    starter = DeploymentStarter(deployment=deployment, api_url=down)
    body, headers = guardduty("while-prefect-is-down")
    app = create_app(start_run=starter)
    with TestClient(app) as client, caplog.at_level(logging.ERROR, "clampdown"):
        first = client.post("/alerts/guardduty", content=body, headers=headers)
        assert first.status_code == 503, first.text
        assert first.headers["Retry-After"] == str(RunNotStarted.retry_after)
        reason = first.json()["alerts"][0]["reason"]
        assert f"could not create a flow run of {deployment}" in reason
        assert "the Prefect server is unreachable" in reason
        assert down not in first.text  # the server's address is for the log, not the sender
        assert _flow_runs(prefect_server, deployment) == []

        starter.api_url = prefect_server  # Prefect is back
        retried = client.post("/alerts/guardduty", content=body, headers=headers)
        assert retried.status_code == 202, retried.text
        run_id = retried.json()["alerts"][0]["run_id"]
        runs = _flow_runs(prefect_server, deployment)
        assert [r.parameters["run_id"] for r in runs] == [run_id]

        starter.api_url = down  # down again: another user's alert of the same runbook
        other, other_headers = guardduty("other-user", user="data-scientist")
        blocked = client.post("/alerts/guardduty", content=other, headers=other_headers)
        assert blocked.status_code == 503, blocked.text
        assert f"could not create a flow run of {deployment}" in blocked.text
        starter.api_url = prefect_server
        unblocked = client.post("/alerts/guardduty", content=other, headers=other_headers)
        assert unblocked.status_code == 202, unblocked.text
    assert len(_flow_runs(prefect_server, deployment)) == 2
    assert any(r.name == "clampdown.deployment" and down in r.getMessage() for r in caplog.records)


# --- local mode on a real full disk ---------------------------------------------------------

HMAC_SECRET = "not-started-hmac-secret-0123456789"
SELF_CHECK = """apiVersion: clampdown/v1
kind: TriggerSet
triggers:
  - name: self-check
    match: "alert.source == 'generic'"
    runbook: engine-self-check
    inputs:
      responder: "{{ alert.title }}"
      settle_time: 10ms
    dedup_key: "generic:{{ alert.id }}"
"""


def generic(alert_id: str) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"id": alert_id, "title": "carol", "severity": "high"}).encode()
    stamp = str(int(time.time()))
    mac = hmac.new(HMAC_SECRET.encode(), b"v1:" + stamp.encode() + b":" + body, hashlib.sha256)
    return body, {
        "Content-Type": "application/json",
        "X-Clampdown-Timestamp": stamp,
        "X-Clampdown-Signature": f"v1={mac.hexdigest()}",
    }


@pytest.fixture
def full_home(
    small_disk: Path,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Path:
    """CLAMPDOWN_HOME on the small tmpfs, generic alerts start engine-self-check."""
    home = small_disk / "home"
    triggers = tmp_path / "triggers.yaml"
    triggers.write_text(SELF_CHECK)
    monkeypatch.setenv("CLAMPDOWN_HOME", str(home))
    monkeypatch.setenv("CLAMPDOWN_TRIGGERS", str(triggers))
    monkeypatch.setenv("CLAMPDOWN_ALERT_HMAC_SECRET", HMAC_SECRET)
    for name in ("CLAMPDOWN_SLACK_SIGNING_SECRET", "CLAMPDOWN_SLACK_BOT_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return home


def _ended(ledger: Path) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 60  # a bounded wait for the run, not a timing assertion
    while time.monotonic() < deadline:
        records = read(ledger) if ledger.exists() else []
        if any(r["type"] == "run.end" for r in records):
            return records
        time.sleep(0.1)
    raise AssertionError(f"run did not end: {ledger}")


def _break(disk: Path, how: str) -> Callable[[], None]:
    """Make ``disk`` full or read-only; the function that mends it."""
    if how == "full":
        return fill(disk).unlink
    remounted = subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=False)
    assert remounted.returncode == 0

    def writable() -> None:
        subprocess.run(["mount", "-o", "remount,rw", str(disk)], check=True)

    return writable


@pytest.mark.parametrize(
    ("how", "said"), [("full", "No space left on device"), ("read-only", "Read-only file system")]
)
def test_a_full_or_read_only_home_answers_503_with_no_phantom_run_and_the_retry_runs_it(
    prefect_server: str,
    full_home: Path,
    small_disk: Path,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    how: str,
    said: str,
) -> None:
    """Local mode, the real InProcessStarter: the run's start cannot be recorded, so the
    alert is 503 and no run exists; once the disk is mended the same delivery starts the
    run, which ends with an intact ledger. (The state store is kept off the broken disk
    here so the start record is what fails; the next test puts it on the full disk.)"""
    monkeypatch.setenv("CLAMPDOWN_STATE_URL", f"sqlite:///{tmp_path / 'state.sqlite3'}")
    body, headers = generic(f"disk-{how}-1")
    app = create_app()
    with TestClient(app) as client:
        mend = _break(small_disk, how)
        refused = client.post("/alerts/generic", content=body, headers=headers)
        assert refused.status_code == 503, refused.text
        assert refused.headers["Retry-After"] == str(RunNotStarted.retry_after)
        assert said in refused.json()["alerts"][0]["reason"]
        assert not list(full_home.glob("runs/*/ledger.jsonl"))  # no phantom run
        assert app.state.store.active_run_ids() == []

        mend()
        started = client.post("/alerts/generic", content=body, headers=headers)
        assert started.status_code == 202, started.text
        run_id = started.json()["alerts"][0]["run_id"]
        records = _ended(full_home / "runs" / run_id / "ledger.jsonl")
        replay = client.post("/alerts/generic", content=body, headers=headers)
    assert records[-1]["status"] == "succeeded", records[-1]
    assert records[0]["run"]["trigger"]["alert_id"] == f"disk-{how}-1"
    assert verify_file(full_home / "runs" / run_id / "ledger.jsonl").complete
    assert replay.status_code == 409


def test_a_state_store_on_a_full_disk_answers_503_and_records_nothing(
    full_home: Path,
    small_disk: Path,  # noqa: F811 - the fixture imported above
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The dedup state (SQLite in CLAMPDOWN_HOME) cannot record the delivery id: 503 with
    Retry-After (it was a bare 500 Internal Server Error), and the retry after space is
    freed starts the run."""
    starter = FlakyStarter()
    starter.working = True
    body, headers = generic("store-full-1")
    app = create_app(start_run=starter)
    with TestClient(app) as client, caplog.at_level(logging.ERROR, "clampdown"):
        filler = fill(small_disk)
        refused = client.post("/alerts/generic", content=body, headers=headers)
        assert refused.status_code == 503, refused.text
        assert refused.headers["Retry-After"] == "30"
        assert "the delivery could not be recorded" in refused.json()["error"]
        filler.unlink()
        retried = client.post("/alerts/generic", content=body, headers=headers)
    assert retried.status_code == 202, retried.text
    assert len(starter.started) == 1
    assert "could not be recorded in the state store" in caplog.text
    assert "full" in caplog.text  # SQLite's own words: database or disk is full
