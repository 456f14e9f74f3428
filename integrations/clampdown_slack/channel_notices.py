"""Messages to the incident channel that belong to no run: an alert held back.

An alert that matched a trigger but started nothing (its runbook at
``max_concurrent_runs``, inputs the runbook refuses, a run that could not start) is
kept in serve's state store and logged; responders must also *see* it, in the channel
where runs post (``CLAMPDOWN_SLACK_CHANNEL``), since no run thread exists for it.

Why a queue and one background thread: the triage calls the hook while the alert's
sender waits for its answer; a Slack outage (each call retried for up to tens of
seconds) must not hold alert answers, and a storm of held alerts must not become a
storm of Slack messages. At most :data:`MAX_QUEUED` notices wait; beyond that they are
counted and one line says how many more were held (``clampdown triggers held`` lists
them all). A notice Slack does not take is logged and dropped: the state store has it.
When serve stops, notices still queued get :data:`CLOSE_GRACE` seconds, and the log says
how many were not posted (:meth:`ChannelNotices.close`): they used to go without a word.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any

from clampdown.core.alert import Alert
from clampdown_slack.client import SlackSettings, slack_client
from clampdown_slack.status import describe_error
from clampdown_slack.text import inert

MAX_QUEUED = 50
IDLE = 5.0  # seconds without a notice before the worker thread ends
CLOSE_GRACE = 2.0  # seconds queued notices get to be posted when serve stops
log = logging.getLogger("clampdown.slack")


def held_text(alert: Alert, reason: str) -> str:
    """What the channel reads about a held alert; every value from the alert is inert."""
    return (
        f":warning: *Alert held, no run started*: {inert(alert.source)} `{inert(alert.id)}` — "
        f"{inert(alert.title)}\nWhy: {inert(reason)}\n"
        "`clampdown triggers held` lists held alerts; the source's next repeat of the alert "
        "starts a run once what held it is gone (a trigger that failed for it: once the "
        "trigger is fixed)."
    )


class ChannelNotices:
    """Posts held-alert notices to ``config.slack_channel``; :meth:`held` never blocks."""

    def __init__(self, config: SlackSettings, max_queued: int = MAX_QUEUED) -> None:
        assert config.slack_bot_token is not None and config.slack_channel
        self.config = config
        self.channel: str = config.slack_channel
        self._token = config.slack_bot_token.get_secret_value()
        self._queue: queue.Queue[str] = queue.Queue(max_queued)
        self._lock = threading.Lock()
        self._dropped = 0
        self._unposted = 0  # queued or being posted; guarded by _settled's lock
        self._settled = threading.Condition(self._lock)  # told when _unposted falls to 0
        self._closed = False
        self._worker: threading.Thread | None = None
        self._client: Any = None

    @classmethod
    def configured(cls, config: SlackSettings) -> ChannelNotices | None:
        """Notices for serve's Slack settings; None without a bot token and a channel."""
        if config.slack_bot_token is None or not config.slack_channel:
            return None
        return cls(config)

    def held(self, alert: Alert, reason: str) -> None:
        """The triage's ``on_held`` hook: queue the notice (counted when the queue is full)."""
        with self._lock:
            if self._closed:  # serve is stopping: the state store and the log have it
                log.warning("slack: a held-alert notice was not posted: serve is stopping")
                return
            try:
                self._queue.put_nowait(held_text(alert, reason))
                self._unposted += 1
            except queue.Full:
                self._dropped += 1
        self._start()

    def close(self, grace: float = CLOSE_GRACE) -> int:
        """Serve stops: take no more notices, give those queued up to ``grace`` seconds to be
        posted, and log how many were not (with the ones never queued). Returns that count."""
        with self._settled:
            self._closed = True
            self._settled.wait_for(lambda: self._unposted == 0, timeout=grace)
            unposted = self._unposted + self._dropped
        if unposted:
            log.warning(
                "slack: serve stopped with %d held-alert notice(s) not posted: "
                "`clampdown triggers held` lists every held alert",
                unposted,
            )
        return unposted

    def _start(self) -> None:
        with self._lock:
            if self._worker is None:
                self._worker = threading.Thread(
                    target=self._work, name="clampdown-slack-notices", daemon=True
                )
                self._worker.start()

    def _work(self) -> None:
        while True:
            try:
                text = self._queue.get(timeout=IDLE)
            except queue.Empty:
                with self._lock:  # idle: stop; the next notice starts a worker again
                    if self._queue.empty():
                        self._worker = None
                        return
                continue
            self._post(text)
            with self._settled:
                self._unposted -= 1
                if self._unposted == 0:
                    self._settled.notify_all()
            if self._queue.empty():
                with self._lock:
                    dropped, self._dropped = self._dropped, 0
                if dropped:
                    self._post(
                        f":warning: {dropped} more alert(s) were held and are not shown here: "
                        "`clampdown triggers held` lists them all."
                    )

    def _post(self, text: str) -> None:
        try:
            if self._client is None:
                self._client = slack_client(self.config)
            self._client.chat_postMessage(channel=self.channel, text=text)
        except Exception as exc:  # the state store and the log have the alert
            said = describe_error(exc, self.config, self._token)
            log.warning("slack: a held-alert notice was not posted: %s", said)
