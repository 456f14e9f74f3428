"""Durations written the way responders say them: ``30s``, ``5m``, ``1h30m``, ``250ms``."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, WithJsonSchema

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
DURATION_PATTERN = r"^(\d+(\.\d+)?(ms|s|m|h|d))+$"
# What editors accept: the same, with spaces allowed between the parts ("1h 30m").
SCHEMA_PATTERN = r"^\s*(\d+(\.\d+)?\s*(ms|s|m|h|d)\s*)+$"


def parse_duration(value: Any) -> float:
    """Seconds in ``value``: a number of seconds, or a string such as ``1h30m``."""
    if isinstance(value, bool):
        raise ValueError("a duration must be a number of seconds or a string like '30s'")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if isinstance(value, str):
        text = value.strip().replace(" ", "")
        if re.fullmatch(DURATION_PATTERN, text):
            return sum(float(n) * _UNITS[unit] for n, unit in _PART.findall(text))
    raise ValueError(f"'{value}' is not a duration: write e.g. 500ms, 30s, 5m, 1h30m or 2d")


def format_duration(seconds: float) -> str:
    """Short human form of a number of seconds: ``250ms``, ``4.49s``, ``42.5s``, ``1h30m``.

    The one way clampdown prints a duration (plans, progress, summaries, reports), so
    a measured time never shows as ``4.49377s``: at most three significant figures
    under a minute, whole seconds above.
    """
    if seconds < 0:
        return "-" + format_duration(-seconds)
    millis = round(seconds * 1000)
    if millis < 1000:
        return f"{millis}ms"
    if seconds < 59.95:
        digits = 2 if seconds < 10 else 1
        return f"{seconds:.{digits}f}".rstrip("0").rstrip(".") + "s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    parts = [
        f"{days}d" if days else "",
        f"{hours}h" if hours else "",
        f"{minutes}m" if minutes else "",
        f"{secs}s" if secs else "",
    ]
    return "".join(parts)


def parse_positive_duration(value: Any) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError("a timeout must be longer than zero")
    return seconds


def _duration_type(validator: Any, number: dict[str, Any], description: str) -> Any:
    """A float field written as a duration; the JSON Schema tells editors the same."""
    schema = {"anyOf": [{"type": "string", "pattern": SCHEMA_PATTERN}, number]}
    return Annotated[
        float, BeforeValidator(validator), WithJsonSchema({**schema, "description": description})
    ]


Duration = _duration_type(
    parse_duration,
    {"type": "number", "minimum": 0},
    "seconds, or a duration such as 500ms, 30s, 5m, 1h30m",
)
PositiveDuration = _duration_type(
    parse_positive_duration,
    {"type": "number", "exclusiveMinimum": 0},
    "seconds (more than zero), or a duration such as 30s, 5m, 1h30m",
)
