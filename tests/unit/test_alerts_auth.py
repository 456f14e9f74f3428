"""Authentication of inbound alerts: bearer, PagerDuty v3, generic HMAC, SNS signatures,
replay protection and the settings they read. SNS uses a certificate made here."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from clampdown_alerts.errors import Malformed, Unauthenticated
from clampdown_alerts.replay import InMemoryDeliveryLog, check_fresh
from clampdown_alerts.settings import AlertSettings
from clampdown_alerts.signatures import (
    SnsVerifier,
    check_cert_url,
    check_subscribe_url,
    generic_signature,
    sns_string_to_sign,
    verify_bearer,
    verify_generic,
    verify_pagerduty,
)
from tests import paths

FIXTURES = paths.FIXTURES / "alerts"
CERT_NAME = "SimpleNotificationService-clampdown-test.pem"
CERT_URL = f"https://sns.us-east-1.amazonaws.com/{CERT_NAME}"
TOPIC = "arn:aws:sns:us-east-1:123456789012:clampdown-alarms"


# --- helpers shared with test_alerts_routes -------------------------------------------------


@cache
def _rsa_key() -> Any:
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def make_certificate(key: Any, not_after: datetime | None = None) -> bytes:
    """A self-signed X.509 certificate (PEM) for ``key``, like the one SNS publishes."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    now = datetime.now(UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(not_after or now + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class SnsSigner:
    """Signs SNS messages as AWS does; the certificate lives in ``cert_dir``."""

    cert_dir: Path
    key: Any = field(default_factory=_rsa_key)

    def __post_init__(self) -> None:
        self.cert_dir.mkdir(parents=True, exist_ok=True)
        self.pem = make_certificate(self.key)
        (self.cert_dir / CERT_NAME).write_bytes(self.pem)

    def sign(self, message: dict[str, Any], version: str = "2") -> dict[str, Any]:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        signed = dict(message, SignatureVersion=version, SigningCertURL=CERT_URL)
        algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
        raw = self.key.sign(sns_string_to_sign(signed), padding.PKCS1v15(), algorithm)
        signed["Signature"] = base64.b64encode(raw).decode()
        return signed


def sns_fixture(name: str, **changes: Any) -> dict[str, Any]:
    message = json.loads((FIXTURES / name).read_text())
    message["Timestamp"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    message.update(changes)
    return message


class RecordingFetch:
    """A fetcher that never goes out: records the URLs and answers from a dict."""

    def __init__(self, answers: dict[str, bytes] | None = None) -> None:
        self.answers = answers or {}
        self.calls: list[str] = []

    def __call__(self, url: str, timeout: float) -> bytes:
        self.calls.append(url)
        if url not in self.answers:
            raise OSError("HTTP 404")
        return self.answers[url]


# --- bearer -----------------------------------------------------------------------------------

TOKEN = AlertSettings(alert_token="s3cret-token").alert_token


@pytest.mark.parametrize(
    "headers",
    [
        {"authorization": "Bearer s3cret-token"},
        {"authorization": "bearer   s3cret-token "},
        {"x-clampdown-token": "s3cret-token"},
        {"authorization": "Bearer wrong", "x-clampdown-token": "s3cret-token"},
    ],
)
def test_bearer_accepts_the_token_in_either_header(headers: dict[str, str]) -> None:
    verify_bearer(headers, TOKEN)


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "missing credential"),
        ({"authorization": "Basic czNjcmV0LXRva2Vu"}, "missing credential"),
        ({"authorization": "Bearer s3cret-token-x"}, "invalid token"),
        ({"x-clampdown-token": "S3CRET-TOKEN"}, "invalid token"),
        ({"x-clampdown-token": "s3cret-tokén"}, "invalid token"),
    ],
)
def test_bearer_refuses_missing_or_wrong_tokens(headers: dict[str, str], reason: str) -> None:
    with pytest.raises(Unauthenticated, match=reason) as caught:
        verify_bearer(headers, TOKEN)
    assert "s3cret" not in caught.value.reason


