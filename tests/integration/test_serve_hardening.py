"""``clampdown serve`` as an attacker meets it: oversized and endless bodies on every route
(refused 413 before a signature is even looked at), a signed slash command replayed (one run,
even across a restart), and no API map unless the operator asks for one."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from clampdown.app.body_limits import SLACK_MAX_BODY
from clampdown.app.serve import create_app
from clampdown_slack.testing.standin import SlackStandIn
from tests.integration.test_serve import HOOK, RESPONDER, SECRET, command

ALERT_LIMIT = 64 * 1024


@pytest.fixture
def slack() -> Iterator[SlackStandIn]:
    with SlackStandIn() as standin:
        yield standin


@pytest.fixture
def started() -> list[Any]:
    return []


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, slack: SlackStandIn) -> None:
    monkeypatch.setenv("CLAMPDOWN_SLACK_SIGNING_SECRET", SECRET)
    monkeypatch.setenv("CLAMPDOWN_SLACK_BOT_TOKEN", slack.token)
    monkeypatch.setenv("CLAMPDOWN_SLACK_API_URL", slack.url)
    monkeypatch.setenv("CLAMPDOWN_RESPONDERS", RESPONDER)
    monkeypatch.setenv("CLAMPDOWN_ALERT_TOKEN", "alert-token-123")
    monkeypatch.setenv("CLAMPDOWN_MAX_ALERT_BYTES", str(ALERT_LIMIT))
    monkeypatch.setattr("clampdown_slack.app.THREAD_WAIT", 0.0)


@pytest.fixture
def make(env: None, started: list[Any]) -> Any:
    def fake_start_run(path: Path, inputs: dict[str, Any], trigger: dict[str, Any]) -> str:
        started.append((path, inputs, trigger))
        return f"run{len(started):09d}"

    return lambda: TestClient(create_app(start_run=fake_start_run))


@pytest.fixture
def client(make: Any) -> Iterator[TestClient]:
    with make() as test_client:
        yield test_client


def answers(slack: SlackStandIn, count: int, timeout: float = 15) -> list[dict[str, Any]]:
    """The messages posted to response_url once there are ``count`` (bounded wait)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(slack.calls_to(HOOK)) < count:
        time.sleep(0.02)
    return [c.params for c in slack.calls_to(HOOK)]


def replays_refused(caplog: pytest.LogCaptureFixture, count: int, timeout: float = 15) -> int:
    """How many commands the app has refused as already received, once there are ``count``
    (bounded wait): each is decided in a listener thread after the acknowledgement, and a
    refused one logs that and does nothing more, so no answer can follow it."""
    deadline = time.monotonic() + timeout

    def refused() -> int:
        return sum("refused: already received" in r.getMessage() for r in caplog.records)

    while time.monotonic() < deadline and refused() < count:
        time.sleep(0.02)
    return refused()


# --- bodies bounded before they are read --------------------------------------------------------


def test_an_unsigned_64_mib_slack_body_is_refused_by_its_length(
    client: TestClient, slack: SlackStandIn, started: list[Any]
) -> None:
    size = 64 * 1024 * 1024
    response = client.post(
        "/slack/events",
        content=b"x" * size,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 413
    assert response.json() == {
        "error": f"body of {size} bytes is over the {SLACK_MAX_BODY}-byte limit of this route"
    }
    assert started == [] and slack.calls == []


def test_an_endless_chunked_slack_body_is_cut_at_the_limit(
    client: TestClient, slack: SlackStandIn, started: list[Any]
) -> None:
    sent = 0

    def endless() -> Iterator[bytes]:  # no Content-Length: only counting can stop it
        nonlocal sent
        for _ in range(1024):  # 64 MiB if all of it were read
            sent += 65536
            yield b"y" * 65536

    response = client.post("/slack/events", content=endless())
    assert response.status_code == 413
    assert response.json() == {
        "error": f"body is over the {SLACK_MAX_BODY}-byte limit of this route"
    }
    assert started == []


@pytest.mark.parametrize("path", ["/alerts/guardduty", "/alerts/generic", "/healthz", "/nope"])
def test_every_route_is_bounded(client: TestClient, path: str) -> None:
    response = client.post(path, content=b"z" * (SLACK_MAX_BODY + 1))
    assert response.status_code == 413, path


def test_a_signed_command_of_fair_size_still_works(
    client: TestClient, slack: SlackStandIn, started: list[Any]
) -> None:
    response = command(client, slack, "run engine-self-check responder=" + "a" * 2000)
    assert response.status_code == 200
    assert answers(slack, 1) and len(started) == 1


# --- a signed slash command replayed -------------------------------------------------------------


def test_a_replayed_slash_command_starts_one_run(
    client: TestClient, slack: SlackStandIn, started: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    stamp = int(time.time())
    first = command(client, slack, "run engine-self-check", trigger_id="42.1.abc", timestamp=stamp)
    replay = command(client, slack, "run engine-self-check", trigger_id="42.1.abc", timestamp=stamp)
    assert first.status_code == 200 and replay.status_code == 200  # acknowledged, as Slack expects
    assert replays_refused(caplog, 1) == 1  # one of the two was refused: it answers nothing
    said = answers(slack, 1)  # the other one's answer
    assert len(said) == 1 and "started run" in said[0]["text"]
    assert len(started) == 1
    other = command(client, slack, "run engine-self-check", trigger_id="42.2.abc")
    assert other.status_code == 200 and len(answers(slack, 2)) == 2 and len(started) == 2


def test_a_replay_after_a_restart_is_still_refused(
    make: Any,
    slack: SlackStandIn,
    started: list[Any],
    clampdown_home: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    stamp = int(time.time())
    with make() as before:
        command(before, slack, "run engine-self-check", trigger_id="7.7.abc", timestamp=stamp)
        assert len(answers(slack, 1)) == 1
    with make() as after:  # a new process would read the same state database
        command(after, slack, "run engine-self-check", trigger_id="7.7.abc", timestamp=stamp)
        assert replays_refused(caplog, 1) == 1  # refused, so it answers nothing
        assert len(answers(slack, 1)) == 1
    assert len(started) == 1
    assert (clampdown_home / "state.sqlite3").is_file()


# --- no API map unless asked -----------------------------------------------------------------


def test_openapi_and_docs_are_not_served_by_default(client: TestClient) -> None:
    for path in ("/openapi.json", "/docs", "/redoc"):
        assert client.get(path).status_code == 404, path


def test_openapi_is_served_when_the_operator_asks(
    make: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLAMPDOWN_SERVE_OPENAPI", "true")
    with make() as c:
        assert "/alerts/generic" in c.get("/openapi.json").json()["paths"]
        assert c.get("/docs").status_code == 200
