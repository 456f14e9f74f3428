"""Hostile text on its way to Slack, as an attacker would send it: an alert whose title pings
the channel, links a fake Approve button and closes code blocks; a runbook input carrying the
same; a secret input used in a ``slack.status`` text; an approval whose first parameter is
long enough to push the others off the card. What reaches the Slack stand-in is checked.

Real respond flow runs (Prefect test server), the real slack_sdk client, the stand-in."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from clampdown.core.approvals import Request, params_hash
from clampdown.core.extensions import RunHeader
from clampdown.core.ledger import Ledger, new_run_id, read
from clampdown.core.settings import settings
from clampdown_slack.client import SlackSettings
from clampdown_slack.run_thread import RunThread
from clampdown_slack.testing.standin import SlackStandIn
from tests.support_actions import Hold

TOKEN = "xoxb-1111-2222-standintoken"
CHANNEL = "C0INCIDENT"
HOSTILE = "<!channel> <http://evil.example/approve|Approve> & ``` *Approved by CISO* ```"
SECRET = "tok-9f8e7d6c5b4a"
# a "<" Slack would obey: anything but the &lt; entity and mentions clampdown builds itself
OBEYED = re.compile(r"<(?!@U[A-Z0-9]+>)")

RUNBOOK = """\
apiVersion: clampdown/v1
kind: Runbook
metadata: {name: hostile-text, title: Hostile text, severity: high}
inputs:
  note: {type: string, required: true}
  api_token: {type: string, required: true, secret: true}
steps:
  - id: say
    uses: slack.status
    with:
      text: "Note: {{ inputs.note }} token={{ inputs.api_token }}"
      mention: [here]
  - {id: breaks, uses: core.fail, needs: [say], on_failure: continue,
     with: {message: "failed on {{ inputs.note }}"}}
