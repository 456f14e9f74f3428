"""Untrusted text made inert before it reaches Slack: one function, used by every message.

Slack's mrkdwn treats ``<…>`` as a control sequence: ``<!channel>`` pings everyone,
``<@U…>`` mentions a person, ``<https://evil|Approve>`` shows a link labelled as
anything. Text that comes from an alert, a runbook input, a step's output or an error
message is therefore escaped as Slack's documentation asks ("Escaping text": replace
``&``, ``<`` and ``>`` with ``&amp;``, ``&lt;`` and ``&gt;``; Slack then shows the
characters themselves). A run of backticks is broken with zero-width spaces, so a value
can neither close the code block clampdown put it in (```` ``` ````) nor open one that
swallows the lines clampdown writes after it.

:func:`inert` is the one entry point: ``mask`` (the run's secret values, see
:meth:`clampdown.core.ledger.Ledger.scrub`) is applied first, so a secret never reaches
Slack even in escaped form. clampdown's own markup (the mentions and links it builds
from ids it checked) is written around escaped values, never through this function.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

ZERO_WIDTH_SPACE = "\u200b"
_ENTITIES = (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"))  # "&" first
_BACKTICKS = re.compile(r"``+")

Mask = Callable[[str], str]


def inert(value: Any, mask: Mask | None = None) -> str:
    """``value`` as text that Slack shows as written: secrets masked, markup escaped.

    No two backticks stay adjacent, so a value placed next to clampdown's own
    backtick (inline code) cannot form a fence either.
    """
    text = value if isinstance(value, str) else str(value)
    if mask is not None:
        text = mask(text)
    for char, entity in _ENTITIES:
        text = text.replace(char, entity)
    return _BACKTICKS.sub(lambda m: ZERO_WIDTH_SPACE.join(m.group()), text)


def inert_blocks(blocks: Any, mask: Mask | None = None) -> Any:
    """Block Kit blocks with every ``mrkdwn`` text object made :func:`inert`.

    ``plain_text`` objects are not parsed by Slack (only masked); other strings
    (ids, urls, values) are masked. The structure is kept as given.
    """
    if isinstance(blocks, list):
        return [inert_blocks(b, mask) for b in blocks]
    if isinstance(blocks, dict):
        mrkdwn = blocks.get("type") == "mrkdwn"
        return {
            k: inert(v, mask)
            if mrkdwn and k == "text" and isinstance(v, str)
            else inert_blocks(v, mask)
            for k, v in blocks.items()
        }
    if isinstance(blocks, str) and mask is not None:
        return mask(blocks)
    return blocks


def masked(value: Any, mask: Mask) -> Any:
    """Every string inside ``value`` (blocks clampdown built, already escaped) masked."""
    if isinstance(value, list):
        return [masked(v, mask) for v in value]
    if isinstance(value, dict):
        return {k: masked(v, mask) for k, v in value.items()}
    return mask(value) if isinstance(value, str) else value