# --- PagerDuty --------------------------------------------------------------------------------

BODY = b'{"event":{"id":"01","event_type":"incident.triggered"}}'


def pd_signature(secret: bytes, body: bytes = BODY) -> str:
    return "v1=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def test_pagerduty_signature_verifies_with_any_secret_and_any_v1_value() -> None:
    verify_pagerduty(BODY, pd_signature(b"new"), [b"new"])
    # rotation: PagerDuty signs with old and new; the server knows only the new secret
    verify_pagerduty(BODY, f"{pd_signature(b'old')},{pd_signature(b'new')}", [b"new"])
    # rotation on our side: the server knows both, PagerDuty still signs with the old one
    verify_pagerduty(BODY, pd_signature(b"old"), [b"new", b"old"])
    verify_pagerduty(BODY, pd_signature(b"new").upper().replace("V1=", "v1="), [b"new"])


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "missing X-PagerDuty-Signature"),
        ("v0=abcd", "no v1="),
        (pd_signature(b"other"), "does not match the body"),
        (pd_signature(b"new", BODY + b" "), "does not match the body"),
        ("v1=" + "0" * 63, "does not match"),
        (",".join([pd_signature(b"x")] * 9), "more than 8"),
    ],
)
def test_pagerduty_signature_refusals(header: str | None, reason: str) -> None:
    with pytest.raises(Unauthenticated, match=reason):
        verify_pagerduty(BODY, header, [b"new"])


# --- generic HMAC -------------------------------------------------------------------------------


def test_generic_signature_is_hmac_of_version_timestamp_and_body() -> None:
    expected = hmac.new(b"k", b"v1:1700000000:" + BODY, hashlib.sha256).hexdigest()
    assert generic_signature(b"k", "1700000000", BODY) == f"v1={expected}"
    sent = verify_generic(BODY, "1700000000", f"v1={expected}", [b"k"], 1_700_000_100.0, 300)
    assert sent == 1_700_000_000.0


@pytest.mark.parametrize(
    ("timestamp", "signature_ts", "now", "secret", "reason"),
    [
        (None, "1700000000", 1_700_000_000, b"k", "missing X-Clampdown-Timestamp"),
        ("17e8", "17e8", 1_700_000_000, b"k", "integer number of unix seconds"),
        ("1700000000", "1700000000", 1_700_000_000, b"other", "does not match"),
        ("1700000001", "1700000000", 1_700_000_000, b"k", "does not match"),  # ts is signed
        ("1700000000", "1700000000", 1_700_000_301, b"k", "301 s away"),
        ("1700000400", "1700000400", 1_700_000_000, b"k", "400 s away"),  # from the future
    ],
)
def test_generic_refusals(
    timestamp: str | None, signature_ts: str, now: float, secret: bytes, reason: str
) -> None:
    signature = generic_signature(secret, signature_ts, BODY)
    with pytest.raises(Unauthenticated, match=reason):
        verify_generic(BODY, timestamp, signature, [b"k"], now, 300)


def test_generic_timestamp_may_be_old_up_to_the_retention_but_only_slightly_ahead() -> None:
    """As serve calls it: max age = id retention (24 h), max ahead = replay window (5 min)."""
    now = 1_700_000_000.0
    hour_old = generic_signature(b"k", "1699996400", BODY)
    assert verify_generic(BODY, "1699996400", hour_old, [b"k"], now, 86400, 300) == 1699996400.0
    ahead = generic_signature(b"k", "1700000400", BODY)
    with pytest.raises(Unauthenticated, match=r"400 s away.*ahead of it"):
        verify_generic(BODY, "1700000400", ahead, [b"k"], now, 86400, 300)
    day_old = generic_signature(b"k", "1699913599", BODY)
    with pytest.raises(Unauthenticated, match="delivery id retention"):
        verify_generic(BODY, "1699913599", day_old, [b"k"], now, 86400, 300)


# --- SNS: canonical string, certificate URL, signatures ------------------------------------------


