"""Replay protection: a captured request, sent again, must start nothing; a late one must.

Senders retry for hours (EventBridge API destinations up to 24 h, SNS per its delivery
policy, PagerDuty for hours), so a delivery that arrives late after an outage of serve is
genuine and must be accepted once. The delivery id does the work:

* its delivery id (SNS ``MessageId``, EventBridge ``id``, PagerDuty ``event.id``, the
  generic signed timestamp and body) must not have been seen (:class:`DeliveryLog`); ids
  are kept for ``CLAMPDOWN_DELIVERY_RETENTION`` (default 24 h) plus the clock skew allowed.
  Ids are recorded only after authentication, so forged requests cannot burn a genuine id;
* the message's own timestamp is used only against replays the id log cannot catch: a
  message older than the retention is refused (its id may have been forgotten), and one
  more than ``CLAMPDOWN_REPLAY_WINDOW`` (default 5 minutes) ahead of the server's clock is
  refused (it would outlive its id in the log).

The in-memory log forgets on restart; a persistent log (SQLite/PostgreSQL) implements
the same :class:`DeliveryLog` protocol for ``clampdown serve`` across restarts.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

from clampdown.core.expiring_keys import ExpiringKeys
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


class InMemoryDeliveryLog(ExpiringKeys):
    """A :class:`DeliveryLog` in memory (forgets on restart); expired keys are pruned as
    new ones arrive."""


def check_fresh(
    sent_at: datetime, now: datetime, max_age: float, what: str, max_ahead: float | None = None
) -> None:
    """Refuse a message older than ``max_age`` seconds (the id retention: its id may have
    been forgotten) or more than ``max_ahead`` (default ``max_age``) seconds in the future."""
    if sent_at.tzinfo is None:
        sent_at = sent_at.replace(tzinfo=UTC)
    refuse_stale((now - sent_at).total_seconds(), max_age, what, max_ahead)


def refuse_stale(age: float, max_age: float, what: str, max_ahead: float | None = None) -> None:
    """The one rule for timestamps, in seconds: ``age`` (now - sent) must be in bounds."""
    ahead = max_age if max_ahead is None else max_ahead
    if age > max_age:
        raise Unauthenticated(
            f"{what} is {age:.0f} s away from the server's clock, older than the "
            f"{max_age:.0f} s delivery id retention (CLAMPDOWN_DELIVERY_RETENTION): its id may "
            "have been forgotten, so it is refused as a possible replay; send it again as a new "
            "delivery"
        )
    if -age > ahead:
        raise Unauthenticated(
            f"{what} is {-age:.0f} s away from the server's clock, ahead of it by more than "
            f"the {ahead:.0f} s allowed (CLAMPDOWN_REPLAY_WINDOW): check the sender's clock"
        )
