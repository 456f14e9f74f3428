"""boto3 responses as evidence: without ``ResponseMetadata``, as plain JSON values."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any


def strip_metadata(response: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in response.items() if k != "ResponseMetadata"}


def json_safe(value: Any) -> Any:
    """A boto3 response as plain JSON values (datetimes as ISO 8601)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray)):
        return value.decode("utf-8", "replace")
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)
