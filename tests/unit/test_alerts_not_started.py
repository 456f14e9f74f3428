"""The alert endpoints' answer when a run cannot start now: 503 + Retry-After, the delivery id
forgotten so the sender's retry is triaged again (serve's real app, with the real triage,
is in tests/integration/test_serve_not_started.py)."""

from __future__ import annotations

import copy
import errno
import logging
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from clampdown.core.alert import Alert
from clampdown.core.ledger import LedgerWriteError
from clampdown.core.runs import RunNotStarted
from clampdown_alerts import AlertSettings, InMemoryDeliveryLog, TriageOutcome, alert_router
from tests.unit.test_alerts_routes import TOKEN, bearer, guardduty_event, load


class Triage:
    """Raises ``failure`` for the alerts named in ``failing``; starts a run for the others."""

    def __init__(self, failure: Exception) -> None:
        self.failure = failure
        self.failing: set[str] = set()
        self.seen: list[str] = []

    def __call__(self, alert: Alert) -> TriageOutcome:
        self.seen.append(alert.id)
        if alert.id in self.failing:
            raise self.failure
        return TriageOutcome("started", f"run-{len(self.seen)}", "t", "started")


def client(triage: Triage) -> TestClient:
    app = FastAPI()
    app.include_router(
        alert_router(AlertSettings(alert_token=TOKEN), triage, InMemoryDeliveryLog())
    )
    return TestClient(app)


def test_a_ledger_that_cannot_be_written_answers_503_and_the_retry_is_triaged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An alert joining a run whose ledger cannot take it (disk full) is not lost either."""
    full = LedgerWriteError.of(
        tmp_path / "ledger.jsonl", "alert.joined", OSError(errno.ENOSPC, "No space left on device")
    )
    triage = Triage(full)
    event = guardduty_event()
    triage.failing.add(event["detail"]["id"])
    with client(triage) as http, caplog.at_level(logging.ERROR, "clampdown.alerts"):
        body, headers = bearer(event)
        first = http.post("/alerts/guardduty", content=body, headers=headers)
        assert first.status_code == 503, first.text
        assert first.headers["Retry-After"] == str(RunNotStarted.retry_after)
        assert "No space left on device (ENOSPC)" in first.json()["error"]
        triage.failing.clear()
        retried = http.post("/alerts/guardduty", content=body, headers=headers)
    assert retried.status_code == 202, retried.text
    assert triage.seen == [event["detail"]["id"]] * 2
    assert "NOT started, answered 503 (retry after 30 s)" in caplog.text
    assert "free space on the disk that holds CLAMPDOWN_HOME" in caplog.text


def test_one_alert_of_a_group_not_started_makes_the_whole_delivery_retry() -> None:
    """Alertmanager sends several alerts at once: one that cannot start gets the delivery a
    503 that lists what happened to each; the retry triages every alert again."""
    not_started = RunNotStarted("the Prefect server is unreachable")
    not_started.retry_after = 5
    triage = Triage(not_started)
    payload = load("alertmanager_v4.json")
    second = copy.deepcopy(payload["alerts"][0])
    second["fingerprint"] = "2b41cb82ddb3a32a"
    second["labels"]["principal_arn"] = "arn:aws:iam::123456789012:user/other"
    payload["alerts"].append(second)
    with client(triage) as http:
        body, headers = bearer(payload)
        probe = http.post("/alerts/alertmanager", content=body, headers=headers)
        assert probe.status_code == 202  # every alert started: the ids are now known
        ids = list(triage.seen)
        assert len(ids) == 2
        triage.seen.clear()
        payload["groupKey"] = "another-group"  # a new delivery (Alertmanager: a new body)
        body, headers = bearer(payload)
        triage.failing.add(ids[1])
        first = http.post("/alerts/alertmanager", content=body, headers=headers)
        triage.failing.clear()
        retried = http.post("/alerts/alertmanager", content=body, headers=headers)
    assert first.status_code == 503 and first.headers["Retry-After"] == "5", first.text
    said = first.json()
    assert said["retry_after"] == 5
    assert [(a["id"], a["status"]) for a in said["alerts"]] == [
        (ids[0], "started"),
        (ids[1], "not-started"),
    ]
    assert said["alerts"][1]["reason"] == "the Prefect server is unreachable"
    assert retried.status_code == 202, retried.text
    assert triage.seen == [ids[0], ids[1], *ids]


class BrokenLog(InMemoryDeliveryLog):
    """A delivery log on a full disk: recording (and, when asked, forgetting) fails."""

    def __init__(self) -> None:
        super().__init__()
        self.full = True
        self.forget_fails = False

    def first_seen(self, key: str, ttl_seconds: float) -> bool:
        if self.full:
            raise OSError(errno.ENOSPC, "database or disk is full")
        return super().first_seen(key, ttl_seconds)

    def forget(self, key: str) -> None:
        if self.forget_fails:
            raise OSError(errno.ENOSPC, "database or disk is full")
        super().forget(key)


def test_a_delivery_log_that_cannot_record_answers_503_and_records_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    triage = Triage(RuntimeError("unused"))
    log = BrokenLog()
    app = FastAPI()
    app.include_router(alert_router(AlertSettings(alert_token=TOKEN), triage, log))
    body, headers = bearer(guardduty_event())
    with TestClient(app) as http, caplog.at_level(logging.ERROR, "clampdown.alerts"):
        refused = http.post("/alerts/guardduty", content=body, headers=headers)
        log.full = False
        accepted = http.post("/alerts/guardduty", content=body, headers=headers)
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "30", refused.text
    assert refused.json() == {
        "error": "the delivery could not be recorded (clampdown's state store refuses writes); "
        "retry the delivery"
    }
    assert triage.seen == [guardduty_event()["detail"]["id"]]  # the refused one never got there
    assert accepted.status_code == 202
    assert "could not be recorded in the state store: OSError: [Errno 28] database or disk is" in (
        caplog.text
    )


def test_a_delivery_id_that_cannot_be_forgotten_is_said_in_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    triage = Triage(RunNotStarted("the Prefect server is unreachable"))
    event = guardduty_event()
    triage.failing.add(event["detail"]["id"])
    log = BrokenLog()
    log.full = False
    log.forget_fails = True
    app = FastAPI()
    app.include_router(alert_router(AlertSettings(alert_token=TOKEN), triage, log))
    body, headers = bearer(event)
    with TestClient(app) as http, caplog.at_level(logging.ERROR, "clampdown.alerts"):
        answer = http.post("/alerts/guardduty", content=body, headers=headers)
    assert answer.status_code == 503
    assert "could not be forgotten" in caplog.text
    assert "send the alert again as a new delivery" in caplog.text
