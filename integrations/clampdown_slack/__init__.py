"""Slack actions: the run's status thread (``slack.status``), later approvals and ChatOps.

Web API calls go through a real ``slack_sdk.WebClient`` (:mod:`clampdown_slack.client`)
with bounded retries; :mod:`clampdown_slack.testing.standin` is a local Slack Web API that
drills and tests point ``CLAMPDOWN_SLACK_API_URL`` at. Modules here import slack-sdk
lazily, so loading an action's class (lint, plan) stays cheap.
"""
