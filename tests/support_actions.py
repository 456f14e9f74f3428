"""Actions that exist only for tests, shared by the unit and integration suites.

Importing this module registers them in the process's action registry.
"""

from __future__ import annotations

import threading
from typing import ClassVar

from clampdown.core.actions import Action, ActionContext, ActionInput, ActionOutput, registry


@registry().register
class Flaky(Action):
    """Fails until it has been called ``succeed_on`` times in a run (test-only)."""

    name = "test.flaky"
    calls: ClassVar[dict[str, int]] = {}

    class Input(ActionInput):
        succeed_on: int

    class Output(ActionOutput):
        attempts: int

    def run(self, params: Input, ctx: ActionContext) -> Output:
        key = f"{ctx.run_id}/{ctx.step_id}"
        self.calls[key] = self.calls.get(key, 0) + 1
        if self.calls[key] < params.succeed_on:
            raise RuntimeError(f"transient failure {self.calls[key]}")
        return self.Output(attempts=self.calls[key])


HOLD_BOUND = 120.0
"""Seconds a ``test.hold`` step waits at most: a test that never releases it fails."""


@registry().register
class Hold(Action):
    """Waits until the test releases its ``gate`` (test-only): a run kept in progress for
    as long as the test needs it (a later alert must find it running), not for a duration
    guessed to outlast the test's own steps on a loaded machine."""

    name = "test.hold"
    gates: ClassVar[dict[str, threading.Event]] = {}
    lock: ClassVar[threading.Lock] = threading.Lock()

    class Input(ActionInput):
        gate: str

    class Output(ActionOutput):
        released: bool

    @classmethod
    def gate(cls, name: str) -> threading.Event:
        """The event a step naming ``name`` waits for (``.set()`` releases it)."""
        with cls.lock:
            return cls.gates.setdefault(name, threading.Event())

    def run(self, params: Input, ctx: ActionContext) -> Output:
        return self.Output(released=self.gate(params.gate).wait(HOLD_BOUND))
