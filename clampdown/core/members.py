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
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from clampdown.core.extensions import MEMBER_DIRECTORIES, MemberDirectory, factories

if TYPE_CHECKING:
    from clampdown.core.settings import Settings

logger = logging.getLogger("clampdown.members")


@functools.cache
def _directory_factories() -> tuple[Callable[..., Any], ...]:
    return tuple(factories(MEMBER_DIRECTORIES))


def _given_or_now(conf: Settings | None) -> Settings:
    """The caller's settings; without them (tests, one-off callers) the environment now."""
    if conf is not None:
        return conf
    from clampdown.core.settings import settings

    return settings()


def member_directories(conf: Settings | None = None) -> list[MemberDirectory]:
    """The directories whose provider is configured (a factory returns None when not)."""
    conf = _given_or_now(conf)
    found = (factory(conf) for factory in _directory_factories())
    return [directory for directory in found if directory is not None]


def members_now(groups: Iterable[str], conf: Settings | None = None) -> set[str] | None:
    """Members of ``groups`` right now; None when nobody can tell (callers then trust only
    listed user ids). ``conf``: the entry point's settings (directories are asked each time)."""
    asked = tuple(groups)
    if not asked:
        return set()
    conf = _given_or_now(conf)
    for directory in member_directories(conf):
        try:
            return directory.members(asked)
        except Exception as exc:  # a directory should answer None itself; never let it raise
            logger.warning("cannot resolve groups %s: %s", ", ".join(asked), exc)
            return None
    return local_groups_members(asked, conf.groups)


def local_groups_members(groups: Iterable[str], spec: str | None = None) -> set[str] | None:
    """Members per ``CLAMPDOWN_GROUPS`` (None when it does not define every group asked).

    ``spec``: its value as the entry point read it (``Settings.groups``); None: read now."""
    if spec is None:
        spec = _given_or_now(None).groups
    defined: dict[str, set[str]] = {}
    for part in (spec or "").split(";"):
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
