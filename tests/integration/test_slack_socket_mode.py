"""Socket Mode end to end: the real Bolt app on slack-sdk's websocket client, against the stand-in.

The stand-in plays Slack's side: ``apps.connections.open`` with the app-level token hands
out a one-use websocket URL, the websocket says ``hello``, envelopes are pushed the way
Slack pushes them, and the client's acknowledgements are recorded. Answers travel as in
HTTP mode (``response_url`` and the Web API), so they are read from the stand-in too.
"""

from __future__ import annotations

import inspect
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from pydantic import SecretStr

from clampdown.core.ledger import read as read_ledger
from clampdown.core.settings import settings
from clampdown_flows.decisions import submit_decision
from clampdown_slack.app import SlackAppSettings, build_slack_app
from clampdown_slack.client import SlackNotConfigured
from clampdown_slack.socket_mode import SocketModeLink, _websocket_url_is_safe, connect
from clampdown_slack.testing.standin import SlackStandIn
from tests.slack_requests import CHANNEL, block_action

RESPONDER = "U0RESPONDER"
LEAD = "U0LEAD"
HOOK = "response.hook"  # response_url = <stand-in>/api/response.hook: recorded like a method
FAKE_RUN_ID = "0123456789ab"
GATED = """\
apiVersion: clampdown/v1
kind: Runbook
metadata: {name: gated-note, title: Gated note, severity: low}
inputs:
  note: {type: string, required: true}
steps:
  - id: approve
    uses: approval.request
    with:
      summary: "Write {{ inputs.note }}?"
      approvers: {users: [U0LEAD]}
      timeout: 60s
  - id: write
    uses: core.log
    needs: [approve]
    with: {message: "note {{ inputs.note }}"}
"""


@pytest.fixture
def slack(monkeypatch: pytest.MonkeyPatch) -> Iterator[SlackStandIn]:
    with SlackStandIn() as standin:
        monkeypatch.delenv("CLAMPDOWN_SLACK_SIGNING_SECRET", raising=False)  # not needed here
        monkeypatch.setenv("CLAMPDOWN_SLACK_BOT_TOKEN", standin.token)
        monkeypatch.setenv("CLAMPDOWN_SLACK_APP_TOKEN", standin.app_token)
        monkeypatch.setenv("CLAMPDOWN_SLACK_API_URL", standin.url)
        monkeypatch.setenv("CLAMPDOWN_SLACK_CHANNEL", CHANNEL)
        monkeypatch.setenv("CLAMPDOWN_SLACK_RETRY_INTERVAL", "0")
        monkeypatch.setenv("CLAMPDOWN_SLACK_MAX_RETRIES", "1")
        monkeypatch.setenv("CLAMPDOWN_RESPONDERS", RESPONDER)
        yield standin


@pytest.fixture
def started() -> list[tuple[Path, dict[str, Any], dict[str, Any]]]:
    return []


@pytest.fixture
def fake_start_run(started: list[Any], monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr("clampdown_slack.app.THREAD_WAIT", 0.0)  # fake runs post no thread

    def start_run(path: Path, inputs: dict[str, Any], trigger: dict[str, Any]) -> str:
        started.append((path, inputs, trigger))
        return FAKE_RUN_ID

    return start_run


@pytest.fixture
def link(slack: SlackStandIn, fake_start_run: Any) -> Iterator[SocketModeLink]:
    conf = SlackAppSettings()
    opened = connect(
        build_slack_app(conf, fake_start_run, socket_mode=True, submit_decision=submit_decision),
        conf,
    )
    yield opened
    opened.close()


def slash(slack: SlackStandIn, text: str, user: str = RESPONDER) -> dict[str, Any]:
    """A ``/clampdown`` payload as Slack puts it in a ``slash_commands`` envelope."""
    return {
        "token": "deprecated-verification-token",
        "team_id": "T0TEAM",
        "team_domain": "example",
        "channel_id": CHANNEL,
        "channel_name": "incident-response",
        "user_id": user,
        "user_name": "someone",
        "command": "/clampdown",
        "text": text,
        "api_app_id": "A0APP",
        "is_enterprise_install": "false",
        "response_url": slack.url + HOOK,
        "trigger_id": "1234.5678.abcdef",
    }


def click(user: str, value: str) -> dict[str, Any]:
    """A ``block_actions`` payload (an Approve click) as Slack puts it in an envelope."""
    from clampdown_slack.approval_card import APPROVE_ACTION

    form = block_action(user, APPROVE_ACTION, value)
    return json.loads(parse_qs(form)["payload"][0])


def wait_for(check: Any, what: str, timeout: float = 15) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.02)
    raise AssertionError(f"no {what} within {timeout} s")