"""


@pytest.fixture
def slack(monkeypatch: pytest.MonkeyPatch):
    with SlackStandIn(token=TOKEN) as standin:
        monkeypatch.setenv("CLAMPDOWN_SLACK_BOT_TOKEN", TOKEN)
        monkeypatch.setenv("CLAMPDOWN_SLACK_CHANNEL", CHANNEL)
        monkeypatch.setenv("CLAMPDOWN_SLACK_API_URL", standin.url)
        monkeypatch.setenv("CLAMPDOWN_SLACK_RETRY_INTERVAL", "0")
        monkeypatch.setenv("CLAMPDOWN_SLACK_MAX_RETRIES", "1")
        yield standin


def everything_posted(standin: SlackStandIn) -> list[str]:
    """Every text and block text Slack was sent (posts and edits)."""
    texts = []
    for call in standin.calls_to("chat.postMessage") + standin.calls_to("chat.update"):
        texts.append(str(call.params.get("text", "")))
        blocks = call.params.get("blocks")
        if isinstance(blocks, str):
            blocks = json.loads(blocks)
        texts.append(json.dumps(blocks or [], ensure_ascii=False))
    return texts


def assert_inert(texts: list[str]) -> None:
    for text in texts:
        plain = text.replace("\\u003c", "<")
        assert "<!channel>" not in plain and "<http://evil" not in plain, text
        assert not OBEYED.search(plain.replace("<!here>", "")), text


@pytest.mark.usefixtures("prefect_server")
def test_hostile_alert_and_input_text_and_a_secret_reach_slack_inert(
    slack: SlackStandIn, write_runbook: Any
) -> None:
    from clampdown_flows.respond import respond

    runbook = write_runbook(RUNBOOK)
    trigger = {
        "type": "alert",
        "source": "generic",
        "alert_id": "<!channel>",
        "trigger": "t",
        "alert": {"title": HOSTILE},
    }
    run_id = new_run_id()
    summary = asyncio.run(
        respond(
            str(runbook), {"note": HOSTILE, "api_token": SECRET}, run_id=run_id, trigger=trigger
        )
    )
    assert summary["steps"]["say"] == "succeeded"
    texts = everything_posted(slack)
    assert texts, "nothing reached Slack"
    assert_inert(texts)
    assert not any(SECRET in t for t in texts)
    header = slack.messages(CHANNEL)[0]["text"]
    assert "&lt;!channel&gt; &lt;http://evil.example/approve|Approve&gt; &amp;" in header
    assert "```" not in header
    said = next(t for t in texts if t.startswith("<!here> Note:"))  # the mention it asked for
    assert "token=***" in said and "&lt;!channel&gt;" in said
    failure = next(t for t in texts if "`breaks` failed" in t)
    assert "&lt;!channel&gt;" in failure
    ledger = read(settings().ledger_path(run_id))
    assert SECRET not in json.dumps(ledger)


def test_a_mention_that_is_not_an_id_is_refused() -> None:
    from pydantic import ValidationError

    from clampdown_slack.status import SlackStatus

    with pytest.raises(ValidationError, match="mention"):
        SlackStatus.Input(text="x", mention=["<!channel>"])


def _card_request(run_id: str) -> Request:
    gated = {
        "attach_policy": {
            "uses": "aws.iam.attach_policy",
            "reversible": True,
            "params": {"policy": json.dumps({"Statement": ["x" * 40] * 200}), "role": "victim"},
        },
        "revoke": {
            "uses": "aws.iam.revoke_credentials",
            "reversible": True,
            "params": {"principal_arn": f"arn:aws:iam::123456789012:user/{HOSTILE}"},
        },
    }
    now = datetime.now(UTC)
    return Request(
        run_id=run_id,
        step="approve",
        summary=f"Contain {HOSTILE}?",
        gated=gated,
        params_hash=params_hash(gated),
        allowed_users=frozenset({"U0LEAD"}),
        groups=(),
        min_approvals=1,
        two_person_rule=True,
        started_by="U0ALICE",
        requested_at=now,
        deadline=now + timedelta(minutes=15),
        on_timeout="deny",
    )


def test_approval_card_shows_every_parameter_and_the_full_long_value_in_the_thread(
    slack: SlackStandIn, clampdown_home: Path
) -> None:
    run_id = new_run_id()
    files = settings().paths.run(run_id)
    config = SlackSettings(
        slack_bot_token=TOKEN,
        slack_channel=CHANNEL,
        slack_api_url=slack.url,
        slack_retry_interval=0,
    )
    thread = RunThread(run_id, config, Ledger(files.ledger), state_file=files.slack_thread_state)
    header = RunHeader("R", "r", "high", {"type": "manual"}, run_id)
    thread.run_started(header, [("approve", "waiting for approval")])
    request = _card_request(run_id)
    thread.approval_requested(request)
    thread.close("succeeded")

    card = next(c.params for c in slack.calls_to("chat.postMessage") if c.params.get("blocks"))
    blocks = card["blocks"] if isinstance(card["blocks"], list) else json.loads(card["blocks"])
    shown = json.dumps(blocks, ensure_ascii=False)
    assert '\\"role\\": \\"victim\\"' in shown  # the short parameter after the long one
    assert "revoke" in shown and "principal_arn" in shown
    assert "the full value is in the thread" in shown
    assert_inert(everything_posted(slack))
    replies = [m["text"] for m in slack.thread(CHANNEL, slack.messages(CHANNEL)[0]["ts"])[1:]]
    parts = [r for r in replies if r.startswith("Full value of `attach_policy.policy`")]
    assert parts, replies
    body = "".join(re.search(r"```(.*)```", p, re.S).group(1) for p in parts)
    full = json.dumps(request.gated["attach_policy"]["params"]["policy"])
    assert body.replace("&quot;", '"') == full


LIBRARY_RUNBOOK = """\
apiVersion: clampdown/v1
kind: Runbook
metadata: {name: hostile-alert, title: Hostile alert, severity: high}
inputs:
  title: {type: string, required: true}
