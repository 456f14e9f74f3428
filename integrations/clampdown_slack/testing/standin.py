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

import copy
import hashlib
import itertools
import json
import re
import secrets
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qs, parse_qsl, urlsplit

if TYPE_CHECKING:
    from websockets.sync.server import Server, ServerConnection

FailureMode = Literal["ratelimited", "server_error"]
EnvelopeType = Literal["slash_commands", "interactive", "events_api"]
DEFAULT_TOKEN = "xoxb-clampdown-standin"
DEFAULT_APP_TOKEN = "xapp-1-A0STANDIN-clampdown-standin"
APP_ID = "A0STANDIN"
DEFAULT_CHANNELS = {"C0INCIDENT": "incident-response"}
_BASE_SECONDS = 1_700_000_000
_MAX_BODY = 2 * 1024 * 1024


@dataclass(frozen=True)
class Call:
    """One request as the stand-in received it (failed and refused ones included)."""

    method: str
    params: dict[str, Any]
    headers: dict[str, str]
    status: int = 200
    error: str | None = None


@dataclass
class _Failure:
    mode: FailureMode
    retry_after: int


@dataclass
class _State:
    messages: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    ephemeral: list[dict[str, Any]] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    failures: dict[str, deque[_Failure]] = field(default_factory=dict)
    down_status: int | None = None
    latency: float = 0.0


