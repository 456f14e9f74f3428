"""The Slack Web API client every clampdown Slack action uses.

A real ``slack_sdk.WebClient`` with bounded retries: HTTP 429 (after the
``Retry-After`` Slack sends), HTTP 500/503 and connection errors are retried with
slack-sdk's own retry handlers. Settings come from ``CLAMPDOWN_SLACK_*`` variables:

| variable | meaning |
|---|---|
| ``CLAMPDOWN_SLACK_BOT_TOKEN`` | bot token (``xoxb-…``); never logged, never in an error |
| ``CLAMPDOWN_SLACK_CHANNEL`` | default channel (id like ``C0123ABCD`` or ``#name``) |
| ``CLAMPDOWN_SLACK_API_URL`` | Web API base URL (default Slack's); drills use the stand-in |
| ``CLAMPDOWN_SLACK_MAX_RETRIES`` | retries after the first attempt, all causes together (3) |
| ``CLAMPDOWN_SLACK_RETRY_INTERVAL`` | back-off base in seconds for 5xx/connection errors (0.5) |
| ``CLAMPDOWN_SLACK_TIMEOUT`` | seconds per HTTP request (10) |
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from clampdown.core.diagnostics import ClampdownError
from clampdown.core.settings import settings_problems

if TYPE_CHECKING:
    from slack_sdk import WebClient

SLACK_API_URL = "https://slack.com/api/"


class SlackNotConfigured(ClampdownError):
    """A Slack setting is missing or invalid; the message names the variable to set."""


class SlackSettings(BaseSettings):
    """The Slack part of clampdown's settings (same field names as ``clampdown.core.settings``)."""

    model_config = SettingsConfigDict(env_prefix="CLAMPDOWN_", extra="ignore")

    slack_bot_token: SecretStr | None = Field(None, description="Slack bot token (xoxb-…)")
    slack_channel: str | None = Field(None, description="default Slack channel for status")
    slack_api_url: str | None = Field(None, description="Slack Web API base URL")
    slack_max_retries: int = Field(3, ge=0, le=10, description="Slack retries per call")
    slack_retry_interval: float = Field(0.5, ge=0, le=60, description="Slack back-off base (s)")
    slack_timeout: float = Field(10, gt=0, le=300, description="Slack HTTP timeout (s)")

    @field_validator("slack_bot_token", "slack_channel", "slack_api_url", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value.strip() if isinstance(value, str) else value


class SlackSettingsLike(Protocol):
    slack_bot_token: SecretStr | None
    slack_api_url: str | None
    slack_max_retries: int
    slack_retry_interval: float
    slack_timeout: float


def slack_settings() -> SlackSettings:
    """Read the environment afresh; an invalid value is a :class:`SlackNotConfigured`."""
    try:
        return SlackSettings()
    except ValidationError as exc:
        raise SlackNotConfigured(
            f"invalid Slack setting: {settings_problems(exc)}", "fix the variable"
        ) from None


def thread_settings(config: SlackSettings | None = None) -> SlackSettings | None:
    """Slack's settings (``config``, else read now) when a run's thread can be kept — a
    bot token and a channel — else None (also when a Slack setting is invalid: then
    nothing is posted)."""
    if config is None:
        try:
            config = slack_settings()
        except SlackNotConfigured:
            return None
    if config.slack_bot_token is None or not config.slack_channel:
        return None
    return config


def api_base_url(settings: SlackSettingsLike) -> str:
    """The Web API base URL, with the trailing slash slack-sdk needs.

    slack-sdk joins it with ``urljoin``: without the slash, ``http://host/api`` +
    ``chat.postMessage`` would become ``http://host/chat.postMessage``.
    """
    url = settings.slack_api_url or SLACK_API_URL
    return url if url.endswith("/") else url + "/"


def slack_client(settings: SlackSettingsLike | None = None) -> WebClient:
    """A ``slack_sdk.WebClient`` for the bot token, with clampdown's retry handlers.

    Raises :class:`SlackNotConfigured` when ``CLAMPDOWN_SLACK_BOT_TOKEN`` is unset.
    """
    from slack_sdk import WebClient  # here: lint and plan must not pay for slack-sdk

    settings = settings if settings is not None else slack_settings()
    if settings.slack_bot_token is None:
        raise SlackNotConfigured(
            "Slack is not configured: CLAMPDOWN_SLACK_BOT_TOKEN is not set",
            "set CLAMPDOWN_SLACK_BOT_TOKEN to the Slack app's bot token (xoxb-…)",
        )
    return WebClient(
        token=settings.slack_bot_token.get_secret_value(),
        base_url=api_base_url(settings),
        timeout=settings.slack_timeout,  # type: ignore[arg-type]  # urllib takes a float
        retry_handlers=retry_handlers(settings.slack_max_retries, settings.slack_retry_interval),
    )


def retry_handlers(max_retries: int, interval: float) -> list[Any]:
    """slack-sdk's handlers for connection errors, HTTP 429 and HTTP 500/503.

    slack-sdk keeps one attempt counter per request for all handlers together, so
    ``max_retries`` bounds the retries of a call whatever mix of failures it meets.
    Waits: 429 sleeps ``Retry-After`` plus up to 1 s (slack-sdk's rule; it ignores
    the interval calculator); others back off ``interval * 2**attempt``, plus up
    to as much again of jitter (no wait at all when ``interval`` is 0).
    """
    from slack_sdk.http_retry import (
        BackoffRetryIntervalCalculator,
        ConnectionErrorRetryHandler,
        Jitter,
        RateLimitErrorRetryHandler,
    )
    from slack_sdk.http_retry.builtin_handlers import ServerErrorRetryHandler

    class ProportionalJitter(Jitter):
        """Up to as much again as the back-off (slack-sdk's RandomJitter adds up to 1 s)."""

        def recalculate(self, duration: float) -> float:
            return duration * (1 + random.random())

    backoff = BackoffRetryIntervalCalculator(backoff_factor=interval, jitter=ProportionalJitter())
    return [
        ConnectionErrorRetryHandler(max_retry_count=max_retries, interval_calculator=backoff),
        RateLimitErrorRetryHandler(max_retry_count=max_retries),
        ServerErrorRetryHandler(max_retry_count=max_retries, interval_calculator=backoff),
    ]