def client_threads(before: set[threading.Thread]) -> list[str]:
    """Threads started since ``before``, the stand-in's websocket server threads aside."""
    return [
        t.name
        for t in set(threading.enumerate()) - before
        if t.name != "slack-standin-socket" and "conn_handler" not in t.name
    ]


def answers(slack: SlackStandIn) -> list[dict[str, Any]]:
    return [call.params for call in slack.calls_to(HOOK)]


def ask(slack: SlackStandIn, text: str, user: str = RESPONDER) -> dict[str, Any]:
    """Push a slash command, check Slack got its ack, return the answer on response_url."""
    before = len(answers(slack))
    envelope_id = slack.push("slash_commands", slash(slack, text, user))
    assert slack.wait_ack(envelope_id) == {"envelope_id": envelope_id}
    return wait_for(lambda: answers(slack)[before:], "answer on response_url")[0]


# --- commands over the websocket ------------------------------------------------------------


def test_list_is_acknowledged_over_the_websocket_and_answered_on_response_url(
    slack: SlackStandIn, link: SocketModeLink
) -> None:
    assert link.connected
    said = ask(slack, "list")
    assert said["response_type"] == "ephemeral"
    assert "`engine-self-check` — Engine self-check (no cloud calls)" in said["text"]

    opened = slack.calls_to("apps.connections.open")
    assert len(opened) == 1 and opened[0].error is None
    assert opened[0].headers["Authorization"] == f"Bearer {slack.app_token}"
    others = [c for c in slack.calls if c.method != "apps.connections.open"]
    assert all(slack.app_token not in json.dumps(c.headers) for c in others)


def test_run_over_socket_mode_starts_the_runbook_with_the_typed_inputs(
    slack: SlackStandIn, link: SocketModeLink, started: list[Any]
) -> None:
    said = ask(slack, "run engine-self-check responder=alice settle_time=1ms")
    assert said["response_type"] == "in_channel"
    assert f"started run `{FAKE_RUN_ID}` of `engine-self-check`" in said["text"]
    [(path, inputs, trigger)] = started
    assert path.name == "engine-self-check.yaml"
    assert inputs["responder"] == "alice" and inputs["settle_time"] == "1ms"
    assert trigger == {"type": "slack", "user": RESPONDER, "channel": CHANNEL}


def test_a_non_responder_is_refused_over_socket_mode_too(
    slack: SlackStandIn, link: SocketModeLink, started: list[Any]
) -> None:
    said = ask(slack, "run engine-self-check", user="U0OUTSIDER")
    assert "is not a responder" in said["text"]
    assert started == []


def test_a_click_reaches_the_approval_handler_which_answers_in_private(
    slack: SlackStandIn, link: SocketModeLink
) -> None:
    value = json.dumps({"run_id": "nosuchrun", "step": "approve", "params_hash": "0" * 64})
    envelope_id = slack.push("interactive", click(LEAD, value))
    assert slack.envelopes[-1]["accepts_response_payload"] is False  # as Slack, for buttons
    assert slack.wait_ack(envelope_id) == {"envelope_id": envelope_id}
    said = wait_for(lambda: slack.ephemeral, "ephemeral answer")
    assert said[0]["user"] == LEAD and said[0]["channel"] == CHANNEL
    assert "run 'nosuchrun' has no approval request" in said[0]["text"]


