"""Inbound Slack requests built and signed exactly as Slack builds and signs them.

Slack signs ``v0:{timestamp}:{raw body}`` with HMAC-SHA256 under the app's signing
secret and sends ``X-Slack-Request-Timestamp`` and ``X-Slack-Signature: v0=<hex>``.
Interactive payloads (button clicks, modal submissions) arrive form-encoded as
``payload=<json>``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any
from urllib.parse import urlencode

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
TEAM = "T0TEAM"
CHANNEL = "C0INCIDENT"
ONCALL = ["U0ONCALL1", "U0ONCALL2"]  # members of the stand-in's security-oncall group


def signed_headers(body: str, secret: str = SECRET, timestamp: int | None = None) -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": f"v0={digest}",
    }


def post_signed(client: Any, body: str, **sign: Any) -> Any:
    return client.post("/slack/events", content=body, headers=signed_headers(body, **sign))


def block_action(
    user: str, action_id: str, value: str, *, message_ts: str = "1.000001", channel: str = CHANNEL
) -> str:
    """A ``block_actions`` payload: one button clicked on a message in ``channel``."""
    payload = {
        "type": "block_actions",
        "user": {"id": user, "username": user.lower(), "team_id": TEAM},
        "api_app_id": "A0APP",
        "token": "deprecated-verification-token",
        "container": {
            "type": "message",
            "message_ts": message_ts,
            "channel_id": channel,
            "is_ephemeral": False,
        },
        "trigger_id": "1337.42.abcdef",
        "team": {"id": TEAM, "domain": "example"},
        "channel": {"id": channel, "name": "incident-response"},
        "message": {"type": "message", "ts": message_ts, "text": "Approval needed"},
        "response_url": "https://hooks.slack.invalid/actions/T0TEAM/1/abc",
        "actions": [
            {
                "action_id": action_id,
                "block_id": "approval",
                "value": value,
                "type": "button",
                "action_ts": f"{time.time():.6f}",
            }
        ],
    }
    return urlencode({"payload": json.dumps(payload)})


def view_submission(user: str, callback_id: str, private_metadata: str, values: dict) -> str:
    """A ``view_submission`` payload: a modal submitted with ``values`` (block → action → …)."""
    payload = {
        "type": "view_submission",
        "team": {"id": TEAM, "domain": "example"},
        "user": {"id": user, "username": user.lower(), "team_id": TEAM},
        "api_app_id": "A0APP",
        "token": "deprecated-verification-token",
        "trigger_id": "1337.43.abcdef",
        "view": {
            "id": "V0MODAL",
            "type": "modal",
            "callback_id": callback_id,
            "private_metadata": private_metadata,
            "state": {"values": values},
            "hash": "1.abc",
        },
    }
    return urlencode({"payload": json.dumps(payload)})
