"""Socket Mode: Slack traffic over a websocket that clampdown opens (no public URL needed).

``clampdown serve --socket-mode`` builds the Bolt app with ``socket_mode=True`` (no
signature check: Slack signs nothing it sends over the websocket, and that app refuses
anything that did not come over it) and calls :func:`connect`. The server still serves
``/alerts/*`` and ``/healthz`` over HTTP; only Slack's commands and clicks move.

How the connection is made, and why it can be trusted:

1. ``apps.connections.open`` with the app-level token (``CLAMPDOWN_SLACK_APP_TOKEN``,
   ``xapp-…``, scope ``connections:write``) returns a one-use websocket URL. The call
   goes to ``CLAMPDOWN_SLACK_API_URL``, so drills and tests reach the stand-in.
2. The websocket to that URL is the authentication of every request on it: only Slack
   can hand out its tickets, and only over TLS. A URL that is not ``wss://`` on port
   443 is refused (slack-sdk's built-in client would silently drop TLS on any other
   port), unless it is on the loopback interface, where the stand-in lives.
3. Each envelope is acknowledged at once with its ``envelope_id`` (Bolt's ``ack()``);
   answers go to the request's ``response_url`` or the Web API, as in HTTP mode.

Client: Bolt's :class:`slack_bolt.adapter.socket_mode.SocketModeHandler`, built on
slack-sdk's own websocket client (``slack_sdk.socket_mode.builtin``): no dependency
beyond slack-sdk. Bolt's other adapters need ``websocket-client``, ``aiohttp`` or
``websockets`` plus an asyncio app. The client pings every 10 s, reconnects by itself
when the link drops or Slack asks it to (``disconnect``), and fetches a fresh URL each time.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from clampdown.core.diagnostics import ClampdownError
from clampdown_slack.client import SlackNotConfigured, SlackSettingsLike, api_base_url

if TYPE_CHECKING:
    from pydantic import SecretStr
    from slack_bolt import App
    from slack_bolt.adapter.socket_mode import SocketModeHandler

log = logging.getLogger("clampdown.slack.socket_mode")


class SocketModeSettings(SlackSettingsLike, Protocol):
    """What Socket Mode reads of the settings (:class:`clampdown_slack.app.SlackAppSettings`)."""

    slack_app_token: SecretStr | None


_HINTS = {
    "invalid_auth": "CLAMPDOWN_SLACK_APP_TOKEN is wrong or revoked: create a new app-level "
    "token (Basic Information → App-Level Tokens) with the connections:write scope",
    "not_authed": "set CLAMPDOWN_SLACK_APP_TOKEN to the app-level token (xapp-…)",
    "not_allowed_token_type": "CLAMPDOWN_SLACK_APP_TOKEN must be an app-level token (xapp-…), "
    "not a bot or user token",
    "missing_scope": "give the app-level token the connections:write scope",
}
_DEFAULT_HINT = "turn Socket Mode on in the Slack app's settings (Socket Mode page)"


def app_token(settings: SocketModeSettings) -> str:
    """The app-level token, checked for its kind; a clear :class:`SlackNotConfigured` if not."""
    if settings.slack_app_token is None:
        raise SlackNotConfigured(
            "Slack Socket Mode is not configured: CLAMPDOWN_SLACK_APP_TOKEN is not set",
            "create an app-level token with the connections:write scope (Basic Information "
            "→ App-Level Tokens, xapp-…) and set CLAMPDOWN_SLACK_APP_TOKEN to it",
        )
    token = settings.slack_app_token.get_secret_value()
    if not token.startswith("xapp-"):
        raise SlackNotConfigured(
            "CLAMPDOWN_SLACK_APP_TOKEN is not an app-level token (it must start with xapp-)",
            _HINTS["not_allowed_token_type"],
        )
    return token


class SocketModeLink:
    """An open Socket Mode connection of a Bolt app; :meth:`close` ends it for good."""

    def __init__(self, handler: SocketModeHandler) -> None:
        self._handler = handler
        self._closed = False

    @property
    def connected(self) -> bool:
        """True while a websocket is open (between reconnects it is briefly False)."""
        return not self._closed and self._handler.client.is_connected()

    def close(self) -> None:
        """Disconnect, stop reconnecting, and stop the client's threads (idempotent)."""
        if self._closed:
            return
        self._closed = True
        client = self._handler.client
        client.auto_reconnect_enabled = False  # what follows must not count as a dropped link
        _shut_down(getattr(client.current_session, "sock", None))
        _wake_message_processor(client)
        self._handler.close()
        log.info("Slack Socket Mode connection closed")


