"""Slack actions: the run's status thread (``slack.status``), later approvals and ChatOps.

Web API calls go through a real ``slack_sdk.WebClient`` (:mod:`clampdown_slack.client`)
with bounded retries; :mod:`clampdown_slack.testing.standin` is a local Slack Web API that
drills and tests point ``CLAMPDOWN_SLACK_API_URL`` at. Modules here import slack-sdk
lazily, so loading an action's class (lint, plan) stays cheap.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from clampdown.core.ledger import Ledger
    from clampdown.core.settings import Settings

_NEEDED = ("CLAMPDOWN_SLACK_BOT_TOKEN", "CLAMPDOWN_SLACK_CHANNEL")


def observer_for_run(run_id: str, ledger: Ledger, settings: Settings) -> Any:
    """The ``clampdown.run_observers`` factory: the run's Slack thread, or None.

    Every run asks each observer factory; without Slack the answer is None, and
    importing :mod:`clampdown_slack.run_thread` (its approval cards, the incident
    report's renderer, the ledger: ~27 ms) only to give it was paid at the end of
    every run. Slack's settings are environment variables read without regard to
    case (pydantic-settings), and a blank one is unset; a thread needs both the bot
    token and the channel. So when no variable spelling either of them has a value,
    the answer is None without that import; otherwise
    :func:`clampdown_slack.run_thread.observer_for_run` decides, as it always did.
    """
    given = {name.upper() for name, value in os.environ.items() if value.strip()}
    if not all(name in given for name in _NEEDED):
        return None
    from clampdown_slack.run_thread import observer_for_run as thread_for_run

    return thread_for_run(run_id, ledger, settings)
