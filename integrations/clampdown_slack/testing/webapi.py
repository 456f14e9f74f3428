"""The Slack Web API of the stand-in: what each request gets, and what was received.

:class:`SlackWebApi` holds the stand-in's workspace (channels, messages, user
groups, tokens) and answers Web API methods the way Slack does; :class:`WebApiHandler`
serves it over HTTP. The server and Socket Mode are
:class:`clampdown_slack.testing.standin.SlackStandIn`'s.
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
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

FailureMode = Literal["ratelimited", "server_error"]
DEFAULT_TOKEN = "xoxb-clampdown-standin"
DEFAULT_APP_TOKEN = "xapp-1-A0STANDIN-clampdown-standin"
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


class SlackWebApi:
    """The stand-in's Web API (see :class:`clampdown_slack.testing.standin.SlackStandIn`).

    ``socket_url`` hands out a Socket Mode URL for ``apps.connections.open``.
    """

    def __init__(
        self,
        *,
        token: str = DEFAULT_TOKEN,
        app_token: str = DEFAULT_APP_TOKEN,
        usergroups: Mapping[str, Iterable[str]] | None = None,
        channels: Mapping[str, str] | None = None,
        auto_channels: bool = True,
        socket_url: Callable[[], str],
    ) -> None:
        self.token = token
        self.app_token = app_token
        self.usergroups = {group: list(users) for group, users in (usergroups or {}).items()}
        self.channels = dict(DEFAULT_CHANNELS if channels is None else channels)
        self.auto_channels = auto_channels
        self._socket_url = socket_url
        self._lock = threading.Lock()
        self._state = _State()
        self._ts = itertools.count(1)

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
        """Forget calls, messages and pending failures."""
        with self._lock:
            self._state = _State()

    # --- request handling (called from the server's threads) -----------------------------

    def handle(
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
        return {"ok": True, "url": self._socket_url()}

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
    "chat.postMessage": SlackWebApi._post_message,
    "chat.update": SlackWebApi._update,
    "chat.postEphemeral": SlackWebApi._post_ephemeral,
    "usergroups.users.list": SlackWebApi._usergroup_users,
    "usergroups.list": SlackWebApi._usergroup_list,
    "views.open": SlackWebApi._views_open,
    "conversations.info": SlackWebApi._conversation_info,
    "apps.connections.open": SlackWebApi._connections_open,
}


def _group_id(name: str) -> str:
    """A group's id: the key itself when it is an id (S…), else one derived from the handle."""
    if re.match(r"^S[A-Z0-9]{6,}$", name):
        return name
    return "S" + hashlib.sha256(name.encode()).hexdigest()[:10].upper()


class WebApiHandler(BaseHTTPRequestHandler):
    owner: SlackWebApi

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
        status, extra, body = self.owner.handle(method, params, dict(self.headers.items()))
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
