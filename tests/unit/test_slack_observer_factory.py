"""The Slack run observer's factory answers None without Slack, before importing the thread.

Every run asks each ``clampdown.run_observers`` factory for an observer; the Slack one
used to import :mod:`clampdown_slack.run_thread` (~27 ms) only to answer None when Slack
is not configured. The light factory must answer exactly as the thread's own factory (that
it is the registered one and imports no thread is checked in a fresh interpreter:
tests/integration/test_import_probes.py).
"""

from __future__ import annotations

import os

import pytest

import clampdown_slack
from clampdown_slack import run_thread
from tests.paths import REPO

NAMES = ("CLAMPDOWN_SLACK_BOT_TOKEN", "CLAMPDOWN_SLACK_CHANNEL")


@pytest.fixture
def asked(monkeypatch) -> list[tuple]:
    """The calls that reach the thread's own factory (which answers 'thread')."""
    calls: list[tuple] = []
    monkeypatch.setattr(
        run_thread, "observer_for_run", lambda *args: calls.append(args) or "thread"
    )
    for name in [n for n in os.environ if n.upper().startswith("CLAMPDOWN_SLACK")]:
        monkeypatch.delenv(name)
    return calls


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"CLAMPDOWN_SLACK_BOT_TOKEN": "xoxb-1"},  # no channel: no thread
        {"CLAMPDOWN_SLACK_CHANNEL": "#ir"},  # no token: no thread
        {"CLAMPDOWN_SLACK_BOT_TOKEN": "  ", "CLAMPDOWN_SLACK_CHANNEL": "#ir"},  # blank is unset
    ],
)
def test_without_a_token_and_a_channel_no_thread_is_asked_for(monkeypatch, asked, env) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert clampdown_slack.observer_for_run("run-1", None, None) is None  # type: ignore[arg-type]
    assert asked == []
    # the thread's own decision, for the same environment: None as well
    assert run_thread.RunThread.from_env("run-1", None, REPO / "x") is None  # type: ignore[arg-type]


@pytest.mark.parametrize("spelling", [str.upper, str.lower])
def test_with_both_set_the_threads_own_factory_decides(monkeypatch, asked, spelling) -> None:
    monkeypatch.setenv(spelling(NAMES[0]), "xoxb-1")
    monkeypatch.setenv(spelling(NAMES[1]), "#ir")
    assert clampdown_slack.observer_for_run("run-1", "ledger", "settings") == "thread"  # type: ignore[arg-type]
    assert asked == [("run-1", "ledger", "settings")]
