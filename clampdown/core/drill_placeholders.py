"""``${…}`` placeholders in drill alert payloads, inputs and slash commands.

Shared by the lint (which judges a placeholder from the drill file alone) and the
runner (which fills them from the seeded world), so both agree on what a name means.
"""

from __future__ import annotations

import re
from typing import Any

from clampdown.core.diagnostics import ClampdownError, did_you_mean

PLACEHOLDER = re.compile(r"\$\{\s*([A-Za-z_][\w.\-]*)\s*\}")
PLACEHOLDER_HINT = (
    "write ${seed.account}, ${seed.region}, ${seed.users.<name>.arn|id|access_keys.0}, "
    "${seed.roles.<name>.arn|id|sessions.0}, ${seed.buckets.<name>.arn}, "
    "${seed.endpoints.<name>.arn}, ${seed.kms_keys.<alias>.arn|id|alias}, "
    "${seed.secrets.<name>.arn}, ${drill.name}, ${drill.alert_time}, ${drill.alert_epoch}, "
    "or (in a slash command) ${run.id}"
)
_SEED_FIELDS = {
    "users": {"arn", "id", "name", "access_keys"},
    "roles": {"arn", "id", "name", "sessions"},
    "buckets": {"arn", "name"},
    "endpoints": {"arn", "name"},
    "kms_keys": {"arn", "id", "alias", "name"},
    "secrets": {"arn", "name"},
}


class PlaceholderError(ClampdownError):
    """A ``${…}`` in an alert payload names nothing the seed made."""


def find_placeholders(
    value: Any, loc: tuple[str | int, ...]
) -> list[tuple[tuple[str | int, ...], str]]:
    """Every ``${path}`` under ``value``, with where it is (for a positioned diagnostic)."""
    if isinstance(value, str):
        return [(loc, m[1]) for m in PLACEHOLDER.finditer(value)]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in find_placeholders(v, (*loc, k))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in find_placeholders(v, (*loc, i))]
    return []


def placeholder_problem(
    path: str, known: dict[str, set[str]], *, allow_run: bool = False
) -> str | None:
    """Why ``path`` cannot resolve, judged from the drill file alone (None: it can)."""
    parts = path.split(".")
    if parts[0] == "run":
        if not allow_run:
            return "${run.id} exists only in a slash command (the alert's run)"
        return None if parts == ["run", "id"] else "run has only id"
    if parts[0] == "drill":
        if len(parts) == 2 and parts[1] in ("name", "alert_time", "alert_epoch"):
            return None
        return "drill has name, alert_time and alert_epoch"
    if parts[0] != "seed":
        return f"unknown name '{parts[0]}'"
    return _seed_problem(parts, known)


def _seed_problem(parts: list[str], known: dict[str, set[str]]) -> str | None:
    """Why ``seed.…`` (split at the dots) cannot resolve (None: it can)."""
    if len(parts) == 2 and parts[1] in ("account", "region", "evidence_bucket"):
        return None
    if len(parts) < 4 or parts[1] not in _SEED_FIELDS:
        return "not a seed value"
    kind, name, field = parts[1], parts[2], parts[3]
    if name not in known[kind]:
        hint = did_you_mean(name, known[kind])
        return f"no seed {kind[:-1]} '{name}'" + (f"; {hint}" if hint else "")
    if field not in _SEED_FIELDS[kind]:
        return f"a seed {kind[:-1]} has {', '.join(sorted(_SEED_FIELDS[kind]))}"
    if field in ("access_keys", "sessions"):
        if len(parts) != 5 or not parts[4].isdigit():
            return f"name one of the {field} by index, e.g. {field}.0"
    elif len(parts) != 4:
        return "not a seed value"
    return None


def fill_placeholders(value: Any, context: dict[str, Any]) -> Any:
    """Replace every ``${path}`` with its value; a whole-string placeholder keeps its type."""
    if isinstance(value, dict):
        return {k: fill_placeholders(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [fill_placeholders(v, context) for v in value]
    if not isinstance(value, str):
        return value
    whole = PLACEHOLDER.fullmatch(value.strip())
    if whole:
        return _lookup(whole[1], context)
    return PLACEHOLDER.sub(lambda m: str(_lookup(m[1], context)), value)


def _lookup(path: str, context: dict[str, Any]) -> Any:
    current: Any = context
    for part in path.split("."):
        if isinstance(current, dict) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            raise PlaceholderError(f"placeholder ${{{path}}} names nothing", PLACEHOLDER_HINT)
    return current