def test_slash_run_then_approve_click_over_socket_mode_resumes_a_real_paused_run(
    prefect_server: str, slack: SlackStandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from clampdown.app.local_runs import InProcessStarter

    library = tmp_path / "library"
    library.mkdir()
    (library / "gated-note.yaml").write_text(GATED)
    monkeypatch.setenv("CLAMPDOWN_LIBRARY", str(library))
    starter = InProcessStarter()
    conf = SlackAppSettings()
    opened = connect(
        build_slack_app(conf, starter, socket_mode=True, submit_decision=submit_decision), conf
    )
    try:
        said = ask(slack, "run gated-note note=hello")
        assert "started run" in said["text"], said
        [run_id] = starter.futures

        card = wait_for(lambda: _approval_button(slack), "approval card", timeout=30)
        assert json.loads(card)["run_id"] == run_id
        envelope_id = slack.push("interactive", click(LEAD, card))
        assert slack.wait_ack(envelope_id) == {"envelope_id": envelope_id}

        starter.wait(run_id, 60)
        records = read_ledger(settings().ledger_path(run_id))
        decided = [r for r in records if r["type"] == "approval.end"]
        assert decided and decided[0]["outcome"] == "approved"
        assert decided[0]["approvers"] == [LEAD]
        end = records[-1]
        assert end["type"] == "run.end" and end["status"] == "succeeded", end
        assert end["steps"] == {"approve": "succeeded", "write": "succeeded"}
        assert slack.ephemeral == []  # the click counted: nothing to complain about
    finally:
        opened.close()
        starter.shutdown()


def _approval_button(slack: SlackStandIn) -> str | None:
    for call in slack.calls_to("chat.postMessage"):
        blocks = call.params.get("blocks")
        blocks = json.loads(blocks) if isinstance(blocks, str) else blocks
        for block in blocks or []:
            if block.get("type") == "actions":
                return str(block["elements"][0]["value"])
    return None


# --- trust: only the websocket, only over TLS ---------------------------------------------


def test_the_socket_mode_app_refuses_a_request_that_did_not_come_over_the_websocket(
    slack: SlackStandIn, fake_start_run: Any, started: list[Any]
) -> None:
    from urllib.parse import urlencode

    from slack_bolt import BoltRequest

    app = build_slack_app(
        SlackAppSettings(), fake_start_run, socket_mode=True, submit_decision=submit_decision
    )
    body = urlencode(slash(slack, "run engine-self-check"))  # unsigned: no secret exists
    response = app.dispatch(BoltRequest(body=body, mode="http"))
    assert response.status == 401
    time.sleep(0.3)
    assert started == [] and slack.calls == []


@pytest.mark.parametrize(
    ("url", "safe"),
    [
        ("wss://wss-primary.slack.com/link/?ticket=abc&app_id=A1", True),
        ("wss://wss-primary.slack.com:443/link/?ticket=abc", True),
        ("wss://wss-primary.slack.com:8443/link/?ticket=abc", False),  # sdk drops TLS here
        ("ws://wss-primary.slack.com/link/?ticket=abc", False),
        ("ws://127.0.0.1:40123/link/?ticket=abc", True),  # the stand-in
        ("ws://[::1]:40123/link/", True),
        ("ws://10.0.0.8:40123/link/", False),
        ("wss://host:notaport/link/", False),
    ],
)
def test_only_tls_websockets_are_accepted_except_on_loopback(url: str, safe: bool) -> None:
    assert _websocket_url_is_safe(url) is safe


# --- configuration errors: a message and a hint, never a traceback ------------------------


def test_missing_app_token_is_a_clear_error(
    slack: SlackStandIn, fake_start_run: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CLAMPDOWN_SLACK_APP_TOKEN")
    with pytest.raises(SlackNotConfigured) as caught:
        build_slack_app(
            SlackAppSettings(), fake_start_run, socket_mode=True, submit_decision=submit_decision
        )
    assert "CLAMPDOWN_SLACK_APP_TOKEN is not set" in caught.value.message
    assert "connections:write" in (caught.value.hint or "")
    assert slack.calls == []


def test_a_bot_token_in_place_of_the_app_token_is_refused_before_calling_slack(
    slack: SlackStandIn, fake_start_run: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLAMPDOWN_SLACK_APP_TOKEN", slack.token)
    with pytest.raises(SlackNotConfigured) as caught:
        build_slack_app(
            SlackAppSettings(), fake_start_run, socket_mode=True, submit_decision=submit_decision
        )
    assert "must start with xapp-" in caught.value.message
    assert slack.token not in caught.value.message + (caught.value.hint or "")
    assert slack.calls == []


def test_a_revoked_app_token_is_a_clear_error_and_leaves_no_threads(
    slack: SlackStandIn, fake_start_run: Any
) -> None:
    revoked = "xapp-1-A0STANDIN-revoked"
    conf = SlackAppSettings(slack_app_token=SecretStr(revoked))
    app = build_slack_app(conf, fake_start_run, socket_mode=True, submit_decision=submit_decision)
    before = set(threading.enumerate())
    with pytest.raises(SlackNotConfigured) as caught:
        connect(app, conf)
    assert caught.value.message == "Slack refused to open a Socket Mode connection: invalid_auth"
    assert "App-Level Tokens" in (caught.value.hint or "")
    assert revoked not in caught.value.message + (caught.value.hint or "")
    assert slack.socket_connections == 0
    wait_for(lambda: not client_threads(before), "client threads stopped", timeout=5)


# --- the connection's life -----------------------------------------------------------------


def test_slacks_disconnect_request_makes_the_client_reconnect_with_a_fresh_url(
    slack: SlackStandIn, link: SocketModeLink
) -> None:
    slack.request_disconnect("refresh_requested")
    wait_for(lambda: len(slack.calls_to("apps.connections.open")) == 2, "second connections.open")
    wait_for(lambda: link.connected, "reconnection")
    # tickets are one-use, so this works only over the new connection
    assert "/clampdown run <runbook> key=value" in ask(slack, "help")["text"]


def test_close_ends_the_websocket_at_once_and_it_does_not_come_back(
    slack: SlackStandIn, fake_start_run: Any
) -> None:
    conf = SlackAppSettings()
    app = build_slack_app(conf, fake_start_run, socket_mode=True, submit_decision=submit_decision)
    before = set(threading.enumerate())
    opened = connect(app, conf)
    slack.wait_connected()
    assert client_threads(before)

    opened.close()
    opened.close()  # idempotent
    wait_for(lambda: slack.socket_connections == 0, "link closed", timeout=2)
    assert not opened.connected
    wait_for(lambda: not client_threads(before), "client threads stopped", timeout=5)
    # no thread of the client is left to reconnect: a reconnect would have happened by now
    assert len(slack.calls_to("apps.connections.open")) == 1  # no reconnect
    assert slack.socket_connections == 0


def test_a_websocket_ticket_is_good_for_one_connection_only(slack: SlackStandIn) -> None:
    from slack_sdk import WebClient
    from slack_sdk.errors import SlackApiError
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect as ws_connect

    api = WebClient(base_url=slack.url)
    url = api.apps_connections_open(app_token=slack.app_token)["url"]
    with ws_connect(url, compression=None) as ws:
        hello = json.loads(ws.recv(timeout=5))
        assert hello["type"] == "hello" and hello["connection_info"]["app_id"]
    with pytest.raises(InvalidStatus) as refused:
        ws_connect(url, compression=None)
    assert refused.value.response.status_code == 401
    with pytest.raises(SlackApiError) as wrong_kind:
        api.apps_connections_open(app_token=slack.token)  # a bot token cannot open one
    assert wrong_kind.value.response["error"] == "not_allowed_token_type"


# --- `clampdown serve --socket-mode` wiring (clampdown/app/serve.py) --------------------------


def test_serve_in_socket_mode_keeps_http_for_health_and_alerts_but_not_slack_events(
    slack: SlackStandIn, fake_start_run: Any
) -> None:
    from fastapi.testclient import TestClient

    from clampdown.app.serve import create_app

    if "socket_mode" not in inspect.signature(create_app).parameters:
        pytest.skip("clampdown/app/serve.py has no socket_mode yet")
    conf = SlackAppSettings()
    app = create_app(conf, fake_start_run, socket_mode=True)
    opened = connect(app.state.slack, conf)
    try:
        with TestClient(app) as client:
            assert client.get("/healthz").json()["ok"] is True
            refused = client.post("/slack/events", content="command=%2Fclampdown&text=list")
            assert refused.status_code == 404
            assert "Socket Mode" in refused.json()["error"]
        assert "`engine-self-check`" in ask(slack, "list")["text"]
    finally:
        opened.close()
