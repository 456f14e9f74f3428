"""A held alert is said in the Slack channel (issue 11): through the real serve app, a signed
alert whose trigger matches but whose inputs the runbook refuses is held; the channel gets
one notice, inert, without holding the alert's answer. Slack down: the answer is the same
and the alert is still in the state store. No run starts (the starter refuses to be called)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from clampdown_slack.testing.standin import SlackStandIn

TOKEN = "xoxb-1111-2222-heldnotices"
CHANNEL = "C0INCIDENT"
HOSTILE = "<!channel> <http://evil.example/approve|Approve>"
RUNBOOK = """\
apiVersion: clampdown/v1
kind: Runbook
metadata: {name: needs-a-user, title: Needs a user, severity: high}
inputs:
  principal_arn: {type: string, required: true, pattern: '^arn:aws:iam::\\d{12}:user/.+$'}
steps:
  - {id: say, uses: slack.status, with: {text: "{{ inputs.principal_arn }}"}}
"""
TRIGGERS = """\
apiVersion: clampdown/v1
kind: TriggerSet
triggers:
  - name: any-generic
    match: "alert.source == 'generic'"
    runbook: needs-a-user
    inputs: {principal_arn: "{{ alert.principal }}"}
    dedup_key: "generic:{{ alert.id }}"
"""


@pytest.fixture
def slack(monkeypatch: pytest.MonkeyPatch):
    with SlackStandIn(token=TOKEN) as standin:
        monkeypatch.setenv("CLAMPDOWN_SLACK_BOT_TOKEN", TOKEN)
        monkeypatch.setenv("CLAMPDOWN_SLACK_SIGNING_SECRET", "signing-secret")
        monkeypatch.setenv("CLAMPDOWN_SLACK_CHANNEL", CHANNEL)
        monkeypatch.setenv("CLAMPDOWN_SLACK_API_URL", standin.url)
        monkeypatch.setenv("CLAMPDOWN_SLACK_RETRY_INTERVAL", "0")
        monkeypatch.setenv("CLAMPDOWN_SLACK_MAX_RETRIES", "0")
        yield standin


@pytest.fixture
def library(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "library"
    folder.mkdir()
    (folder / "needs-a-user.yaml").write_text(RUNBOOK)
    (folder / "triggers.yaml").write_text(TRIGGERS)
    monkeypatch.setenv("CLAMPDOWN_LIBRARY", str(folder))
    monkeypatch.setenv("CLAMPDOWN_ALERT_HMAC_SECRET", "generic-hmac-secret")
    return folder


def _no_run(*_: Any) -> str:
    raise AssertionError("a held alert must not start a run")


def _signed(alert_id: str) -> tuple[bytes, dict[str, str]]:
    from clampdown_alerts.signatures import generic_signature

    body = json.dumps(
        {
            "id": alert_id,
            "title": HOSTILE,
            "severity": "high",
            "principal": "arn:aws:iam::123456789012:role/NotAUser",
        }
    ).encode()
    stamp = str(int(time.time()))
    return body, {
        "X-Clampdown-Timestamp": stamp,
        "X-Clampdown-Signature": generic_signature(b"generic-hmac-secret", stamp, body),
    }


def _wait_for(check: Any, seconds: float = 30) -> None:
    """A bounded wait for the background notice (not a timing assertion)."""
    deadline = time.monotonic() + seconds
    while not check() and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.mark.usefixtures("library")
def test_a_held_alert_is_said_in_the_channel_inert(slack: SlackStandIn) -> None:
    from fastapi.testclient import TestClient

    from clampdown.app.serve import create_app

    with TestClient(create_app(start_run=_no_run)) as client:
        body, headers = _signed("held-1")
        answer = client.post("/alerts/generic", content=body, headers=headers)
        assert answer.status_code == 200, answer.text
        [result] = answer.json()["alerts"]
        assert result["status"] == "ignored" and "principal_arn" in result["reason"]
        _wait_for(lambda: slack.messages(CHANNEL))
    [notice] = slack.messages(CHANNEL)
    text = notice["text"]
    assert text.startswith(":warning: *Alert held, no run started*: generic `held-1`")
    assert "&lt;!channel&gt; &lt;http://evil.example/approve|Approve&gt;" in text
    assert "<!channel>" not in text
    assert "trigger 'any-generic' cannot start needs-a-user" in text
    assert "`clampdown triggers held`" in text


@pytest.mark.usefixtures("library")
def test_slack_down_does_not_change_the_answer_and_the_alert_is_kept(
    slack: SlackStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    from fastapi.testclient import TestClient

    from clampdown.app.serve import create_app

    slack.down()
    app = create_app(start_run=_no_run)
    with TestClient(app) as client, caplog.at_level("WARNING", logger="clampdown.slack"):
        body, headers = _signed("held-2")
        answer = client.post("/alerts/generic", content=body, headers=headers)
        assert answer.status_code == 200 and answer.json()["alerts"][0]["status"] == "ignored"
        [kept] = app.state.store.held_alerts()
        assert kept.alert["id"] == "held-2"
        _wait_for(lambda: "held-alert notice was not posted" in caplog.text)
    assert "held-alert notice was not posted" in caplog.text
    assert TOKEN not in caplog.text
    assert slack.messages(CHANNEL) == []


def _notices() -> Any:
    from clampdown_slack.app import SlackAppSettings
    from clampdown_slack.channel_notices import ChannelNotices

    notices = ChannelNotices.configured(SlackAppSettings())
    assert notices is not None
    return notices


def _held_alert(alert_id: str) -> Any:
    from datetime import UTC, datetime

    from clampdown.core.alert import Alert

    return Alert(source="generic", id=alert_id, type="t", title="t", observed_at=datetime.now(UTC))


def test_notices_queued_when_serve_stops_are_posted_first(
    slack: SlackStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """serve stops right after an alert was held: the stop waits (bounded) for its notice."""
    notices = _notices()
    notices.held(_held_alert("held-3"), "why")
    assert notices.close(grace=30) == 0
    [notice] = slack.messages(CHANNEL)
    assert "`held-3`" in notice["text"]


def test_notices_slack_has_not_taken_when_serve_stops_are_counted_in_the_log(
    slack: SlackStandIn, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Slack is slow when serve stops: the notices still queued are counted in the log (they
    were dropped without a word), and one held after the stop is logged too."""
    notices = _notices()
    release = threading.Event()
    monkeypatch.setattr(notices, "_post", lambda text: release.wait(30))
    try:
        for n in range(3):
            notices.held(_held_alert(f"held-{4 + n}"), "why")
        with caplog.at_level("WARNING", logger="clampdown.slack"):
            assert notices.close(grace=0.2) == 3
            notices.held(_held_alert("held-7"), "why")
    finally:
        release.set()
    assert "serve stopped with 3 held-alert notice(s) not posted" in caplog.text
    assert "a held-alert notice was not posted: serve is stopping" in caplog.text