def test_sns_string_to_sign_follows_aws_field_order() -> None:
    message = {
        "Type": "Notification",
        "MessageId": "m-1",
        "TopicArn": TOPIC,
        "Subject": "hello",
        "Message": "line1\nline2",
        "Timestamp": "2024-05-14T10:00:00.000Z",
    }
    assert sns_string_to_sign(message) == (
        b"Message\nline1\nline2\nMessageId\nm-1\nSubject\nhello\n"
        b"Timestamp\n2024-05-14T10:00:00.000Z\nTopicArn\n"
        + TOPIC.encode()
        + b"\nType\nNotification\n"
    )
    del message["Subject"]
    assert b"Subject" not in sns_string_to_sign(message)
    confirmation = sns_fixture("sns_subscription_confirmation.json")
    expected = "".join(
        f"{name}\n{confirmation[name]}\n"
        for name in (
            "Message",
            "MessageId",
            "SubscribeURL",
            "Timestamp",
            "Token",
            "TopicArn",
            "Type",
        )
    )
    assert sns_string_to_sign(confirmation) == expected.encode()


def test_sns_string_to_sign_refuses_unknown_types_and_missing_fields() -> None:
    with pytest.raises(Malformed, match="SNS Type must be one of"):
        sns_string_to_sign({"Type": "Other"})
    with pytest.raises(Malformed, match="field 'MessageId' is missing"):
        sns_string_to_sign({"Type": "Notification", "Message": "x"})


@pytest.mark.parametrize(
    "url",
    [
        "http://sns.us-east-1.amazonaws.com/SimpleNotificationService-a.pem",
        "https://sns.evil.com/SimpleNotificationService-a.pem",
        "https://sns.us-east-1.amazonaws.com.evil.com/SimpleNotificationService-a.pem",
        "https://evil.com/sns.us-east-1.amazonaws.com/a.pem",
        "https://sns.us-east-1.amazonaws.com@evil.com/SimpleNotificationService-a.pem",
        "https://user:pw@sns.us-east-1.amazonaws.com/SimpleNotificationService-a.pem",
        "https://sns.us-east-1.amazonaws.com:8443/SimpleNotificationService-a.pem",
        "https://sns.us-east-1.amazonaws.com:443/SimpleNotificationService-a.pem",
        "https://SNS.us-east-1.amazonaws.com/SimpleNotificationService-a.pem",
        "https://sns.us-east-1.amazonaws.com/../evil/a.pem",
        "https://sns.us-east-1.amazonaws.com/dir/a.pem",
        "https://sns.us-east-1.amazonaws.com/a.pem?x=1",
        "https://sns.us-east-1.amazonaws.com/a.txt",
        "https://sns.us-east-1.amazonaws.com\\@evil.com/a.pem",
        "https://xsns.us-east-1.amazonaws.com/a.pem",
        "https://sns.amazonaws.com/a.pem",
        "",
        None,
    ],
)
def test_certificate_urls_off_the_sns_host_are_refused(url: str | None) -> None:
    with pytest.raises(Unauthenticated, match="SigningCertURL"):
        check_cert_url(url)


@pytest.mark.parametrize(
    "url",
    [
        CERT_URL,
        "https://sns.us-gov-west-1.amazonaws.com/SimpleNotificationService-1.pem",
        "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-1.pem",
        "https://sns.ap-southeast-2.amazonaws.com/SimpleNotificationService-1.pem",
    ],
)
def test_certificate_urls_on_sns_hosts_are_accepted(url: str) -> None:
    assert check_cert_url(url) == url


def test_subscribe_url_must_confirm_this_topic_on_an_sns_host() -> None:
    good = (
        f"https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn={TOPIC}&Token=t"
    )
    assert check_subscribe_url(good, TOPIC) == good
    for bad in (
        good.replace("sns.us-east-1.amazonaws.com", "sns.evil.com"),
        good.replace("ConfirmSubscription", "Unsubscribe"),
        good.replace(TOPIC, TOPIC + "-other"),
        good.replace("/?", "/evil?"),
    ):
        with pytest.raises(Unauthenticated, match="SubscribeURL"):
            check_subscribe_url(bad, TOPIC)


