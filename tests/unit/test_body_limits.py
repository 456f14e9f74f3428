"""BodyLimit at the ASGI level: a lying Content-Length and an endless body are cut at the limit,
and the app behind never sees more than the limit (no server, no socket)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from clampdown.app.body_limits import BodyLimit
from clampdown.core.limits import MAX_JSON_DEPTH, TooDeep, depth_over, loads_bounded

LIMIT = 1024 * 1024
CHUNK = 64 * 1024


class Reader:
    """An app that reads the whole body, as Bolt's handler does, and answers 200."""

    def __init__(self) -> None:
        self.bytes_seen = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            self.bytes_seen += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"read"})


def call(app: Any, headers: list[tuple[bytes, bytes]], chunks: int) -> tuple[list[Any], int]:
    """Send ``chunks`` chunks of CHUNK bytes (more follow each); the answer and reads made."""
    sent: list[Any] = []
    reads = 0

    async def receive() -> dict[str, Any]:
        nonlocal reads
        reads += 1
        return {"type": "http.request", "body": b"x" * CHUNK, "more_body": reads < chunks}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/slack/events", "headers": headers}
    asyncio.run(BodyLimit(app, [("/slack/", LIMIT)])(scope, receive, send))
    return sent, reads


def status_and_error(sent: list[Any]) -> tuple[int, str]:
    return sent[0]["status"], json.loads(sent[1]["body"])["error"]


def test_a_content_length_over_the_limit_is_refused_before_reading() -> None:
    app = Reader()
    sent, reads = call(app, [(b"content-length", str(64 * 1024 * 1024).encode())], 1024)
    assert status_and_error(sent) == (
        413,
        f"body of {64 * 1024 * 1024} bytes is over the {LIMIT}-byte limit of this route",
    )
    assert reads == 0 and app.bytes_seen == 0


def test_a_lying_content_length_is_cut_by_the_bytes_received() -> None:
    app = Reader()
    sent, reads = call(app, [(b"content-length", b"100")], chunks=1024)  # 64 MiB behind it
    assert status_and_error(sent)[0] == 413
    assert reads == LIMIT // CHUNK + 1  # stopped at the read that crossed the limit
    assert app.bytes_seen <= LIMIT


def test_a_chunked_body_without_length_is_cut_too() -> None:
    app = Reader()
    sent, _ = call(app, [(b"transfer-encoding", b"chunked")], chunks=1024)
    assert status_and_error(sent) == (413, f"body is over the {LIMIT}-byte limit of this route")
    assert app.bytes_seen <= LIMIT


def test_a_body_under_the_limit_reaches_the_app() -> None:
    app = Reader()
    sent, _ = call(app, [], chunks=3)
    assert sent[0]["status"] == 200 and app.bytes_seen == 3 * CHUNK


def test_a_content_length_that_is_not_a_number_is_a_400() -> None:
    sent, reads = call(Reader(), [(b"content-length", b"12abc")], chunks=1)
    assert status_and_error(sent) == (400, "Content-Length is not a number") and reads == 0


def test_json_deeper_than_the_limit_is_refused_whatever_the_depth() -> None:
    for depth in (MAX_JSON_DEPTH + 1, 300, 989, 5000, 100_000):
        text = "[" * depth + "]" * depth
        try:
            loads_bounded(text)
        except TooDeep as exc:
            assert str(exc) == f"nested deeper than {MAX_JSON_DEPTH} levels"
        else:
            raise AssertionError(f"depth {depth} was accepted")
    nested: Any = {"a": 1}
    for _ in range(MAX_JSON_DEPTH - 1):
        nested = {"a": nested}
    assert loads_bounded(json.dumps(nested)) == nested  # exactly at the limit: fine
    assert depth_over({"a": [{"b": [1]}]}, 3) is True
    assert depth_over({"a": [{"b": 1}]}, 3) is False
