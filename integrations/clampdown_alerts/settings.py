"""Settings of the alert endpoints, from ``CLAMPDOWN_*`` environment variables.

Secrets are :class:`pydantic.SecretStr` so they never print; an endpoint whose
secret is unset answers 503 "not configured" instead of accepting anything.
PagerDuty and generic-HMAC secrets may list several values, comma-separated, so a
secret can be rotated without dropping alerts (old and new both verify meanwhile).
"""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from clampdown.core.alert import SEVERITY_ORDER, Severity
from clampdown.core.durations import parse_positive_duration

DEFAULT_MAX_ALERT_BYTES = 256 * 1024


class AlertSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CLAMPDOWN_", extra="ignore")

    alert_token: SecretStr | None = Field(
        None,
        description="bearer token of /alerts/eventbridge, /alerts/guardduty, /alerts/alertmanager "
        "(Authorization: Bearer <t> or X-Clampdown-Token: <t>)",
    )
    pagerduty_secret: SecretStr | None = Field(
        None, description="PagerDuty v3 webhook signing secret(s), comma-separated"
    )
    alert_hmac_secret: SecretStr | None = Field(
        None, description="HMAC secret(s) of /alerts/generic, comma-separated"
    )
    sns_topic_arns: str = Field(
        "", description="comma-separated SNS topic ARNs whose messages are accepted"
    )
    sns_cert_dir: Path | None = Field(
        None,
        description="read SNS signing certificates from this folder (file named as the last "
        "part of SigningCertURL) instead of downloading them: for tests and air-gapped hosts",
    )
    sns_cert_timeout: float = Field(5.0, gt=0, le=30, description="certificate download timeout")
    sns_alarm_severities: str = Field(
        "*=high",
        description="severity of a CloudWatch alarm in ALARM state: 'pattern=severity,...' "
        "matched against AlarmName (shell wildcards), first match wins",
    )
    max_alert_bytes: int = Field(
        DEFAULT_MAX_ALERT_BYTES, ge=1024, le=10 * 1024 * 1024, description="largest body accepted"
    )
    replay_window: float = Field(
        300.0,
        description="how far ahead of the server's clock a message's timestamp may be, and how "
        "long a delivery without an id of its own (Alertmanager: its body) is remembered, e.g. 5m",
    )
    delivery_retention: float = Field(
        86400.0,
        description="how long delivery ids are remembered, and so how late an authenticated "
        "delivery may arrive and still be accepted once (senders retry for up to 24 h), e.g. 24h",
    )

    @field_validator("alert_token", "pagerduty_secret", "alert_hmac_secret", mode="before")
    @classmethod
    def _blank_secret_is_unset(cls, value: Any) -> Any:
        if isinstance(value, str):
            return value.strip() or None
        return value

    @field_validator("replay_window", "delivery_retention", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        return parse_positive_duration(value)

    @field_validator("sns_alarm_severities")
    @classmethod
    def _rules_parse(cls, value: str) -> str:
        _parse_rules(value)
        return value

    @property
    def pagerduty_secrets(self) -> list[bytes]:
        return _split_secret(self.pagerduty_secret)

    @property
    def hmac_secrets(self) -> list[bytes]:
        return _split_secret(self.alert_hmac_secret)

    @property
    def allowed_topics(self) -> frozenset[str]:
        return frozenset(t.strip() for t in self.sns_topic_arns.split(",") if t.strip())

    def alarm_severity(self, alarm_name: str) -> Severity:
        """Severity of an alarm in ALARM state by the first matching rule ("high" if none)."""
        for pattern, severity in _parse_rules(self.sns_alarm_severities):
            if fnmatch.fnmatchcase(alarm_name, pattern):
                return severity
        return "high"


def _split_secret(secret: SecretStr | None) -> list[bytes]:
    if secret is None:
        return []
    return [s.strip().encode() for s in secret.get_secret_value().split(",") if s.strip()]


def _parse_rules(text: str) -> list[tuple[str, Severity]]:
    rules: list[tuple[str, Severity]] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        pattern, sep, severity = part.rpartition("=")
        severity = severity.strip()
        if not sep or not pattern.strip() or severity not in SEVERITY_ORDER:
            raise ValueError(
                f"rule '{part}' must be 'alarm-name-pattern=severity' with severity one of "
                f"{', '.join(SEVERITY_ORDER)}"
            )
        rules.append((pattern.strip(), severity))  # type: ignore[arg-type]
    return rules