steps:
  - {id: say, uses: slack.status, with: {text: "Alert says: {{ inputs.title }}"}}
  - {id: wait, uses: test.hold, needs: [say], with: {gate: hostile-alert}}
"""
TRIGGERS = """\
apiVersion: clampdown/v1
kind: TriggerSet
triggers:
  - name: any-generic
    match: "alert.source == 'generic'"
    runbook: hostile-alert
    inputs: {title: "{{ alert.title }}"}
    dedup_key: "generic:{{ alert.id }}"
    correlate_by: "{{ alert.principal }}"
    correlate_window: 1h
"""


def _signed_alert(alert_id: str) -> tuple[bytes, dict[str, str]]:
    import time

    from clampdown_alerts.signatures import generic_signature

    payload = {
        "id": alert_id,
        "title": HOSTILE,
        "severity": "critical",
        "principal": "arn:aws:iam::123456789012:role/DataScience",
    }
    body = json.dumps(payload).encode()
    stamp = str(int(time.time()))
    signature = generic_signature(b"generic-hmac-secret", stamp, body)
    return body, {"X-Clampdown-Timestamp": stamp, "X-Clampdown-Signature": signature}


@pytest.mark.usefixtures("prefect_server")
def test_a_hostile_signed_alert_through_serve_reaches_slack_inert(
    slack: SlackStandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clampdown_home: Path
) -> None:
    """The attacker's path: a signed alert on /alerts/generic starts a real run; a second one
    joins it. The header, the status text and the joined reply all show the text inert.

    The run is held in progress (``test.hold``) until the second alert was answered, and that
    alert is sent once the run's Slack thread is known (``slack.posted``: serve replies only
    in a thread it can find); before, a 3 s wait step and the header's arrival in the stand-in
    stood for both."""
    import time

    from fastapi.testclient import TestClient

    from clampdown.app.serve import create_app

    library = tmp_path / "library"
    library.mkdir()
    (library / "hostile-alert.yaml").write_text(LIBRARY_RUNBOOK)
    (library / "triggers.yaml").write_text(TRIGGERS)
    monkeypatch.setenv("CLAMPDOWN_LIBRARY", str(library))
    monkeypatch.setenv("CLAMPDOWN_ALERT_HMAC_SECRET", "generic-hmac-secret")
    monkeypatch.setenv("CLAMPDOWN_SLACK_SIGNING_SECRET", "signing-secret")
    Hold.gate("hostile-alert").clear()
    with TestClient(create_app()) as client:
        body, headers = _signed_alert("a-1")
        started = client.post("/alerts/generic", content=body, headers=headers)
        assert started.status_code == 202, started.text
        run_id = started.json()["alerts"][0]["run_id"]
        ledger = clampdown_home / "runs" / run_id / "ledger.jsonl"
        deadline = time.monotonic() + 60  # bounded wait for the thread, not a timing assertion
        while time.monotonic() < deadline and '"slack.posted"' not in (
            ledger.read_text() if ledger.exists() else ""
        ):
            time.sleep(0.1)
        body, headers = _signed_alert("a-2")
        joined = client.post("/alerts/generic", content=body, headers=headers)
        Hold.gate("hostile-alert").set()  # answered: the run may end
        assert joined.json()["alerts"][0]["status"] == "joined", joined.text
        while time.monotonic() < deadline and '"run.end"' not in (
            ledger.read_text() if ledger.exists() else ""
        ):
            time.sleep(0.2)
    texts = everything_posted(slack)
    assert_inert(texts)
    header = slack.messages(CHANNEL)[0]["text"]
    assert "Trigger: alert generic `a-1` &lt;!channel&gt; &lt;http://evil.example" in header
    assert any(t.startswith("Alert says: &lt;!channel&gt;") for t in texts)
    assert any(t.startswith(":link: Alert joined this run: generic `a-2`") for t in texts)
