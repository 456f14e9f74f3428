"""The Bolt app behind ``clampdown serve``: the ``/clampdown`` slash command (ChatOps).

In HTTP mode inbound requests are verified by Bolt (signature + 5-minute timestamp
window) with ``CLAMPDOWN_SLACK_SIGNING_SECRET``, and the app refuses to build without the
secret. In Socket Mode (:mod:`clampdown_slack.socket_mode`) requests arrive over a
websocket that the app opened with its app-level token (``CLAMPDOWN_SLACK_APP_TOKEN``):
Slack does not sign them, so that app has no signature check, and it refuses every
request that did not come over the websocket. Every command is acknowledged at once and
answered afterwards through ``respond()`` (the request's ``response_url``), so Slack's
3-second deadline holds even when loading a runbook is slow.

This uses Bolt's synchronous :class:`slack_bolt.App`: its Web API client is the same
``slack_sdk.WebClient`` (urllib, clampdown's retry handlers) as every Slack action,
while ``AsyncApp`` would need aiohttp, which is not a dependency. The server runs
``App.dispatch`` in a worker thread, so the event loop never blocks on it.

Subcommands: ``help``, ``list``, ``run <runbook> key=value …``, ``status [run-id]``.
Only the people in ``CLAMPDOWN_RESPONDERS`` (user ids, or members of its Slack user groups)
may ``run`` or read ``status``
(a suspect with Slack access must not watch the response unfold).
"""

from __future__ import annotations

import html
import logging
import re
import shlex
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import Field, SecretStr, field_validator

from clampdown.core.approvals import SubmitDecision
from clampdown.core.diagnostics import ClampdownError, InvalidFileError, did_you_mean
from clampdown.core.expiring_keys import ExpiringKeys
from clampdown.core.home import SLACK_THREAD_STATE
from clampdown.core.runs import RunNotStarted
from clampdown.core.settings import current_library
from clampdown_slack.approval_actions import register_approval_actions
from clampdown_slack.client import (
    SlackNotConfigured,
    SlackSettings,
    api_base_url,
    retry_handlers,
)
from clampdown_slack.text import inert

if TYPE_CHECKING:
    from slack_bolt import App

    from clampdown.core.home import Home
    from clampdown.core.settings import Settings as ClampdownSettings

logger = logging.getLogger("clampdown.slack.app")

StartRun = Callable[[Path, dict[str, Any], dict[str, Any]], str]
"""``start_run(runbook_path, inputs, trigger) -> run id``: starts a run, returns at once."""

_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,99}$")
_RUN_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_MAX_LIST = 50
THREAD_WAIT = 5.0  # seconds the run's answer waits for the run's Slack thread
COMMAND_TTL = 600.0  # a command is remembered for twice Slack's 5-minute timestamp window

HELP = """*clampdown* — incident-response runbooks
• `/clampdown list` — the runbooks in the library
• `/clampdown run <runbook> key=value …` — start a runbook (responders only)
• `/clampdown status [run-id]` — a run's status, or the five latest runs (responders only)
• `/clampdown help` — this message
Example: `/clampdown run engine-self-check responder=alice`"""


