"""An AWS endpoint in front of the moto server that holds chosen calls until the test says.

A test that needs a run *still in progress* when something else happens (a second alert
that must find it running) cannot rely on how long the run's steps take: on a loaded
machine the other event may come later than a step's retries last. Pointing the run's
process (``AWS_ENDPOINT_URL``) here instead of at moto, the test holds the calls it names
(e.g. CloudTrail's) until :meth:`AwsHold.release`: the run cannot end before then, and
every call then goes on to moto exactly as it would have.
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HOLD_BOUND = 120.0
"""Seconds a held call waits at most: a test that never releases fails, it does not hang."""

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length"}


class AwsHold:
    """The endpoint (:attr:`url`); calls for which ``held`` is true wait for :meth:`release`."""

    def __init__(self, moto_url: str, held: Callable[[str, str, dict[str, str]], bool]) -> None:
        target = urlsplit(moto_url)
        self._host, self._port = target.hostname or "127.0.0.1", target.port or 80
        self._held = held
        self._released = threading.Event()
        self.holding = threading.Event()  # set once a call is being held
        self.held_calls: list[str] = []
        hold = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                hold._forward(self)

            do_POST = do_PUT = do_DELETE = do_HEAD = do_GET

            def log_message(self, format: str, *args: object) -> None:  # quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="aws-hold", daemon=True
        )

    def release(self) -> None:
        """Let every held call (and every later one) through."""
        self._released.set()

    def _forward(self, handler: BaseHTTPRequestHandler) -> None:
        headers = {k: v for k, v in handler.headers.items()}
        body = handler.rfile.read(int(headers.get("Content-Length") or 0))
        if not self._released.is_set() and self._held(handler.command, handler.path, headers):
            self.held_calls.append(headers.get("X-Amz-Target") or handler.path)
            self.holding.set()
            self._released.wait(HOLD_BOUND)
        upstream = http.client.HTTPConnection(self._host, self._port, timeout=60)
        try:
            upstream.request(handler.command, handler.path, body=body, headers=headers)
            answer = upstream.getresponse()
            data = answer.read()
            handler.send_response(answer.status, answer.reason)
            for name, value in answer.getheaders():
                if name.lower() not in HOP_BY_HOP:
                    handler.send_header(name, value)
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            if handler.command != "HEAD":
                handler.wfile.write(data)
        finally:
            upstream.close()


@contextmanager
def aws_hold(moto_url: str, held: Callable[[str, str, dict[str, str]], bool]) -> Iterator[AwsHold]:
    """An :class:`AwsHold` serving while the block runs; held calls are released at its end."""
    hold = AwsHold(moto_url, held)
    hold._thread.start()
    try:
        yield hold
    finally:
        hold.release()
        hold._server.shutdown()
        hold._server.server_close()


def cloudtrail(method: str, path: str, headers: dict[str, str]) -> bool:
    """CloudTrail's API calls (JSON protocol: named by ``X-Amz-Target``)."""
    return "CloudTrail" in headers.get("X-Amz-Target", "")
