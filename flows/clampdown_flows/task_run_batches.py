"""The local API's task-run recorder writes every task-run event waiting as one batch.

Prefect 3 records a task run from the events its client emits (``prefect.task-run.Pending``,
``…Running``, ``…Completed``): the server's task-run recorder
(``prefect.server.services.task_run_recorder``) turns them into task-run rows and states.
Its default batch is one event (``PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE=1``):
one database transaction per event, three per step, each a ``BEGIN IMMEDIATE``, an
existence check, an upsert, a state insert and a commit on SQLite. A larger batch size
makes an event wait until the batch is full or for the next periodic flush (whole
seconds): commands that wait for Prefect's record before they return
(:mod:`clampdown_flows.prefect_record`) would wait that long too.

So the local API's recorder (:func:`install`, from
:func:`clampdown_flows.prefect_api.create_app`) writes in group commit instead: a writer
task takes every event waiting when it gets to run, and writes them with Prefect's own
bulk function (``record_bulk_task_run_events``: duplicates of one task run coalesced, the
latest state kept, every state inserted), one transaction. An event that arrives alone is
written at once, as before; events that arrive while a batch is being written form the
next one. The same rows and states are written as with Prefect's consumer; failed batches
are retried the way Prefect retries them (``persist_attempts``, then dropped with an
error logged), and what is waiting when the server stops is written before it stops.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

logger = logging.getLogger("clampdown.prefect")

BATCH_LIMIT = 500  # events per transaction at most (a burst's backlog in a few)
RETRY_PAUSE = 1.0  # seconds before a failed batch is tried again (the database is busy or down)
TASK_RUN_EVENT = "prefect.task-run"


def install() -> bool:
    """Make this server process's task-run recorder write in group commit; False (and the
    stock recorder kept) if Prefect's recorder is not the one this was written for."""
    from prefect.server.services import task_run_recorder as recorder

    needed = ("consumer", "record_bulk_task_run_events", "RetryableEvent")
    if not all(hasattr(recorder, name) for name in needed):
        logger.warning("Prefect's task-run recorder has changed; it writes one event at a time")
        return False
    recorder.consumer = grouped_consumer
    return True


class _GroupCommit:
    """Task-run events waiting to be recorded, and the writer that records them."""

    def __init__(self, recorder: Any, limit: int, max_persist_retries: int) -> None:
        self.recorder = recorder
        self.limit = limit
        self.max_persist_retries = max_persist_retries
        self.waiting: list[Any] = []  # RetryableEvent, in arrival order
        self.wake = asyncio.Event()

    def add(self, event: Any) -> None:
        self.waiting.append(self.recorder.RetryableEvent(event=event))
        self.wake.set()

    async def run(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            await self.drain()

    async def drain(self) -> None:
        while self.waiting:
            batch = self.waiting[: self.limit]
            del self.waiting[: self.limit]
            await self._write(batch)

    async def _write(self, batch: list[Any]) -> None:
        try:
            await self.recorder.record_bulk_task_run_events([item.event for item in batch])
        except (Exception, asyncio.CancelledError) as exc:  # drivers raise CancelledError too
            kept = [item for item in batch if self._again(item)]
            self.waiting[:0] = kept  # first again, in their order
            writer = asyncio.current_task()
            if isinstance(exc, asyncio.CancelledError) and writer and writer.cancelling():
                raise  # the server is stopping: the consumer's exit writes what waits
            # else a driver's CancelledError (a lost connection) is a failed write like
            # any other: the writer must live on, or nothing more would be recorded
            logger.error(
                "could not record %d task-run events (%d to retry)",
                len(batch),
                len(kept),
                exc_info=True,
            )
            await asyncio.sleep(RETRY_PAUSE)

    def _again(self, item: Any) -> bool:
        item.persist_attempts += 1
        if item.persist_attempts <= self.max_persist_retries:
            return True
        logger.error(
            "dropping task-run event %s after %d failed attempts",
            item.event.id,
            item.persist_attempts,
        )
        return False


@asynccontextmanager
async def grouped_consumer(
    write_batch_size: int, flush_every: int, max_persist_retries: int = 5
) -> AsyncIterator[Callable[[Any], Awaitable[None]]]:
    """What ``TaskRunRecorder.start`` enters instead of Prefect's ``consumer``: the same
    message handler (task-run events the client emitted, others ignored), with the writes
    done by one writer task in group commit. ``flush_every`` has no use here: nothing
    waits for a timer."""
    from prefect.server.events.schemas.events import ReceivedEvent
    from prefect.server.services import task_run_recorder as recorder

    writes = _GroupCommit(recorder, max(write_batch_size, BATCH_LIMIT), max_persist_retries)

    async def message_handler(message: Any) -> None:
        event = ReceivedEvent.model_validate_json(message.data)
        if event.event.startswith(TASK_RUN_EVENT) and (
            event.resource.get("prefect.orchestration") == "client"
        ):
            writes.add(event)

    task = asyncio.create_task(writes.run(), name="clampdown-task-run-batches")
    try:
        yield message_handler
    finally:
        task.cancel()
        await asyncio.wait([task])
        await writes.drain()
