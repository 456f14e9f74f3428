"""Who is in an approver group: the registered member directories, else ``CLAMPDOWN_GROUPS``.

A provider registers a :class:`~clampdown.core.extensions.MemberDirectory` factory
under the ``clampdown.member_directories`` entry-point group (Slack's user groups).
The first directory whose provider is configured is the authority. With none
configured, the groups are read from ``CLAMPDOWN_GROUPS``
(``security-oncall=U024BE7LH,U0G9QF9C6; ir-leads=U0…``), so a team that approves
from the terminal can use the shipped runbooks' groups.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Iterable
from typing import Any

from clampdown.core.extensions import MEMBER_DIRECTORIES, MemberDirectory, factories

logger = logging.getLogger("clampdown.members")


@functools.cache
def _directory_factories() -> tuple[Callable[..., Any], ...]:
    return tuple(factories(MEMBER_DIRECTORIES))


def member_directories() -> list[MemberDirectory]:
    """The directories whose provider is configured now (a factory returns None when not)."""
    found = (factory() for factory in _directory_factories())
    return [directory for directory in found if directory is not None]


def members_now(groups: Iterable[str]) -> set[str] | None:
    """Members of ``groups`` right now; None when nobody can tell (callers then trust only
    listed user ids)."""
    asked = tuple(groups)
    if not asked:
        return set()
    for directory in member_directories():
        try:
            return directory.members(asked)
        except Exception as exc:  # a directory should answer None itself; never let it raise
            logger.warning("cannot resolve groups %s: %s", ", ".join(asked), exc)
            return None
    return local_groups_members(asked)


def local_groups_members(groups: Iterable[str]) -> set[str] | None:
    """Members per ``CLAMPDOWN_GROUPS`` (None when it does not define every group asked)."""
    defined: dict[str, set[str]] = {}
    for part in (os.environ.get("CLAMPDOWN_GROUPS") or "").split(";"):
        name, sep, people = part.partition("=")
        if sep and name.strip():
            members = {p.strip() for p in people.replace(" ", ",").split(",") if p.strip()}
            defined[name.strip().lstrip("@")] = members
    found: set[str] = set()
    for group in groups:
        if group not in defined:
            return None
        found |= defined[group]
    return found
