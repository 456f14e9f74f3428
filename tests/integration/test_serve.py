"""``clampdown serve``: /healthz and the /clampdown slash command, signed as Slack signs it.

Requests go through the real FastAPI app and Bolt's request verification; answers come
back the way Slack gets them: Bolt's ``respond()`` POSTs to the request's
``response_url``, which points at the Slack stand-in (it records every request).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from fastapi.testclient import TestClient

from clampdown.app.serve import create_app
from clampdown_flows.decisions import submit_decision
from clampdown_slack.app import SlackAppSettings, build_slack_app
from clampdown_slack.client import SlackNotConfigured
from clampdown_slack.testing.standin import SlackStandIn
from tests.paths import REPO

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
RESPONDER = "U0RESPONDER"
HOOK = "response.hook"  # response_url = <stand-in>/api/response.hook: recorded like a method
FAKE_RUN_ID = "0123456789ab"


@pytest.fixture
def slack() -> Iterator[SlackStandIn]:
    with SlackStandIn() as standin:
        yield standin


@pytest.fixture
def slack_env(monkeypatch: pytest.MonkeyPatch, slack: SlackStandIn) -> None:
    monkeypatch.setenv("CLAMPDOWN_SLACK_SIGNING_SECRET", SECRET)
    monkeypatch.setenv("CLAMPDOWN_SLACK_BOT_TOKEN", slack.token)
    monkeypatch.setenv("CLAMPDOWN_SLACK_API_URL", slack.url)
    monkeypatch.setenv("CLAMPDOWN_RESPONDERS", f"U0OTHER, {RESPONDER}")


@pytest.fixture
def started() -> list[tuple[Path, dict[str, Any], dict[str, Any]]]:
    return []


@pytest.fixture
def client(
    slack_env: None, started: list[Any], monkeypatch: pytest.MonkeyPatch
) -> Iterator[TestClient]:
    monkeypatch.setattr("clampdown_slack.app.THREAD_WAIT", 0.0)  # fake runs post no thread

    def fake_start_run(path: Path, inputs: dict[str, Any], trigger: dict[str, Any]) -> str:
        started.append((path, inputs, trigger))
        return FAKE_RUN_ID

    with TestClient(create_app(start_run=fake_start_run)) as test_client:
        yield test_client


def command(
    client: TestClient,
    slack: SlackStandIn,
    text: str,
    *,
    user: str = RESPONDER,
    secret: str = SECRET,
    timestamp: int | None = None,
    trigger_id: str | None = None,
) -> Any:
    """POST a slash command exactly as Slack does: form body, v0 HMAC-SHA256 signature,
    a fresh ``trigger_id`` per invocation (unless given)."""
    body = urlencode(
        {
            "token": "deprecated-verification-token",
            "team_id": "T0TEAM",
            "team_domain": "example",
            "channel_id": "C0INCIDENT",
            "channel_name": "incident-response",
            "user_id": user,
            "user_name": "someone",
            "command": "/clampdown",
            "text": text,
            "api_app_id": "A0APP",
            "response_url": slack.url + HOOK,
            "trigger_id": trigger_id or f"{uuid.uuid4().int % 10**12}.5678.abcdef",
        }
    )
    ts = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    return client.post(
        "/slack/events",
        content=body,
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": f"v0={digest}",
        },
    )


def answer(slack: SlackStandIn, timeout: float = 15) -> dict[str, Any]:
    """The message posted to response_url (bounded wait: respond() runs after the ack)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        calls = slack.calls_to(HOOK)
        if calls:
            assert len(calls) == 1, calls
            return calls[0].params
        time.sleep(0.02)
    raise AssertionError(f"no answer posted to response_url; Slack saw {slack.calls}")


def ask(client: TestClient, slack: SlackStandIn, text: str, **kw: Any) -> dict[str, Any]:
    response = command(client, slack, text, **kw)
    assert response.status_code == 200, response.text
    return answer(slack)


# --- request verification ----------------------------------------------------------------


def test_help_is_answered_ephemerally(client: TestClient, slack: SlackStandIn) -> None:
    said = ask(client, slack, "help")
    assert said["response_type"] == "ephemeral"
    assert "/clampdown run <runbook> key=value" in said["text"]


