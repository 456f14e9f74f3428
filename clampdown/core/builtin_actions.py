"""Core actions that need no provider: wait, set outputs, log, and fail on purpose."""

# No __future__ annotations: pydantic then reads each field's type as written instead of
# compiling its text at class creation (a ForwardRef per field; lint imports this module).

from collections.abc import Mapping
from typing import Any

from pydantic import ConfigDict, Field

from clampdown.core.actions import Action, ActionContext, ActionInput, ActionOutput
from clampdown.core.durations import Duration


class Wait(Action):
    """Pause the run, e.g. to let a revocation propagate before checking it."""

    name = "core.wait"
    summary = "Wait for a duration"

    class Input(ActionInput):
        duration: Duration = Field(description="how long, e.g. 30s or 5m")

    class Output(ActionOutput):
        waited_seconds: float

    async def run(self, params: Input, ctx: ActionContext) -> Output:
        import asyncio  # here, not at the top: lint loads this module and must stay instant

        await asyncio.sleep(params.duration)
        return self.Output(waited_seconds=params.duration)


class SetOutput(Action):
    """Publish values (each ``with`` key) as this step's outputs for later steps."""

    name = "core.set_output"
    summary = "Set step outputs from the with: values"

    class Input(ActionInput):
        model_config = ConfigDict(extra="allow")

    class Output(ActionOutput):
        model_config = ConfigDict(extra="allow")

    def run(self, params: Input, ctx: ActionContext) -> Output:
        return self.Output(**(params.model_extra or {}))

    @classmethod
    def declared_outputs(cls, with_: Mapping[str, Any]) -> set[str] | None:
        return set(with_)


class Log(Action):
    """Write a line to the run log and the ledger (a breadcrumb for the after-action review)."""

    name = "core.log"
    summary = "Write a message to the run log"

    class Input(ActionInput):
        message: str
        level: str = Field("info", pattern="^(debug|info|warning|error)$")

    class Output(ActionOutput):
        message: str

    def run(self, params: Input, ctx: ActionContext) -> Output:
        ctx.logger.log(_LEVELS[params.level], "%s", params.message)
        return self.Output(message=params.message)


_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


class ActionFailed(Exception):
    """Raised by ``core.fail``: a deliberate failure."""


class Fail(Action):
    """Fail the step with a message: for drills and tests of failure handling."""

    name = "core.fail"
    summary = "Fail the step on purpose"

    class Input(ActionInput):
        message: str = "failed on purpose"

    def run(self, params: Input, ctx: ActionContext) -> ActionOutput:
        raise ActionFailed(params.message)
