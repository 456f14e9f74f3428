"""Prefect's record of this process's task runs, complete before a local API stops.

Prefect 3's client does not write task runs to the API: it emits one event per state
change (``prefect.task-run.Pending``, ``…Running``, ``…Completed``) through a background
queue (:class:`prefect.events.worker.EventsWorker`), and the server's task-run recorder
turns those events into task-run rows later, one database transaction per event by
default. A command that stops its local API as soon as its flow returns loses whatever
the recorder has not reached: after a 100-step chain Prefect held 11 of 100 task runs
while the ledger said succeeded.

So before a local API stops, :func:`clampdown_flows.prefect_api.local_api` drains the
client's queues (logs and events sent) and then waits until the server shows every task
run this process reported in the last state it reported: :class:`TaskRunWatch` keeps,
per task run, the id of the last state event this process emitted (Prefect uses the
state's id as the event's id, and the recorder stores it as the task run's ``state_id``),
and :func:`wait_for_record` reads those task runs back until they match. The wait is
bounded and never fails a run: the ledger is clampdown's record; Prefect's is the view.

How the events are seen: ``emit_event`` sends through ``EventsWorker.instance()`` and
accepts only Prefect's own client classes, so neither a subclass nor a client override
can observe them. :func:`_install_hook` wraps ``EventsWorker._prepare_item`` — the step
``send`` calls for every event, meant for subclasses to extend — once per process, and
hands each task-run event to the watches open at the time (none: nothing is kept).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from uuid import UUID

logger = logging.getLogger("clampdown.prefect")

TASK_RUN_EVENT = "prefect.task-run."
TASK_RUN_RESOURCE = "prefect.task-run."
WATCH_LIMIT = 100_000  # task runs one watch remembers; a long-lived serve keeps the newest
READ_CHUNK = 200  # the API's default page size
STALL_SECONDS = 15.0  # give up when the server records nothing new for this long
MAX_SECONDS = 300.0  # and in any case after this long


class TaskRunWatch:
    """Task runs this process reported while the watch was open: task run id -> the id of
    the last state it reported (the event's id, which the recorder stores as ``state_id``)."""

    def __init__(self, limit: int = WATCH_LIMIT, api_url: str | None = None) -> None:
        self.limit = limit
        # the API this watch waits on: events sent to another one (the drills' API while
        # the test session's is watched) would never show there
        self.api_url = api_url.rstrip("/") if api_url else None
        self._lock = threading.Lock()
        self._last: OrderedDict[UUID, UUID] = OrderedDict()

    def note(self, event: Any, api_url: str | None = None) -> None:
        """Remember ``event`` if it reports a task run's state to this watch's API (others
        are ignored)."""
        if self.api_url and api_url and api_url.rstrip("/") != self.api_url:
            return
        name = getattr(event, "event", "")
        if not name.startswith(TASK_RUN_EVENT):
            return
        resource = event.resource
        if resource.get("prefect.orchestration") != "client":  # the recorder ignores others
            return
        try:
            task_run_id = UUID(resource.id.removeprefix(TASK_RUN_RESOURCE))
        except ValueError:
            return
        with self._lock:
            self._last[task_run_id] = event.id
            self._last.move_to_end(task_run_id)
            while len(self._last) > self.limit:
                self._last.popitem(last=False)

    def reported(self) -> dict[UUID, UUID]:
        with self._lock:
            return dict(self._last)


_watches: list[TaskRunWatch] = []
_watches_lock = threading.Lock()


@contextmanager
def watching(api_url: str | None = None) -> Iterator[TaskRunWatch | None]:
    """A :class:`TaskRunWatch` fed with this process's task-run events while the block runs
    (with ``api_url``: only those sent to that API).

    None when Prefect's events worker no longer has the hook this relies on (then only the
    queues are drained, as before).
    """
    if not _install_hook():
        yield None
        return
    watch = TaskRunWatch(api_url=api_url)
    with _watches_lock:
        _watches.append(watch)
    try:
        yield watch
    finally:
        with _watches_lock:
            _watches.remove(watch)


def _install_hook() -> bool:
    """Wrap ``EventsWorker._prepare_item`` (once) to show every event to the open watches."""
    from prefect.events.worker import EventsWorker

    original = getattr(EventsWorker, "_prepare_item", None)
    if original is None:
        logger.warning("Prefect's events worker changed: task runs are not checked at exit")
        return False
    if getattr(original, "_clampdown_watch", False):
        return True

    def _prepare_item(self: Any, event: Any) -> Any:
        prepared = original(self, event)
        options = dict(getattr(self, "client_options", None) or ())
        for watch in tuple(_watches):
            watch.note(event, options.get("api_url"))
        return prepared

    _prepare_item._clampdown_watch = True  # type: ignore[attr-defined]
    EventsWorker._prepare_item = _prepare_item  # type: ignore[method-assign]
    return True


def wait_for_record(
    watch: TaskRunWatch | None,
    *,
    stall: float = STALL_SECONDS,
    limit: float = MAX_SECONDS,
) -> tuple[int, int]:
    """Wait until the API shows every task run of ``watch`` in its last reported state.

    Call it after the events queue is drained. Returns (recorded, reported); logs a warning
    and returns when the server records nothing new for ``stall`` seconds, or after
    ``limit``. The current Prefect settings say which API (and with what auth).
    """
    if watch is None:
        return 0, 0
    pending = watch.reported()
    reported = len(pending)
    if not pending:
        return 0, 0
    from clampdown_flows.run_client import sync_client

    start = last_progress = time.monotonic()
    pause = 0.02
    with sync_client() as client:
        while True:
            try:
                for task_run_id in _recorded(client, pending):
                    del pending[task_run_id]
                    last_progress = time.monotonic()
            except Exception as exc:  # the API is going away: say so, never fail the run
                logger.warning("could not read back this run's task runs from Prefect: %s", exc)
                break
            now = time.monotonic()
            if not pending or now - last_progress > stall or now - start > limit:
                break
            time.sleep(pause)
            pause = min(pause * 2, 0.25)
    recorded = reported - len(pending)
    if pending:
        logger.warning(
            "Prefect recorded %d of the %d task runs this process reported after %.0f s; "
            "the rest may be missing from Prefect (the ledger has every step)",
            recorded,
            reported,
            time.monotonic() - start,
        )
    return recorded, reported


def _recorded(client: Any, pending: dict[UUID, UUID]) -> list[UUID]:
    """The pending task runs the API already shows in their last reported state."""
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterId

    ids = list(pending)
    done = []
    for first in range(0, len(ids), READ_CHUNK):
        chunk = ids[first : first + READ_CHUNK]
        task_runs = client.read_task_runs(
            task_run_filter=TaskRunFilter(id=TaskRunFilterId(any_=chunk)), limit=len(chunk)
        )
        done.extend(t.id for t in task_runs if t.state_id == pending.get(t.id))
    return done
