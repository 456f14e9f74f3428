"""Slack's user groups as clampdown's member directory (entry point
``clampdown.member_directories``: ``slack``)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from clampdown.core.settings import Settings

logger = logging.getLogger("clampdown.slack")


class SlackMemberDirectory:
    """Members of Slack user groups (ids or handles), asked at each call."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def members(self, groups: tuple[str, ...]) -> set[str] | None:
        from clampdown_slack.approval_card import group_members

        try:
            return group_members(self.client, list(groups))
        except Exception as exc:
            logger.warning("cannot resolve Slack user groups %s: %s", ", ".join(groups), exc)
            return None

    def name_of(self, user_id: str) -> str | None:
        """The person's name (users.info: real name, else display name, else handle);
        None when Slack cannot say (reports then show the id)."""
        try:
            user = self.client.users_info(user=user_id)["user"]
        except Exception as exc:
            logger.info("cannot look up Slack user %s: %s", user_id, exc)
            return None
        profile = user.get("profile") or {}
        for name in (
            profile.get("real_name"),
            user.get("real_name"),
            profile.get("display_name"),
            user.get("name"),
        ):
            if name and str(name).strip():
                return str(name).strip()
        return None


def slack_member_directory(conf: Settings) -> SlackMemberDirectory | None:
    """The factory: None when Slack is not configured (no bot token). Slack's own settings
    are read here, each time a directory is wanted (``conf``: clampdown's, unused)."""
    from clampdown_slack.client import SlackNotConfigured, slack_client, slack_settings

    try:
        client = slack_client(slack_settings())
    except SlackNotConfigured:
        return None
    return SlackMemberDirectory(client)
