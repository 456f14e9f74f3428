"""Waiting in tests for an event, not for a time: poll ``check`` until it gives something
truthy; the bound only turns a hang into a failure (never a timing assertion)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(check: Callable[[], Any], what: str, bound: float = 60.0) -> Any:
    """``check()``'s first truthy value, asked every 0.1 s; an AssertionError naming
    ``what`` when ``bound`` seconds pass first. Exceptions of ``check`` propagate."""
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.1)
    raise AssertionError(f"never happened within {bound:g} s: {what}")
