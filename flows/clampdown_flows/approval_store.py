"""Where a run's approval requests live, and who may decide them.

``$CLAMPDOWN_HOME/runs/<id>/approvals/<step>.json`` holds each request (what is
gated, the hash, who may decide, the deadline, where the paused run's Prefect API
is) and ``.key`` the run's approval key. The run (:mod:`clampdown_flows.approval_gate`) writes
them; senders (:mod:`clampdown_flows.decisions`) read them.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from pathlib import Path
from typing import Any

from clampdown.core.approvals import split_people
from clampdown.core.diagnostics import ClampdownError
from clampdown.core.settings import settings


class DecisionError(ClampdownError):
    """The decision cannot be submitted (no such run or step, nothing pending, no key)."""


def approvals_dir(run_id: str) -> Path:
    return settings().paths.run(run_id).approvals_dir


def request_file(run_id: str, step: str) -> Path:
    return settings().paths.run(run_id).approval_request(step)


def key_file(run_id: str) -> Path:
    return settings().paths.run(run_id).approval_key


def approval_key(run_id: str, *, create: bool = False) -> bytes:
    """The run's approval key: senders sign decisions with it, the run verifies them.

    Made by the run (0600) when it first asks; anyone who can read it can sign
    decisions for the run, so CLAMPDOWN_HOME must be readable by operators only.
    """
    path = key_file(run_id)
    if create and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
    try:
        return bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError):
        raise DecisionError(
            f"cannot read the approval key of run '{run_id}' ({path})",
            "decide from the machine (and user) that runs clampdown, or in the Prefect UI",
        ) from None


def allowed_sources() -> frozenset[str]:
    """CLAMPDOWN_APPROVAL_SOURCES: where decisions may come from (default all three)."""
    raw = os.environ.get("CLAMPDOWN_APPROVAL_SOURCES") or "slack,terminal,prefect-ui"
    return frozenset(part.strip() for part in raw.split(",") if part.strip())


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomic replace: a reader never sees half a request."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True, default=str))
    tmp.replace(path)


def read_requests(run_id: str) -> list[dict[str, Any]]:
    """Every approval request of a run (pending or decided), oldest first."""
    folder = approvals_dir(run_id)
    found = []
    for file in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        with contextlib.suppress(OSError, ValueError):
            found.append(json.loads(file.read_text()))
    return sorted(found, key=lambda r: r.get("requested_at", ""))


def default_approvers() -> tuple[list[str], list[str]]:
    """``CLAMPDOWN_APPROVERS``: user ids (U…/W…) and group ids or handles, comma-separated."""
    return split_people(os.environ.get("CLAMPDOWN_APPROVERS") or "")


def resolve_members(groups: tuple[str, ...]) -> set[str] | None:
    """Members of ``groups`` per the registered member directories (Slack), else
    ``CLAMPDOWN_GROUPS``; None when nobody can tell (see :mod:`clampdown.core.members`)."""
    from clampdown.core.members import members_now

    return members_now(groups)
