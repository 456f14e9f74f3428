"""Bounds on what a request may make clampdown hold: JSON nesting depth.

A payload nested hundreds of levels deep parses (Python's decoder stops near 1,000
levels), then makes recursive code further on (validation, the ledger's encoder,
expression rendering) raise ``RecursionError``: an answer 500 a sender retries forever.
No alert source nests more than a dozen levels, so every inbound JSON document is
checked against :data:`MAX_JSON_DEPTH` right after it is decoded, before anything else
reads it, with an iterative walk (no recursion to exhaust).
"""

from __future__ import annotations

import json
from typing import Any

MAX_JSON_DEPTH = 64


class TooDeep(ValueError):
    """A JSON document nested deeper than allowed (or too deep for the decoder)."""


def depth_over(value: Any, limit: int) -> bool:
    """True if ``value`` nests lists/objects more than ``limit`` levels (iterative)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def loads_bounded(text: str | bytes, limit: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads`` that refuses documents nested deeper than ``limit`` (:class:`TooDeep`).

    ``json.JSONDecodeError`` and ``UnicodeDecodeError`` pass through for the caller to word.
    """
    try:
        value = json.loads(text)
    except RecursionError:
        raise TooDeep(f"nested deeper than {limit} levels") from None
    if depth_over(value, limit):
        raise TooDeep(f"nested deeper than {limit} levels")
    return value
