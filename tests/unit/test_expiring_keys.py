"""The in-memory replay log shared by the alert and Slack providers."""

from __future__ import annotations

from clampdown.core.expiring_keys import PRUNE_AT, ExpiringKeys
from clampdown_alerts import InMemoryDeliveryLog
from clampdown_slack.app import MemorySeen


def test_a_key_is_seen_once_until_it_expires() -> None:
    now = [100.0]
    keys = ExpiringKeys(clock=lambda: now[0])
    assert keys.first_seen("a", 10) is True
    assert keys.first_seen("a", 10) is False
    now[0] += 9.9
    assert keys.first_seen("a", 10) is False
    now[0] += 0.2
    assert keys.first_seen("a", 10) is True


def test_forget_lets_a_retry_in() -> None:
    keys = ExpiringKeys()
    assert keys.first_seen("delivery", 60)
    keys.forget("delivery")
    keys.forget("never-seen")
    assert keys.first_seen("delivery", 60)


def test_expired_keys_are_pruned_so_memory_is_bounded_by_live_keys() -> None:
    now = [0.0]
    keys = ExpiringKeys(clock=lambda: now[0])
    for i in range(PRUNE_AT):
        keys.first_seen(f"old-{i}", 1)
    now[0] = 5.0
    keys.first_seen("live", 60)
    assert len(keys._expiry) == 1
    assert keys.first_seen("live", 60) is False


def test_both_providers_use_it() -> None:
    assert issubclass(InMemoryDeliveryLog, ExpiringKeys)
    assert issubclass(MemorySeen, ExpiringKeys)
