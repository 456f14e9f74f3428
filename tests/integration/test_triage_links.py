"""Correlated runs are linked whatever the order their runs get going in.

Both ways a link used to be lost under load: the run an alert had just launched wrote
``run.start`` later than the triage's fixed wait (the record was dropped, the answer
delayed by that wait), and a run still being set up (recorded, no ``run.start`` yet) was
not found as related at all. Here each run's first ledger record waits on an event the
test releases, so the order is forced, not raced.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from clampdown.core.ledger import read, verify_file
from clampdown.core.run_start import RunStart
from clampdown.core.settings import settings
from clampdown.core.state_store import StateStore
from clampdown_flows.triage import TriggerTriage
from tests.integration.test_triage import (
    SHIPPED,
    FakeStarter,
    RecordingFakeStarter,
    ledger_of,
    make_alert,
    principal,
    stop_logging,
)
from tests.integration.test_triage import state_url as state_url


class HeldRuns:
    """Runs write ``run.start`` only once the test releases them (one event per run)."""

    def __init__(self) -> None:
        self.gates: dict[str, threading.Event] = {}
        self.lock = threading.Lock()

    def gate(self, run_id: str) -> threading.Event:
        with self.lock:
            return self.gates.setdefault(run_id, threading.Event())

    def release(self, run_id: str) -> None:
        self.gate(run_id).set()


class HeldStarter(FakeStarter):
    def __init__(self, held: HeldRuns) -> None:
        super().__init__(delay=0)
        self.held = held

    def _write(self, run_id: str, runbook: Path, inputs: dict, trigger: dict) -> None:
        assert self.held.gate(run_id).wait(60), f"run {run_id} was never released"
        super()._write(run_id, runbook, inputs, trigger)


class HeldRecordingStarter(RecordingFakeStarter):
    """Serve's way: the start record written inside the claim, run.start by the run later."""

    def __init__(self, state_url: str, held: HeldRuns) -> None:
        super().__init__(state_url, delay=0)
        self.held = held

    def prepare(self, runbook: Path, inputs: dict[str, Any], trigger: dict[str, Any], **kw: Any):
        prepared = super().prepare(runbook, inputs, trigger, **kw)
        real_record = prepared.record

        def record() -> None:
            real_record()
            start = RunStart.of(prepared.run_id, str(runbook), inputs, trigger)
            start.save(settings().paths.run(prepared.run_id))

        prepared.record = record
        return prepared

    def _write(self, run_id: str, runbook: Path, inputs: dict, trigger: dict) -> None:
        assert self.held.gate(run_id).wait(60), f"run {run_id} was never released"
        super()._write(run_id, runbook, inputs, trigger)


def links(run_id: str) -> list[tuple[str, str]]:
    path = ledger_of(run_id)
    if not path.is_file():
        return []
    return [
        (r["related_run"], r["related_runbook"])
        for r in read(path)
        if r["type"] == "alert.correlated"
    ]


def wait_for_links(run_id: str, bound: float = 30.0) -> list[tuple[str, str]]:
    """The run's links once it has one (a bound for the event, not a timing check)."""
    deadline = time.monotonic() + bound
    while not links(run_id) and time.monotonic() < deadline:
        time.sleep(0.02)
    return links(run_id)


def triage_of(state_url: str, starter: FakeStarter) -> TriggerTriage:
    return TriggerTriage(
        SHIPPED / "triggers.yaml",
        StateStore(state_url),
        starter,
        ledger_of,
        library=SHIPPED,
        runs=settings().paths,
    )


def test_a_run_that_writes_run_start_late_still_gets_its_link_and_the_answer_does_not_wait(
    state_url,
) -> None:
    held = HeldRuns()
    starter = HeldStarter(held)
    triage = triage_of(state_url, starter)
    who = principal(21)
    evidence = triage(stop_logging(who))
    held.release(evidence.run_id)
    starter.join()
    contain = triage(make_alert("guardduty", "gd-21", who))
    assert contain.status == "started", contain
    assert f"related to run {evidence.run_id} (preserve-evidence)" in contain.reason
    # answered while the new run has not written anything (its gate is still closed)
    assert not ledger_of(contain.run_id).exists()
    assert links(evidence.run_id) == [(contain.run_id, "contain-iam-user")]
    held.release(contain.run_id)
    starter.join()
    assert wait_for_links(contain.run_id) == [(evidence.run_id, "preserve-evidence")]
    assert read(ledger_of(contain.run_id))[0]["type"] == "run.start"
    assert verify_file(ledger_of(contain.run_id)).ok
    triage.close()


def test_a_run_still_being_set_up_is_found_from_its_start_record(state_url) -> None:
    held = HeldRuns()
    starter = HeldRecordingStarter(state_url, held)
    triage = triage_of(state_url, starter)
    who = principal(22)
    evidence = triage(stop_logging(who))
    assert evidence.status == "started" and not ledger_of(evidence.run_id).exists()
    contain = triage(make_alert("guardduty", "gd-22", who))
    assert contain.status == "started", contain
    assert f"related to run {evidence.run_id} (preserve-evidence)" in contain.reason
    for run_id in (evidence.run_id, contain.run_id):
        held.release(run_id)
    starter.join()
    assert wait_for_links(evidence.run_id) == [(contain.run_id, "contain-iam-user")]
    assert wait_for_links(contain.run_id) == [(evidence.run_id, "preserve-evidence")]
    for run_id in (evidence.run_id, contain.run_id):
        assert read(ledger_of(run_id))[0]["type"] == "run.start"
        assert verify_file(ledger_of(run_id)).ok
    triage.close()


def joined_records(run_id: str) -> list[dict[str, Any]]:
    path = ledger_of(run_id)
    return [r for r in read(path) if r["type"] == "alert.joined"] if path.is_file() else []


def test_an_alert_repeating_a_run_not_started_yet_is_recorded_once_it_has(state_url) -> None:
    """The same alert again while its run is still being set up (no ``run.start``): the
    answer says so at once, and the repeat is in the run's ledger once the run starts. It
    used to wait a fixed time on the request path, then hold the alert and drop the
    record while the answer still said it repeated the run (seen in a drill at load 20)."""
    held = HeldRuns()
    starter = HeldStarter(held)
    triage = triage_of(state_url, starter)
    who = principal(23)
    first = triage(make_alert("guardduty", "gd-23", who))
    assert first.status == "started", first
    again = triage(make_alert("guardduty", "gd-23", who))
    assert (again.status, again.run_id) == ("deduplicated", first.run_id), again
    assert not ledger_of(first.run_id).exists()  # answered before the run wrote anything
    held.release(first.run_id)
    starter.join()
    deadline = time.monotonic() + 30  # a bound for the event, not a timing check
    while not joined_records(first.run_id) and time.monotonic() < deadline:
        time.sleep(0.02)
    [joined] = joined_records(first.run_id)
    assert joined["how"] == "deduplicated" and joined["alert"]["id"] == "gd-23", joined
    assert read(ledger_of(first.run_id))[0]["type"] == "run.start"
    assert verify_file(ledger_of(first.run_id)).ok
    triage.close()
