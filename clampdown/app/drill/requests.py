"""Alerts, clicks and commands posted to ``clampdown serve`` exactly as their senders do.

Each request is signed with the drill's own secrets the way the real sender signs
it, so a drill exercises the server's verification instead of a shortcut around it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from clampdown.app.drill.world import SLACK_CHANNEL, Secrets
from clampdown.core.diagnostics import ClampdownError

TEAM = "T0DRILL01"


def alert_request(
    source: str, payload: dict[str, Any], keys: Secrets
) -> tuple[bytes, dict[str, str]]:
    """The body and headers ``source`` sends, authenticated the way that source does."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "clampdown-drill"}
    if source in ("guardduty", "eventbridge", "alertmanager"):
        headers["Authorization"] = f"Bearer {keys.alert_token}"
    elif source == "pagerduty":
        digest = hmac.new(keys.pagerduty_secret.encode(), body, hashlib.sha256).hexdigest()
        headers["X-PagerDuty-Signature"] = f"v1={digest}"
    elif source == "generic":
        stamp = str(int(time.time()))
        signed = b"v1:" + stamp.encode() + b":" + body
        digest = hmac.new(keys.hmac_secret.encode(), signed, hashlib.sha256).hexdigest()
        headers["X-Clampdown-Timestamp"] = stamp
        headers["X-Clampdown-Signature"] = f"v1={digest}"
    else:
        raise ClampdownError(f"a drill cannot sign '{source}' alerts")
    return body, headers


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """POST ``body`` and read the JSON answer (an HTTP error status is an answer too)."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        answer = json.loads(raw) if raw else {}
    except ValueError:
        answer = {"text": raw[:500].decode(errors="replace")}
    return status, answer if isinstance(answer, dict) else {"answer": answer}


def slack_click(
    action_id: str, value: str, user: str, card: dict[str, Any], secret: str, response_url: str
) -> tuple[bytes, dict[str, str]]:
    """A ``block_actions`` request for a button on ``card``, signed as Slack signs it."""
    payload = {
        "type": "block_actions",
        "user": {"id": user, "username": user.lower(), "team_id": TEAM},
        "api_app_id": "A0DRILL001",
        "token": "drill-verification-token-unused",
        "container": {
            "type": "message",
            "message_ts": card["ts"],
            "channel_id": card.get("channel", SLACK_CHANNEL),
            "is_ephemeral": False,
        },
        "trigger_id": f"{int(time.time())}.drill.{secrets.token_hex(8)}",
        "team": {"id": TEAM, "domain": "drill"},
        "channel": {"id": card.get("channel", SLACK_CHANNEL), "name": "incident-response"},
        "message": {k: v for k, v in card.items() if k != "channel"},
        "response_url": response_url,
        "actions": [
            {
                "action_id": action_id,
                "block_id": "clampdown_decision",
                "type": "button",
                "value": value,
                "action_ts": f"{time.time():.6f}",
            }
        ],
    }
    body = urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()
    return body, slack_signed_headers(body, secret)


def deny_submission(
    value: str, channel: str, user: str, reason: str, secret: str
) -> tuple[bytes, dict[str, str]]:
    """The deny modal's ``view_submission``, with the reason typed in, signed as Slack signs it."""
    from clampdown_slack.approval_card import (
        DENY_VIEW,
        REASON_BLOCK,
        REASON_INPUT,
        parse_button_value,
    )

    metadata = json.dumps({"value": parse_button_value(value), "channel": channel})
    payload = {
        "type": "view_submission",
        "team": {"id": TEAM, "domain": "drill"},
        "user": {"id": user, "username": user.lower(), "team_id": TEAM},
        "api_app_id": "A0DRILL001",
        "token": "drill-verification-token-unused",
        "trigger_id": f"{int(time.time())}.drill.{secrets.token_hex(8)}",
        "view": {
            "id": "V0DRILL" + secrets.token_hex(3).upper(),
            "type": "modal",
            "callback_id": DENY_VIEW,
            "private_metadata": metadata,
            "state": {
                "values": {
                    REASON_BLOCK: {REASON_INPUT: {"type": "plain_text_input", "value": reason}}
                }
            },
        },
    }
    body = urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()
    return body, slack_signed_headers(body, secret)


def slash_command(
    text: str, user: str, secret: str, response_url: str
) -> tuple[bytes, dict[str, str]]:
    """``/clampdown <text>`` typed by ``user`` in the incident channel, signed as Slack signs it."""
    form = {
        "token": "drill-verification-token-unused",
        "team_id": TEAM,
        "team_domain": "drill",
        "channel_id": SLACK_CHANNEL,
        "channel_name": "incident-response",
        "user_id": user,
        "user_name": user.lower(),
        "command": "/clampdown",
        "text": text,
        "api_app_id": "A0DRILL001",
        "is_enterprise_install": "false",
        "response_url": response_url,
        "trigger_id": f"{int(time.time())}.drill.{secrets.token_hex(8)}",
    }
    body = urllib.parse.urlencode(form).encode()
    return body, slack_signed_headers(body, secret)


def slack_signed_headers(body: bytes, secret: str) -> dict[str, str]:
    stamp = str(int(time.time()))
    base = f"v0:{stamp}:".encode() + body
    signature = "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": signature,
    }


def post_slack_event(base_url: str, body: bytes, headers: dict[str, str]) -> None:
    """Post a signed Slack request to ``/slack/events``; anything but 200 is an error."""
    status, answer = post(f"{base_url}/slack/events", body, headers)
    if status != 200:
        raise ClampdownError(f"/slack/events answered HTTP {status}: {answer}")
