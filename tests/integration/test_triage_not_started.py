"""The triage when something it needs cannot be written or asked: the alert is never lost and
the answer never lies (RunNotStarted / LedgerWriteError go up to the endpoint: 503)."""

from __future__ import annotations

import errno
import logging
import time
from typing import Any

import pytest

from clampdown.core.ledger import LedgerWriteError, read
from clampdown.core.runs import RunNotStarted
from clampdown.core.state_store import StateStore
from clampdown_flows import triage as triage_mod
from clampdown_flows.triage import TriggerTriage
from tests.integration.test_triage import (  # noqa: F401 - state_url is a fixture
    FakeStarter,
    ledger_of,
    make_alert,
    principal,
    shipped_triage,
    state_url,
    stop_logging,
    triggers_file,
)


def full_disk_for(kind: str, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """``append_to`` refuses records of ``kind`` as a full disk would; the refused runs."""
    real = triage_mod.append_to
    refused: list[str] = []

    def append_to(path: Any, type_: str, **fields: Any) -> dict[str, Any]:
        if type_ == kind:
            refused.append(path.parent.name)
            raise LedgerWriteError.of(path, type_, OSError(errno.ENOSPC, "No space left on device"))
        return real(path, type_, **fields)

    monkeypatch.setattr(triage_mod, "append_to", append_to)
    return refused


def test_a_related_run_that_cannot_be_noted_does_not_undo_a_started_run(
    state_url: str,  # noqa: F811 - the fixture imported above
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The containment run has started when its link to the evidence run is written: a
    full disk there is logged, and the answer stays "started" (not a 503 that would make
    the sender's retry look like a new incident)."""
    starter = FakeStarter(delay=0)
    triage = shipped_triage(state_url, starter)
    who = principal(3)
    evidence = triage(stop_logging(who))
    starter.join()
    refused = full_disk_for("alert.correlated", monkeypatch)
    with caplog.at_level(logging.ERROR, "clampdown.triage"):
        contain = triage(make_alert("guardduty", "gd-3", who))
        starter.join()
        deadline = time.monotonic() + 30  # the new run's link is tried once its run.start is
        while len(refused) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    assert contain.status == "started" and contain.trigger == "guardduty-iam-user"
    assert sorted(refused) == sorted([evidence.run_id, contain.run_id])
    assert "could not be recorded" in caplog.text and "No space left on device" in caplog.text


def test_a_joining_alert_whose_ledger_is_full_is_retried_and_then_recorded(
    state_url: str,  # noqa: F811 - the fixture imported above
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    starter = FakeStarter(delay=0)
    triage = shipped_triage(state_url, starter)
    who = principal(4)
    first = triage(make_alert("guardduty", "gd-4", who))
    starter.join()
    real = triage_mod.append_to
    full_disk_for("alert.joined", monkeypatch)
    joining = make_alert("pagerduty", "pd-4", who, type="incident.triggered")
    with pytest.raises(LedgerWriteError):  # the endpoint answers 503: the sender retries
        triage(joining)
    monkeypatch.setattr(triage_mod, "append_to", real)  # space freed
    again = triage(joining)
    assert (again.status, again.run_id) == ("deduplicated", first.run_id)
    joined = [r for r in read(ledger_of(first.run_id)) if r["type"] == "alert.joined"]
    assert [r["alert"]["id"] for r in joined] == ["pd-4"]
    assert len(starter.calls) == 1


def test_a_run_count_that_cannot_be_asked_reserves_nothing(
    triggers_file: Any,  # noqa: F811 - the fixture imported above
    state_url: str,  # noqa: F811 - the fixture imported above
) -> None:
    """Deployment mode's is_finished raises RunNotStarted while Prefect is down: when the
    slots' count needs its answer (the runbook at its limit), the decision is rolled back,
    so the next try (Prefect back, the first run ended) starts the run."""
    starter = FakeStarter(delay=0)
    prefect_up = True
    ended: set[str] = set()

    def is_finished(run_id: str) -> bool:
        if not prefect_up:
            raise RunNotStarted("could not ask whether run x has ended: unreachable")
        return run_id in ended

    store = StateStore(state_url)
    triage = TriggerTriage(
        triggers_file(max_runs=1), store, starter, ledger_of, is_finished=is_finished
    )
    first = triage(make_alert("guardduty", "gd-5", principal(5)))
    assert first.status == "started"
    prefect_up = False
    alert = make_alert("guardduty", "gd-6", principal(6))
    with pytest.raises(RunNotStarted):
        triage(alert)
    prefect_up = True
    assert first.run_id is not None
    ended.add(first.run_id)
    assert triage(alert).status == "started"
    starter.join()
    assert len(starter.calls) == 2 and store.held_alerts() == []
