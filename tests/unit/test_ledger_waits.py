"""LedgerWaits: a record waits for its run's first record, and is never dropped silently."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from clampdown_flows.ledger_waits import LedgerWaits


def until(condition, bound: float = 10.0) -> bool:
    deadline = time.monotonic() + bound
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.005)
    return condition()


def test_a_record_is_written_once_its_run_has_started_and_only_then() -> None:
    started: set[str] = set()
    written: list[str] = []
    waits = LedgerWaits(lambda run_id: run_id in started, poll=0.005)
    waits.add("run-a", "link to b", lambda: written.append("a"))
    waits.add("run-c", "link to d", lambda: written.append("c"))
    time.sleep(0.05)  # several polls: neither run has started
    assert written == [] and sorted(waits.pending()) == ["run-a", "run-c"]
    started.add("run-c")
    assert until(lambda: written == ["c"])
    assert waits.pending() == ["run-a"]
    started.add("run-a")
    assert until(lambda: written == ["c", "a"])
    assert waits.pending() == []
    waits.close(grace=0)


def test_a_run_that_never_starts_is_given_up_with_an_error_naming_it(caplog) -> None:
    caplog.set_level(logging.ERROR, "clampdown.triage")
    waits = LedgerWaits(lambda run_id: False, patience=0.02, poll=0.005)
    waits.add("run-x", "alert.correlated (related run y)", lambda: pytest.fail("written"))
    assert until(lambda: waits.pending() == [])
    assert "run run-x: alert.correlated (related run y) not recorded" in caplog.text
    assert "did not start within" in caplog.text
    waits.close(grace=0)


def test_close_writes_what_starts_within_the_grace_and_names_the_rest(caplog) -> None:
    caplog.set_level(logging.ERROR, "clampdown.triage")
    started: set[str] = set()
    written: list[str] = []
    waits = LedgerWaits(lambda run_id: run_id in started, poll=0.005)
    waits.add("soon", "link", lambda: written.append("soon"))
    waits.add("never", "link", lambda: written.append("never"))
    threading.Timer(0.01, started.add, ("soon",)).start()
    waits.close(grace=1.0)
    assert written == ["soon"]
    assert "run never: link not recorded: its run had not started when serve stopped" in (
        caplog.text
    )
    waits.add("late", "link", lambda: written.append("late"))  # after close: said, not kept
    assert "run late: link not recorded: serve is stopping" in caplog.text
    assert waits.pending() == []


def test_a_failing_write_is_logged_and_does_not_stop_the_others(caplog) -> None:
    caplog.set_level(logging.ERROR, "clampdown.triage")
    written: list[str] = []

    def broken() -> None:
        raise OSError("No space left on device")

    waits = LedgerWaits(lambda run_id: True, poll=0.005)
    waits.add("full", "link", broken)
    waits.add("fine", "link", lambda: written.append("fine"))
    assert until(lambda: written == ["fine"] and waits.pending() == [])
    assert "run full: link could not be recorded" in caplog.text
    waits.close(grace=0)


def test_a_record_given_up_is_told_to_its_given_up_hook_however_it_is_given_up() -> None:
    """Expired, left when serve stops, added after: each is told once (the triage holds
    the alert then: said to people, not only logged); a record written is not told."""
    told: list[str] = []
    started: set[str] = set()
    expiring = LedgerWaits(lambda run_id: False, patience=0.02, poll=0.005)
    expiring.add("expired", "joined", lambda: None, given_up=lambda: told.append("expired"))
    assert until(lambda: told == ["expired"])
    expiring.close(grace=0)
    waits = LedgerWaits(lambda run_id: run_id in started, poll=0.005)
    waits.add("written", "joined", lambda: None, given_up=lambda: told.append("written"))
    started.add("written")
    assert until(lambda: waits.pending() == [])
    waits.add("left", "joined", lambda: None, given_up=lambda: told.append("left"))
    waits.close(grace=0)
    waits.add("late", "joined", lambda: None, given_up=lambda: told.append("late"))
    assert told == ["expired", "left", "late"]
