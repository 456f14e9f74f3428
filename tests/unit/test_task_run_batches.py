"""The local API's task-run recorder in group commit (clampdown_flows.task_run_batches).

A fake stands in for Prefect's recorder module (its bulk write and ``RetryableEvent``), so
what is written, in which batches and in which order, is seen directly; the real recorder
with Prefect's database is exercised through the local API (whose server installs it) by
tests/integration/test_prefect_record.py: every task run recorded in its final state.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from clampdown_flows import task_run_batches
from clampdown_flows.task_run_batches import _GroupCommit


class Event(str):
    """A task-run event as far as the writer looks at one: its id."""

    @property
    def id(self) -> str:
        return str(self)


class Retryable:
    def __init__(self, event: Any) -> None:
        self.event = Event(event)
        self.persist_attempts = 0


class FakeRecorder:
    """Records each batch; the first ``fail`` calls raise; a call waits while ``hold``."""

    def __init__(self, fail: int = 0) -> None:
        self.batches: list[list[str]] = []
        self.fail = fail
        self.driver_cancels = 0
        self.hold: asyncio.Event | None = None
        self.started = asyncio.Event()
        self.RetryableEvent = Retryable

    async def record_bulk_task_run_events(self, events: list[str]) -> None:
        self.started.set()
        if self.hold is not None:
            await self.hold.wait()
        if self.fail:
            self.fail -= 1
            raise RuntimeError("database is locked")
        if self.driver_cancels:
            self.driver_cancels -= 1
            raise asyncio.CancelledError  # as database drivers surface a lost connection
        self.batches.append(list(events))


async def settle(writes: _GroupCommit) -> None:
    while writes.waiting or writes.wake.is_set():
        await asyncio.sleep(0)
    await asyncio.sleep(0)


def test_events_arriving_during_a_write_are_written_together_next() -> None:
    async def scenario() -> list[list[str]]:
        recorder = FakeRecorder()
        recorder.hold = asyncio.Event()
        writes = _GroupCommit(recorder, limit=500, max_persist_retries=5)
        task = asyncio.create_task(writes.run())
        writes.add("e1")
        await recorder.started.wait()  # e1 is being written
        for name in ("e2", "e3", "e4"):
            writes.add(name)
        recorder.hold.set()
        await settle(writes)
        task.cancel()
        return recorder.batches

    assert asyncio.run(scenario()) == [["e1"], ["e2", "e3", "e4"]]


def test_a_batch_is_at_most_the_limit() -> None:
    async def scenario() -> list[list[str]]:
        recorder = FakeRecorder()
        writes = _GroupCommit(recorder, limit=2, max_persist_retries=5)
        for name in ("a", "b", "c", "d", "e"):
            writes.waiting.append(Retryable(name))
        await writes.drain()
        return recorder.batches

    assert asyncio.run(scenario()) == [["a", "b"], ["c", "d"], ["e"]]


def test_a_failed_write_is_tried_again_first_and_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(task_run_batches, "RETRY_PAUSE", 0)

    async def scenario() -> list[list[str]]:
        recorder = FakeRecorder(fail=1)
        writes = _GroupCommit(recorder, limit=2, max_persist_retries=5)
        for name in ("a", "b", "c"):
            writes.waiting.append(Retryable(name))
        await writes.drain()
        return recorder.batches

    assert asyncio.run(scenario()) == [["a", "b"], ["c"]]


def test_an_event_is_dropped_after_its_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(task_run_batches, "RETRY_PAUSE", 0)

    async def scenario() -> tuple[list[list[str]], int]:
        recorder = FakeRecorder(fail=3)
        writes = _GroupCommit(recorder, limit=10, max_persist_retries=2)
        writes.waiting.append(Retryable("a"))
        await writes.drain()
        return recorder.batches, recorder.fail

    batches, fail_left = asyncio.run(scenario())
    assert batches == []
    assert fail_left == 0  # tried three times: the first write and two retries


def test_a_batch_cancelled_while_written_is_kept_for_the_next_write() -> None:
    async def scenario() -> list[list[str]]:
        recorder = FakeRecorder()
        recorder.hold = asyncio.Event()
        writes = _GroupCommit(recorder, limit=10, max_persist_retries=5)
        task = asyncio.create_task(writes.run())
        writes.add("a")
        writes.add("b")
        await recorder.started.wait()
        task.cancel()
        await asyncio.wait([task])
        recorder.hold = None
        await writes.drain()  # what the consumer does when the server stops
        return recorder.batches

    assert asyncio.run(scenario()) == [["a", "b"]]


def test_a_drivers_cancelled_error_is_a_failed_write_and_the_writer_lives_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Only the writer's own cancellation (the server stopping) ends it: a CancelledError
    from the database driver is retried like any failed write, and later events are
    still recorded."""
    monkeypatch.setattr(task_run_batches, "RETRY_PAUSE", 0)

    async def scenario() -> tuple[list[list[str]], bool]:
        recorder = FakeRecorder()
        recorder.driver_cancels = 1
        writes = _GroupCommit(recorder, limit=10, max_persist_retries=5)
        task = asyncio.create_task(writes.run())

        async def written(batches: int) -> None:  # bounded: a dead writer writes no more
            for _ in range(1000):
                if len(recorder.batches) >= batches or task.done():
                    return
                await asyncio.sleep(0)

        writes.add("a")
        writes.add("b")
        await written(1)
        writes.add("c")
        await written(2)
        alive = not task.done()
        task.cancel()
        await asyncio.wait([task])
        return recorder.batches, alive

    assert asyncio.run(scenario()) == ([["a", "b"], ["c"]], True)


def test_install_keeps_the_stock_recorder_when_prefect_changed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys

    fake = SimpleNamespace(consumer="stock")  # no bulk write, no RetryableEvent
    monkeypatch.setitem(sys.modules, "prefect.server.services.task_run_recorder", fake)
    services = SimpleNamespace(task_run_recorder=fake)
    monkeypatch.setitem(sys.modules, "prefect.server.services", services)
    assert task_run_batches.install() is False
    assert fake.consumer == "stock"