def test_unknown_subcommand_gets_help(client: TestClient, slack: SlackStandIn) -> None:
    said = ask(client, slack, "launch everything")
    assert "Unknown subcommand `launch`" in said["text"]
    assert "/clampdown list" in said["text"]


def test_forged_signature_is_refused_and_starts_nothing(
    client: TestClient, slack: SlackStandIn, started: list[Any]
) -> None:
    response = command(client, slack, "run engine-self-check", secret="not-the-secret")
    assert response.status_code == 401
    assert started == []
    assert slack.calls == []  # Bolt refused before any listener ran: nothing to wait for


def test_stale_timestamp_is_refused(
    client: TestClient, slack: SlackStandIn, started: list[Any]
) -> None:
    old = int(time.time()) - 6 * 60  # correctly signed, but a replay from 6 minutes ago
    response = command(client, slack, "run engine-self-check", timestamp=old)
    assert response.status_code == 401
    assert started == []
    assert slack.calls == []


def test_app_refuses_to_build_without_signing_secret(
    slack_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLAMPDOWN_SLACK_SIGNING_SECRET", " ")
    with pytest.raises(SlackNotConfigured, match="CLAMPDOWN_SLACK_SIGNING_SECRET"):
        build_slack_app(SlackAppSettings(), lambda *a: "x", submit_decision=submit_decision)


def test_the_slack_app_is_named_and_not_from_the_call_stack(
    slack_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bolt names an unnamed app after its caller's file with ``inspect.stack()``, which
    reads the source of every frame: a tenth of a CPU-second of serve's start."""
    import inspect

    def no_stack(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("inspect.stack() called while building the Slack app")

    monkeypatch.setattr(inspect, "stack", no_stack)
    app = build_slack_app(SlackAppSettings(), lambda *a: "x", submit_decision=submit_decision)
    assert app.name == "clampdown"


# --- run -----------------------------------------------------------------------------------


def test_run_starts_the_runbook_with_typed_inputs_and_trigger(
    client: TestClient, slack: SlackStandIn, started: list[Any]
) -> None:
    said = ask(client, slack, "run engine-self-check responder=alice")
    assert started == [
        (
            REPO / "runbooks" / "engine-self-check.yaml",
            {"responder": "alice", "settle_time": "200ms"},
            {"type": "slack", "user": RESPONDER, "channel": "C0INCIDENT"},
        )
    ]
    assert said["response_type"] == "in_channel"
    assert f"started run `{FAKE_RUN_ID}` of `engine-self-check`" in said["text"]


def test_a_run_that_cannot_start_says_so_in_slack(
    slack_env: None, slack: SlackStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full or read-only home (or Prefect down in scaled mode): never "started"."""
    from clampdown.core.runs import RunNotStarted

    monkeypatch.setattr("clampdown_slack.app.THREAD_WAIT", 0.0)

    def cannot_start(path: Path, inputs: dict[str, Any], trigger: dict[str, Any]) -> str:
        raise RunNotStarted("the run cannot be recorded in /home/runs: No space left on device")

    with TestClient(create_app(start_run=cannot_start)) as failing:
        said = ask(failing, slack, "run engine-self-check")
    assert "NOT started" in said["text"] and "No space left on device" in said["text"]
    assert "started run" not in said["text"] and said["response_type"] == "ephemeral"


def test_run_contain_iam_user_from_slack_and_a_bad_arn_starts_nothing(
    client: TestClient, slack: SlackStandIn, started: list[Any]
) -> None:
    arn = "arn:aws:iam::123456789012:user/mallory"
    said = ask(client, slack, f"run contain-iam-user principal_arn={arn}")
    assert started == [
        (
            REPO / "runbooks" / "contain-iam-user.yaml",
            {"principal_arn": arn, "lookback_hours": 24, "models": []},
            {"type": "slack", "user": RESPONDER, "channel": "C0INCIDENT"},
        )
    ]
    assert f"started run `{FAKE_RUN_ID}` of `contain-iam-user`" in said["text"]
    slack.reset()
    bad = ask(client, slack, "run contain-iam-user principal_arn=arn:aws:iam::123:user/x")
    assert bad["response_type"] == "ephemeral"
    assert "principal_arn" in bad["text"] and "pattern" in bad["text"], bad["text"]
    assert len(started) == 1, "a bad input starts nothing"


def test_unauthorised_user_is_refused(
    client: TestClient, slack: SlackStandIn, started: list[Any]
) -> None:
    said = ask(client, slack, "run engine-self-check", user="U0INTRUDER")
    assert said["response_type"] == "ephemeral"
    assert "not a responder" in said["text"]
    assert started == []


def test_status_is_for_responders_only(client: TestClient, slack: SlackStandIn) -> None:
    said = ask(client, slack, "status", user="U0INTRUDER")
    assert "not a responder" in said["text"]


def test_nobody_may_run_when_responders_is_empty(
    slack_env: None, slack: SlackStandIn, monkeypatch: pytest.MonkeyPatch, started: list[Any]
) -> None:
    monkeypatch.setenv("CLAMPDOWN_RESPONDERS", "")
    with TestClient(create_app(start_run=lambda *a: started.append(a) or "x")) as c:
        said = ask(c, slack, "run engine-self-check")
    assert "CLAMPDOWN_RESPONDERS is empty" in said["text"]
    assert started == []


def test_members_of_a_responder_group_may_run_and_others_may_not(
    slack_env: None, slack: SlackStandIn, monkeypatch: pytest.MonkeyPatch, started: list[Any]
) -> None:
    slack.usergroups["ir-team"] = ["U0GROUPIE"]
    monkeypatch.setenv("CLAMPDOWN_RESPONDERS", "U0SOLO, @ir-team")
    monkeypatch.setattr("clampdown_slack.app.THREAD_WAIT", 0.0)
    with TestClient(create_app(start_run=lambda *a: started.append(a) or FAKE_RUN_ID)) as c:
        member = ask(c, slack, "run engine-self-check responder=x", user="U0GROUPIE")
        slack.reset()
        outsider = ask(c, slack, "run engine-self-check responder=x", user="U0NOTINIT")
    assert "started run" in member["text"] and len(started) == 1
    assert "not a responder" in outsider["text"]
    assert started[0][2]["user"] == "U0GROUPIE"


def test_runbook_typo_suggests_the_name(
    client: TestClient, slack: SlackStandIn, started: list[Any]
) -> None:
    said = ask(client, slack, "run engine-self-chek")
    assert said["response_type"] == "ephemeral"
    assert "no runbook named 'engine-self-chek'" in said["text"]
    assert "did you mean 'engine-self-check'?" in said["text"]
    assert started == []


def test_slack_cannot_name_a_file_on_the_server(
    client: TestClient, slack: SlackStandIn, started: list[Any]
) -> None:
    path = str(REPO / "runbooks" / "engine-self-check.yaml")  # resolve() would accept it
    said = ask(client, slack, f"run {path}")
    assert "no runbook named" in said["text"]
    assert started == []


def test_bad_input_names_the_input(
    client: TestClient, slack: SlackStandIn, started: list[Any]
) -> None:
    said = ask(client, slack, "run engine-self-check settle_time=soon respnder=bob")
    assert said["response_type"] == "ephemeral"
    assert "input 'settle_time' = 'soon'" in said["text"]
    assert "unknown input 'respnder': did you mean 'responder'?" in said["text"]
    assert started == []


def test_invalid_runbook_reports_file_line_col(
    client: TestClient,
    slack: SlackStandIn,
    started: list[Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    library = tmp_path / "library"
    library.mkdir()
    broken = library / "broken.yaml"
    text = (REPO / "runbooks" / "engine-self-check.yaml").read_text()
    broken.write_text(text.replace("uses: core.wait", "uses: core.wiat", 1))
    monkeypatch.setenv("CLAMPDOWN_LIBRARY", str(library))
    said = ask(client, slack, "run broken")
    assert re.search(rf"{re.escape(str(broken))}:\d+:\d+: error: .*core\.wiat", said["text"])
    assert started == []


def test_list_shows_names_and_titles(client: TestClient, slack: SlackStandIn) -> None:
    said = ask(client, slack, "list")
    assert said["response_type"] == "ephemeral"
    assert "• `engine-self-check` — Engine self-check (no cloud calls)" in said["text"]


# --- healthz -------------------------------------------------------------------------------


def test_healthz_counts_the_library(
    client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    library = tmp_path / "library"
    library.mkdir()
    shutil.copy(REPO / "runbooks" / "engine-self-check.yaml", library / "a.yaml")
    shutil.copy(REPO / "runbooks" / "engine-self-check.yaml", library / "b.yml")
    (library / "notes.txt").write_text("not a runbook")
    monkeypatch.setenv("CLAMPDOWN_LIBRARY", str(library))
    assert client.get("/healthz").json() == {"ok": True, "runbooks": 2, "slack": True}
    monkeypatch.setenv("CLAMPDOWN_LIBRARY", str(tmp_path / "missing"))
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["ok"] is False


# --- end to end: a real respond flow run -----------------------------------------------------


def test_slash_command_starts_a_real_run(
    prefect_server: str,
    slack_env: None,
    slack: SlackStandIn,
    clampdown_home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CLAMPDOWN_SLACK_CHANNEL", "C0INCIDENT")
    with TestClient(create_app()) as c:
        said = ask(c, slack, "run engine-self-check responder=carol settle_time=10ms")
        match = re.search(r"started run `([0-9a-f]{12})`", said["text"])
        assert match, said
        header = slack.messages("C0INCIDENT")[0]
        link = f"https://slack.com/archives/C0INCIDENT/p{header['ts'].replace('.', '')}"
        assert f"status thread: <{link}|open>" in said["text"]
        run_id = match.group(1)
        ledger = clampdown_home / "runs" / run_id / "ledger.jsonl"
        deadline = time.monotonic() + 60  # bounded wait for the run, not a timing assertion
        records: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            if ledger.exists():
                records = [json.loads(line) for line in ledger.read_text().splitlines() if line]
                if records and records[-1]["type"] == "run.end":
                    break
            time.sleep(0.2)
        assert records and records[-1]["type"] == "run.end", records
        assert records[-1]["status"] == "succeeded"
        assert records[0]["run"]["trigger"] == {
            "type": "slack",
            "user": RESPONDER,
            "channel": "C0INCIDENT",
        }
        assert records[0]["inputs"]["responder"] == "carol"

        slack.reset()
        said = ask(c, slack, f"status {run_id}")
        assert f"Run `{run_id}` of `engine-self-check`: *succeeded*" in said["text"]


# --- late alert deliveries (a sender retrying after serve was down) --------------------------


def _guardduty_delivery(age_seconds: float, event_id: str) -> tuple[bytes, dict[str, str]]:
    from datetime import UTC, datetime, timedelta

    from tests.paths import FIXTURES

    event = json.loads((FIXTURES / "alerts" / "guardduty_finding.json").read_text())
    sent = datetime.now(UTC) - timedelta(seconds=age_seconds)
    event["time"] = sent.strftime("%Y-%m-%dT%H:%M:%SZ")
    event["id"] = event_id
    return json.dumps(event).encode(), {"Authorization": "Bearer alert-token-123"}


def test_a_late_alert_starts_one_run_and_its_replay_is_refused_after_a_restart(
    slack_env: None, started: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An EventBridge retry 1 h after the finding (serve was down) starts its run; the same
    delivery id again is refused, also by the next serve process (the id is in the state
    store for 24 h); a delivery older than the retention is refused and says why."""
    monkeypatch.setenv("CLAMPDOWN_ALERT_TOKEN", "alert-token-123")

    def fake_start_run(path: Path, inputs: dict[str, Any], trigger: dict[str, Any]) -> str:
        started.append((path, inputs, trigger))
        return FAKE_RUN_ID

    body, headers = _guardduty_delivery(3600, "late-delivery-1")
    with TestClient(create_app(start_run=fake_start_run)) as before:
        first = before.post("/alerts/guardduty", content=body, headers=headers)
        assert first.status_code == 202, first.text
        assert first.json()["alerts"][0]["status"] == "started"
        again = before.post("/alerts/guardduty", content=body, headers=headers)
        assert again.status_code == 409, again.text
    with TestClient(create_app(start_run=fake_start_run)) as after:
        replayed = after.post("/alerts/guardduty", content=body, headers=headers)
        assert replayed.status_code == 409, replayed.text
        body, headers = _guardduty_delivery(25 * 3600, "too-late-delivery")
        too_late = after.post("/alerts/guardduty", content=body, headers=headers)
        assert too_late.status_code == 401
        assert "older than the 86400 s delivery id retention" in too_late.json()["error"]
    assert len(started) == 1