FAILS = '"{{ alert.raw.nope.deeper }}"'  # lints clean; fails for an alert without raw.nope
USER = '"arn:aws:iam::123456789012:user/u"'


def _buggy_triggers(field: str) -> str:
    """A trigger whose ``field`` fails for the generic alert, then one that would match it."""
    inputs = FAILS if field == "inputs" else USER
    key = f"\n    {field}: {FAILS}" if field != "inputs" else ""
    return f"""\
apiVersion: clampdown/v1
kind: TriggerSet
triggers:
  - name: any-generic
    match: "alert.source == 'generic'"
    runbook: needs-a-user
    inputs: {{principal_arn: {inputs}}}{key}
  - name: next-one
    runbook: needs-a-user
    inputs: {{principal_arn: {USER}}}
"""


@pytest.mark.parametrize("field", ["inputs", "dedup_key", "correlate_by"])
def test_a_trigger_whose_expression_fails_for_the_alert_holds_it(
    field: str,
    slack: SlackStandIn,
    library: Path,
    clampdown_home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The trigger matched but cannot compute its inputs or a key for this alert (a trigger
    bug): the alert is held as a refused one is (state store, log, Slack notice; answered
    "ignored" under that trigger), never lost nor passed to the next trigger."""
    from fastapi.testclient import TestClient
    from typer.testing import CliRunner

    from clampdown.app.cli import app as cli_app
    from clampdown.app.serve import create_app
    from clampdown.core.trigger_files import lint_triggerset

    (library / "triggers.yaml").write_text(_buggy_triggers(field))
    found = lint_triggerset(library / "triggers.yaml", library)
    assert [str(d) for d in found if d.severity == "error"] == []
    app = create_app(start_run=_no_run)
    with TestClient(app) as client:
        body, headers = _signed(f"bug-{field}")
        answer = client.post("/alerts/generic", content=body, headers=headers)
        assert answer.status_code == 200, answer.text
        [result] = answer.json()["alerts"]
        assert (result["status"], result["trigger"]) == ("ignored", "any-generic")
        assert f"trigger 'any-generic': {field}" in result["reason"]
        [kept] = app.state.store.held_alerts()
        assert (kept.alert["id"], kept.runbook, kept.trigger, kept.reason) == (
            f"bug-{field}",
            "needs-a-user",
            "any-generic",
            result["reason"],
        )
        _wait_for(lambda: slack.messages(CHANNEL))
    [notice] = slack.messages(CHANNEL)
    assert f"`bug-{field}`" in notice["text"]
    assert f"trigger 'any-generic': {field}" in notice["text"]
    monkeypatch.setenv("CLAMPDOWN_HOME", str(clampdown_home))  # what serve used
    listed = CliRunner().invoke(cli_app, ["triggers", "held", "--format", "json"])
    assert listed.exit_code == 0, listed.output
    assert [(h["alert"]["id"], h["trigger"]) for h in json.loads(listed.output)] == [
        (f"bug-{field}", "any-generic")
    ]
