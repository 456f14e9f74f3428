"""A local stand-in for the Slack Web API: drills and tests point ``CLAMPDOWN_SLACK_API_URL`` at it.

It speaks enough of the Web API for clampdown's Slack actions, the way Slack does:
HTTP 200 with ``{"ok": false, "error": ...}`` for API errors (``invalid_auth``,
``channel_not_found``, ...), HTTP 429 with ``Retry-After`` when rate-limited, 5xx
when broken. Every request is recorded, so a drill's after-action report (or a
test) can read exactly what reached "Slack" and in which thread.

.. code-block:: python

    with SlackStandIn(token="xoxb-drill") as slack:
        os.environ["CLAMPDOWN_SLACK_API_URL"] = slack.url
        ...
        slack.thread("C0INCIDENT", parent_ts)   # the parent and its replies

Methods answered: ``chat.postMessage``, ``chat.update``, ``chat.postEphemeral``,
``usergroups.list``, ``usergroups.users.list``, ``conversations.info``, ``views.open``,
``apps.connections.open`` (anything else: ``unknown_method``).
Failures on demand: :meth:`SlackStandIn.fail_next` (``ratelimited`` or
``server_error``), :meth:`SlackStandIn.down` / :meth:`SlackStandIn.up` (HTTP 503 to
everything), :meth:`SlackStandIn.slow` (late answers). The Web API is standard library
only: a ``ThreadingHTTPServer`` on 127.0.0.1 in a daemon thread.

Socket Mode: ``apps.connections.open`` (app-level token only, as Slack) hands out a
one-use ``ws://127.0.0.1:<port>/link/?ticket=…`` URL of a websocket server (the
``websockets`` package, started on first use). On connect it sends Slack's ``hello``;
:meth:`SlackStandIn.push` sends an envelope the way Slack sends one (``slash_commands``,
``interactive``, ``events_api``), :meth:`SlackStandIn.wait_ack` returns the client's
acknowledgement (``{"envelope_id", "payload"?}``), and
:meth:`SlackStandIn.request_disconnect` sends Slack's ``disconnect`` (the client must
reconnect with a new URL).

.. code-block:: python

    with SlackStandIn() as slack:
        ...  # the app connects with slack.app_token through slack.url
        slack.wait_connected()
        envelope_id = slack.push("slash_commands", {"command": "/clampdown", ...})
        slack.wait_ack(envelope_id)   # {"envelope_id": ..., "payload": ...?}
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterable, Mapping
from http.server import ThreadingHTTPServer
from typing import Any

from clampdown_slack.testing.socket_mode import APP_ID, EnvelopeType, SocketModeServer
from clampdown_slack.testing.webapi import (
    DEFAULT_APP_TOKEN,
    DEFAULT_CHANNELS,
    DEFAULT_TOKEN,
    Call,
    FailureMode,
    SlackWebApi,
    WebApiHandler,
)

__all__ = [
    "APP_ID",
    "DEFAULT_APP_TOKEN",
    "DEFAULT_CHANNELS",
    "DEFAULT_TOKEN",
    "Call",
    "EnvelopeType",
    "FailureMode",
    "SlackStandIn",
]


class SlackStandIn(SlackWebApi):
    """A recording Slack Web API on 127.0.0.1 (a free port unless ``port`` is given).

    ``token`` is the only bot token accepted, ``app_token`` the only app-level token
    (``apps.connections.open`` takes nothing else, and no other method takes it).
    ``usergroups`` maps a user-group id
    (``S…``) or handle to its member user ids, for ``usergroups.users.list``.
    ``channels`` maps channel id to name; a request may name a channel by id,
    ``name`` or ``#name``, and responses carry the id, as Slack's do. With
    ``auto_channels`` (the default) an unknown channel is created on first use;
    without it, it is ``channel_not_found``.
    """

    def __init__(
        self,
        *,
        token: str = DEFAULT_TOKEN,
        app_token: str = DEFAULT_APP_TOKEN,
        usergroups: Mapping[str, Iterable[str]] | None = None,
        channels: Mapping[str, str] | None = None,
        auto_channels: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self._socket = SocketModeServer(host)
        super().__init__(
            token=token,
            app_token=app_token,
            usergroups=usergroups,
            channels=channels,
            auto_channels=auto_channels,
            socket_url=self._socket.issue_url,
        )
        self._host = host
        self._port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> SlackStandIn:
        if self._server is not None:
            return self
        standin = self

        class Handler(WebApiHandler):
            owner = standin

        self._server = ThreadingHTTPServer((self._host, self._port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="slack-standin",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join()
        self._socket.stop()  # after the Web API: a client told to go cannot get a new URL

    def __enter__(self) -> SlackStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL for ``WebClient(base_url=...)`` / ``CLAMPDOWN_SLACK_API_URL``."""
        if self._server is None:
            raise RuntimeError("the Slack stand-in is not started: call start() first")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/api/"

    def reset(self) -> None:
        """Forget calls, messages, pending failures, envelopes and acks (servers keep running)."""
        super().reset()
        self._socket.forget()

    # --- Socket Mode -------------------------------------------------------------------

    def wait_connected(self, count: int = 1, timeout: float = 10) -> None:
        """Wait until ``count`` Socket Mode connections are open (AssertionError if not)."""
        self._socket.wait(lambda: self._socket.open_links() >= count, timeout, "connections")

    @property
    def socket_connections(self) -> int:
        """Socket Mode connections open now."""
        return self._socket.open_links()

    @property
    def socket_closes(self) -> list[int | None]:
        """The close code of each Socket Mode connection that ended (1006: dropped, no close)."""
        return self._socket.closes()

    def push(
        self,
        kind: EnvelopeType,
        payload: Mapping[str, Any],
        *,
        accepts_response_payload: bool | None = None,
        timeout: float = 10,
    ) -> str:
        """Send an envelope over the newest open connection, as Slack does; its envelope_id.

        ``accepts_response_payload`` defaults to what Slack sends: true for slash
        commands and for ``view_submission``/``block_suggestion`` payloads, else false.
        """
        if accepts_response_payload is None:
            accepts_response_payload = kind == "slash_commands" or payload.get("type") in (
                "view_submission",
                "block_suggestion",
            )
        envelope = {
            "envelope_id": str(uuid.uuid4()),
            "type": kind,
            "payload": dict(payload),
            "accepts_response_payload": accepts_response_payload,
        }
        self._socket.send(envelope, timeout)
        return str(envelope["envelope_id"])

    def wait_ack(self, envelope_id: str, timeout: float = 10) -> dict[str, Any]:
        """The client's acknowledgement of an envelope (AssertionError if none in ``timeout``)."""
        found: list[dict[str, Any]] = []

        def acked() -> bool:
            found[:] = [a for a in self._socket.acks() if a.get("envelope_id") == envelope_id]
            return bool(found)

        self._socket.wait(acked, timeout, f"an ack of envelope {envelope_id}")
        return found[0]

    @property
    def acks(self) -> list[dict[str, Any]]:
        """Every message the clients sent over Socket Mode (acks), oldest first."""
        return self._socket.acks()

    @property
    def envelopes(self) -> list[dict[str, Any]]:
        """Every envelope pushed, oldest first."""
        return self._socket.envelopes()

    def request_disconnect(self, reason: str = "refresh_requested", timeout: float = 10) -> None:
        """Send Slack's ``disconnect`` on every open connection; the client must reconnect.

        As Slack, the stand-in sends no envelope on those connections afterwards:
        :meth:`push` waits for the new one. Waits up to ``timeout`` for a connection
        (the client's handshake may end before the stand-in has registered the link).
        """
        self._socket.retire_all(
            {"type": "disconnect", "reason": reason, "debug_info": {"host": "applink-standin"}},
            timeout,
        )