class SlackAppSettings(SlackSettings):
    """Slack settings of the inbound app (adds the signing secret and the responders)."""

    slack_signing_secret: SecretStr | None = Field(
        None, description="Slack app signing secret (verifies every inbound request)"
    )
    slack_app_token: SecretStr | None = Field(
        None, description="Slack app-level token (xapp-…, connections:write) for Socket Mode"
    )
    responders: str = Field(
        "",
        description="who may start runbooks from Slack: comma-separated Slack user ids and "
        "user groups (ids S… or handles, e.g. @security-oncall)",
    )

    @field_validator("slack_signing_secret", "slack_app_token", mode="before")
    @classmethod
    def _blank_secret_is_unset(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value.strip() if isinstance(value, str) else value

    @property
    def responder_ids(self) -> frozenset[str]:
        return frozenset(u.strip() for u in self.responders.split(",") if u.strip())


def build_slack_app(
    settings: SlackAppSettings,
    start_run: StartRun,
    socket_mode: bool = False,
    *,
    submit_decision: SubmitDecision,
    clampdown: ClampdownSettings | None = None,
    seen: SeenRequests | None = None,
) -> App:
    """The Bolt app with the ``/clampdown`` command and the approval buttons.

    ``submit_decision`` sends an Approve or Deny click to the paused run (the
    application layer passes :func:`clampdown_flows.decisions.submit_decision`).
    ``clampdown``: the server's settings (home, approver groups), read once by
    ``create_app``; without them they are read here, once. The runbook library is
    looked up at each command (:func:`clampdown.core.settings.current_library`).
    ``seen`` remembers the slash commands already taken (``serve`` passes its durable
    state store); a command whose ``trigger_id`` was seen is acknowledged and ignored, so
    a signed request replayed inside Slack's 5-minute window starts nothing. Without it,
    commands are remembered in memory (until the process ends).

    HTTP mode (default): every request's signature is verified. ``socket_mode``: no
    signature (Slack signs nothing it sends over the websocket), the app-level token is
    required instead, and requests that did not arrive over the websocket are refused.
    """
    from slack_bolt import App
    from slack_bolt.authorization import AuthorizeResult
    from slack_sdk import WebClient

    if socket_mode:
        from clampdown_slack.socket_mode import app_token

        app_token(settings)  # missing or not an xapp- token: say so before anything starts
    elif settings.slack_signing_secret is None:
        raise SlackNotConfigured(
            "Slack is not configured: CLAMPDOWN_SLACK_SIGNING_SECRET is not set",
            "set it to the signing secret on the Slack app's Basic Information page "
            "(or use Socket Mode with CLAMPDOWN_SLACK_APP_TOKEN)",
        )
    if settings.slack_bot_token is None:
        raise SlackNotConfigured(
            "Slack is not configured: CLAMPDOWN_SLACK_BOT_TOKEN is not set",
            "set CLAMPDOWN_SLACK_BOT_TOKEN to the Slack app's bot token (xoxb-…)",
        )
    token = settings.slack_bot_token.get_secret_value()

    def authorize(enterprise_id: str | None, team_id: str | None) -> AuthorizeResult:
        # One workspace, one bot token. Bolt's default for a bare token calls auth.test
        # on the first request; this does not, and the token is the same either way.
        return AuthorizeResult(enterprise_id=enterprise_id, team_id=team_id, bot_token=token)

    client = WebClient(  # no token here: authorize() gives it per request
        base_url=api_base_url(settings),
        timeout=settings.slack_timeout,  # type: ignore[arg-type]
        retry_handlers=retry_handlers(settings.slack_max_retries, settings.slack_retry_interval),
    )
    secret = settings.slack_signing_secret
    app = App(
        # named: without a name Bolt takes its caller's file name from inspect.stack(),
        # which reads the source of every frame (~0.1 CPU-s on serve's start)
        name="clampdown",
        # "" and not None: Bolt would read SLACK_SIGNING_SECRET from the environment
        signing_secret="" if socket_mode or secret is None else secret.get_secret_value(),
        client=client,
        authorize=authorize,
        request_verification_enabled=not socket_mode,
        process_before_response=False,
    )
    if socket_mode:
        app.middleware(_only_over_the_websocket)
    if clampdown is None:
        from clampdown.core.settings import settings as clampdown_settings

        clampdown = clampdown_settings()
    commands = SlashCommands(settings.responder_ids, start_run, clampdown)
    register_approval_actions(app, submit_decision)

    seen_requests = seen if seen is not None else MemorySeen()

    @app.command("/clampdown")
    def clampdown_command(ack: Any, command: dict[str, Any], respond: Any, request: Any) -> None:
        ack()
        key = command_key(command, request.headers)
        if key is not None and not seen_requests.first_seen(key, COMMAND_TTL):
            retry = (request.headers.get("x-slack-retry-num") or [""])[0]
            logger.warning(
                "/clampdown %s refused: already received%s (a replay or a retry): nothing done",
                key,
                f" (X-Slack-Retry-Num {retry})" if retry else "",
            )
            return
        answer = commands.handle(command)
        respond(text=answer.text, response_type=answer.response_type)

    return app


class SeenRequests(Protocol):
    """Remembers request keys for a while (:class:`clampdown.core.state_store.StateStore`)."""

    def first_seen(self, key: str, ttl_seconds: float) -> bool:
        """Record ``key``; True unless it was recorded already (and has not expired)."""
        ...


class MemorySeen(ExpiringKeys):
    """:class:`SeenRequests` in memory, bounded: expired keys are dropped as new ones come."""


def command_key(command: Mapping[str, Any], headers: Mapping[str, Any]) -> str | None:
    """What makes a slash command unique: Slack's ``trigger_id`` (one per invocation, the
    same on a replay or a retry); without one, the request's signature (same bytes, same
    signature); None when there is neither (nothing to tell a replay by)."""
    trigger = str(command.get("trigger_id") or "")
    if trigger:
        return f"slack-command:{trigger}"
    signature = (headers.get("x-slack-signature") or [""])[0]
    return f"slack-command-signature:{signature}" if signature else None


def _only_over_the_websocket(req: Any, resp: Any, next: Callable[[], Any]) -> Any:
    """Socket Mode app: refuse what did not come over the websocket (it has no signature check).

    Defence in depth: should the app ever be mounted on an HTTP route by mistake, an
    unsigned request still changes nothing.
    """
    from slack_bolt import BoltResponse

    if req.mode != "socket_mode":
        logger.warning("request refused: this Slack app only takes Socket Mode requests")
        return BoltResponse(status=401, body={"error": "invalid request"})
    return next()


class Answer:
    """What the command says back: ``ephemeral`` (only the caller sees it) or ``in_channel``."""

    def __init__(self, text: str, response_type: str = "ephemeral") -> None:
        self.text = text
        self.response_type = response_type


class SlashCommands:
    """The ``/clampdown`` subcommands, independent of Bolt (each returns an :class:`Answer`)."""

    def __init__(
        self, responders: frozenset[str], start_run: StartRun, conf: ClampdownSettings
    ) -> None:
        self.responders = responders
        self.start_run = start_run
        self.conf = conf  # clampdown's settings, read once when the app was built
        # (except the runbook library: looked up at each command, see current_library)

    def handle(self, command: Mapping[str, Any]) -> Answer:
        text = html.unescape(str(command.get("text") or "")).strip()
        words = _split(text)
        sub, args = (words[0].lower(), words[1:]) if words else ("help", [])
        try:
            if sub == "list":
                return self.list()
            if sub == "run":
                return self.run(command, args)
            if sub == "status":
                return self.status(command, args)
            if sub == "help":
                return Answer(HELP)
            return Answer(f"Unknown subcommand `{inert(sub)}`.\n{HELP}")
        except InvalidFileError as exc:
            lines = inert("\n".join(str(d) for d in exc.diagnostics))
            return Answer(f":x: The runbook has errors:\n```{lines}```")
        except ClampdownError as exc:
            hint = f"\n{inert(exc.hint)}" if exc.hint else ""
            return Answer(f":x: {inert(exc.message)}{hint}")
        except Exception:  # never leave the responder without an answer
            logger.exception("/clampdown %s failed", sub)
            return Answer(":x: clampdown hit an internal error; the server log has the details.")

    # --- subcommands -----------------------------------------------------------------

    def list(self) -> Answer:
        from clampdown.core.loader import load

        found = library_runbooks(current_library())
        if not found:
            return Answer("The runbook library is empty.")
        lines = []
        for name, path in list(found.items())[:_MAX_LIST]:
            try:
                title = load(path).model.metadata.title
            except ClampdownError:
                title = "(invalid: run `clampdown lint`)"
            lines.append(f"• `{inert(name)}` — {inert(title)}")
        more = f"\n…and {len(found) - _MAX_LIST} more" if len(found) > _MAX_LIST else ""
        return Answer("*Runbooks*\n" + "\n".join(lines) + more)

    def run(self, command: Mapping[str, Any], args: list[str]) -> Answer:
        from clampdown.core import inputs as inputs_mod
        from clampdown.core.lint import load_runbook

        user = str(command.get("user_id") or "")
        refusal = self._refuse(user, "start runbooks")
        if refusal:
            return refusal
        if not args:
            return Answer("Usage: `/clampdown run <runbook> key=value …` (see `/clampdown list`)")
        name, pairs = args[0], args[1:]
        path = find_runbook(name, current_library())
        loaded, _warnings = load_runbook(path)
        model = loaded.model
        given: dict[str, Any] = {}
        for pair in pairs:
            key, sep, value = pair.partition("=")
            if not sep or not key.strip():
                return Answer(
                    f":x: `{inert(pair)}` is not key=value\n"
                    f"Inputs of `{inert(name)}`: {', '.join(model.inputs) or 'none'}"
                )
            given[key.strip()] = value
        try:
            values = inputs_mod.validate(model.inputs, given)
        except ClampdownError as exc:
            return Answer(
                f":x: {inert(exc.message)}\nWrite inputs as key=value after the runbook name."
            )
        trigger = {"type": "slack", "user": user, "channel": str(command.get("channel_id") or "")}
        try:
            run_id = self.start_run(path, values, trigger)
        except RunNotStarted as exc:  # nothing started: say so, and that trying again is right
            return Answer(
                f":x: Run of `{inert(model.metadata.name)}` NOT started: {inert(exc.message)}\n"
                "Nothing was changed. Try again in a minute; if it keeps failing, tell whoever "
                "runs clampdown (its log says why)."
            )
        link = thread_link(run_id, home=self.conf.paths)
        where = f" — status thread: {link}" if link else ""
        return Answer(
            f":rotating_light: <@{user}> started run `{run_id}` of `{model.metadata.name}`{where}",
            "in_channel",
        )

    def status(self, command: Mapping[str, Any], args: list[str]) -> Answer:
        from clampdown.core.runs import recent_runs

        refusal = self._refuse(str(command.get("user_id") or ""), "read run status")
        if refusal:
            return refusal
        conf = self.conf
        if args:
            run_id = args[0]
            if not _RUN_ID.match(run_id):
                return Answer(f":x: `{run_id}` is not a run id")
            return Answer(_run_status(run_id, conf.existing_ledger(run_id)))
        found = recent_runs(conf.paths.runs_dir, 5, home=conf.paths)
        if not found:
            return Answer("No runs yet.")
        lines = [
            f"• `{inert(r.run_id)}` {inert(r.runbook)} — *{inert(r.status)}* (started {r.started})"
            for r in found
        ]
        return Answer("*Latest runs*\n" + "\n".join(lines))

    def _is_responder(self, user: str) -> bool:
        """A listed user id, or a member of a listed Slack user group (asked each time)."""
        from clampdown.core.approvals import split_people
        from clampdown.core.members import members_now

        users, groups = split_people(",".join(self.responders))
        if user in users:
            return True
        return bool(groups) and user in (members_now(groups, self.conf) or set())

    def _refuse(self, user: str, what: str) -> Answer | None:
        if not self.responders:
            return Answer(
                f":no_entry: Nobody may {what} from Slack: CLAMPDOWN_RESPONDERS is empty. "
                "Ask the clampdown operator to add responders' Slack user ids."
            )
        if not self._is_responder(user):
            return Answer(
                f":no_entry: <@{user}> is not a responder, so you may not {what}. "
                "Ask the clampdown operator to add your Slack user id to CLAMPDOWN_RESPONDERS."
            )
        return None


def thread_link(run_id: str, wait: float | None = None, *, home: Home) -> str | None:
    """A link to the run's status thread, once its header is posted (None: not within ``wait``).

    The answer to ``/clampdown run`` is sent after the ack, so waiting a few seconds for
    the run to post its header costs the responder nothing.
    """
    import json

    files = home.run(run_id)  # the run store's copy, in the scaled mode
    deadline = time.monotonic() + (THREAD_WAIT if wait is None else wait)
    while True:
        try:
            threads = json.loads(files.read(SLACK_THREAD_STATE) or "{}").get("threads", {})
        except (OSError, ValueError, AttributeError):
            threads = {}
        for thread in threads.values():
            ts = str(thread.get("thread_ts", "")).replace(".", "")
            return f"<https://slack.com/archives/{thread['channel']}/p{ts}|open>"
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.1)


