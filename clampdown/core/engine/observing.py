"""A run's observers as one: the engine tells :class:`Observers`, it tells each of them.

Observers come from :func:`clampdown.core.extensions.run_observers` (the Slack thread
when Slack is configured). The engine calls them inline and never waits for them;
an observer that fails fails on its own (see :class:`~clampdown.core.extensions.RunObserver`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from clampdown.core.extensions import RunHeader, RunObserver

if TYPE_CHECKING:
    from clampdown.core.approvals import Request
    from clampdown.core.engine.state import RunState


class Observers:
    """The observers of one run; with none, every call does nothing."""

    def __init__(self, state: RunState, observers: Sequence[RunObserver] = ()) -> None:
        self.state = state
        self.observers = list(observers)
        self._ended = False

    def __bool__(self) -> bool:
        return bool(self.observers)

    def started(self, header: RunHeader) -> None:
        for observer in self.observers:
            observer.run_started(header, self.state.statuses())

    def changed(self, note: str | None = None) -> None:
        """A step changed status (``note``: a line worth a reply, e.g. why it failed)."""
        for observer in self.observers:
            observer.steps_changed(self.state.statuses(), note)

    def ended(self, outcome: str) -> None:
        """The run ended with ``outcome``; only the first call counts."""
        if self._ended:
            return
        self._ended = True
        for observer in self.observers:
            observer.run_ended(outcome, self.state.statuses())

    def approval_requested(self, request: Request) -> list[Any]:
        """Tell each observer; the handles they return name the request afterwards."""
        return [observer.approval_requested(request) for observer in self.observers]

    def approval_progress(self, handles: Sequence[Any], request: Request) -> None:
        for observer, handle in zip(self.observers, handles, strict=False):
            observer.approval_progress(handle, request)

    def approval_ended(
        self, handles: Sequence[Any], request: Request, outcome: str, at: datetime
    ) -> None:
        for observer, handle in zip(self.observers, handles, strict=False):
            observer.approval_ended(handle, request, outcome, at)
