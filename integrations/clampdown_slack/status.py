"""``slack.status``: keep the run's Slack thread current.

The first ``slack.status`` of a run (per channel) posts the thread's parent
message; later ones reply in that thread. The run → (channel, thread_ts) mapping
lives in ``$CLAMPDOWN_HOME/runs/<run-id>/slack.json``, guarded by a lock, because
steps of one run may post at the same moment.

Slack never stops containment: when Slack is down, rate-limits past the client's
retries, refuses the token, or is not configured at all, the step still succeeds
with ``posted: false`` and the reason in ``error`` (the ledger records it) and a
warning in the run log.

The text is rendered from the runbook's template with inputs, alert fields and step
outputs, so it is treated as untrusted (:func:`clampdown_slack.text.inert`): the run's
secret inputs are masked, ``&``, ``<``, ``>`` are escaped and code fences broken, so an
alert cannot ping ``<!channel>`` or post a link disguised as a button. Formatting
(``*bold*``, ``_italic_``, `` `code` ``) still works; people and groups are pinged
through ``mention``, built from ids the step checks.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any
from urllib.error import URLError

from pydantic import Field

from clampdown.core.actions import Action, ActionContext, ActionInput, ActionOutput
from clampdown.core.home import SLACK_THREAD_STATE, RunFiles, private_dirs, private_opener
from clampdown_slack.client import (
    SlackNotConfigured,
    SlackSettings,
    api_base_url,
    slack_client,
    slack_settings,
)
from clampdown_slack.text import inert, inert_blocks

try:  # POSIX: also serialise separate processes (Prefect workers) posting for one run
    import fcntl
except ImportError:  # pragma: no cover - Windows: threads of one process only
    fcntl = None  # type: ignore[assignment]

DRILL_PREFIX = "[DRILL] "
STATE_FILE = SLACK_THREAD_STATE  # the name of the file in the run's folder
_MAX_ERROR = 500
_RETRIED_STATUSES = (429, 500, 503)
MENTION_PATTERN = r"^(here|channel|[UW][A-Z0-9]{2,20}|S[A-Z0-9]{2,20})$"
_HINTS = {
    "invalid_auth": "check CLAMPDOWN_SLACK_BOT_TOKEN (the Slack app's bot token, xoxb-…)",
    "not_authed": "set CLAMPDOWN_SLACK_BOT_TOKEN (the Slack app's bot token, xoxb-…)",
    "account_inactive": "the token's Slack app or workspace is deactivated",
    "token_revoked": "the bot token was revoked: reinstall the Slack app",
    "channel_not_found": "check the channel (CLAMPDOWN_SLACK_CHANNEL or with: channel)",
    "not_in_channel": "invite the clampdown bot to the channel",
    "is_archived": "the channel is archived: pick another one",
}


class SlackStatus(Action):
    """Post a status message in the run's Slack thread (never stops the run)."""

    name = "slack.status"
    summary = "Post a status message in the run's Slack thread"
    destructive = False

    class Input(ActionInput):
        text: str = Field(min_length=1, description="message text (Slack mrkdwn)")
        channel: str | None = Field(
            None, description="channel id or #name (default: CLAMPDOWN_SLACK_CHANNEL)"
        )
        thread: bool = Field(
            True, description="reply in the run's status thread (false: a message of its own)"
        )
        blocks: list[dict[str, Any]] | None = Field(
            None, description="Block Kit blocks; text is then the notification fallback"
        )
        mention: list[Annotated[str, Field(pattern=MENTION_PATTERN)]] = Field(
            default_factory=list,
            description="who to ping before the text: Slack user ids (U…/W…), user group "
            "ids (S…), 'here' or 'channel' (markup in text itself is shown, not obeyed)",
        )

    class Output(ActionOutput):
        posted: bool
        channel: str | None = None
        ts: str | None = None
        thread_ts: str | None = None
        error: str | None = None

    def run(self, params: Input, ctx: ActionContext) -> Output:
        try:
            config = slack_settings()
        except SlackNotConfigured as exc:
            return self._missed(ctx, str(exc), params.channel)
        channel = params.channel or config.slack_channel
        problem = _configuration_problem(config, channel)
        if problem:
            return self._missed(ctx, problem, channel)
        assert config.slack_bot_token is not None and channel is not None
        token = config.slack_bot_token.get_secret_value()
        text, blocks = mark_drill(_message(params, ctx), _blocks(params, ctx), ctx.drill)
        client = slack_client(config)
        thread: dict[str, str] | None = None
        try:
            if not params.thread:
                sent = client.chat_postMessage(channel=channel, text=text, blocks=blocks)
                return self._posted(ctx, sent["channel"], sent["ts"], None)
            state = ctx.files.slack_thread_state
            with run_lock(state):
                thread = read_threads(state, ctx).get(channel)
                if thread is None:  # the run's first status message here: the thread's parent
                    sent = client.chat_postMessage(channel=channel, text=text, blocks=blocks)
                    remember_thread(state, channel, sent["channel"], sent["ts"], ctx.files)
                    return self._posted(ctx, sent["channel"], sent["ts"], sent["ts"])
            sent = client.chat_postMessage(
                channel=thread["channel"], thread_ts=thread["thread_ts"], text=text, blocks=blocks
            )
            return self._posted(ctx, sent["channel"], sent["ts"], thread["thread_ts"])
        except Exception as exc:  # Slack must never stop containment
            error = describe_error(exc, config, token)
            if thread is not None:  # a missed reply: say which thread it belonged to
                return self._missed(ctx, error, thread["channel"], thread["thread_ts"])
            return self._missed(ctx, error, channel)

    def preview(self, params: Input, ctx: ActionContext) -> list[str] | None:
        channel = params.channel or os.environ.get("CLAMPDOWN_SLACK_CHANNEL") or "(no channel)"
        where = "in the run's thread" if params.thread else "as a new message"
        return [f"post to Slack {channel} {where}: {params.text[:80]}"]

    def _posted(
        self, ctx: ActionContext, channel: str, ts: str, thread_ts: str | None
    ) -> SlackStatus.Output:
        ctx.logger.info("slack.status: posted to %s (ts %s)", channel, ts)
        return self.Output(posted=True, channel=channel, ts=ts, thread_ts=thread_ts)

    def _missed(
        self,
        ctx: ActionContext,
        error: str,
        channel: str | None,
        thread_ts: str | None = None,
    ) -> SlackStatus.Output:
        ctx.logger.warning("slack.status: not posted, the run goes on: %s", error)
        return self.Output(posted=False, channel=channel, thread_ts=thread_ts, error=error)


