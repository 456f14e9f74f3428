"""serve says a correlated escalation in both runs' Slack threads (issue 11).

When an alert correlates with a run of another runbook (the suspect's StopLogging started
``preserve-evidence``; the GuardDuty finding starts ``contain-iam-user``), the evidence
run's thread gets a reply naming the new run, and the new run's thread, which the new run
posts a moment after it starts, gets one naming the evidence run, so that the responder
who approves the containment sees the whole incident. Real ``slack_sdk`` client against the
Slack stand-in; the new thread appears only after the hook was called.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

from slack_sdk import WebClient

from clampdown.app.serve import _say_joined, _say_related
from clampdown.core.alert import Alert
from clampdown.core.home import SLACK_THREAD_STATE, Home
from clampdown_slack.app import SlackAppSettings
from clampdown_slack.testing.standin import SlackStandIn

CHANNEL = "C0INCIDENT"


def _thread(slack: SlackStandIn, home: Home, run_id: str) -> str:
    """Post a run's status message and record it as the run's thread, as the run does."""
    web = WebClient(token=slack.token, base_url=slack.url)
    ts = str(web.chat_postMessage(channel=CHANNEL, text=f"run {run_id}")["ts"])
    state = {"threads": {CHANNEL: {"channel": CHANNEL, "thread_ts": ts}}}
    home.run(run_id).write(SLACK_THREAD_STATE, json.dumps(state))
    return ts


def _replies(slack: SlackStandIn, ts: str) -> list[str]:
    return [m["text"] for m in slack.thread(CHANNEL, ts) if m["ts"] != ts]


def test_both_threads_name_the_other_run(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    alert = Alert(
        source="guardduty",
        id="gd-1",
        type="t",
        title="Keys used from <!channel> Tor",
        observed_at=datetime.now(UTC),
    )
    with SlackStandIn(channels={CHANNEL: "incident-response"}) as slack:
        conf = SlackAppSettings(
            slack_bot_token=slack.token, slack_channel=CHANNEL, slack_api_url=slack.url
        )
        evidence_ts = _thread(slack, home, "evidence0001")
        _say_related(home, conf, "evidence0001", alert, "contain00001", thread_wait=30)
        contain_ts = _thread(slack, home, "contain00001")  # the new run posts it later
        deadline = time.monotonic() + 30
        while not _replies(slack, contain_ts) and time.monotonic() < deadline:
            time.sleep(0.05)

        [old] = _replies(slack, evidence_ts)
        [new] = _replies(slack, contain_ts)
    assert "Related alert started run `contain00001`" in old
    assert "related to run `evidence0001`" in new and "gd-1" in new
    assert "<!channel>" not in new  # the alert's text is inert


def _wait_for_replies(slack: SlackStandIn, ts: str, timeout: float = 30) -> list[str]:
    deadline = time.monotonic() + timeout
    while not (replies := _replies(slack, ts)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return replies


def test_an_alert_joining_a_run_before_its_thread_is_said_once_the_thread_is_posted(
    tmp_path: Path,
) -> None:
    """A page about the same key in a run's first moments joins it before the run has
    posted its thread: the reply used to be dropped (the thread was not known yet); it
    now goes once the run posts it, and the hook returns at once meanwhile."""
    home = Home(tmp_path / "home")
    alert = Alert(
        source="pagerduty", id="pd-7", type="t", title="same key", observed_at=datetime.now(UTC)
    )
    with SlackStandIn(channels={CHANNEL: "incident-response"}) as slack:
        conf = SlackAppSettings(
            slack_bot_token=slack.token, slack_channel=CHANNEL, slack_api_url=slack.url
        )
        _say_joined(home, conf, "contain00003", alert, thread_wait=30)
        assert slack.calls_to("chat.postMessage") == []  # nowhere to reply yet
        contain_ts = _thread(slack, home, "contain00003")  # the run posts its thread later
        [joined] = _wait_for_replies(slack, contain_ts)
    assert joined.startswith(":link: Alert joined this run: pagerduty `pd-7`"), joined


def test_a_related_alert_before_either_thread_is_said_in_both(tmp_path: Path) -> None:
    """Both runs of a correlated escalation may not have posted their threads yet (a
    StopLogging and the GuardDuty finding a moment apart): each reply waits for its own."""
    home = Home(tmp_path / "home")
    alert = Alert(
        source="guardduty", id="gd-3", type="t", title="finding", observed_at=datetime.now(UTC)
    )
    with SlackStandIn(channels={CHANNEL: "incident-response"}) as slack:
        conf = SlackAppSettings(
            slack_bot_token=slack.token, slack_channel=CHANNEL, slack_api_url=slack.url
        )
        _say_related(home, conf, "evidence0003", alert, "contain00004", thread_wait=30)
        evidence_ts = _thread(slack, home, "evidence0003")
        contain_ts = _thread(slack, home, "contain00004")
        [old] = _wait_for_replies(slack, evidence_ts)
        [new] = _wait_for_replies(slack, contain_ts)
    assert "Related alert started run `contain00004`" in old
    assert "related to run `evidence0003`" in new


def test_no_thread_ever_posted_gives_up_with_a_warning(tmp_path: Path, caplog) -> None:
    home = Home(tmp_path / "home")
    alert = Alert(
        source="guardduty", id="gd-2", type="t", title="finding", observed_at=datetime.now(UTC)
    )
    with SlackStandIn(channels={CHANNEL: "incident-response"}) as slack:
        conf = SlackAppSettings(
            slack_bot_token=slack.token, slack_channel=CHANNEL, slack_api_url=slack.url
        )
        with caplog.at_level("WARNING", logger="clampdown.serve"):
            _say_related(home, conf, "evidence0002", alert, "contain00002", thread_wait=0.2)
            deadline = time.monotonic() + 10
            while "could not say" not in caplog.text and time.monotonic() < deadline:
                time.sleep(0.05)
        assert slack.calls_to("chat.postMessage") == []
    assert "run contain00002: could not say in its Slack thread that it is related" in caplog.text
