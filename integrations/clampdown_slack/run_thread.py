"""The run's Slack status thread, kept current by the executor.

When Slack is configured (``CLAMPDOWN_SLACK_BOT_TOKEN`` and ``CLAMPDOWN_SLACK_CHANNEL``),
a run posts an incident header, edits it (``chat.update``) as steps change status,
replies in its thread when a step fails, and edits it a last time with the outcome.
The header is the run's status thread: its channel and ts go into the same
``slack.json`` ``slack.status`` uses, so ``slack.status`` steps reply under it.

Slack never slows containment: every call happens on a background thread of the run,
one at a time and in the order queued; header updates coalesce (only the latest step list
is sent), and :meth:`RunThread.close` waits a bounded time for the last ones. That thread
lives only while the run has something to send: it ends when the queue is empty and is
started again by the next message, so a run waiting for people (hundreds may) holds no
thread. A card Slack did not take keeps its run's thread, waiting to try it again, until
Slack takes it or ``CARD_RETRY_FOR`` runs out. Misses are logged, counted, and recorded
once in the ledger as ``slack.miss`` (count and last error, never the token).

The engine reaches it only as a :class:`~clampdown.core.extensions.RunObserver`:
:func:`observer_for_run` is registered under ``clampdown.run_observers``; approval
cards are posted and edited from the observer's ``approval_*`` calls.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clampdown.core.approvals import Request
from clampdown.core.extensions import RunHeader
from clampdown.core.home import SLACK_THREAD_STATE, Home, RunFiles
from clampdown.core.incident_report_render import summary_from_ledger
from clampdown.core.ledger import Ledger
from clampdown_slack.approval_card import (
    decided_blocks,
    long_value_replies,
    overflow_replies,
    progress_text,
    request_blocks,
)
from clampdown_slack.client import (
    SlackSettings,
    slack_client,
    thread_settings,
)
from clampdown_slack.status import (
    describe_error,
    mark_drill,
    read_state,
    remember_thread,
    run_lock,
)
from clampdown_slack.text import inert, masked

if TYPE_CHECKING:
    from clampdown.core.settings import Settings

ICONS = {
    "pending": "·",
    "running": "▶",
    "succeeded": "✅",
    "failed": "❌",
    "skipped": "⏭",
    "cancelled": "⛔",
    "waiting for approval": "⏸",
}
SHUTDOWN_WAIT = 5.0
CARD_RETRY = 5.0  # seconds between attempts at an approval card Slack did not take
CARD_RETRY_FOR = 3600.0  # then the card is given up (the terminal and the UI still work)
log = logging.getLogger("clampdown.slack")


@dataclass
class Card:
    """A Block Kit message in the thread (e.g. an approval card); ts is set once posted."""

    channel: str | None = None
    ts: str | None = None


def header_lines(header: RunHeader) -> list[str]:
    """The header message: what runs, why, and where to see it in Prefect.

    Every value is made inert (:func:`clampdown_slack.text.inert`): an alert's title or
    id cannot ping the channel, add a link or open a code block in the header.
    """
    title, runbook = inert(header.title), inert(header.runbook)
    lines = [
        f":rotating_light: *{title}* (`{runbook}`) · severity *{inert(header.severity)}*",
        f"Trigger: {_trigger_text(header.trigger)} · run `{inert(header.run_id)}`",
    ]
    ui = os.environ.get("PREFECT_UI_URL", "").strip().rstrip("/")
    if ui and header.flow_run_id:
        lines.append(f"<{ui}/runs/flow-run/{header.flow_run_id}|Prefect flow run>")
    return lines


def _trigger_text(trigger: dict[str, Any]) -> str:
    """One line: who or what started the run (an alert's title, not its whole summary)."""
    kind = inert(trigger.get("type", "manual"))
    if kind == "alert":
        title = inert((trigger.get("alert") or {}).get("title", ""))
        source, alert_id = inert(trigger.get("source")), inert(trigger.get("alert_id"))
        return f"alert {source} `{alert_id}` {title}".strip()
    shown = {k: v for k, v in trigger.items() if k != "type" and not isinstance(v, dict | list)}
    details = ", ".join(f"{inert(k)}={inert(v)}" for k, v in shown.items())
    return f"{kind} ({details})" if details else kind


def step_lines(steps: Sequence[tuple[str, str]]) -> list[str]:
    return [f"{ICONS.get(status, '?')} `{sid}` {status}" for sid, status in steps]


class RunThread:
    """One run's Slack thread; every method returns at once (the work is queued)."""

    def __init__(
        self,
        run_id: str,
        config: SlackSettings,
        ledger: Ledger,
        *,
        state_file: Path,
        scrub: Callable[[str], str] | None = None,
        membership: Callable[[tuple[str, ...]], str | None] | None = None,
        files: RunFiles | None = None,
    ) -> None:
        assert config.slack_bot_token is not None and config.slack_channel
        self._files = files  # the run's files: the run store keeps slack.json too (scaled mode)
        self.run_id = run_id
        self._membership = membership  # the approval card's note on group membership
        self._state_file = state_file  # the run's slack.json (RunFiles.slack_thread_state)
        self.config = config
        self.channel: str = config.slack_channel
        self.ledger = ledger
        self._scrub = scrub or ledger.scrub
        self._token = config.slack_bot_token.get_secret_value()
        self._client: Any = None
        self._header: RunHeader | None = None
        self._steps: list[tuple[str, str]] = []
        self._outcome: str | None = None
        self._dirty = False  # the header text changed since it was last sent
        self._outbox: deque[tuple[str, Callable[[], None], bool]] = deque()  # in order
        # cards that could not be sent yet (Slack down): tried again every CARD_RETRY s
        self._retry: deque[tuple[str, Callable[[], None], bool]] = deque()
        self._retry_until = 0.0
        self._closing = False
        self._cond = threading.Condition()
        self._worker: threading.Thread | None = None  # None: no thread now (idle)
        self._header_tried = False  # the first thread posts the header
        self._started = False  # start() was called: the header is the first thing sent
        self._start_lock: contextlib.ExitStack | None = None
        self.header_channel: str | None = None
        self.header_ts: str | None = None  # None: no header of ours to edit
        self.thread_ts: str | None = None  # where replies go
        self.misses = 0
        self.last_error: str | None = None
        self.first_error: str | None = None
        self._closed = False

    @classmethod
    def from_env(
        cls,
        run_id: str,
        ledger: Ledger,
        state_file: Path,
        membership: Callable[[tuple[str, ...]], str | None] | None = None,
        files: RunFiles | None = None,
    ) -> RunThread | None:
        """A thread for the run, or None when Slack is not configured (nothing happens).

        Slack's settings are read here, once per run (the run's factory call)."""
        config = thread_settings()
        if config is None:
            return None
        return cls(
            run_id, config, ledger, state_file=state_file, membership=membership, files=files
        )

    # --- the run observer (clampdown.core.extensions.RunObserver) -------------------------

    def run_started(self, header: RunHeader, steps: Sequence[tuple[str, str]]) -> None:
        self.start(header, steps)

    def steps_changed(self, steps: Sequence[tuple[str, str]], note: str | None = None) -> None:
        """Edit the header's step list; ``note`` (e.g. why a step failed) is a reply.

        The note carries an error message (which may quote an alert or an output): it is
        made inert; the engine's own markup in it is backticks only, which survive.
        """
        if note is not None:
            self.reply(inert(note, self._scrub))
        self.update(steps)

    def run_ended(self, outcome: str, steps: Sequence[tuple[str, str]]) -> None:
        """Post the incident report's summary in the thread, then the outcome."""
        try:
            self.reply(summary_from_ledger(self.ledger.path, outcome))
        except Exception as exc:  # the report is a convenience: never stop the run's end
            log.warning("slack: run %s: no report summary: %s", self.run_id, exc)
        self.close(outcome, steps)

    def approval_requested(self, request: Request) -> Card:
        """Post the card, then the full text of every value it had to cut, in its thread.

        Who is in the approver groups is asked when the card is sent (on this thread's
        worker, never the run's): a card posted while Slack cannot answer says the
        membership is the one last kept, or that the groups cannot be resolved."""
        card = Card()
        title = f"Approval needed: {inert(request.summary)[:3000]}"

        def send() -> None:
            note = self._membership(request.groups) if self._membership and request.groups else None
            self._post_card(card, title, request_blocks(request, note))

        self._send("chat.postMessage", send, keep=True)
        for text in [*overflow_replies(request), *long_value_replies(request)]:
            self._send("chat.postMessage", lambda t=text: self._post_reply(t), keep=True)
        return card

    def approval_progress(self, handle: Card | None, request: Request) -> None:
        self.reply(progress_text(request))

    def approval_ended(
        self, handle: Card | None, request: Request, outcome: str, at: datetime
    ) -> None:
        """Edit the card to say who decided (no buttons); a timeout also gets a reply."""
        if handle is not None:
            self.update_card(
                handle,
                f"{outcome}: {inert(request.summary)[:3000]}",
                decided_blocks(request, outcome, at),
            )
        if outcome == "timed_out":
            self.reply(
                f":hourglass: No decision on `{inert(request.step)}` by the deadline: "
                f"following on_timeout={inert(request.on_timeout)}"
            )

    # --- called by the executor (never blocks on Slack) -----------------------------------

    def start(self, header: RunHeader, steps: Sequence[tuple[str, str]] = ()) -> None:
        self._header, self._steps, self._dirty = header, list(steps), True
        # Hold the run's Slack lock until the header is posted: a slack.status step
        # starting meanwhile waits for it and replies under it instead of posting a parent.
        stack = contextlib.ExitStack()
        try:
            stack.enter_context(run_lock(self._state_file))
            self._start_lock = stack
        except Exception as exc:  # e.g. an unwritable run directory: post unlocked
            self._miss(f"cannot lock the run's Slack state: {exc}")
        with self._cond:
            self._started = True
            self._wake()

    def update(self, steps: Sequence[tuple[str, str]]) -> None:
        with self._cond:
            self._steps, self._dirty = list(steps), True
            self._wake()

    def reply(self, text: str) -> None:
        self._send("chat.postMessage", lambda: self._post_reply(text))

    def post_card(self, text: str, blocks: list[dict[str, Any]]) -> Card:
        """Post a Block Kit message in the thread; the card's ts is set once it is sent."""
        card = Card()
        self._send("chat.postMessage", lambda: self._post_card(card, text, blocks), keep=True)
        return card

    def update_card(self, card: Card, text: str, blocks: list[dict[str, Any]]) -> None:
        self._send("chat.update", lambda: self._edit_card(card, text, blocks), keep=True)

    def _send(self, method: str, fn: Callable[[], None], *, keep: bool = False) -> None:
        """Queue a call; ``keep``: a card people must see, sent again while Slack is down."""
        with self._cond:
            self._outbox.append((method, fn, keep))
            self._wake()

    def _wake(self) -> None:
        """Under ``_cond``: have the run's thread send what is queued, starting it if it
        ended (idle). Never before :meth:`start`: the header goes first."""
        if not self._started:
            return
        if self._worker is None:
            first = not self._header_tried
            self._header_tried = True
            self._worker = threading.Thread(
                target=self._work,
                args=(first,),
                name=f"clampdown-slack-{self.run_id}",
                daemon=True,
            )
            self._worker.start()
        else:
            self._cond.notify()

    def close(self, outcome: str, steps: Sequence[tuple[str, str]] | None = None) -> None:
        """Send the outcome, wait up to SHUTDOWN_WAIT s, record misses; idempotent."""
        if self._closed:
            return
        self._closed = True
        with self._cond:
            self._outcome, self._dirty, self._closing = outcome, True, True
            if steps is not None:
                self._steps = list(steps)
            self._wake()
            worker = self._worker  # closing: it sends everything left, then ends
        if worker is not None:
            worker.join(SHUTDOWN_WAIT)
            if worker.is_alive():
                self._miss("gave up waiting for Slack at the end of the run")
        if self.misses:
            self.ledger.append(
                "slack.miss", count=self.misses, last_error=self.last_error, channel=self.channel
            )

    # --- the worker ---------------------------------------------------------------------

    def _work(self, first: bool) -> None:
        """Send what is queued, in order, until the queue is empty (then end: an idle run
        holds no thread) or the run is closed. ``first``: post the header first."""
        if first:
            try:
                self._client = slack_client(self.config)
                self._post_header()
            except Exception as exc:
                self._miss(self._describe(exc, "chat.postMessage"))
            finally:
                if self._start_lock is not None:
                    self._start_lock.close()
        while True:
            batch = self._next_batch()
            if batch is None:
                return  # idle: the next message starts a thread again
            outbox, dirty, closing = batch
            self._send_batch(outbox, dirty, closing)
            with self._cond:
                if closing and not (self._outbox or self._dirty):
                    for method, _send, _keep in self._retry:  # given up: they are misses
                        self._miss(f"Slack {method} of an approval card never got through")
                    return

    def _next_batch(self) -> tuple[list[Any], bool, bool] | None:
        """Take everything queued, waiting only for the time to retry kept cards; None
        when there is nothing to send (the thread then ends, under the same lock that
        :meth:`_wake` takes, so a message queued meanwhile starts a new one)."""
        with self._cond:
            while not (self._outbox or self._dirty or self._closing):
                if not self._retry:
                    self._worker = None
                    return None
                if not self._cond.wait(CARD_RETRY):  # time to try the kept cards again
                    break
            outbox = [*self._retry, *self._outbox]
            self._retry.clear()
            self._outbox.clear()
            dirty, self._dirty = self._dirty, False
            return outbox, dirty, self._closing

    def _send_batch(self, outbox: list[Any], dirty: bool, closing: bool) -> None:
        if outbox and self.thread_ts is None:  # Slack was down at the start: try again
            self._call("chat.postMessage", self._post_header)
        for method, send, keep in outbox:
            if self._retry and keep:  # keep kept cards in order behind a failed one
                self._retry.append((method, send, keep))
                continue
            self._call(method, send, keep=keep and not closing)
        if dirty and self.header_ts is not None:
            self._call("chat.update", self._edit_header)
        if not self._retry:
            self._retry_until = 0.0  # the next outage gets the full CARD_RETRY_FOR

    def _text(self) -> str:
        assert self._header is not None
        lines = header_lines(self._header)
        status = f"*{self._outcome.upper()}*" if self._outcome else "running"
        lines.append(f"Status: {status}")
        lines += step_lines(self._steps)
        text, _ = mark_drill(self._scrub("\n".join(lines)), None, self._header.drill)
        return text

    def _post_header(self) -> None:
        with self._cond:
            self._dirty = False
            text = self._text()
        existing = read_state(self._state_file).get("threads", {}).get(self.channel)
        if existing:  # a thread already exists (another process of this run): join it
            self.header_channel, self.thread_ts = existing["channel"], existing["thread_ts"]
            return
        sent = self._client.chat_postMessage(channel=self.channel, text=text)
        remember_thread(self._state_file, self.channel, sent["channel"], sent["ts"], self._files)
        self.header_channel, self.header_ts = sent["channel"], sent["ts"]
        self.thread_ts = sent["ts"]
        with self._cond:  # responders were told now (the report's time to notify); under
            if not self._closing:  # the lock close() takes: never after run.end
                self.ledger.append("slack.posted", channel=sent["channel"], message_ts=sent["ts"])

    def _edit_header(self) -> None:
        with self._cond:
            text = self._text()
        self._client.chat_update(channel=self.header_channel, ts=self.header_ts, text=text)

    def _post_reply(self, text: str) -> None:
        if self.thread_ts is None:
            raise RuntimeError(
                f"no status thread to reply in (header not posted: {self.first_error})"
            )
        drill = bool(self._header and self._header.drill)
        text, _ = mark_drill(self._scrub(text), None, drill)
        self._client.chat_postMessage(
            channel=self.header_channel, thread_ts=self.thread_ts, text=text
        )

    def _post_card(self, card: Card, text: str, blocks: list[dict[str, Any]]) -> None:
        if self.thread_ts is None:
            raise RuntimeError(
                f"no status thread for the card (header not posted: {self.first_error})"
            )
        drill = bool(self._header and self._header.drill)
        text, marked = mark_drill(self._scrub(text), masked(blocks, self._mask), drill)
        sent = self._client.chat_postMessage(
            channel=self.header_channel, thread_ts=self.thread_ts, text=text, blocks=marked
        )
        card.channel, card.ts = sent["channel"], sent["ts"]

    def _edit_card(self, card: Card, text: str, blocks: list[dict[str, Any]]) -> None:
        if card.ts is None:
            raise RuntimeError("the card was never posted")
        drill = bool(self._header and self._header.drill)
        text, marked = mark_drill(self._scrub(text), masked(blocks, self._mask), drill)
        self._client.chat_update(channel=card.channel, ts=card.ts, text=text, blocks=marked)

    def _mask(self, text: str) -> str:
        """Secrets out of the blocks' strings (their mrkdwn is escaped where it is built)."""
        return str(self._scrub(text))

    def _call(self, method: str, fn: Callable[[], None], *, keep: bool = False) -> None:
        try:
            fn()
        except Exception as exc:
            if keep and time.monotonic() < self._retry_deadline():
                log.warning("slack: run %s: %s (will try again)", self.run_id, exc)
                self._retry.append((method, fn, keep))
                return
            self._miss(self._describe(exc, method))

    def _retry_deadline(self) -> float:
        """Kept cards are tried for CARD_RETRY_FOR s after the first failure, then missed."""
        if not self._retry_until:
            self._retry_until = time.monotonic() + CARD_RETRY_FOR
        return self._retry_until

    def _describe(self, exc: Exception, method: str) -> str:
        if isinstance(exc, RuntimeError):
            return f"Slack {method} skipped: {exc}"
        return describe_error(exc, self.config, self._token).replace("chat.postMessage", method)

    def _miss(self, error: str) -> None:
        error = self._scrub(error).replace(self._token, "***")
        self.misses += 1
        self.last_error = error
        self.first_error = self.first_error or error
        log.warning("slack: run %s: %s (the run goes on)", self.run_id, error)


def observer_for_run(run_id: str, ledger: Ledger, settings: Settings) -> RunThread | None:
    """The ``clampdown.run_observers`` factory: the run's thread, or None without Slack."""
    import functools

    files = settings.paths.run(run_id)
    return RunThread.from_env(
        run_id,
        ledger,
        files.slack_thread_state,
        membership=functools.partial(card_membership, settings),
        files=files,
    )


def card_membership(settings: Settings, groups: tuple[str, ...]) -> str | None:
    """The approval card's note on who is in ``groups`` now (None: Slack answered)."""
    from clampdown_slack.directory import membership_note, slack_member_directory

    directory = slack_member_directory(settings)
    if directory is None:
        return None
    return membership_note(directory.lookup(groups), settings.break_glass_approvers)


def posted_thread(run_id: str, home: Home, config: SlackSettings) -> dict[str, Any] | None:
    """The run's status thread in ``config``'s channel (``channel``, ``thread_ts``), or None
    while the run has not posted it (the run remembers its thread once Slack answered).
    Read through the run's files: in the scaled mode the run may be on another machine."""
    try:
        data = json.loads(home.run(run_id).read(SLACK_THREAD_STATE) or "{}")
    except (OSError, ValueError):
        data = {}
    thread = (data.get("threads", {}) if isinstance(data, dict) else {}).get(config.slack_channel)
    return thread if isinstance(thread, dict) and thread else None
