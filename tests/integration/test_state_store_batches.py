"""The state store's group commit (writes waiting for the lock share one transaction and one
commit), its reads without the write lock, and runs' ends asked only at a runbook's limit;
on SQLite and on PostgreSQL alike (issue 15's 202 answer)."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from clampdown.core.state_store import StateStore
from tests.integration.test_state_store import claim, store, store_url  # noqa: F401 fixtures
from tests.pg import postgres_url  # noqa: F401  (session fixture)

THREADS = 12


def commits_of(store: StateStore) -> list[int]:  # noqa: F811 - the fixture's name
    counted: list[int] = []
    sa.event.listen(store.engine, "commit", lambda _conn: counted.append(1))
    return counted


def queued(store: StateStore, writes: int) -> None:  # noqa: F811
    """Wait until ``writes`` writes wait in the store's queue for the batch after the one
    being committed (what a fixed sleep used to stand for)."""
    deadline = time.monotonic() + 30
    while len(store._queue) < writes:
        assert time.monotonic() < deadline, f"{len(store._queue)} of {writes} writes queued"
        time.sleep(0.002)


def queued_behind_a_slow_start(
    store: StateStore,  # noqa: F811
    on_start: Any,
) -> tuple[dict[int, Any], dict[int, BaseException]]:
    """The first claim's start record takes until every other claim (THREADS - 1 of them)
    is in the queue behind its batch. Each thread claims incident ``n``."""
    leading = threading.Event()
    answers: dict[int, Any] = {}
    errors: dict[int, BaseException] = {}

    def slow_first() -> None:
        leading.set()  # the first claim's batch is being committed: it leads alone
        queued(store, THREADS - 1)

    def worker(n: int) -> None:
        try:
            answers[n] = claim(
                store,
                f"incident-{n}",
                run_id=f"run-{n}",
                on_start=slow_first if n == 0 else (lambda: on_start(n)),
            )
        except BaseException as exc:
            errors[n] = exc

    first = threading.Thread(target=worker, args=(0,))
    first.start()
    assert leading.wait(30)  # the first claim leads its own batch
    others = [threading.Thread(target=worker, args=(n,)) for n in range(1, THREADS)]
    for t in others:
        t.start()
    for t in [first, *others]:
        t.join(60)
    return answers, errors


def test_writes_queued_behind_a_batch_share_one_commit(store: StateStore) -> None:  # noqa: F811
    commits = commits_of(store)
    running, most = 0, 0
    lock = threading.Lock()

    def start_record(_n: int) -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.05)
        with lock:
            running -= 1

    answers, errors = queued_behind_a_slow_start(store, start_record)
    assert errors == {}
    assert {n: (a.status, a.run_id) for n, a in answers.items()} == {
        n: ("started", f"run-{n}") for n in range(THREADS)
    }
    assert len(commits) == 2  # the first claim's batch, then all the others' in one
    assert most > 1  # the batch's start records were written at once, not one by one
    assert sorted(store.active_run_ids()) == sorted(f"run-{n}" for n in range(THREADS))


def test_a_start_that_fails_in_a_batch_fails_only_its_claim(store: StateStore) -> None:  # noqa: F811
    recorded: dict[int, int] = {}
    lock = threading.Lock()

    def start_record(n: int) -> None:
        if n == 5:
            raise OSError(28, "No space left on device")
        with lock:
            recorded[n] = recorded.get(n, 0) + 1

    answers, errors = queued_behind_a_slow_start(store, start_record)
    assert list(errors) == [5] and "No space left" in str(errors[5])
    assert {n: a.status for n, a in answers.items()} == {
        n: "started" for n in range(THREADS) if n != 5
    }
    # the batch rolled back and ran again without it: the others' records written again
    assert set(recorded) == set(range(1, THREADS)) - {5}
    assert all(count in (1, 2) for count in recorded.values())
    assert sorted(store.active_run_ids()) == sorted(f"run-{n}" for n in range(THREADS) if n != 5)
    retry = claim(store, "incident-5", run_id="run-5b", on_start=lambda: None)
    assert (retry.status, retry.run_id) == ("started", "run-5b")  # nothing of it was kept


def test_deliveries_and_claims_of_one_batch_see_each_other(store: StateStore) -> None:  # noqa: F811
    """Writes of one batch run in order in one transaction: the second of two alerts of one
    incident is a duplicate, a delivery id seen twice is a replay, as if they took turns."""
    gate = threading.Event()
    holding = threading.Event()
    results: list[Any] = []

    def hold_the_lock() -> None:
        holding.set()
        gate.wait(30)

    def lead() -> None:
        claim(store, "lead", run_id="run-lead", on_start=hold_the_lock)

    leader = threading.Thread(target=lead)
    leader.start()
    assert holding.wait(30)  # the leader's batch is being committed
    calls = [
        lambda: claim(store, "same", run_id="run-1", on_start=lambda: None),
        lambda: claim(store, "same", run_id="run-2", on_start=lambda: None),
        lambda: store.first_seen("delivery-1", 60),
        lambda: store.first_seen("delivery-1", 60),
    ]
    threads = []
    for n, call in enumerate(calls, 1):  # queued in this order behind the leader's batch
        t = threading.Thread(target=lambda c=call: results.append(c()))
        t.start()
        threads.append(t)
        queued(store, n)
    gate.set()
    for t in [leader, *threads]:
        t.join(30)
    statuses = sorted(
        (r.status, r.run_id) if hasattr(r, "status") else ("seen", r) for r in results
    )
    assert statuses == [
        ("duplicate", "run-1"),
        ("seen", False),
        ("seen", True),
        ("started", "run-1"),
    ]


def test_reads_take_no_write_lock(tmp_path: Path) -> None:
    """While another process holds SQLite's write lock (a long decision), a read answers at
    once; it used to queue for the lock (BEGIN IMMEDIATE) like a write. (SQLite only:
    PostgreSQL's reads never took the decisions' advisory lock.)"""
    url = f"sqlite:///{tmp_path / 'state.sqlite3'}"
    s = StateStore(url)
    claim(s, "k", run_id="run-1", on_start=lambda: None)
    s.hold(runbook="rb", trigger="t", dedup_key="k", alert={"id": "a"}, reason="why")
    other = sqlite3.connect(tmp_path / "state.sqlite3", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        answered: list[Any] = []
        reader = threading.Thread(
            target=lambda: answered.extend([s.active_run_ids(), len(s.held_alerts())])
        )
        reader.start()
        reader.join(10)  # the busy timeout is 60 s: a read that waited for the lock is late
        assert answered == [["run-1"], 1]
    finally:
        other.execute("ROLLBACK")
        other.close()
        s.close()


def test_runs_ended_are_asked_only_at_the_limit(store: StateStore) -> None:  # noqa: F811
    asked: list[str] = []
    ended: set[str] = set()

    def is_finished(run_id: str) -> bool:
        asked.append(run_id)
        return run_id in ended

    def start(key: str, run_id: str) -> Any:
        return claim(
            store, key, run_id=run_id, on_start=lambda: None, max_runs=3, is_finished=is_finished
        )

    assert [start(f"k{n}", f"run-{n}").status for n in range(3)] == ["started"] * 3
    assert asked == []  # below the limit the answer did not depend on it
    full = start("k3", "run-3")
    assert (full.status, full.active) == ("full", 3)
    assert sorted(asked) == ["run-0", "run-1", "run-2"]
    ended.add("run-1")
    assert start("k3", "run-3").status == "started"
    assert sorted(store.active_run_ids()) == ["run-0", "run-2", "run-3"]
