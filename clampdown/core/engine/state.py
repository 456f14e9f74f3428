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
    gated_by: dict[str, str]  # gated step id -> its approval step

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


class _EndedSteps:
    """The expressions' ``steps``: finished steps in document order, kept as steps end.

    Built from the results on first use, then appended to as steps end in document
    order (a chain, a fan-out's first pass); a step ending out of order makes it be
    rebuilt on next use. A dict handed out is never changed afterwards (copy on write):
    an expression may return it whole, and it must stay the snapshot it was.
    """

    def __init__(self) -> None:
        self.steps: dict[str, dict[str, Any]] | None = None  # None: rebuild on next use
        self.position: dict[str, int] = {}
        self.last = -1  # document position of the last step in ``steps``
        self.shared = False

    def snapshot(self, results: dict[str, StepResult]) -> dict[str, dict[str, Any]]:
        if self.steps is None:
            self.steps = {
                sid: {"status": r.status, "outputs": r.outputs}
                for sid, r in results.items()
                if r.status in TERMINAL
            }
            self.position = {sid: i for i, sid in enumerate(results)}
            self.last = max((self.position[sid] for sid in self.steps), default=-1)
        self.shared = True
        return self.steps

    def ended(self, results: dict[str, StepResult], step_id: str) -> None:
        if self.steps is None:
            return
        result, at = results[step_id], self.position.get(step_id, -1)
        if at <= self.last or result.status not in TERMINAL:
            self.steps = None
            return
        if self.shared:
            self.steps, self.shared = dict(self.steps), False
        self.steps[step_id] = {"status": result.status, "outputs": result.outputs}
        self.last = at


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
    _ended: _EndedSteps = field(default_factory=_EndedSteps, init=False, repr=False, compare=False)

    @property
    def denied_by(self) -> str | None:
        """The first approval step that did not end approved (the run ends ``denied``)."""
        if self.gate is None:
            return None
        return next((s for s, o in self.gate.outcomes.items() if o != "approved"), None)

    def context(self) -> dict[str, Any]:
        """Names visible to expressions: only finished steps appear under ``steps``."""
        steps = self._ended.snapshot(self.results)
        return {"inputs": self.inputs, "steps": steps, "run": self.run_info}

    def step_ended(self, step_id: str) -> None:
        """``step_id`` was just given a terminal status (and its outputs).

        Whoever sets a terminal status says so at once (the scheduler does), so that
        :meth:`context` stays what a scan of :attr:`results` would give.
        """
        self._ended.ended(self.results, step_id)

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