def _shut_down(sock: socket.socket | None) -> None:
    """End the TCP connection now, in both directions.

    slack-sdk's client only ``close()``s its socket, and while its reader thread is in
    ``recv`` Linux sends nothing until that returns (up to 3 s): Slack would see the link
    alive, and stopping would take that long.
    """
    if sock is not None:
        with contextlib.suppress(OSError):  # already gone
            sock.shutdown(socket.SHUT_RDWR)


def _wake_message_processor(client: Any) -> None:
    """Let slack-sdk's message thread see the close now, not after its queue wait.

    That thread loops ``while not client.closed`` around ``message_queue.get(timeout=1)``,
    and ``close()`` joins it: stopping took up to 1 s. ``closed`` is what ``close()`` sets
    first anyway (nothing else reads it), and the ``None`` it dequeues is skipped.
    """
    client.closed = True
    client.message_queue.put(None)


def connect(app: App, settings: SocketModeSettings) -> SocketModeLink:
    """Open the Socket Mode connection for ``app`` (built with ``socket_mode=True``).

    Returns once the websocket is open; raises :class:`ClampdownError` (a message and a
    hint, never a traceback or the token) when Slack refuses the token or cannot be reached.
    """
    from slack_bolt.adapter.socket_mode import SocketModeHandler
    from slack_sdk.errors import SlackApiError, SlackClientError

    token = app_token(settings)
    base_url = api_base_url(settings)
    # app.client: the Bolt app's WebClient, on CLAMPDOWN_SLACK_API_URL with clampdown's
    # retry handlers; apps.connections.open gets the app token per call, never kept on it.
    handler = SocketModeHandler(app, app_token=token, web_client=app.client, logger=log)
    _refuse_plain_websockets(handler, base_url)
    try:
        handler.connect()
    except SlackApiError as exc:
        handler.close()
        error = str(exc.response.get("error") or "unknown_error")
        raise SlackNotConfigured(
            f"Slack refused to open a Socket Mode connection: {error}",
            _HINTS.get(error, _DEFAULT_HINT),
        ) from None
    except ClampdownError:
        handler.close()
        raise
    except (SlackClientError, OSError) as exc:
        handler.close()
        raise ClampdownError(
            f"cannot reach Slack at {base_url} to open a Socket Mode connection: {exc}",
            "check the network and CLAMPDOWN_SLACK_API_URL",
        ) from None
    if not handler.client.is_connected():
        handler.close()
        raise ClampdownError(
            "Slack's Socket Mode websocket did not open (the server log says why)",
            "check that outbound HTTPS (port 443) to Slack is allowed, then restart",
        )
    log.info("Slack Socket Mode connected (session %s)", handler.client.session_id())
    return SocketModeLink(handler)


def _refuse_plain_websockets(handler: SocketModeHandler, base_url: str) -> None:
    """Check every websocket URL Slack hands out (first connect and each reconnect).

    slack-sdk's built-in client speaks TLS only to port 443 and plain TCP to any other
    port. With verification off, the websocket's TLS is what keeps forged commands
    and clicks out, so a URL that would not get TLS is refused, except on loopback.
    """
    client = handler.client
    issue = client.issue_new_wss_url

    def checked_url() -> str:
        url = issue()
        if not _websocket_url_is_safe(url):
            parts = urlsplit(url)
            raise ClampdownError(
                f"refusing the Socket Mode URL {parts.scheme}://{parts.hostname}:{parts.port}: "
                "it is not wss:// on port 443",
                f"CLAMPDOWN_SLACK_API_URL ({base_url}) must be Slack's Web API",
            )
        return url

    client.issue_new_wss_url = checked_url  # type: ignore[method-assign]


def _websocket_url_is_safe(url: str) -> bool:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        return False
    if parts.scheme == "wss" and port in (None, 443):
        return True
    return _is_loopback(parts.hostname) and parts.scheme in ("ws", "wss")


def _is_loopback(host: Any) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(str(host)).is_loopback
    except ValueError:
        return False
