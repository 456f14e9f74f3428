"""Request bodies bounded before anything reads them, on every route of ``clampdown serve``.

Slack's signature (and an alert's) can only be checked over the whole body, so without
a bound anyone could make the server hold an unsigned body of any size before refusing
it. :class:`BodyLimit` is plain ASGI middleware in front of every route:

* a ``Content-Length`` over the route's limit is answered 413 without reading a byte;
  one that is not a number is answered 400;
* the bytes actually received are counted as the app reads them (a chunked body, or a
  ``Content-Length`` that lies), and the read that crosses the limit ends the request
  with 413 — at most the limit plus one network chunk is ever held.

Limits are per route prefix (:func:`route_limits`); the alert endpoints keep their own
check too (``CLAMPDOWN_MAX_ALERT_BYTES``), this is the outer bound.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

logger = logging.getLogger("clampdown.serve")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SLACK_MAX_BODY = 1024 * 1024  # Slack's commands and interactions are a few KiB
DEFAULT_MAX_BODY = 64 * 1024  # every other route (none of them takes a body today)


def route_limits(max_alert_bytes: int) -> list[tuple[str, int]]:
    """(path prefix, largest body in bytes), most specific first; the rest: DEFAULT_MAX_BODY."""
    return [("/slack/", SLACK_MAX_BODY), ("/alerts/", max_alert_bytes)]


class _TooLarge(Exception):
    """Raised inside the app's ``receive`` once the body crosses the limit."""


class BodyLimit:
    """ASGI middleware: 413 for a body over its route's limit, by header or by count."""

    def __init__(
        self, app: ASGIApp, limits: list[tuple[str, int]], default: int = DEFAULT_MAX_BODY
    ) -> None:
        self.app = app
        self.limits = limits
        self.default = default

    def limit_for(self, path: str) -> int:
        return next((size for prefix, size in self.limits if path.startswith(prefix)), self.default)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = str(scope.get("path", ""))
        limit = self.limit_for(path)
        length = _header(scope, b"content-length")
        if length is not None:
            if not length.strip().isdigit():
                await _answer(send, 400, "Content-Length is not a number")
                return
            if int(length) > limit:
                await self._refuse(scope, send, f"body of {int(length)} bytes", limit)
                return
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _TooLarge
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except _TooLarge:
            if started:  # the app answered before reading it all: nothing more to say
                return
            await self._refuse(scope, send, "body", limit)

    async def _refuse(self, scope: Scope, send: Send, what: str, limit: int) -> None:
        client = scope.get("client") or ("?", 0)
        logger.warning(
            "%s %s from %s refused (413): %s over the %d-byte limit",
            scope.get("method"),
            scope.get("path"),
            client[0],
            what,
            limit,
        )
        await _answer(send, 413, f"{what} is over the {limit}-byte limit of this route")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


async def _answer(send: Send, status: int, error: str) -> None:
    body = json.dumps({"error": error}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
