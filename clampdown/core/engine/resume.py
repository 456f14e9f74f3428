"""Continuing a run from its ledger: what was done is read back, nothing is done twice.

The ledger is the source of truth for what a run did. When the process that ran it
died, another process rebuilds the run's state from it (:func:`restore`) and the
scheduler goes on from there (:func:`~clampdown.core.engine.scheduler.schedule` leaves
steps that already ended alone):

* a step with ``step.end`` keeps its status, outputs and attempts; ``step.skip`` and
  ``step.cancel`` likewise; a failed step that aborted the run still aborts it;
* a step with ``step.start`` and no end is run again (actions are idempotent: a second
  revoke of a revoked key changes nothing); the ``run.resumed`` record names them;
* an approval that ended keeps its outcome and what it approved (the gated steps'
  parameter hashes, recomputed from the ``approval.request`` record the approver saw);
  one still waiting is re-entered by the gate with the same request
  (:class:`Waiting`): same nonce and deadline, and the decisions already counted.

Pure: no Prefect, no files but what is handed in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from clampdown.core.approvals import params_hash
from clampdown.core.engine.state import TERMINAL, RunState

MAX_RESUMES = 3
"""A run continued this many times whose process dies again is ended ("could not be
resumed"): something in it kills its process, and resuming it for ever would hide that.
Only deaths count: a suspension in good order (``run.suspended``: serve's SIGTERM, a
deploy) does not (``respond._unplanned_stops``)."""

_ENDS = {"step.end", "step.skip", "step.cancel"}


@dataclass
class Waiting:
    """An approval that was waiting when the run stopped: its request and counted decisions."""

    request: dict[str, Any]  # the approval.request record
    decisions: list[dict[str, Any]] = field(default_factory=list)  # accepted approval.decision
    recorded: set[str] = field(default_factory=set)  # ids of every decision recorded, refused too


@dataclass
class Restored:
    """What :func:`restore` found: steps to run again and approvals to wait on again."""

    rerun: list[str]
    waiting: dict[str, Waiting]
    resumes: int  # how many times the run was resumed before
    previous_flow_run: str | None  # the Prefect flow run that ran it last


def restore(state: RunState, records: Iterable[Mapping[str, Any]]) -> Restored:
    """Put what ``records`` (the run's ledger) say into ``state``; see the module doc.

    ``state`` is a fresh :func:`~clampdown.core.engine.state.new_state` of the same
    runbook, with its gate (``state.gate``) set: approvals' outcomes go there.
    """
    started: dict[str, None] = {}
    requests: dict[str, Waiting] = {}
    resumes, flow_run = 0, None
    for record in records:
        kind, step = record.get("type"), record.get("step")
        if kind in ("run.start", "run.resumed"):
            flow_run = record.get("flow_run_id") or flow_run
            resumes += kind == "run.resumed"
        elif step not in state.results:
            continue
        elif kind == "step.start":
            started[step] = None
        elif kind in _ENDS:
            started.pop(step, None)
            _ended(state, step, record)
        elif kind == "approval.request":
            requests[step] = Waiting(dict(record))
        elif kind == "approval.decision" and step in requests:
            requests[step].recorded.add(str(record.get("decision_id")))
            if record.get("accepted"):
                requests[step].decisions.append(dict(record))
        elif kind == "approval.end":
            waiting = requests.pop(step, None)
            _approval_ended(state, step, record, waiting)
    for step in started:  # run again from the start of the step
        state.results[step].status = "pending"
    waiting = {sid: w for sid, w in requests.items() if sid in started}
    return Restored(list(started), waiting, resumes, flow_run)


def _ended(state: RunState, step: str, record: Mapping[str, Any]) -> None:
    result = state.results[step]
    kind = record["type"]
    if kind == "step.end":
        result.status = str(record.get("status", "failed"))
        result.outputs = dict(record.get("outputs") or {})
        result.error = record.get("error")
        result.attempts = int(record.get("attempts") or 0)
        if (
            result.status == "failed"
            and record.get("on_failure", "abort") == "abort"
            and state.aborted_by is None
        ):
            state.aborted_by = step
    else:
        result.status = "skipped" if kind == "step.skip" else "cancelled"
        result.error = record.get("reason")
    if result.status in TERMINAL:
        state.step_ended(step)


def _approval_ended(
    state: RunState, step: str, record: Mapping[str, Any], waiting: Waiting | None
) -> None:
    """The gate learns the outcome, and (when approved) the hashes of what was approved."""
    gate: Any = state.gate
    if gate is None:
        return
    approved = bool(record.get("approved"))
    gate.outcomes[step] = "approved" if approved else str(record.get("outcome"))
    gated = (waiting.request.get("gated") if waiting else None) or {}
    for sid, shown in gated.items():
        gate.gated_by[sid] = step
        if "with (known at run time)" in (shown.get("params") or {}):
            gate.at_run_time.add(sid)
        elif approved and "params" in shown:
            gate.approved_params[sid] = params_hash(shown["params"])
