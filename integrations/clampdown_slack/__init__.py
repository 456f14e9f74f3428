"""Slack actions: the run's status thread (``slack.status``), later approvals and ChatOps.

Web API calls go through a real ``slack_sdk.WebClient`` (:mod:`clampdown_slack.client`)
with bounded retries; :mod:`clampdown_slack.testing.standin` is a local Slack Web API that
drills and tests point ``CLAMPDOWN_SLACK_API_URL`` at. Modules here import slack-sdk
lazily, so loading an action's class (lint, plan) stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from clampdown.core.ledger import Ledger
    from clampdown.core.settings import Settings


def observer_for_run(run_id: str, ledger: Ledger, settings: Settings) -> Any:
    """The ``clampdown.run_observers`` factory: the run's Slack thread, or None.

    Every run asks each observer factory; without Slack the answer is None, and
    importing :mod:`clampdown_slack.run_thread` (its approval cards, the incident
    report's renderer, the ledger: 7-8 ms of a run's CPU) only to give it was paid at
    the end of every run. So Slack's own settings decide first
    (:func:`clampdown_slack.client.thread_settings`, a light module), and only a run that
    can have a thread imports it: :func:`clampdown_slack.run_thread.observer_for_run`
    decides from there, as it always did.
    """
    from clampdown_slack.client import thread_settings

    if thread_settings() is None:
        return None
    from clampdown_slack.run_thread import observer_for_run as thread_for_run

    return thread_for_run(run_id, ledger, settings)
