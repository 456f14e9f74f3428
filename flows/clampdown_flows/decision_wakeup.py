"""Waking a paused approval wait at once when its decision is sent from the same process.

A paused run learns that it was resumed only when it next asks the Prefect API
(:func:`clampdown_flows.approval_gate.poll_seconds`: up to 5 s apart, on purpose, so
a hundred paused runs do not saturate a local server). When the decision is sent
from the process that runs the flow — a Slack click handled by ``serve``, the drill's
scripted approver, a test — that process knows the moment the flow run was resumed,
so the sender rings the waiting gate's bell and the gate asks the API at once.

The bell only makes the gate look now: what it finds is what the poll would have found
(the flow run Running again, the decision as run input), and the decision then meets
exactly the same checks (proof, nonce, parameters hash, who and when). A decision sent
from another process (``clampdown approve``, another machine) is found by the poll,
as before.

:class:`Wakeups` is one process's registry, owned by whoever runs flows in it (serve's
``InProcessStarter``), which gives it to its senders explicitly. The flows reach it
through a context variable (:meth:`Wakeups.serving`, :func:`current`), the way Prefect's
own client and settings contexts reach a flow run: ``respond``'s parameters are sent to
the Prefect API and recorded there (an object parameter would be recorded as a
placeholder, and a deployment's flow run cannot be given one), and the gate is built
inside the flow. Without a registry in the context the gate waits by the poll alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
from collections.abc import Iterator

__all__ = ["Wakeups", "current"]

_SERVING: contextvars.ContextVar[Wakeups | None] = contextvars.ContextVar(
    "clampdown_decision_wakeups", default=None
)


def current() -> Wakeups | None:
    """The registry of whoever runs this flow (:meth:`Wakeups.serving`), or None."""
    return _SERVING.get()


class Wakeups:
    """Paused approval waits of this process, by flow run id: a sender that has just
    resumed one (:meth:`wake`) makes it look at once instead of at its next poll.

    Thread-safe: gates wait on an event loop (serve's runs thread), senders call
    :meth:`wake` from other threads (Bolt's, the drill's).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bells: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Event]] = {}
        self.rung = 0  # wake-ups delivered to a waiting gate (tests and benchmarks read it)

    @contextlib.contextmanager
    def serving(self) -> Iterator[Wakeups]:
        """Flows started in this context (and tasks copied from it) wait with this registry."""
        token = _SERVING.set(self)
        try:
            yield self
        finally:
            _SERVING.reset(token)

    @contextlib.contextmanager
    def listening(self, flow_run_id: str) -> Iterator[asyncio.Event]:
        """The bell of ``flow_run_id`` for one pause, on the running loop; call it before
        pausing, so a wake that comes while the pause starts is not missed."""
        bell = asyncio.Event()
        entry = (asyncio.get_running_loop(), bell)
        with self._lock:
            self._bells[flow_run_id] = entry
        try:
            yield bell
        finally:
            with self._lock:
                if self._bells.get(flow_run_id) is entry:
                    del self._bells[flow_run_id]

    def wake(self, flow_run_id: str) -> bool:
        """Ring the bell of ``flow_run_id`` if one of this process's gates waits on it
        (from any thread); False when none does (the run is elsewhere: its poll finds it)."""
        with self._lock:
            entry = self._bells.get(flow_run_id)
            if entry is None:
                return False
            self.rung += 1
        loop, bell = entry
        try:
            loop.call_soon_threadsafe(bell.set)
        except RuntimeError:  # its loop closed meanwhile: nobody waits any more
            return False
        return True
