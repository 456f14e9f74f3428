"""Test doubles for Slack: a local stand-in for the Web API, Events and Socket Mode.

:class:`clampdown_slack.testing.standin.SlackStandIn` is the one to use; its Web API is
:mod:`~clampdown_slack.testing.webapi`, its Socket Mode :mod:`~clampdown_slack.testing.socket_mode`.
Shipped (drills use it on a user's machine) but never imported by the Slack integration.
"""
