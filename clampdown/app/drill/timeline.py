"""The drill's clock and what the drill saw on it, as it happened.

The drill's threads (the run follower, the timed injects, the Slack watch) all
write here, so every change goes through one lock, and readers get copies.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from rich.console import Console

from clampdown.core.report import Marker


@dataclass
class Clock:
    """The drill's clock: seconds since the alert was posted (T+0)."""

    alert_epoch: float = 0.0

    def start(self) -> None:
        """T+0: the alert is being posted now."""
        self.alert_epoch = time.time()

    def now(self) -> float:
        return time.time() - self.alert_epoch


class Timeline:
    """Markers, failures, notes and the facts the drill learns along the way.

    ``mark`` and ``say`` also print the line at the terminal (``T+1.2s  …``); the
    rest is only kept, for the after-action report.
    """

    def __init__(self, clock: Clock, console: Console) -> None:
        self.clock = clock
        self._console = console
        self._lock = threading.Lock()
        self._markers: list[Marker] = []
        self._failures: list[str] = []
        self._notes: list[str] = []
        self._posted_alerts: list[str] = []  # ids the alert endpoint accepted
        self._new_keys: list[str] = []  # access keys the attacker minted
        self._notified_at: float | None = None

    # --- writing (any thread) -------------------------------------------------------------

    def mark(self, at: float, label: str) -> None:
        """A moment of the drill, on the report's timeline and at the terminal."""
        with self._lock:
            self._markers.append(Marker(at, label))
        self._console.print(f"T+{at:.1f}s  {label}")

    def say(self, at: float, text: str) -> None:
        """A line at the terminal only (not on the report's timeline)."""
        self._console.print(f"T+{at:.1f}s  {text}")

    def fail(self, failure: str) -> None:
        with self._lock:
            self._failures.append(failure)

    def note(self, note: str) -> None:
        with self._lock:
            self._notes.append(note)

    def alerts_accepted(self, ids: list[str]) -> None:
        with self._lock:
            self._posted_alerts += ids

    def key_minted(self, key_id: str) -> None:
        with self._lock:
            self._new_keys.append(key_id)

    def notified(self, at: float) -> None:
        """The first message reached Slack at ``at`` (later calls change nothing)."""
        with self._lock:
            if self._notified_at is None:
                self._notified_at = at

    # --- reading (copies) -----------------------------------------------------------------

    @property
    def markers(self) -> list[Marker]:
        with self._lock:
            return list(self._markers)

    @property
    def failures(self) -> list[str]:
        with self._lock:
            return list(self._failures)

    @property
    def notes(self) -> list[str]:
        with self._lock:
            return list(self._notes)

    @property
    def posted_alerts(self) -> list[str]:
        with self._lock:
            return list(self._posted_alerts)

    @property
    def new_keys(self) -> list[str]:
        with self._lock:
            return list(self._new_keys)

    @property
    def notified_at(self) -> float | None:
        with self._lock:
            return self._notified_at
