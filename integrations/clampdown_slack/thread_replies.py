"""serve's replies in runs' Slack threads: said once the run has posted its thread, and
accounted for when serve stops.

Why they wait: serve says in a run's thread that an alert joined it, or that a related
alert started another run. Such an alert often comes in the run's first moments (a storm,
a page about the same key a second after the first), before the run has posted its thread;
a reply then had nowhere to go and was dropped. So a reply that finds no thread waits for
it, up to :data:`WAIT` seconds, on a thread of its own (never on the path of the alert's
answer). While it waits only the run's thread file is read, every :data:`POLL` seconds; a
reply Slack refuses is tried again every :data:`RETRY` seconds, so a Slack outage during an
alert storm is not met with a call per alert per tick.

Why they are accounted for: serve stopping (a deploy, SIGTERM) used to drop the replies
still waiting without a word (their threads were daemons). :meth:`ThreadReplies.close`
ends the waits and logs each reply not said, by run id and what it would have said. The
alert itself is never lost with a reply: the run's ledger has it (``alert.joined``,
``alert.correlated``).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from clampdown.core.home import Home
from clampdown_slack.client import SlackSettings, slack_client
from clampdown_slack.run_thread import posted_thread
from clampdown_slack.status import describe_error

log = logging.getLogger("clampdown.serve")

WAIT = 60.0
"""Seconds a reply waits for its run's thread (a run posts it a moment after it starts)."""
POLL = 0.25
"""Seconds between two reads of the run's thread file while the reply waits for it."""
RETRY = 2.0
"""Seconds between tries of a reply Slack refused, until :data:`WAIT` is over."""
CLOSE_GRACE = 2.0
"""Seconds :meth:`ThreadReplies.close` gives replies in a Slack call to finish."""


@dataclass(eq=False)
class _Reply:
    run_id: str
    text: str
    what: str  # for the log: "that an alert joined it"
    deadline: float
    said: bool = False
    done: threading.Event = field(default_factory=threading.Event)


class ThreadReplies:
    """Replies in runs' Slack threads for one serve: :meth:`say` never waits for a thread
    not posted yet; :meth:`close` ends the waits and logs what was not said."""

    def __init__(
        self,
        home: Home,
        config: SlackSettings,
        *,
        wait: float = WAIT,
        poll: float = POLL,
        retry: float = RETRY,
    ) -> None:
        assert config.slack_bot_token is not None and config.slack_channel
        self.home = home
        self.config = config
        self.wait = wait
        self.poll = poll
        self.retry = retry
        self._token = config.slack_bot_token.get_secret_value()
        self._lock = threading.Lock()  # guards _waiting and the start of close()
        self._waiting: list[_Reply] = []
        self._stopping = threading.Event()

    @classmethod
    def configured(cls, home: Home, config: SlackSettings, **timing: float) -> ThreadReplies | None:
        """Replies for serve's Slack settings; None without a bot token and a channel."""
        if config.slack_bot_token is None or not config.slack_channel:
            return None
        return cls(home, config, **timing)

    def say(self, run_id: str, text: str, what: str) -> None:
        """Reply ``text`` in ``run_id``'s thread: now when the run has posted it, else on a
        thread of its own once it does. ``what`` names the reply in the log."""
        reply = _Reply(run_id, text, what, time.monotonic() + self.wait)
        if not self._stopping.is_set() and self._try(reply):
            return
        with self._lock:
            if self._stopping.is_set():  # close() has taken its list: say it here
                self._not_said(reply, "serve is stopping")
                return
            self._waiting.append(reply)
        threading.Thread(
            target=self._wait_for_thread, args=(reply,), name=f"thread-reply-{run_id}", daemon=True
        ).start()

    def close(self, grace: float = CLOSE_GRACE) -> list[tuple[str, str]]:
        """Stop waiting; give a reply in a Slack call up to ``grace`` seconds to end; log
        each reply not said. Returns those as ``(run_id, what)``."""
        with self._lock:
            self._stopping.set()
            waiting, self._waiting = self._waiting, []
        end = time.monotonic() + grace
        for reply in waiting:
            reply.done.wait(max(0.0, end - time.monotonic()))
        unsaid = [r for r in waiting if not r.said]
        for reply in unsaid:
            self._not_said(reply, "serve stopped first")
        return [(r.run_id, r.what) for r in unsaid]

    # --- one reply's wait -------------------------------------------------------------

    def _wait_for_thread(self, reply: _Reply) -> None:
        try:
            while not self._stopping.is_set() and time.monotonic() <= reply.deadline:
                tried = self._try(reply)
                if tried:
                    return
                self._stopping.wait(self.poll if tried is None else self.retry)
            with self._lock:
                if reply not in self._waiting:  # close() took it, and logs it
                    return
                self._waiting.remove(reply)
            self._not_said(reply, f"the run posted no thread within {self.wait:g} s")
        finally:
            reply.done.set()
            if reply.said:
                with self._lock:
                    if reply in self._waiting:
                        self._waiting.remove(reply)

    def _try(self, reply: _Reply) -> bool | None:
        """None: the run has not posted its thread (nothing sent). True: said. False: Slack
        refused it (logged, without the token)."""
        thread = posted_thread(reply.run_id, self.home, self.config)
        if thread is None:
            return None
        try:
            slack_client(self.config).chat_postMessage(
                channel=thread["channel"], thread_ts=thread["thread_ts"], text=reply.text
            )
        except Exception as exc:
            said = describe_error(exc, self.config, self._token)
            log.warning("slack: cannot reply in run %s's thread: %s", reply.run_id, said)
            return False
        reply.said = True
        return True

    @staticmethod
    def _not_said(reply: _Reply, why: str) -> None:
        log.warning(
            "run %s: could not say in its Slack thread %s (%s)", reply.run_id, reply.what, why
        )
