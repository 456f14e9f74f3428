"""Keys remembered for a while, in memory: the one implementation behind the in-memory
replay logs of alerts (``clampdown_alerts.replay.InMemoryDeliveryLog``) and Slack
requests (``clampdown_slack.app.MemorySeen``).

Why in the core: the two providers must not import each other (import-linter), and both
need the same small thing — a thread-safe, bounded "seen before, and not yet expired?"
check. The persistent store (:class:`clampdown.core.state_store.StateStore`) answers the
same two questions across restarts.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

PRUNE_AT = 1024  # entries kept before expired ones are swept out on the next insert


class ExpiringKeys:
    """``first_seen`` records a key for ``ttl_seconds``; ``forget`` drops it.

    Thread-safe and atomic (one lock); expired keys are pruned as new ones arrive once
    more than :data:`PRUNE_AT` are held, so memory stays bounded by the live keys.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._expiry: dict[str, float] = {}
        self._lock = threading.Lock()

    def first_seen(self, key: str, ttl_seconds: float) -> bool:
        """Record ``key``; True unless it was recorded already and has not expired."""
        now = self._clock()
        with self._lock:
            if self._expiry.get(key, 0.0) > now:
                return False
            if len(self._expiry) >= PRUNE_AT:
                self._expiry = {k: e for k, e in self._expiry.items() if e > now}
            self._expiry[key] = now + ttl_seconds
            return True

    def forget(self, key: str) -> None:
        """Drop ``key``: its delivery failed on our side and a retry must be accepted."""
        with self._lock:
            self._expiry.pop(key, None)