def library_runbooks(library: Path | None = None) -> dict[str, Path]:
    """Runbook names in the library folder (file stems), sorted; a user error if it is missing."""
    from clampdown.core.settings import settings

    lib = Path(library or settings().library)
    if not lib.is_dir():
        raise ClampdownError(
            f"runbook library '{lib}' is not a folder", "set CLAMPDOWN_LIBRARY on the server"
        )
    from clampdown.core.loader import library_names

    return library_names(lib)


def find_runbook(name: str, library: Path | None = None) -> Path:
    """A runbook of the library by name only: Slack never names a file on the server."""
    names = library_runbooks(library)
    if _NAME.match(name) and name in names:
        return names[name]
    hint = did_you_mean(name, names) or "`/clampdown list` shows the runbooks"
    raise ClampdownError(f"no runbook named '{name}'", hint)


def _run_status(run_id: str, ledger: Path) -> str:
    from clampdown.core.ledger import read

    records = read(ledger)
    first = records[0] if records else {}
    last = records[-1] if records else {}
    runbook = first.get("run", {}).get("runbook", "?")
    if last.get("type") == "run.end":
        status = str(last.get("status", "?"))
        detail = f"\n{inert(last['error'])}" if last.get("error") else ""
    else:
        status, detail = "in progress", ""
    steps = sum(1 for r in records if r.get("type") == "step.end")
    shown = f"`{inert(runbook)}`: *{inert(status)}*"
    return f"Run `{run_id}` of {shown} ({steps} step(s) finished){detail}"


def _split(text: str) -> list[str]:
    """Words of the command text; quotes group words (Slack may send curly ones)."""
    text = text.replace("\u201c", '"').replace("\u201d", '"').replace("\u2018", "'")
    text = text.replace("\u2019", "'")
    try:
        return shlex.split(text)
    except ValueError:  # an unbalanced quote: fall back to plain words
        return text.split()
