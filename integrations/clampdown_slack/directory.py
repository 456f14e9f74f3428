"""Slack's user groups as clampdown's member directory (entry point
``clampdown.member_directories``: ``slack``), with the last answer kept for when Slack is down.

Every successful lookup is written to the state store (:meth:`StateStore.remember_members`,
``$CLAMPDOWN_HOME/state.sqlite3`` or the shared PostgreSQL of scaled mode), per group. When
Slack cannot answer (unreachable, 5xx, rate-limited past the client's retries, a refused
token), the last answer for every asked group is used instead, and said: in the log, and on
the approval card (:func:`membership_note`: "membership as of <time>, Slack unreachable").
When Slack *does* answer that a group does not exist, nothing cached is used: a deleted or
renamed group must not keep its old members approving. No cached answer for a group: the
groups cannot be resolved (``None``), and only listed approvers — and the break-glass
approvers, ``CLAMPDOWN_BREAK_GLASS_APPROVERS`` (:mod:`clampdown_flows.approval_store`) — can
decide.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from clampdown.core.state_store import StateStore, default_url

if TYPE_CHECKING:
    from clampdown.core.settings import Settings

logger = logging.getLogger("clampdown.slack")
MAX_PROBLEM = 200


@dataclass(frozen=True)
class MemberLookup:
    """One answer: the members (None: nobody can tell), and for a cached answer when Slack
    last gave it (``as_of``) and why Slack could not answer now (``problem``)."""

    members: set[str] | None
    as_of: datetime | None = None
    problem: str | None = None


def _short(exc: Exception) -> str:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return first[:MAX_PROBLEM]


class SlackMemberDirectory:
    """Members of Slack user groups (ids or handles), asked at each call; the last answer is
    kept in the state store at ``cache_url`` (None: no cache)."""

    def __init__(self, client: Any, cache_url: str | None = None) -> None:
        self.client = client
        self.cache_url = cache_url

    def members(self, groups: tuple[str, ...]) -> set[str] | None:
        return self.lookup(groups).members

    def lookup(self, groups: tuple[str, ...]) -> MemberLookup:
        """Ask Slack; when it cannot answer, the cached answer (see the module docstring)."""
        from clampdown_slack.approval_card import members_by_group

        try:
            by_group = members_by_group(self.client, list(groups))
        except LookupError as exc:  # Slack answered: there is no such group
            logger.warning("cannot resolve Slack user groups %s: %s", ", ".join(groups), exc)
            return MemberLookup(None, problem=_short(exc))
        except Exception as exc:
            logger.warning("cannot resolve Slack user groups %s: %s", ", ".join(groups), exc)
            return self._cached(groups, _short(exc))
        self._remember(by_group)
        found: set[str] = set()
        for members in by_group.values():
            found |= members
        return MemberLookup(found)

    def _remember(self, by_group: dict[str, set[str]]) -> None:
        if self.cache_url is None or not by_group:
            return
        try:
            store = StateStore(self.cache_url)
            try:
                store.remember_members(by_group)
            finally:
                store.close()
        except Exception as exc:  # the answer still counts; only the fallback is older
            logger.warning("cannot keep the membership of %s: %s", ", ".join(by_group), exc)

    def _cached(self, groups: tuple[str, ...], problem: str) -> MemberLookup:
        if self.cache_url is None:
            return MemberLookup(None, problem=problem)
        try:
            store = StateStore(self.cache_url)
            try:
                cached = store.cached_members(groups)
            finally:
                store.close()
        except Exception as exc:
            logger.warning("cannot read the kept membership of %s: %s", ", ".join(groups), exc)
            return MemberLookup(None, problem=problem)
        if cached is None:
            return MemberLookup(None, problem=problem)
        members, looked_up = cached
        as_of = datetime.fromtimestamp(looked_up, UTC)
        logger.warning(
            "Slack unreachable: using the membership of %s as of %s",
            ", ".join(groups),
            as_of.isoformat(timespec="seconds"),
        )
        return MemberLookup(members, as_of=as_of, problem=problem)

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
    are read here, each time a directory is wanted; the membership is kept in ``conf``'s
    state store (``CLAMPDOWN_STATE_URL``, else SQLite in its home)."""
    from clampdown_slack.client import SlackNotConfigured, slack_client, slack_settings

    try:
        client = slack_client(slack_settings())
    except SlackNotConfigured:
        return None
    return SlackMemberDirectory(client, cache_url=default_url(conf))


def membership_note(lookup: MemberLookup, break_glass: str = "") -> str | None:
    """What the approval card says about who may decide when Slack could not answer now:
    the membership's age, or that the groups cannot be resolved. None: Slack answered."""
    if lookup.problem is None:
        return None
    if lookup.members is not None and lookup.as_of is not None:
        when = lookup.as_of.strftime("%Y-%m-%d %H:%M UTC")
        return f":warning: group membership as of {when}, Slack unreachable"
    from clampdown_slack.approval_card import person

    glass = ", ".join(person(p.strip()) for p in break_glass.split(",") if p.strip())
    also = f" and break-glass approvers ({glass})" if glass else ""
    return f":warning: approver groups cannot be resolved now: listed approvers{also} only"
