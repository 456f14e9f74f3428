"""serve says a correlated escalation in both runs' Slack threads (issue 11), and what it
could not say before it stopped.

When an alert correlates with a run of another runbook (the suspect's StopLogging started
``preserve-evidence``; the GuardDuty finding starts ``contain-iam-user``), the evidence
run's thread gets a reply naming the new run, and the new run's thread, which the new run
posts a moment after it starts, gets one naming the evidence run, so that the responder
who approves the containment sees the whole incident. Real ``slack_sdk`` client against the
Slack stand-in; the new thread appears only after the hook was called. Replies still
waiting for a thread when serve stops are logged by run (``ThreadReplies.close``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from slack_sdk import WebClient

from clampdown.app.serve import _say_joined, _say_related
from clampdown.core.alert import Alert
from clampdown.core.home import SLACK_THREAD_STATE, Home
from clampdown_slack.app import SlackAppSettings
from clampdown_slack.testing.standin import SlackStandIn
from clampdown_slack.thread_replies import ThreadReplies

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


def _wait_for_replies(slack: SlackStandIn, ts: str, timeout: float = 30) -> list[str]:
    deadline = time.monotonic() + timeout
    while not (replies := _replies(slack, ts)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return replies


def _alert(source: str, id: str, title: str = "finding") -> Alert:
    return Alert(source=source, id=id, type="t", title=title, observed_at=datetime.now(UTC))


@pytest.fixture
def slack() -> Iterator[SlackStandIn]:
    with SlackStandIn(channels={CHANNEL: "incident-response"}) as standin:
        yield standin


@pytest.fixture
def conf(slack: SlackStandIn) -> SlackAppSettings:
    """serve's Slack settings, pointed at the stand-in."""
    return SlackAppSettings(
        slack_bot_token=slack.token, slack_channel=CHANNEL, slack_api_url=slack.url
    )


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return Home(tmp_path / "home")


@pytest.fixture
def replies(home: Home, conf: SlackAppSettings) -> Iterator[ThreadReplies]:
    """serve's replies, waiting up to 30 s for a thread; closed as serve's lifespan does."""
    replies = ThreadReplies(home, conf, wait=30)
    yield replies
    replies.close(grace=0)


def test_both_threads_name_the_other_run(
    home: Home, slack: SlackStandIn, replies: ThreadReplies
) -> None:
    alert = _alert("guardduty", "gd-1", "Keys used from <!channel> Tor")
    evidence_ts = _thread(slack, home, "evidence0001")
    _say_related(replies, "evidence0001", alert, "contain00001")
    contain_ts = _thread(slack, home, "contain00001")  # the new run posts it later
    [new] = _wait_for_replies(slack, contain_ts)
    [old] = _replies(slack, evidence_ts)
    assert "Related alert started run `contain00001`" in old
    assert "related to run `evidence0001`" in new and "gd-1" in new
    assert "<!channel>" not in new  # the alert's text is inert


def test_an_alert_joining_a_run_before_its_thread_is_said_once_the_thread_is_posted(
    home: Home, slack: SlackStandIn, replies: ThreadReplies
) -> None:
    """A page about the same key in a run's first moments joins it before the run has
    posted its thread: the reply used to be dropped (the thread was not known yet); it
    now goes once the run posts it, and the hook returns at once meanwhile."""
    _say_joined(replies, "contain00003", _alert("pagerduty", "pd-7", "same key"))
    assert slack.calls_to("chat.postMessage") == []  # nowhere to reply yet
    contain_ts = _thread(slack, home, "contain00003")  # the run posts its thread later
    [joined] = _wait_for_replies(slack, contain_ts)
    assert joined.startswith(":link: Alert joined this run: pagerduty `pd-7`"), joined


def test_a_related_alert_before_either_thread_is_said_in_both(
    home: Home, slack: SlackStandIn, replies: ThreadReplies
) -> None:
    """Both runs of a correlated escalation may not have posted their threads yet (a
    StopLogging and the GuardDuty finding a moment apart): each reply waits for its own."""
    _say_related(replies, "evidence0003", _alert("guardduty", "gd-3"), "contain00004")
    evidence_ts = _thread(slack, home, "evidence0003")
    contain_ts = _thread(slack, home, "contain00004")
    [old] = _wait_for_replies(slack, evidence_ts)
    [new] = _wait_for_replies(slack, contain_ts)
    assert "Related alert started run `contain00004`" in old
    assert "related to run `evidence0003`" in new


def test_no_thread_ever_posted_gives_up_with_a_warning(
    home: Home, slack: SlackStandIn, conf: SlackAppSettings, caplog: pytest.LogCaptureFixture
) -> None:
    """Neither run ever posts its thread: each reply gives up after its wait, and says so."""
    gave_up = (
        "run evidence0002: could not say in its Slack thread that a related alert started a run",
        "run contain00002: could not say in its Slack thread that it is related",
    )
    with caplog.at_level("WARNING", logger="clampdown.serve"):
        quick = ThreadReplies(home, conf, wait=0.2)
        _say_related(quick, "evidence0002", _alert("guardduty", "gd-2"), "contain00002")
        deadline = time.monotonic() + 10
        while not all(g in caplog.text for g in gave_up) and time.monotonic() < deadline:
            time.sleep(0.05)
    assert slack.calls_to("chat.postMessage") == []
    for warning in gave_up:
        assert warning in caplog.text


def test_replies_still_waiting_when_serve_stops_are_logged_by_run(
    home: Home, slack: SlackStandIn, conf: SlackAppSettings, caplog: pytest.LogCaptureFixture
) -> None:
    """serve stops while two replies wait for threads never posted: each is logged with its
    run and what it would have said (they were dropped without a word), nothing is sent,
    and a reply asked for after the stop is logged as well."""
    replies = ThreadReplies(home, conf, wait=600)
    with caplog.at_level("WARNING", logger="clampdown.serve"):
        _say_related(replies, "evidence0005", _alert("guardduty", "gd-5"), "contain00005")
        unsaid = replies.close(grace=5)
        _say_joined(replies, "contain00006", _alert("pagerduty", "pd-6"))
    assert sorted(unsaid) == [
        ("contain00005", "that it is related"),
        ("evidence0005", "that a related alert started a run"),
    ]
    for run_id, what in unsaid:
        assert (
            f"run {run_id}: could not say in its Slack thread {what} (serve stopped" in caplog.text
        )
    assert (
        "run contain00006: could not say in its Slack thread that an alert joined it (serve is stopping)"
        in (caplog.text)
    )
    assert slack.calls_to("chat.postMessage") == []


def test_a_reply_said_before_the_stop_is_not_reported(
    home: Home, slack: SlackStandIn, conf: SlackAppSettings, caplog: pytest.LogCaptureFixture
) -> None:
    """Only what was not said is reported at the stop: a reply whose thread came is not."""
    replies = ThreadReplies(home, conf, wait=600)
    _say_joined(replies, "contain00007", _alert("pagerduty", "pd-7"))
    ts = _thread(slack, home, "contain00007")
    [joined] = _wait_for_replies(slack, ts)
    with caplog.at_level("WARNING", logger="clampdown.serve"):
        assert replies.close(grace=5) == []
    assert "contain00007" not in caplog.text
    assert joined.startswith(":link: Alert joined this run")