@pytest.mark.parametrize("version", ["1", "2"])
def test_sns_signature_verifies_for_both_signature_versions(tmp_path: Path, version: str) -> None:
    signer = SnsSigner(tmp_path / "certs")
    verifier = SnsVerifier(cert_dir=signer.cert_dir)
    for name in ("sns_cloudwatch_alarm.json", "sns_subscription_confirmation.json"):
        message = signer.sign(sns_fixture(name), version)
        verifier.verify(message)
        tampered = copy.deepcopy(message)
        tampered["Message"] = tampered["Message"].replace("ALARM", "OK").replace("subscribe", "x")
        with pytest.raises(Unauthenticated, match="signature does not verify"):
            verifier.verify(tampered)


def test_sns_signature_of_the_other_version_or_another_key_fails(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    signer = SnsSigner(tmp_path / "certs")
    verifier = SnsVerifier(cert_dir=signer.cert_dir)
    message = signer.sign(sns_fixture("sns_cloudwatch_alarm.json"), "2")
    with pytest.raises(Unauthenticated, match="does not verify"):
        verifier.verify(dict(message, SignatureVersion="1"))  # SHA256 signature checked as SHA1
    with pytest.raises(Unauthenticated, match="SignatureVersion must be 1 or 2"):
        verifier.verify(dict(message, SignatureVersion="3"))
    with pytest.raises(Unauthenticated, match="not base64"):
        verifier.verify(dict(message, Signature="%%%"))
    other = SnsSigner(tmp_path / "certs-other", key=rsa.generate_private_key(65537, 2048))
    forged = other.sign(sns_fixture("sns_cloudwatch_alarm.json"), "2")  # same URL, other key
    with pytest.raises(Unauthenticated, match="does not verify"):
        verifier.verify(forged)


def test_sns_certificate_is_fetched_once_and_cached(tmp_path: Path) -> None:
    signer = SnsSigner(tmp_path / "certs")
    fetch = RecordingFetch({CERT_URL: signer.pem})
    verifier = SnsVerifier(fetch=fetch, timeout=2.0)
    for _ in range(3):
        verifier.verify(signer.sign(sns_fixture("sns_cloudwatch_alarm.json")))
    assert fetch.calls == [CERT_URL]


def test_wrong_certificate_host_is_refused_without_any_fetch(tmp_path: Path) -> None:
    signer = SnsSigner(tmp_path / "certs")
    fetch = RecordingFetch()
    verifier = SnsVerifier(fetch=fetch)
    message = signer.sign(sns_fixture("sns_cloudwatch_alarm.json"))
    message["SigningCertURL"] = "https://sns.us-east-1.amazonaws.com.evil.com/" + CERT_NAME
    with pytest.raises(Unauthenticated, match="host must be sns"):
        verifier.verify(message)
    assert fetch.calls == []


def test_unfetchable_expired_or_non_pem_certificates_are_refused(tmp_path: Path) -> None:
    signer = SnsSigner(tmp_path / "certs")
    message = signer.sign(sns_fixture("sns_cloudwatch_alarm.json"))
    with pytest.raises(Unauthenticated, match="could not be fetched: HTTP 404"):
        SnsVerifier(fetch=RecordingFetch()).verify(message)
    with pytest.raises(Unauthenticated, match="not a PEM certificate"):
        SnsVerifier(fetch=RecordingFetch({CERT_URL: b"<html>"})).verify(message)
    expired = make_certificate(signer.key, not_after=datetime.now(UTC) - timedelta(hours=1))
    with pytest.raises(Unauthenticated, match="expired"):
        SnsVerifier(fetch=RecordingFetch({CERT_URL: expired})).verify(message)


# --- replay protection ---------------------------------------------------------------------------


def test_delivery_log_remembers_for_the_ttl_and_can_forget() -> None:
    now = [100.0]
    log = InMemoryDeliveryLog(clock=lambda: now[0])
    assert log.first_seen("sns:1", 60) is True
    assert log.first_seen("sns:1", 60) is False
    assert log.first_seen("sns:2", 60) is True
    now[0] += 61
    assert log.first_seen("sns:1", 60) is True
    log.forget("sns:1")
    assert log.first_seen("sns:1", 60) is True


def test_delivery_log_admits_exactly_one_of_many_concurrent_deliveries() -> None:
    log = InMemoryDeliveryLog()
    results: list[bool] = []
    barrier = threading.Barrier(32)

    def deliver() -> None:
        barrier.wait()
        results.append(log.first_seen("pagerduty:same", 300))

    threads = [threading.Thread(target=deliver) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 31 + [True]


def test_check_fresh_refuses_old_and_future_messages() -> None:
    now = datetime(2024, 5, 14, 10, 0, tzinfo=UTC)
    check_fresh(now - timedelta(seconds=299), now, 300, "sns.Timestamp")
    check_fresh(datetime(2024, 5, 14, 10, 4), now, 300, "naive is UTC")
    with pytest.raises(Unauthenticated, match=r"sns.Timestamp is 301 s away.*older than the 300 s"):
        check_fresh(now - timedelta(seconds=301), now, 300, "sns.Timestamp")
    with pytest.raises(Unauthenticated, match=r"event\.time is 600 s away.*ahead of it"):
        check_fresh(now + timedelta(minutes=10), now, 300, "event.time")


def test_check_fresh_accepts_late_messages_inside_the_retention_only() -> None:
    """Old up to the id retention (a late retry), but only slightly ahead (clock skew)."""
    now = datetime(2024, 5, 14, 10, 0, tzinfo=UTC)
    check_fresh(now - timedelta(hours=23, minutes=59), now, 86400, "event.time", 300)
    with pytest.raises(Unauthenticated, match=r"delivery id retention.*possible replay"):
        check_fresh(now - timedelta(hours=24, seconds=1), now, 86400, "event.time", 300)
    check_fresh(now + timedelta(seconds=299), now, 86400, "event.time", 300)
    with pytest.raises(Unauthenticated, match="more than the 300 s allowed"):
        check_fresh(now + timedelta(seconds=301), now, 86400, "event.time", 300)


# --- settings --------------------------------------------------------------------------------------


def test_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLAMPDOWN_PAGERDUTY_SECRET", " new-secret , old-secret ")
    monkeypatch.setenv("CLAMPDOWN_ALERT_HMAC_SECRET", "hmac-secret")
    monkeypatch.setenv("CLAMPDOWN_ALERT_TOKEN", "  ")
    monkeypatch.setenv(
        "CLAMPDOWN_SNS_TOPIC_ARNS", f"{TOPIC}, arn:aws:sns:eu-west-1:123456789012:b,"
    )
    monkeypatch.setenv("CLAMPDOWN_REPLAY_WINDOW", "2m")
    monkeypatch.setenv("CLAMPDOWN_SNS_ALARM_SEVERITIES", "model-*=critical, *-latency=low")
    settings = AlertSettings()
    assert settings.pagerduty_secrets == [b"new-secret", b"old-secret"]
    assert settings.hmac_secrets == [b"hmac-secret"]
    assert settings.alert_token is None
    assert settings.allowed_topics == {TOPIC, "arn:aws:sns:eu-west-1:123456789012:b"}
    assert settings.replay_window == 120.0
    assert settings.delivery_retention == 86400.0  # ids are kept as long as senders retry
    assert settings.max_alert_bytes == 256 * 1024
    assert settings.alarm_severity("model-endpoint-invocations-spike") == "critical"
    assert settings.alarm_severity("api-latency") == "low"
    assert settings.alarm_severity("unmatched") == "high"
    shown = repr(settings) + str(settings.model_dump())
    assert "new-secret" not in shown and "hmac-secret" not in shown


def test_settings_refuse_a_bad_severity_rule() -> None:
    with pytest.raises(
        ValidationError, match="'model-\\*=urgent' must be 'alarm-name-pattern=severity'"
    ):
        AlertSettings(sns_alarm_severities="model-*=urgent")