def mention_markup(ids: list[str]) -> str:
    """Slack's markup for the checked ids (``MENTION_PATTERN``), space-separated."""
    special = {"here": "<!here>", "channel": "<!channel>"}
    return " ".join(
        special.get(i) or (f"<!subteam^{i}>" if i.startswith("S") else f"<@{i}>") for i in ids
    )


def _message(params: SlackStatus.Input, ctx: ActionContext) -> str:
    text = inert(params.text, ctx.mask)
    return f"{mention_markup(params.mention)} {text}" if params.mention else text


def _blocks(params: SlackStatus.Input, ctx: ActionContext) -> list[dict[str, Any]] | None:
    return None if params.blocks is None else inert_blocks(params.blocks, ctx.mask)


def _configuration_problem(config: SlackSettings, channel: str | None) -> str | None:
    missing = []
    if config.slack_bot_token is None:
        missing.append("CLAMPDOWN_SLACK_BOT_TOKEN (the Slack app's bot token, xoxb-…)")
    if not channel:
        missing.append("CLAMPDOWN_SLACK_CHANNEL (or give the step with: channel)")
    if not missing:
        return None
    return "Slack is not configured: set " + " and ".join(missing)


def mark_drill(
    text: str, blocks: list[dict[str, Any]] | None, drill: bool
) -> tuple[str, list[dict[str, Any]] | None]:
    """Drill runs say so on every message: in the text and, if any, atop the blocks."""
    if not drill:
        return text, blocks
    if not text.startswith(DRILL_PREFIX):
        text = DRILL_PREFIX + text
    if blocks:
        banner = {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": "*[DRILL]* exercise, not a real incident"}],
        }
        blocks = [banner, *blocks]
    return text, blocks


