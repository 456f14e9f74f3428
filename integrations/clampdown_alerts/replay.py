"""Replay protection: a captured request, sent again, must start nothing.

Two checks, both bounded by ``CLAMPDOWN_REPLAY_WINDOW`` (default 5 minutes):

* the message's own timestamp (SNS ``Timestamp``, generic ``X-Clampdown-Timestamp``,
  EventBridge ``time``, PagerDuty ``occurred_at``) must lie inside the window, so an old
  capture is refused without remembering anything;
* its delivery id must not have been seen inside the window (:class:`DeliveryLog`), so a
  capture replayed at once is refused too. Ids are recorded only after authentication,
  so forged requests cannot burn a genuine id.

The in-memory log forgets on restart; a persistent log (SQLite/PostgreSQL) implements
the same :class:`DeliveryLog` protocol for ``clampdown serve`` across restarts.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

from clampdown_alerts.errors import Unauthenticated


@runtime_checkable
class DeliveryLog(Protocol):
    """Remembers delivery ids for a while. Implementations must be thread-safe and atomic."""

    def first_seen(self, key: str, ttl_seconds: float) -> bool:
        """Record ``key`` for ``ttl_seconds``; True if it was not already recorded (unexpired)."""
        ...

    def forget(self, key: str) -> None:
        """Drop ``key``: the delivery failed on our side and its retry must be accepted."""
        ...


class InMemoryDeliveryLog:
    """A :class:`DeliveryLog` in a dict; expired keys are pruned as new ones arrive."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._expiry: dict[str, float] = {}
        self._lock = threading.Lock()

    def first_seen(self, key: str, ttl_seconds: float) -> bool:
        now = self._clock()
        with self._lock:
            expiry = self._expiry.get(key)
            if expiry is not None and expiry > now:
                return False
            if len(self._expiry) > 1024:
                self._expiry = {k: e for k, e in self._expiry.items() if e > now}
            self._expiry[key] = now + ttl_seconds
            return True

    def forget(self, key: str) -> None:
        with self._lock:
            self._expiry.pop(key, None)


def check_fresh(sent_at: datetime, now: datetime, window: float, what: str) -> None:
    """Refuse a message whose own timestamp is further than ``window`` seconds from now."""
    if sent_at.tzinfo is None:
        sent_at = sent_at.replace(tzinfo=UTC)
    skew = abs((now - sent_at).total_seconds())
    if skew > window:
        raise Unauthenticated(
            f"{what} is {skew:.0f} s away from the server's clock; the replay window is "
            f"{window:.0f} s (a replayed or long-delayed message)"
        )
