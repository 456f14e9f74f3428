"""Where a run's approval requests live, and who may decide them.

``$CLAMPDOWN_HOME/runs/<id>/approvals/<step>.json`` holds each request (what is
gated, the hash, who may decide, the deadline, where the paused run's Prefect API
is) and ``.key`` the run's approval key. The run (:mod:`clampdown_flows.approval_gate`) writes
them; senders (:mod:`clampdown_flows.decisions`) read them. They go through
:class:`~clampdown.core.home.RunFiles` (``write``/``read``), so in the scaled mode they are
in the run store (PostgreSQL) and a sender on another machine reads them; the settings
come from the caller's entry point.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
from pathlib import Path
from typing import Any

from clampdown.core.approvals import split_people
from clampdown.core.diagnostics import ClampdownError
from clampdown.core.home import APPROVAL_KEY, APPROVALS, RunFiles, private_dirs
from clampdown.core.settings import Settings, settings

log = logging.getLogger("clampdown.approvals")


class DecisionError(ClampdownError):
    """The decision cannot be submitted (no such run or step, nothing pending, no key)."""


def request_file(run_id: str, step: str, conf: Settings | None = None) -> Path:
    """Where a request is (for tests and tools; the run and senders use their RunFiles)."""
    return (conf or settings()).paths.run(run_id).approval_request(step)


def approval_key(files: RunFiles, *, create: bool = False) -> bytes:
    """The run's approval key: ``clampdown serve`` vouches for a Slack click with it (an
    HMAC the run verifies) when it has no key of its own (``CLAMPDOWN_SERVE_KEY``).

    Made by the run (0600) when it first asks; anyone who can read it can pose as a Slack
    click for the run (not as a terminal approver: those sign with their own SSH keys),
    so CLAMPDOWN_HOME must be readable by the service account only (docs/security.md).
    """
    path = files.approval_key
    name = f"{APPROVALS}/{APPROVAL_KEY}"
    if files.store is not None:  # the scaled mode: the run's key is in the run store
        text = files.read(name)
        if text is None and create:
            text = secrets.token_hex(32)
            files.write(name, text)
    else:
        if create and not path.exists():
            private_dirs(path.parent)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(32))
        text = files.read(name)
    try:
        if text is None:
            raise ValueError("no key")
        return bytes.fromhex(text.strip())
    except (OSError, ValueError):
        raise DecisionError(
            f"cannot read the approval key of run '{files.run_id}' ({path})",
            "Slack decisions are sent by clampdown serve, on the machine (and account) that "
            "runs clampdown",
        ) from None


def allowed_sources() -> frozenset[str]:
    """CLAMPDOWN_APPROVAL_SOURCES: where decisions may come from (default all three).

    Read from the environment at each decision, on purpose (not from the settings the
    run read at its start): an operator can turn a source off for runs already waiting.
    Listing ``prefect-ui`` here is not enough for it to count: unauthenticated UI
    decisions also need ``CLAMPDOWN_PREFECT_UI_DECISIONS=true`` (off by default), which
    the run checks with each decision's proof (:mod:`clampdown.core.decision_proof`).
    """
    raw = os.environ.get("CLAMPDOWN_APPROVAL_SOURCES") or "slack,terminal,prefect-ui"
    return frozenset(part.strip() for part in raw.split(",") if part.strip())


def write_request(files: RunFiles, step: str, data: dict[str, Any]) -> None:
    """Save the request of approval step ``step`` (atomic: a reader never sees half)."""
    files.write(f"{APPROVALS}/{step}.json", json.dumps(data, indent=1, sort_keys=True, default=str))


def read_requests(files: RunFiles) -> list[dict[str, Any]]:
    """Every approval request of a run (pending or decided), oldest first."""
    found = []
    for name in sorted(files.names(APPROVALS)):
        if not name.endswith(".json"):
            continue
        with contextlib.suppress(OSError, ValueError, TypeError):
            found.append(json.loads(files.read(f"{APPROVALS}/{name}") or ""))
    return sorted(found, key=lambda r: r.get("requested_at", ""))


def default_approvers(conf: Settings | None = None) -> tuple[list[str], list[str]]:
    """``CLAMPDOWN_APPROVERS``: user ids (U…/W…) and group ids or handles, comma-separated.

    ``conf``: the run's settings (without: the environment now)."""
    return split_people((conf or settings()).approvers or "")


class BreakGlass(set[str]):
    """The break-glass approvers, standing in for groups nobody can resolve now.

    A set of its own type, so whoever checks a decision against it can record that the
    decision counted by break glass (:func:`counted_by_break_glass`)."""


def break_glass_approvers(conf: Settings | None = None) -> BreakGlass:
    """``CLAMPDOWN_BREAK_GLASS_APPROVERS``: user ids, as the caller's settings read them."""
    users, _ = split_people((conf or settings()).break_glass_approvers or "")
    return BreakGlass(users)


def resolve_members(groups: tuple[str, ...], conf: Settings | None = None) -> set[str] | None:
    """Members of ``groups`` per the registered member directories (Slack; while Slack cannot
    answer, the membership it last gave: :mod:`clampdown_slack.directory`), else
    ``CLAMPDOWN_GROUPS``. When nobody can tell: the break-glass approvers
    (:class:`BreakGlass`) if any are named, else None (see :mod:`clampdown.core.members`)."""
    from clampdown.core.members import members_now

    conf = conf or settings()
    members = members_now(groups, conf)
    if members is not None or not groups:
        return members
    glass = break_glass_approvers(conf)
    if not glass:
        return None
    log.warning(
        "groups %s cannot be resolved: break-glass approvers %s may decide",
        ", ".join(groups),
        ", ".join(sorted(glass)),
    )
    return glass


def counted_by_break_glass(
    members: object, approver: str, allowed_users: frozenset[str] | set[str]
) -> bool:
    """Whether a decision by ``approver`` counts only because of break glass: what the run
    should record with it (the ledger's ``approval.decision``)."""
    listed = approver in allowed_users
    return isinstance(members, BreakGlass) and approver in members and not listed
