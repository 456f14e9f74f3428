"""Records for a run's ledger that must wait until the run has written ``run.start``.

Why: the triage links correlated runs (``alert.correlated``) in both ledgers while it
answers the alert, but a run it has just launched writes its first record only once its
flow has been set up: well under a second on a quiet machine, tens of seconds in a burst
on a loaded one (serve launches a few runs at a time, :class:`~clampdown_flows.triage.Launcher`).
Waiting for it on the request path delayed the answer, and giving up after a fixed wait
lost the record. Here a record waits off the request path, on one thread, until its
ledger has started, and is appended then; one whose run never starts within ``patience``
is given up with an error naming the run and what was not written, as is every record
still waiting when serve stops (its runs are then continued by the next serve from their
start records, without the record; the other run's ledger and both start records still
name the shared correlation key).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("clampdown.triage")

PATIENCE = 900.0
"""Seconds a record waits for its run's ``run.start`` (a run that has not started after
15 minutes did not start: serve's launcher gives a run's set-up 60 s)."""


@dataclass
class _Waiting:
    run_id: str
    what: str  # for the log: the record that waits
    write: Callable[[], None]
    until: float
    given_up: Callable[[], None] | None = None  # told when the record is not written


class LedgerWaits:
    """Appends records to ledgers that have not started yet, once they have.

    ``started(run_id)``: whether the run's ledger has its first record (asked every
    ``poll`` seconds for each waiting record). ``write()`` of a record is called once,
    from this object's thread; an exception it raises is logged, not retried (the ledger's
    own write errors say why).
    """

    def __init__(
        self,
        started: Callable[[str], bool],
        patience: float = PATIENCE,
        poll: float = 0.1,
    ) -> None:
        self.started = started
        self.patience = patience
        self.poll = poll
        self._cond = threading.Condition()
        self._waiting: list[_Waiting] = []
        self._thread: threading.Thread | None = None
        self._closed = False

    def add(
        self,
        run_id: str,
        what: str,
        write: Callable[[], None],
        given_up: Callable[[], None] | None = None,
    ) -> None:
        """Write ``what`` into ``run_id``'s ledger once it has started (``write`` does it).
        ``given_up`` is called, after the error is logged, if it never is (the run did not
        start within the patience, or serve stopped first): e.g. to tell people."""
        waiting = _Waiting(run_id, what, write, time.monotonic() + self.patience, given_up)
        with self._cond:
            closed = self._closed
            if not closed:
                self._waiting.append(waiting)
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run, name="clampdown-ledger-waits", daemon=True
                    )
                    self._thread.start()
                self._cond.notify()
        if closed:  # told outside the lock: ``given_up`` may take its time
            self._give_up(waiting, "serve is stopping")

    def pending(self) -> list[str]:
        """The runs with a record still waiting (for tests and shutdown logs)."""
        with self._cond:
            return [w.run_id for w in self._waiting]

    def close(self, grace: float = 2.0) -> None:
        """Stop: records whose ledger starts within ``grace`` seconds are still written;
        the rest are logged as not recorded."""
        deadline = time.monotonic() + grace
        with self._cond:
            while self._waiting and self._thread is not None and time.monotonic() < deadline:
                self._cond.wait(min(self.poll, max(0.0, deadline - time.monotonic())))
            self._closed = True
            left, self._waiting = self._waiting, []
            self._cond.notify_all()
        for waiting in left:
            self._give_up(waiting, "its run had not started when serve stopped")

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._closed:
                    return
                if not self._waiting:
                    self._cond.wait()
                    continue
                waiting = list(self._waiting)
            due, expired = self._sort(waiting)
            for item in due:
                self._write(item)
            for item in expired:
                self._give_up(item, f"the run did not start within {self.patience:.0f} s")
            with self._cond:
                done = {id(item) for item in (*due, *expired)}
                self._waiting = [w for w in self._waiting if id(w) not in done]
                self._cond.notify_all()  # close() may be waiting for the list to empty
                if self._waiting and not self._closed:
                    self._cond.wait(self.poll)

    @staticmethod
    def _give_up(item: _Waiting, why: str) -> None:
        log.error("run %s: %s not recorded: %s", item.run_id, item.what, why)
        if item.given_up is None:
            return
        try:
            item.given_up()
        except Exception:
            log.exception("run %s: telling that %s was not recorded failed", item.run_id, item.what)

    def _sort(self, waiting: list[_Waiting]) -> tuple[list[_Waiting], list[_Waiting]]:
        due: list[_Waiting] = []
        expired: list[_Waiting] = []
        now = time.monotonic()
        for item in waiting:
            try:
                ready = self.started(item.run_id)
            except Exception:  # a store that cannot be read now may answer at the next look
                log.warning("run %s: could not tell whether its ledger started", item.run_id)
                ready = False
            if ready:
                due.append(item)
            elif now > item.until:
                expired.append(item)
        return due, expired

    @staticmethod
    def _write(item: _Waiting) -> None:
        try:
            item.write()
        except Exception:
            log.exception("run %s: %s could not be recorded", item.run_id, item.what)
