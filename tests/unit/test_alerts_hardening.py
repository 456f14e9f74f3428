"""Signed alerts nested hundreds of levels deep: answered 400 at once, the same way on every
retry, and nothing reaches the triage (they used to parse, then fail in the triage with a 500
whose delivery id was forgotten, so the sender retried forever)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clampdown.core.limits import MAX_JSON_DEPTH
from clampdown_alerts.signatures import generic_signature
from tests.unit.test_alerts_auth import sns_fixture
from tests.unit.test_alerts_routes import (
    HMAC_SECRET,
    PD_SECRETS,
    TOKEN,
    Harness,
    build,
    guardduty_event,
    load,
    pagerduty_event,
    post,
    sns_request,
)


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = build(tmp_path, max_alert_bytes=1024 * 1024)
    with h.client:
        yield h


PLACEHOLDER = '"__deep__"'
REASON = f"body is nested deeper than {MAX_JSON_DEPTH} levels"


def deep_text(depth: int) -> str:
    """``depth`` nested lists, written by hand (json.dumps cannot go past ~1,000 levels)."""
    return "[" * (depth - 1) + '"bottom"' + "]" * (depth - 1)


def with_deep(payload: dict[str, Any], depth: int) -> bytes:
    return json.dumps(payload).replace(PLACEHOLDER, deep_text(depth), 1).encode()


def signed_request(source: str, depth: int) -> tuple[str, bytes, dict[str, str]]:
    """A genuine, correctly signed request of ``source`` with a deeply nested field."""
    if source == "generic":
        body = with_deep({**load("generic.json"), "labels": {"x": "__deep__"}}, depth)
        timestamp = str(int(time.time()))
        signature = generic_signature(HMAC_SECRET.encode(), timestamp, body)
        headers = {"X-Clampdown-Timestamp": timestamp, "X-Clampdown-Signature": signature}
        return "/alerts/generic", body, headers
    if source == "pagerduty":
        payload = pagerduty_event()
        payload["event"]["data"]["extra"] = "__deep__"
        body = with_deep(payload, depth)
        digest = hmac.new(PD_SECRETS[0].encode(), body, hashlib.sha256).hexdigest()
        return "/alerts/pagerduty", body, {"X-PagerDuty-Signature": f"v1={digest}"}
    event = guardduty_event()
    event["detail"]["service"] = {"additionalInfo": "__deep__"}
    return "/alerts/guardduty", with_deep(event, depth), {"Authorization": f"Bearer {TOKEN}"}


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 2, 300, 989, 20_000])
@pytest.mark.parametrize("source", ["generic", "pagerduty", "guardduty"])
def test_deep_signed_alert_is_a_400_every_time_and_starts_nothing(
    harness: Harness, source: str, depth: int
) -> None:
    path, body, headers = signed_request(source, depth)
    first = harness.client.post(path, content=body, headers=headers)
    again = harness.client.post(path, content=body, headers=headers)  # the sender's retry
    assert (first.status_code, first.json()) == (400, {"error": REASON})
    assert (again.status_code, again.json()) == (400, {"error": REASON})
    assert harness.triage.calls == []


def test_the_same_alert_a_little_less_deep_is_accepted(harness: Harness) -> None:
    path, body, headers = signed_request("generic", MAX_JSON_DEPTH - 4)
    response = harness.client.post(path, content=body, headers=headers)
    assert response.status_code == 202, response.text
    assert len(harness.triage.calls) == 1


def test_deep_sns_inner_message_is_a_400(harness: Harness) -> None:
    message = sns_fixture("sns_cloudwatch_alarm.json")
    message["Message"] = '{"AlarmName": "x", "Trigger": ' + deep_text(300) + "}"
    response = post(harness, "/alerts/sns", sns_request(harness, message))
    assert response.status_code == 400
    assert response.json() == {
        "error": f"sns.Message is nested deeper than {MAX_JSON_DEPTH} levels"
    }
    assert harness.triage.calls == []


def test_a_refused_authenticated_delivery_is_recorded_and_its_retry_logged_as_such(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from clampdown_alerts import AlertSettings, InMemoryDeliveryLog, alert_router
    from tests.unit.test_alerts_routes import RecordingTriage

    settings = AlertSettings(alert_hmac_secret=HMAC_SECRET, alert_token=TOKEN)
    log, triage = InMemoryDeliveryLog(), RecordingTriage()
    app = FastAPI()
    app.include_router(alert_router(settings, triage, log))
    path, body, headers = signed_request("generic", 300)
    with TestClient(app) as client, caplog.at_level("WARNING", "clampdown.alerts"):
        answers = [client.post(path, content=body, headers=headers) for _ in range(3)]
        forged = client.post(
            path, content=body, headers={**headers, "X-Clampdown-Signature": "v1=00"}
        )
    assert [(a.status_code, a.json()) for a in answers] == [(400, {"error": REASON})] * 3
    assert forged.status_code == 401
    refusals = [r.getMessage() for r in caplog.records if "refused (400)" in r.getMessage()]
    assert len(refusals) == 3
    assert "again" not in refusals[0]
    assert all(
        "refused (400) again (the same delivery was refused before)" in m for m in refusals[1:]
    )
    digest = hashlib.sha256(body).hexdigest()
    assert log.first_seen(f"generic:refused:{digest}", 60) is False  # it is on record
    assert triage.calls == []