class SlackStandIn:
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
        self.token = token
        self.app_token = app_token
        self.usergroups = {group: list(users) for group, users in (usergroups or {}).items()}
        self.channels = dict(DEFAULT_CHANNELS if channels is None else channels)
        self.auto_channels = auto_channels
        self._host = host
        self._port = port
        self._lock = threading.Lock()
        self._state = _State()
        self._ts = itertools.count(1)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._socket = _SocketModeServer(host)

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> SlackStandIn:
        if self._server is not None:
            return self
        standin = self

        class Handler(_Handler):
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

    # --- failures on demand ------------------------------------------------------------

    def fail_next(
        self,
        method: str = "*",
        n: int = 1,
        mode: FailureMode = "ratelimited",
        *,
        retry_after: int = 1,
    ) -> None:
        """Make the next ``n`` calls of ``method`` (``"*"``: any method) fail.

        ``ratelimited``: HTTP 429, ``Retry-After: <retry_after>``,
        ``{"ok": false, "error": "ratelimited"}``. ``server_error``: HTTP 500.
        """
        if mode not in ("ratelimited", "server_error"):
            raise ValueError(f"unknown failure mode {mode!r}: use 'ratelimited' or 'server_error'")
        with self._lock:
            queue = self._state.failures.setdefault(method, deque())
            queue.extend(_Failure(mode, retry_after) for _ in range(n))

    def down(self, status: int = 503) -> None:
        """Refuse every call with this HTTP status until :meth:`up`."""
        with self._lock:
            self._state.down_status = status

    def up(self) -> None:
        with self._lock:
            self._state.down_status = None

    def slow(self, seconds: float) -> None:
        """Answer every call ``seconds`` late (0: at once), like a congested Slack."""
        with self._lock:
            self._state.latency = max(0.0, seconds)

    # --- what was received -------------------------------------------------------------

    @property
    def calls(self) -> list[Call]:
        """Every request received so far, in order (a copy: safe to read while serving)."""
        with self._lock:
            return list(self._state.calls)

    def calls_to(self, method: str) -> list[Call]:
        return [call for call in self.calls if call.method == method]

    def messages(self, channel: str) -> list[dict[str, Any]]:
        """Every message posted in a channel (id or name), replies included, oldest first."""
        with self._lock:
            channel_id = self._resolve(channel, create=False)
            return copy.deepcopy(self._state.messages.get(channel_id or channel, []))

    def thread(self, channel: str, thread_ts: str) -> list[dict[str, Any]]:
        """A thread: its parent message, then its replies, oldest first."""
        return [
            m
            for m in self.messages(channel)
            if m["ts"] == thread_ts or m.get("thread_ts") == thread_ts
        ]

    @property
    def ephemeral(self) -> list[dict[str, Any]]:
        """Messages sent with ``chat.postEphemeral`` (only their user would see them)."""
        with self._lock:
            return copy.deepcopy(self._state.ephemeral)

    def reset(self) -> None:
        """Forget calls, messages, pending failures, envelopes and acks (servers keep running)."""
        with self._lock:
            self._state = _State()
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

    # --- request handling (called from the server's threads) -----------------------------

    def _handle(
        self, method: str, params: dict[str, Any], headers: dict[str, str]
    ) -> tuple[int, dict[str, str], dict[str, Any]]:
        with self._lock:
            latency = self._state.latency
        if latency:
            time.sleep(latency)  # outside the lock: slow calls overlap, as with Slack
        with self._lock:
            status, extra, body = self._answer(method, params, headers)
            self._state.calls.append(
                Call(
                    method=method,
                    params=copy.deepcopy(params),
                    headers=dict(headers),
                    status=status,
                    error=None if body.get("ok") else body.get("error"),
                )
            )
            return status, extra, body

    def _answer(
        self, method: str, params: dict[str, Any], headers: dict[str, str]
    ) -> tuple[int, dict[str, str], dict[str, Any]]:
        if self._state.down_status is not None:
            return self._state.down_status, {}, {"ok": False, "error": "service_unavailable"}
        failure = self._pop_failure(method)
        if failure is not None:
            if failure.mode == "ratelimited":
                return (
                    429,
                    {"Retry-After": str(failure.retry_after)},
                    {"ok": False, "error": "ratelimited"},
                )
            return 500, {}, {"ok": False, "error": "internal_error"}
        auth_error = self._check_auth(method, params, headers)
        if auth_error:
            return 200, {}, {"ok": False, "error": auth_error}
        handler = _METHODS.get(method)
        if handler is None:
            return 200, {}, {"ok": False, "error": "unknown_method"}
        return 200, {}, handler(self, params)

    def _pop_failure(self, method: str) -> _Failure | None:
        for key in (method, "*"):
            queue = self._state.failures.get(key)
            if queue:
                return queue.popleft()
        return None

    def _check_auth(
        self, method: str, params: dict[str, Any], headers: dict[str, str]
    ) -> str | None:
        auth = next((v for k, v in headers.items() if k.lower() == "authorization"), None)
        if auth is not None:
            scheme, _, token = auth.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                return "invalid_auth"
        else:
            token = params.get("token") or ""
            if not token:
                return "not_authed"
        token = token.strip()
        expected, other = (
            (self.app_token, self.token)
            if method == "apps.connections.open"
            else (self.token, self.app_token)
        )
        if secrets.compare_digest(token.encode(), expected.encode()):
            return None
        if secrets.compare_digest(token.encode(), other.encode()):
            return "not_allowed_token_type"  # Slack's answer to the wrong kind of token
        return "invalid_auth"

    def _resolve(self, channel: str, *, create: bool) -> str | None:
        if channel in self.channels:
            return channel
        name = channel.removeprefix("#")
        for channel_id, channel_name in self.channels.items():
            if channel_name == name:
                return channel_id
        if not (create and self.auto_channels and name):
            return None
        channel_id = f"C{len(self.channels) + 1:08d}"
        self.channels[channel_id] = name
        return channel_id

    def _next_ts(self) -> str:
        micros = _BASE_SECONDS * 1_000_000 + next(self._ts) * 100
        return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"

    def _post_message(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._resolve(str(params.get("channel") or ""), create=True)
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        if not params.get("text") and not params.get("blocks"):
            return {"ok": False, "error": "no_text"}
        thread_ts = params.get("thread_ts") or None
        messages = self._state.messages.setdefault(channel, [])
        if thread_ts is not None and not any(m["ts"] == thread_ts for m in messages):
            return {"ok": False, "error": "thread_not_found"}
        message: dict[str, Any] = {
            "type": "message",
            "ts": self._next_ts(),
            "text": params.get("text", ""),
            "bot_id": "B0STANDIN",
        }
        if params.get("blocks"):
            message["blocks"] = params["blocks"]
        if thread_ts is not None:
            message["thread_ts"] = thread_ts
        messages.append(message)
        return {"ok": True, "channel": channel, "ts": message["ts"], "message": dict(message)}

    def _update(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._resolve(str(params.get("channel") or ""), create=False)
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        for message in self._state.messages.get(channel, []):
            if message["ts"] == params.get("ts"):
                if "text" in params:
                    message["text"] = params["text"]
                if "blocks" in params:
                    message["blocks"] = params["blocks"]
                message["edited"] = {"ts": self._next_ts()}
                return {
                    "ok": True,
                    "channel": channel,
                    "ts": message["ts"],
                    "text": message["text"],
                    "message": dict(message),
                }
        return {"ok": False, "error": "message_not_found"}

    def _post_ephemeral(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._resolve(str(params.get("channel") or ""), create=False)
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        if not params.get("user"):
            return {"ok": False, "error": "user_not_in_channel"}
        ts = self._next_ts()
        self._state.ephemeral.append(
            {
                "channel": channel,
                "user": params["user"],
                "text": params.get("text", ""),
                "blocks": params.get("blocks"),
                "thread_ts": params.get("thread_ts"),
                "ts": ts,
            }
        )
        return {"ok": True, "message_ts": ts}

    def _usergroup_users(self, params: dict[str, Any]) -> dict[str, Any]:
        group = str(params.get("usergroup") or "")
        by_id = {_group_id(name): name for name in self.usergroups}
        group = by_id.get(group, group)
        if group not in self.usergroups:
            return {"ok": False, "error": "no_such_subteam"}
        return {"ok": True, "users": list(self.usergroups[group])}

    def _usergroup_list(self, params: dict[str, Any]) -> dict[str, Any]:
        groups = [{"id": _group_id(name), "handle": name} for name in self.usergroups]
        return {"ok": True, "usergroups": groups}

    def _views_open(self, params: dict[str, Any]) -> dict[str, Any]:
        if not params.get("trigger_id"):
            return {"ok": False, "error": "invalid_trigger_id"}
        view = params.get("view")
        if isinstance(view, str):
            view = json.loads(view)
        return {"ok": True, "view": {"id": f"V{self._next_ts().replace('.', '')}", **view}}

    def _connections_open(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "url": self._socket.issue_url()}

    def _conversation_info(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._resolve(str(params.get("channel") or ""), create=False)
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        return {
            "ok": True,
            "channel": {
                "id": channel,
                "name": self.channels[channel],
                "is_channel": True,
                "is_private": False,
                "is_archived": False,
                "is_member": True,
            },
        }


_METHODS = {
    "chat.postMessage": SlackStandIn._post_message,
    "chat.update": SlackStandIn._update,
    "chat.postEphemeral": SlackStandIn._post_ephemeral,
    "usergroups.users.list": SlackStandIn._usergroup_users,
    "usergroups.list": SlackStandIn._usergroup_list,
    "views.open": SlackStandIn._views_open,
    "conversations.info": SlackStandIn._conversation_info,
    "apps.connections.open": SlackStandIn._connections_open,
}


class _SocketModeServer:
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


def _group_id(name: str) -> str:
    """A group's id: the key itself when it is an id (S…), else one derived from the handle."""
    if re.match(r"^S[A-Z0-9]{6,}$", name):
        return name
    return "S" + hashlib.sha256(name.encode()).hexdigest()[:10].upper()


class _Handler(BaseHTTPRequestHandler):
    owner: SlackStandIn

    def do_POST(self) -> None:
        self._serve()

    def do_GET(self) -> None:
        self._serve()

    def _serve(self) -> None:
        parts = urlsplit(self.path)
        if not parts.path.startswith("/api/"):
            self._send(404, {}, {"ok": False, "error": "not_found"})
            return
        method = parts.path.removeprefix("/api/")
        try:
            params = dict(parse_qsl(parts.query, keep_blank_values=True))
            params.update(self._body())
        except ValueError:
            self._send(200, {}, {"ok": False, "error": "invalid_form_data"})
            return
        status, extra, body = self.owner._handle(method, params, dict(self.headers.items()))
        self._send(status, extra, body)

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        if length > _MAX_BODY:
            raise ValueError("body too large")
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return {}
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype == "application/json":
            data = json.loads(raw)
            if not isinstance(data, dict):
                raise ValueError("JSON body is not an object")
            return data
        if ctype == "application/x-www-form-urlencoded":
            params: dict[str, Any] = dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True))
            # slack-sdk sends structured form values (blocks, attachments) as JSON text
            for key in ("blocks", "attachments"):
                if isinstance(params.get(key), str) and params[key].startswith("["):
                    params[key] = json.loads(params[key])
            return params
        raise ValueError(f"unsupported content type {ctype!r}")

    def _send(self, status: int, headers: dict[str, str], body: dict[str, Any]) -> None:
        payload = json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:  # quiet: callers read .calls
        pass
