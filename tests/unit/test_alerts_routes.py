"""The alert endpoints end to end through FastAPI's TestClient: for every source a genuine
request starts a run, and a forged, a replayed, a stale and a malformed one start nothing."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from clampdown.core.alert import Alert
from clampdown_alerts import AlertSettings, InMemoryDeliveryLog, TriageOutcome, alert_router
from clampdown_alerts.signatures import generic_signature
from tests import paths
from tests.unit.test_alerts_auth import CERT_NAME, TOPIC, RecordingFetch, SnsSigner, sns_fixture

FIXTURES = paths.FIXTURES / "alerts"
TOKEN = "alert-token-123"
PD_SECRETS = ("pd-new-secret", "pd-old-secret")
HMAC_SECRET = "generic-hmac-secret"
SUBSCRIBE_ANSWER = b"<ConfirmSubscriptionResponse/>"


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def now_iso(shift: timedelta = timedelta()) -> str:
    return iso(datetime.now(UTC) + shift)


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


@dataclass
class RecordingTriage:
    """A fake triage: records the alerts, answers ``status`` (a run id when started)."""

    status: str = "started"
    calls: list[Alert] = field(default_factory=list)
    on_event_loop: list[bool] = field(default_factory=list)
    fail: bool = False

    def __call__(self, alert: Alert) -> TriageOutcome:
        try:  # a running loop in this thread means the triage blocks the event loop
            asyncio.get_running_loop()
            self.on_event_loop.append(True)
        except RuntimeError:
            self.on_event_loop.append(False)
        if self.fail:
            raise RuntimeError("database unavailable")
        self.calls.append(alert)
        run_id = f"run-{len(self.calls)}" if self.status in ("started", "joined") else None
        return TriageOutcome(self.status, run_id, "contain-model-exfiltration", "matched")  # type: ignore[arg-type]


@dataclass
class Harness:
    client: TestClient
    triage: RecordingTriage
    fetch: RecordingFetch
    signer: SnsSigner
    settings: AlertSettings


def build(tmp_path: Path, **overrides: Any) -> Harness:
    signer = SnsSigner(tmp_path / "certs")
    values: dict[str, Any] = {
        "alert_token": TOKEN,
        "pagerduty_secret": ",".join(PD_SECRETS),
        "alert_hmac_secret": HMAC_SECRET,
        "sns_topic_arns": TOPIC,
        "sns_cert_dir": signer.cert_dir,
        "max_alert_bytes": 64 * 1024,
    }
    settings = AlertSettings(**{**values, **overrides})
    triage = RecordingTriage()
    subscribe_url = sns_fixture("sns_subscription_confirmation.json")["SubscribeURL"]
    fetch = RecordingFetch({subscribe_url: SUBSCRIBE_ANSWER})
    app = FastAPI()
    app.include_router(alert_router(settings, triage, InMemoryDeliveryLog(), fetch=fetch))
    return Harness(TestClient(app), triage, fetch, signer, settings)


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = build(tmp_path)
    with h.client:
        yield h


# --- one sender per source: genuine, forged, stale and malformed requests ---------------------

Request = tuple[bytes, dict[str, str]]


def bearer(payload: Any, token: str = TOKEN) -> Request:
    return json.dumps(payload).encode(), {"Authorization": f"Bearer {token}"}


def pd_signed(payload: Any, secret: str = PD_SECRETS[1]) -> Request:
    body = json.dumps(payload).encode()
    signature = "v1=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return body, {"X-PagerDuty-Signature": f"v1={'0' * 64},{signature}"}


def generic_signed(payload: Any, at: float | None = None, secret: str = HMAC_SECRET) -> Request:
    body = json.dumps(payload).encode()
    timestamp = str(int(time.time() if at is None else at))
    return body, {
        "X-Clampdown-Timestamp": timestamp,
        "X-Clampdown-Signature": generic_signature(secret.encode(), timestamp, body),
    }


def guardduty_event(shift: timedelta = timedelta()) -> dict[str, Any]:
    event = load("guardduty_finding.json")
    event["time"] = now_iso(shift)
    return event


def cloudtrail_event(shift: timedelta = timedelta()) -> dict[str, Any]:
    event = load("cloudtrail_api_call.json")
    event["time"] = now_iso(shift)
    return event


def pagerduty_event(shift: timedelta = timedelta()) -> dict[str, Any]:
    payload = load("pagerduty_incident_triggered.json")
    payload["event"]["occurred_at"] = now_iso(shift)
    return payload


@dataclass(frozen=True)
class Sender:
    path: str
    genuine: Callable[[Harness], Request]
    forged: Callable[[Harness], Request]
    forged_reason: str
    malformed: Callable[[Harness], Request]
    malformed_reason: str
    stale: Callable[[Harness], Request] | None
    stale_reason: str = ""


def sns_request(h: Harness, message: dict[str, Any], version: str = "2") -> Request:
    signed = h.signer.sign(message, version)
    return json.dumps(signed).encode(), {
        "x-amz-sns-message-type": signed["Type"],
        "Content-Type": "text/plain; charset=UTF-8",
    }


def sns_forged(h: Harness) -> Request:
    signed = h.signer.sign(sns_fixture("sns_cloudwatch_alarm.json"))
    signed["Message"] = signed["Message"].replace("prod-llm-endpoint", "other-endpoint")
    return json.dumps(signed).encode(), {}


def sns_malformed(h: Harness) -> Request:
    message = sns_fixture("sns_cloudwatch_alarm.json")
    del message["MessageId"]
    return json.dumps(message).encode(), {}


SENDERS = {
    "guardduty": Sender(
        "/alerts/guardduty",
        genuine=lambda h: bearer(guardduty_event()),
        forged=lambda h: bearer(guardduty_event(), token="guessed-token"),
        forged_reason="invalid token",
        malformed=lambda h: bearer({**guardduty_event(), "detail": None}),
        malformed_reason="event.detail must be a JSON object",
        stale=lambda h: bearer(guardduty_event(-timedelta(hours=25))),
        stale_reason="event.time is 9",
    ),
    "eventbridge": Sender(
        "/alerts/eventbridge",
        genuine=lambda h: bearer(cloudtrail_event()),
        forged=lambda h: (bearer(cloudtrail_event())[0], {"X-Clampdown-Token": "nope"}),
        forged_reason="invalid token",
        malformed=lambda h: bearer({k: v for k, v in cloudtrail_event().items() if k != "id"}),
        malformed_reason="event.id is missing",
        stale=lambda h: bearer(cloudtrail_event(timedelta(minutes=10))),
        stale_reason="event.time is 6",  # from the future
    ),
    "sns": Sender(
        "/alerts/sns",
        genuine=lambda h: sns_request(h, sns_fixture("sns_cloudwatch_alarm.json")),
        forged=sns_forged,
        forged_reason="SNS message signature does not verify",
        malformed=sns_malformed,
        malformed_reason="field 'MessageId' is missing",
        stale=lambda h: sns_request(
            h, sns_fixture("sns_cloudwatch_alarm.json", Timestamp=now_iso(-timedelta(hours=25)))
        ),
        stale_reason="sns.Timestamp is 9",
    ),
    "alertmanager": Sender(
        "/alerts/alertmanager",
        genuine=lambda h: bearer(load("alertmanager_v4.json")),
        forged=lambda h: (bearer(load("alertmanager_v4.json"))[0], {}),
        forged_reason="missing credential",
        malformed=lambda h: bearer({**load("alertmanager_v4.json"), "version": "3"}),
        malformed_reason='body.version must be "4"',
        stale=None,  # Alertmanager sends no timestamp of its own: replay is by body only
    ),
    "pagerduty": Sender(
        "/alerts/pagerduty",
        genuine=lambda h: pd_signed(pagerduty_event()),
        forged=lambda h: pd_signed(pagerduty_event(), secret="attacker-secret"),
        forged_reason="X-PagerDuty-Signature does not match the body",
        malformed=lambda h: pd_signed({"event": {"id": "x", "occurred_at": now_iso()}}),
        malformed_reason="body.event.event_type is missing",
        stale=lambda h: pd_signed(pagerduty_event(-timedelta(hours=25))),
        stale_reason="body.event.occurred_at is 9",
    ),
    "generic": Sender(
        "/alerts/generic",
        genuine=lambda h: generic_signed(load("generic.json")),
        forged=lambda h: generic_signed(load("generic.json"), secret="guess"),
        forged_reason="X-Clampdown-Signature does not match",
        malformed=lambda h: generic_signed({"id": "x"}),
        malformed_reason="generic alert: title: Field required",
        stale=lambda h: generic_signed(load("generic.json"), at=time.time() - 25 * 3600),
        stale_reason="X-Clampdown-Timestamp is 9",
    ),
}

EXPECTED = {
    "guardduty": ("guardduty", "Exfiltration:S3/AnomalousBehavior"),
    "eventbridge": ("eventbridge", "CreatePresignedDomainUrl"),
    "sns": ("sns", "model-endpoint-invocations-spike"),
    "alertmanager": ("alertmanager", "ModelWeightsBulkDownload"),
    "pagerduty": ("pagerduty", "incident.triggered"),
    "generic": ("generic", "dlp.model_weights_egress"),
}


def post(h: Harness, path: str, request: Request) -> Any:
    body, headers = request
    return h.client.post(path, content=body, headers=headers)


@pytest.mark.parametrize("source", SENDERS)
def test_genuine_request_starts_a_run_and_answers_202(harness: Harness, source: str) -> None:
    sender = SENDERS[source]
    response = post(harness, sender.path, sender.genuine(harness))
    assert response.status_code == 202, response.text
    assert response.json() == {
        "alerts": [
            {
                "id": harness.triage.calls[0].id,
                "status": "started",
                "run_id": "run-1",
                "trigger": "contain-model-exfiltration",
                "reason": "matched",
            }
        ]
    }
    [alert] = harness.triage.calls
    assert (alert.source, alert.type) == EXPECTED[source]
    assert harness.triage.on_event_loop == [False]  # ran in a worker thread


@pytest.mark.parametrize("source", SENDERS)
def test_forged_request_is_refused_with_401(harness: Harness, source: str) -> None:
    sender = SENDERS[source]
    response = post(harness, sender.path, sender.forged(harness))
    assert response.status_code == 401
    assert sender.forged_reason in response.json()["error"]
    assert harness.triage.calls == []


@pytest.mark.parametrize("source", SENDERS)
def test_replayed_request_is_refused_with_409(harness: Harness, source: str) -> None:
    sender = SENDERS[source]
    request = sender.genuine(harness)
    assert post(harness, sender.path, request).status_code == 202
    again = post(harness, sender.path, request)
    assert again.status_code == 409
    assert "was already received (replay)" in again.json()["error"]
    assert len(harness.triage.calls) == 1


@pytest.mark.parametrize("source", [s for s, sender in SENDERS.items() if sender.stale])
def test_stale_request_is_refused_with_401(harness: Harness, source: str) -> None:
    sender = SENDERS[source]
    assert sender.stale is not None
    response = post(harness, sender.path, sender.stale(harness))
    assert response.status_code == 401
    error = response.json()["error"]
    assert error.startswith(sender.stale_reason)
    if source == "eventbridge":  # its stale request is 10 min in the future
        assert "ahead of it by more than the 300 s allowed (CLAMPDOWN_REPLAY_WINDOW)" in error
    else:  # 25 h old: older than the ids are kept
        assert (
            "older than the 86400 s delivery id retention (CLAMPDOWN_DELIVERY_RETENTION)" in error
        )
        assert "refused as a possible replay" in error
    assert harness.triage.calls == []


# A delivery sent while serve was down arrives late, on the sender's retry: accepted once.
LATE: dict[str, Callable[[Harness, timedelta], Request]] = {
    "guardduty": lambda h, age: bearer(guardduty_event(-age)),
    "eventbridge": lambda h, age: bearer(cloudtrail_event(-age)),
    "sns": lambda h, age: sns_request(
        h, sns_fixture("sns_cloudwatch_alarm.json", Timestamp=now_iso(-age))
    ),
    "pagerduty": lambda h, age: pd_signed(pagerduty_event(-age)),
    "generic": lambda h, age: generic_signed(load("generic.json"), at=time.time() - age.seconds),
}


@pytest.mark.parametrize("age", [timedelta(minutes=10), timedelta(hours=1)], ids=["10m", "1h"])
@pytest.mark.parametrize("source", LATE)
def test_late_delivery_is_accepted_once_and_its_replay_refused(
    harness: Harness, source: str, age: timedelta
) -> None:
    sender = SENDERS[source]
    request = LATE[source](harness, age)
    first = post(harness, sender.path, request)
    assert first.status_code == 202, first.text
    assert [a["status"] for a in first.json()["alerts"]] == ["started"]
    again = post(harness, sender.path, request)
    assert again.status_code == 409
    assert "was already received (replay)" in again.json()["error"]
    assert len(harness.triage.calls) == 1


def test_delivery_id_is_kept_for_the_retention_not_the_replay_window(tmp_path: Path) -> None:
    """The id outlives the 5 min window: a replay 2 h later (clock moved) is still refused."""
    clock = [time.time()]
    h = build(tmp_path)
    app = FastAPI()
    app.include_router(
        alert_router(
            h.settings, h.triage, InMemoryDeliveryLog(lambda: clock[0]), clock=lambda: clock[0]
        )
    )
    client = TestClient(app)
    body, headers = bearer(guardduty_event(-timedelta(hours=1)))
    assert client.post("/alerts/guardduty", content=body, headers=headers).status_code == 202
    clock[0] += 2 * 3600  # now 3 h after the event: inside the 24 h retention
    again = client.post("/alerts/guardduty", content=body, headers=headers)
    assert again.status_code == 409, again.text
    assert len(h.triage.calls) == 1


def test_delivery_retention_is_a_setting(tmp_path: Path) -> None:
    h = build(tmp_path, delivery_retention="2h")
    with h.client:
        body, headers = bearer(guardduty_event(-timedelta(hours=3)))
        response = h.client.post("/alerts/guardduty", content=body, headers=headers)
    assert response.status_code == 401
    assert "older than the 7200 s delivery id retention" in response.json()["error"]
    assert h.triage.calls == []


@pytest.mark.parametrize("source", SENDERS)
def test_malformed_request_is_refused_with_400(harness: Harness, source: str) -> None:
    sender = SENDERS[source]
    response = post(harness, sender.path, sender.malformed(harness))
    assert response.status_code == 400
    assert sender.malformed_reason in response.json()["error"]
    assert harness.triage.calls == []


@pytest.mark.parametrize("source", SENDERS)
def test_body_that_is_not_json_is_refused_with_400(harness: Harness, source: str) -> None:
    sender = SENDERS[source]
    body = b'{"id": "x",'
    if source == "generic":
        _, headers = generic_signed({})
        headers = dict(headers)
        ts = headers["X-Clampdown-Timestamp"]
        headers["X-Clampdown-Signature"] = generic_signature(HMAC_SECRET.encode(), ts, body)
    elif source == "pagerduty":
        digest = hmac.new(PD_SECRETS[0].encode(), body, hashlib.sha256).hexdigest()
        headers = {"X-PagerDuty-Signature": f"v1={digest}"}
    else:
        headers = {"Authorization": f"Bearer {TOKEN}"}
    response = harness.client.post(sender.path, content=body, headers=headers)
    assert response.status_code == 400
    assert response.json()["error"].startswith("body is not JSON: Expecting")
    assert harness.triage.calls == []


# --- size, configuration, outcomes ---------------------------------------------------------------


@pytest.mark.parametrize("source", SENDERS)
def test_oversized_body_is_refused_with_413_by_header_and_by_count(
    harness: Harness, source: str
) -> None:
    sender = SENDERS[source]
    limit = harness.settings.max_alert_bytes
    _, headers = sender.genuine(harness)
    big = b"x" * (limit + 1)
    response = harness.client.post(sender.path, content=big, headers=headers)
    assert response.status_code == 413
    assert response.json() == {"error": f"body of {limit + 1} bytes is over the {limit}-byte limit"}

    def chunks() -> Iterator[bytes]:  # chunked: no Content-Length to trust
        for _ in range(limit // 1024 + 8):
            yield b"y" * 1024

    streamed = harness.client.post(sender.path, content=chunks(), headers=headers)
    assert streamed.status_code == 413
    assert streamed.json() == {"error": f"body is over the {limit}-byte limit"}
    assert harness.triage.calls == []


@pytest.mark.parametrize(
    ("path", "setting"),
    [
        ("/alerts/guardduty", "CLAMPDOWN_ALERT_TOKEN"),
        ("/alerts/eventbridge", "CLAMPDOWN_ALERT_TOKEN"),
        ("/alerts/alertmanager", "CLAMPDOWN_ALERT_TOKEN"),
        ("/alerts/pagerduty", "CLAMPDOWN_PAGERDUTY_SECRET"),
        ("/alerts/generic", "CLAMPDOWN_ALERT_HMAC_SECRET"),
        ("/alerts/sns", "CLAMPDOWN_SNS_TOPIC_ARNS"),
    ],
)
def test_unconfigured_endpoint_answers_503_naming_the_setting(
    tmp_path: Path, path: str, setting: str
) -> None:
    h = build(
        tmp_path, alert_token="", pagerduty_secret="", alert_hmac_secret="", sns_topic_arns=""
    )
    response = h.client.post(path, content=b"{}", headers={"Authorization": "Bearer "})
    assert response.status_code == 503
    assert response.json() == {"error": f"{path} is not configured: set {setting}"}
    assert h.triage.calls == []


@pytest.mark.parametrize("status", ["joined", "deduplicated", "ignored"])
def test_no_run_started_answers_200(harness: Harness, status: str) -> None:
    harness.triage.status = status
    response = post(harness, "/alerts/guardduty", bearer(guardduty_event()))
    assert response.status_code == 200
    [answer] = response.json()["alerts"]
    assert answer["status"] == status
    assert answer["run_id"] == ("run-1" if status == "joined" else None)


def test_payload_without_firing_alerts_answers_200_and_calls_no_triage(harness: Harness) -> None:
    payload = load("alertmanager_v4.json")
    payload["alerts"] = payload["alerts"][1:]  # only the resolved one
    response = post(harness, "/alerts/alertmanager", bearer(payload))
    assert response.status_code == 200
    assert response.json() == {"alerts": [], "reason": "no firing alert in the payload"}
    assert harness.triage.calls == []


def test_every_firing_alert_of_a_group_is_triaged(harness: Harness) -> None:
    payload = load("alertmanager_v4.json")
    second = copy.deepcopy(payload["alerts"][0])
    second["fingerprint"] = "2b41cb82ddb3a32a"
    second["labels"]["principal_arn"] = "arn:aws:iam::123456789012:user/other"
    payload["alerts"].append(second)
    response = post(harness, "/alerts/alertmanager", bearer(payload))
    assert response.status_code == 202
    assert [a["run_id"] for a in response.json()["alerts"]] == ["run-1", "run-2"]
    assert [a.principal for a in harness.triage.calls] == [
        "arn:aws:iam::123456789012:user/ml-contractor",
        "arn:aws:iam::123456789012:user/other",
    ]


def test_triage_failure_answers_500_and_the_retry_is_accepted(harness: Harness) -> None:
    request = bearer(guardduty_event())
    harness.triage.fail = True
    failed = post(harness, "/alerts/guardduty", request)
    assert failed.status_code == 500
    assert failed.json() == {
        "error": "triage failed; the alert was not handled, retry the delivery"
    }
    harness.triage.fail = False
    retried = post(harness, "/alerts/guardduty", request)
    assert retried.status_code == 202
    assert len(harness.triage.calls) == 1


def test_same_guardduty_event_on_both_endpoints_is_one_delivery(harness: Harness) -> None:
    request = bearer(guardduty_event())
    assert post(harness, "/alerts/eventbridge", request).status_code == 202
    assert post(harness, "/alerts/guardduty", request).status_code == 409
    assert len(harness.triage.calls) == 1


def test_forged_request_does_not_burn_the_genuine_delivery_id(harness: Harness) -> None:
    payload = pagerduty_event()
    assert post(harness, "/alerts/pagerduty", pd_signed(payload, "attacker")).status_code == 401
    assert post(harness, "/alerts/pagerduty", pd_signed(payload)).status_code == 202


def test_pagerduty_acknowledgement_is_accepted_without_triage(harness: Harness) -> None:
    payload = pagerduty_event()
    payload["event"]["event_type"] = "incident.acknowledged"
    response = post(harness, "/alerts/pagerduty", pd_signed(payload))
    assert response.status_code == 200
    assert response.json() == {
        "alerts": [],
        "reason": "event type incident.acknowledged does not call for a response",
    }
    assert harness.triage.calls == []


def test_logs_never_hold_secrets_or_bodies(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="clampdown.alerts")
    marker = "egress-proxy-2"  # only in the generic body
    post(harness, "/alerts/generic", generic_signed(load("generic.json")))
    post(harness, "/alerts/generic", generic_signed(load("generic.json"), secret="wrong"))
    post(harness, "/alerts/guardduty", bearer(guardduty_event(), token="wrong-token"))
    post(harness, "/alerts/guardduty", bearer(guardduty_event()))
    assert "refused (401)" in caplog.text and "started run-" in caplog.text
    for secret in (TOKEN, HMAC_SECRET, *PD_SECRETS, "wrong-token", marker):
        assert secret not in caplog.text


# --- SNS specifics -------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1", "2"])
def test_sns_notification_signed_with_either_version(harness: Harness, version: str) -> None:
    request = sns_request(harness, sns_fixture("sns_cloudwatch_alarm.json"), version)
    response = post(harness, "/alerts/sns", request)
    assert response.status_code == 202, response.text
    assert harness.triage.calls[0].severity == "high"


@pytest.mark.parametrize("version", ["1", "2"])
def test_sns_subscription_is_confirmed_for_an_allowed_topic(harness: Harness, version: str) -> None:
    message = sns_fixture("sns_subscription_confirmation.json")
    response = post(harness, "/alerts/sns", sns_request(harness, message, version))
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "confirmed", "topic": TOPIC}
    assert harness.fetch.calls == [message["SubscribeURL"]]
    assert harness.triage.calls == []


def test_sns_subscription_of_another_topic_is_refused_without_any_fetch(harness: Harness) -> None:
    other = "arn:aws:sns:us-east-1:210987654321:attacker-topic"
    message = sns_fixture("sns_subscription_confirmation.json", TopicArn=other)
    message["SubscribeURL"] = message["SubscribeURL"].replace(TOPIC, other)
    response = post(harness, "/alerts/sns", sns_request(harness, message))
    assert response.status_code == 401
    assert response.json() == {
        "error": "SNS TopicArn is not in the allow-list (CLAMPDOWN_SNS_TOPIC_ARNS)"
    }
    assert harness.fetch.calls == []


def test_sns_subscribe_url_off_the_sns_host_is_refused_without_any_fetch(harness: Harness) -> None:
    message = sns_fixture("sns_subscription_confirmation.json")
    message["SubscribeURL"] = message["SubscribeURL"].replace(
        "sns.us-east-1.amazonaws.com", "sns.us-east-1.amazonaws.com.evil.example"
    )
    response = post(harness, "/alerts/sns", sns_request(harness, message))  # validly signed
    assert response.status_code == 401
    assert "SubscribeURL host must be sns.<region>.amazonaws.com" in response.json()["error"]
    assert harness.fetch.calls == []


def test_sns_confirmation_failure_answers_502_and_can_be_retried(harness: Harness) -> None:
    message = sns_fixture("sns_subscription_confirmation.json")
    request = sns_request(harness, message)
    harness.fetch.answers.clear()
    failed = post(harness, "/alerts/sns", request)
    assert failed.status_code == 502
    assert failed.json() == {"error": "could not confirm the SNS subscription: HTTP 404"}
    harness.fetch.answers[message["SubscribeURL"]] = SUBSCRIBE_ANSWER
    assert post(harness, "/alerts/sns", request).status_code == 200


def test_sns_certificate_url_on_a_wrong_host_is_refused_without_any_fetch(tmp_path: Path) -> None:
    h = build(tmp_path, sns_cert_dir=None)  # certificates would be downloaded
    signed = h.signer.sign(sns_fixture("sns_cloudwatch_alarm.json"))
    signed["SigningCertURL"] = f"https://sns.evil.com/{CERT_NAME}"
    response = h.client.post("/alerts/sns", content=json.dumps(signed))
    assert response.status_code == 401
    assert response.json() == {
        "error": "SNS SigningCertURL host must be sns.<region>.amazonaws.com"
    }
    assert h.fetch.calls == []
    assert h.triage.calls == []


def test_sns_certificate_is_downloaded_from_the_sns_host_when_no_folder_is_set(
    tmp_path: Path,
) -> None:
    h = build(tmp_path, sns_cert_dir=None)
    h.fetch.answers[f"https://sns.us-east-1.amazonaws.com/{CERT_NAME}"] = h.signer.pem
    for _ in range(2):
        request = sns_request(
            h, sns_fixture("sns_cloudwatch_alarm.json", MessageId=str(time.time_ns()))
        )
        assert post(h, "/alerts/sns", request).status_code == 202
    assert h.fetch.calls == [f"https://sns.us-east-1.amazonaws.com/{CERT_NAME}"]  # cached


def test_sns_message_type_header_must_match(harness: Harness) -> None:
    body, _ = sns_request(harness, sns_fixture("sns_cloudwatch_alarm.json"))
    response = harness.client.post(
        "/alerts/sns", content=body, headers={"x-amz-sns-message-type": "SubscriptionConfirmation"}
    )
    assert response.status_code == 400
    assert response.json() == {
        "error": "x-amz-sns-message-type header does not match the message Type"
    }
    assert harness.triage.calls == []


def test_sns_unsubscribe_confirmation_does_nothing(harness: Harness) -> None:
    message = sns_fixture("sns_subscription_confirmation.json", Type="UnsubscribeConfirmation")
    response = post(harness, "/alerts/sns", sns_request(harness, message))
    assert response.status_code == 200
    assert response.json()["status"] == "ignored"
    assert harness.fetch.calls == [] and harness.triage.calls == []
