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
    """Short human form of a number of seconds, for plans and summaries."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:g}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    parts = [
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
