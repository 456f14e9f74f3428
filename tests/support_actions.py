"""Actions that exist only for tests, shared by the unit and integration suites.

Importing this module registers them in the process's action registry.
"""

from __future__ import annotations

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