def describe_error(exc: Exception, config: SlackSettings, token: str) -> str:
    """What went wrong, for the ledger and the log: no token, bounded length."""
    from slack_sdk.errors import SlackApiError

    retries = config.slack_max_retries
    if isinstance(exc, SlackApiError):
        response = exc.response
        status = response.status_code
        data = response.data if isinstance(response.data, dict) else {}
        code = str(data.get("error") or f"HTTP {status}")
        text = f"Slack chat.postMessage failed: {code}"
        if status != 200:
            text += f" (HTTP {status}"
            text += f", gave up after {retries} retries)" if status in _RETRIED_STATUSES else ")"
        if code in _HINTS:
            text += f" — {_HINTS[code]}"
    elif isinstance(exc, TimeoutError):  # a read timeout: not retried, the post may have landed
        text = f"Slack chat.postMessage failed: no answer within {config.slack_timeout:g}s"
    elif isinstance(exc, URLError | ConnectionError):
        reason = exc.reason if isinstance(exc, URLError) else exc
        text = (
            f"Slack chat.postMessage failed: cannot reach {api_base_url(config)}: {reason}"
            f" (gave up after {retries} retries)"
        )
    else:
        text = f"Slack chat.postMessage failed: {type(exc).__name__}: {exc}"
    if token:
        text = text.replace(token, "***")
    return text if len(text) <= _MAX_ERROR else text[: _MAX_ERROR - 1] + "…"


# --- the run's thread: $CLAMPDOWN_HOME/runs/<run-id>/slack.json ---------------------------

_thread_locks: dict[Path, threading.Lock] = {}
_thread_locks_guard = threading.Lock()


@contextlib.contextmanager
def run_lock(state: Path) -> Iterator[None]:
    """Exclusive access to a run's Slack state: threads of this process, then other processes."""
    with _thread_locks_guard:
        lock = _thread_locks.setdefault(state, threading.Lock())
    with lock:
        private_dirs(state.parent)  # the run's folder: 0700, its files 0600
        with open(state.with_name(state.name + ".lock"), "a+b", opener=private_opener) as handle:
            if fcntl is not None:
                fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                if fcntl is not None:
                    fcntl.flock(handle, fcntl.LOCK_UN)


def read_state(state: Path) -> dict[str, Any]:
    try:
        data = json.loads(state.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    return data if isinstance(data, dict) else {}


def read_threads(state: Path, ctx: ActionContext) -> dict[str, dict[str, str]]:
    """The run's threads by channel (as named in steps, and by id). Call under run_lock."""
    try:
        threads = read_state(state).get("threads", {})
    except (OSError, ValueError) as exc:
        ctx.logger.warning("slack.status: %s is unreadable (%s); starting a new thread", state, exc)
        return {}
    return threads if isinstance(threads, dict) else {}


def remember_thread(
    state: Path, requested: str, channel: str, thread_ts: str, files: RunFiles | None = None
) -> None:
    """Record the run's thread in a channel, atomically. Call under run_lock.

    ``files``: the run's files, whose store (the scaled mode) keeps the state too, so a
    worker on another machine that continues the run posts in the same thread and serve
    replies in it."""
    try:
        data = read_state(state)
    except (OSError, ValueError):
        data = {}
    threads = data.setdefault("threads", {})
    entry = {"channel": channel, "thread_ts": thread_ts}
    threads[requested] = entry
    threads.setdefault(channel, entry)  # a later step may name the channel by its id
    if files is not None:
        files.write(SLACK_THREAD_STATE, json.dumps(data, indent=2, sort_keys=True))
        return
    fd, tmp = tempfile.mkstemp(dir=state.parent, prefix=".slack-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, sort_keys=True)
        os.replace(tmp, state)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
