"""What one run knows while it executes: each step's result, the run's inputs and ledger.

No Prefect and no Slack here: the scheduler (:mod:`clampdown.core.engine.scheduler`)
reads and writes this state; whoever executes the run (the Prefect flow, a test)
builds it with :func:`new_state`. Observers and the approval policy hang off it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from clampdown.core.graph import upstream
from clampdown.core.home import RunFiles
from clampdown.core.ledger import Ledger
from clampdown.core.models import Runbook

TERMINAL = frozenset({"succeeded", "failed", "skipped", "cancelled"})


class Gate(Protocol):
    """What the scheduler asks of the run's approvals (:class:`.gate_policy.GatePolicy`)."""

    outcomes: dict[str, str]  # approval step id -> approved/denied/timed_out
    waiting: set[str]  # approval steps waiting for decisions now

    def blocked_by(self, step_id: str) -> str | None: ...

    def check_params(self, step_id: str, params: Any) -> str | None: ...


class Listener(Protocol):
    """Who hears that steps changed status (:class:`.observing.Observers`)."""

    def __bool__(self) -> bool: ...

    def changed(self, note: str | None = None) -> None: ...


@dataclass
class StepResult:
    status: str = "pending"
    outputs: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    started: float | None = None
    ended: float | None = None
    attempts: int = 0

    @property
    def seconds(self) -> float | None:
        if self.started is None or self.ended is None:
            return None
        return self.ended - self.started


@dataclass
class RunState:
    """Everything one run knows; the scheduler hands it to each step it runs."""

    run_id: str
    runbook: Runbook
    inputs: dict[str, Any]
    ledger: Ledger
    run_info: dict[str, Any]
    ancestors: dict[str, set[str]]
    files: RunFiles  # the run's files under CLAMPDOWN_HOME, handed to its actions
    results: dict[str, StepResult] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    targets: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)
    aborted_by: str | None = None
    observers: Listener | None = None  # who is told what the run does (the Slack thread)
    gate: Gate | None = None  # the run's approvals (set when the run starts)

    @property
    def denied_by(self) -> str | None:
        """The first approval step that did not end approved (the run ends ``denied``)."""
        if self.gate is None:
            return None
        return next((s for s, o in self.gate.outcomes.items() if o != "approved"), None)

    def context(self) -> dict[str, Any]:
        """Names visible to expressions: only finished steps appear under ``steps``."""
        steps = {
            sid: {"status": r.status, "outputs": r.outputs}
            for sid, r in self.results.items()
            if r.status in TERMINAL
        }
        return {"inputs": self.inputs, "steps": steps, "run": self.run_info}

    def statuses(self) -> list[tuple[str, str]]:
        """Each step with what a responder should read (``waiting for approval`` included)."""
        waiting = self.gate.waiting if self.gate is not None else set()
        return [
            (sid, "waiting for approval" if sid in waiting else r.status)
            for sid, r in self.results.items()
        ]


def new_state(
    run_id: str,
    runbook: Runbook,
    inputs: dict[str, Any],
    ledger: Ledger,
    run_info: dict[str, Any],
    files: RunFiles,
) -> RunState:
    """A run about to start: every step pending, its ancestors known."""
    return RunState(
        run_id,
        runbook,
        inputs,
        ledger,
        run_info,
        upstream({s.id: s.needs for s in runbook.steps}),
        files,
        {s.id: StepResult() for s in runbook.steps},
    )
