"""Slack's side of Socket Mode for the stand-in: one-use ticket URLs, ``hello``, envelopes, acks.

Used by :class:`clampdown_slack.testing.standin.SlackStandIn`; see its module docstring.
"""

from __future__ import annotations

import copy
import json
import secrets
import threading
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qs, urlsplit

if TYPE_CHECKING:
    from websockets.sync.server import Server, ServerConnection

EnvelopeType = Literal["slash_commands", "interactive", "events_api"]
APP_ID = "A0STANDIN"


class SocketModeServer:
    """Slack's side of Socket Mode: one-use ticket URLs, ``hello``, envelopes out, acks in.

    Built on ``websockets``' threaded server (installed with Prefect), started on the
    first ``apps.connections.open``. Each connection has its own thread; :meth:`stop`
    closes them all, since ``websockets`` does not make them daemon threads.
    """

    MAX_MESSAGE = 1024 * 1024  # Slack's envelopes and acks are far smaller

    def __init__(self, host: str) -> None:
        self._host = host
        self._changed = threading.Condition()
        self._tickets: set[str] = set()
        self._links: list[ServerConnection] = []
        self._retiring: list[ServerConnection] = []  # told to disconnect: no more envelopes
        self._link_threads: list[threading.Thread] = []
        self._closes: list[int | None] = []
        self._envelopes: list[dict[str, Any]] = []
        self._acks: list[dict[str, Any]] = []
        self._server: Server | None = None
        self._thread: threading.Thread | None = None

    def issue_url(self) -> str:
        """A fresh one-use websocket URL (starts the server on first use)."""
        with self._changed:
            server = self._server or self._start()
            ticket = secrets.token_urlsafe(16)
            self._tickets.add(ticket)
        host, port = server.socket.getsockname()[:2]
        return f"ws://{host}:{port}/link/?ticket={ticket}&app_id={APP_ID}"

    def _start(self) -> Server:
        from websockets.sync.server import serve

        self._server = serve(
            self._serve_link,
            self._host,
            0,
            process_request=self._check_ticket,
            compression=None,  # slack-sdk's built-in client negotiates no extension
            max_size=self.MAX_MESSAGE,
            close_timeout=1,
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="slack-standin-socket", daemon=True
        )
        self._thread.start()
        return self._server

    def stop(self) -> None:
        with self._changed:
            server, thread, links = self._server, self._thread, list(self._links)
            link_threads, self._link_threads = self._link_threads, []
            self._server = self._thread = None
        if server is not None:
            server.shutdown()
        for link in links:
            link.close()
        if thread is not None:
            thread.join()
        for link_thread in link_threads:
            link_thread.join(timeout=5)

    def forget(self) -> None:
        with self._changed:
            self._envelopes.clear()
            self._acks.clear()
            self._closes.clear()

    def _check_ticket(self, connection: ServerConnection, request: Any) -> Any:
        query = parse_qs(urlsplit(request.path).query)
        ticket = (query.get("ticket") or [""])[0]
        with self._changed:
            if ticket in self._tickets:
                self._tickets.discard(ticket)  # one use, like Slack's
                return None
        return connection.respond(401, "invalid or used ticket\n")

    def _serve_link(self, link: ServerConnection) -> None:
        from websockets.exceptions import ConnectionClosed

        with self._changed:
            self._links.append(link)
            self._link_threads.append(threading.current_thread())
            self._changed.notify_all()
        try:
            link.send(json.dumps(_hello(len(self._links))))
            for raw in link:
                try:
                    message = json.loads(raw)
                except ValueError:
                    message = {"invalid": str(raw)[:200]}
                with self._changed:
                    self._acks.append(message if isinstance(message, dict) else {"invalid": raw})
                    self._changed.notify_all()
        except ConnectionClosed:
            pass
        finally:
            with self._changed:
                self._links.remove(link)
                if link in self._retiring:
                    self._retiring.remove(link)
                self._closes.append(link.close_code if link.close_code is not None else 1006)
                self._changed.notify_all()

    def send(self, envelope: dict[str, Any], timeout: float) -> None:
        """Send on the newest connection not told to disconnect (as Slack: never on those)."""
        self.wait(lambda: bool(self._usable()), timeout, "usable Socket Mode connection")
        with self._changed:
            link = self._usable()[-1]
            self._envelopes.append(copy.deepcopy(envelope))
        link.send(json.dumps(envelope))

    def retire_all(self, message: dict[str, Any], timeout: float) -> None:
        """Send ``message`` (a ``disconnect``) on every usable connection and stop using them."""
        self.wait(lambda: bool(self._usable()), timeout, "usable Socket Mode connection")
        with self._changed:
            links = self._usable()
            self._retiring.extend(links)
        for link in links:
            link.send(json.dumps(message))

    def _usable(self) -> list[ServerConnection]:
        with self._changed:
            return [link for link in self._links if link not in self._retiring]

    def wait(self, condition: Any, timeout: float, what: str) -> None:
        with self._changed:
            if not self._changed.wait_for(condition, timeout):
                raise AssertionError(f"the Slack stand-in saw no {what} within {timeout} s")

    def open_links(self) -> int:
        with self._changed:
            return len(self._links)

    def closes(self) -> list[int | None]:
        with self._changed:
            return list(self._closes)

    def acks(self) -> list[dict[str, Any]]:
        with self._changed:
            return copy.deepcopy(self._acks)

    def envelopes(self) -> list[dict[str, Any]]:
        with self._changed:
            return copy.deepcopy(self._envelopes)


def _hello(connections: int) -> dict[str, Any]:
    """Slack's first message on a new Socket Mode connection."""
    return {
        "type": "hello",
        "num_connections": connections,
        "debug_info": {
            "host": "applink-standin",
            "build_number": 1,
            "approximate_connection_time": 18060,
        },
        "connection_info": {"app_id": APP_ID},
    }
