"""Undo records of a run, read back from its ledger for rollback.

Actions record what they changed as they go (``ActionContext.record_undo``);
the executor writes those records into the step's ``step.end`` record, and
into ``step.attempt_failed`` for an attempt that changed something and then
failed. Rollback takes them newest first: the last change is put back first,
so a step that built on an earlier one is undone before it.

:func:`rollback_run` is the one rollback code path: the ``rollback`` Prefect flow
(``clampdown rollback``) runs it with one Prefect task per undo, and the
``core.rollback_run`` action (the ``release-containment`` runbook) runs it inside
its step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field

from clampdown.core.actions import Action, ActionContext, ActionInput, ActionOutput
from clampdown.core.diagnostics import ClampdownError
from clampdown.core.home import PRIVATE_FILE, Home, RunFiles, write_private
from clampdown.core.ledger import read, verify_file


@dataclass(frozen=True)
class UndoItem:
    """One change to put back: which action made it, where, and how to reverse it."""

    seq: int
    step: str
    uses: str
    region: str | None
    account: str | None
    description: str
    how: dict[str, Any]


def undo_items(ledger: Path) -> list[UndoItem]:
    """The run's undo records, newest first. Refuses a ledger whose chain is broken."""
    verdict = verify_file(ledger)
    if not verdict.ok:
        raise ClampdownError(
            f"the ledger {ledger} fails verification: {verdict.message}",
            "rollback trusts only an intact ledger; investigate the tampering first",
        )
    started: dict[str, dict[str, Any]] = {}
    items: list[UndoItem] = []
    for record in read(ledger):
        if record["type"] == "step.start":
            started[record["step"]] = record
        if record["type"] not in ("step.end", "step.attempt_failed"):
            continue
        start = started.get(record["step"], {})
        for index, entry in enumerate(record.get("undo") or []):
            how = {k: v for k, v in entry.items() if k != "description"}
            items.append(
                UndoItem(
                    seq=record["seq"] * 1000 + index,
                    step=record["step"],
                    uses=start.get("uses", record.get("uses", "")),
                    region=start.get("region"),
                    account=start.get("account"),
                    description=entry.get("description", ""),
                    how=how,
                )
            )
    return sorted(items, key=lambda item: item.seq, reverse=True)


# --- rolling a run back: one code path for `clampdown rollback` and `core.rollback_run` ---


class RollbackRefused(ClampdownError):
    """The run cannot be rolled back now (unknown, unfinished, already rolled back, busy)."""


@dataclass
class RollbackResult:
    """What a rollback put back, and what it could not."""

    rollback_id: str
    run_id: str
    restored: list[str]  # descriptions of the changes undone, in the order undone
    still_in_place: list[str]  # descriptions of the changes whose undo failed
    ledger: Path


def rolled_back(run_id: str, home: Home) -> dict[str, Any] | None:
    """The record of the rollback that undid every change of ``run_id`` (None: not done)."""
    import json

    mark = home.run(run_id).rolled_back_mark
    try:
        return dict(json.loads(mark.read_text()))
    except (OSError, ValueError):
        return None


def rollback_target(run_id: str, home: Home, *, allow_repeat: bool) -> Path:
    """The ledger of a run that may be rolled back now, or a refusal saying why not.

    ``allow_repeat=False`` (the ``core.rollback_run`` action) refuses a run that was
    already rolled back: the same undo played again after a *new* containment would
    silently reopen what that containment closed (a key deactivated again, reactivated).
    """
    if not run_id or "/" in run_id or run_id.startswith("."):
        raise RollbackRefused(f"'{run_id}' is not a run id", "copy it from `clampdown runs`")
    path = home.run(run_id).ledger
    if not path.is_file():
        raise RollbackRefused(
            f"no run '{run_id}': there is no ledger at {path}",
            "check the run id with `clampdown runs`",
        )
    records = read(path)
    first = records[0] if records else {}
    if first.get("rollback_of"):
        raise RollbackRefused(
            f"run '{run_id}' is itself a rollback (of {first['rollback_of']}); a rollback "
            "cannot be rolled back",
            "run the containment runbook again to re-apply what it undid",
        )
    if not records or records[-1].get("type") != "run.end":
        raise RollbackRefused(
            f"run '{run_id}' has not finished (no run.end in its ledger)",
            "wait for it to end, or stop it, before rolling it back",
        )
    done = rolled_back(run_id, home)
    if done and not allow_repeat:
        raise RollbackRefused(
            f"run '{run_id}' was already rolled back by {done.get('rollback_id')} at "
            f"{done.get('at')}",
            "nothing to do; to undo a later containment, roll back that run instead",
        )
    return path


UndoFn = Callable[[UndoItem, RunFiles, str], None]


def apply_undo(item: UndoItem, rollback: RunFiles, original_run: str) -> None:
    """Put back one change, through the action that made it (no Prefect: callers wrap it)."""
    from clampdown.core.actions import ActionContext, registry

    action = registry().get(item.uses)()
    undo = getattr(action, "rollback", None)
    if undo is None:
        raise ClampdownError(f"action {item.uses} cannot undo changes")
    ctx = ActionContext(
        run_id=rollback.run_id,
        step_id=item.step,
        runbook=f"rollback:{original_run}",
        home=rollback.home,
        region=item.region,
        account=item.account,
    )
    undo(item.how, ctx)


def rollback_run(
    run_id: str,
    rollback_id: str,
    home: Home,
    *,
    undo: UndoFn = apply_undo,
    allow_repeat: bool = True,
    by: dict[str, Any] | None = None,
) -> RollbackResult:
    """Undo every change recorded in run ``run_id``, newest first, with a ledger of its own.

    One failed undo does not stop the others (each is independent, and a responder wants
    as much restored as possible); the result lists what is still in place. Only a
    rollback that undid everything marks the run as rolled back. A lock file keeps two
    rollbacks of one run from interleaving.
    """
    import json
    import os

    from clampdown.core.ledger import Ledger, now

    path = rollback_target(run_id, home, allow_repeat=allow_repeat)
    items = undo_items(path)
    lock = home.run(run_id).rollback_lock
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, PRIVATE_FILE)
    except FileExistsError:
        raise RollbackRefused(
            f"a rollback of run '{run_id}' is already in progress ({lock} exists)",
            "wait for it to finish; if its process died, delete the lock file and run it again",
        ) from None
    os.write(fd, rollback_id.encode())
    os.close(fd)
    files = home.run(rollback_id)
    ledger = Ledger(files.ledger)
    restored: list[str] = []
    failed: list[str] = []
    try:
        ledger.append(
            "run.start",
            run={
                "id": rollback_id,
                "runbook": "rollback",
                "started_at": now(),
                "trigger": {"type": "rollback", "of": run_id, **(by or {})},
                "drill": False,
            },
            rollback_of=run_id,
            undo_count=len(items),
        )
        for item in items:
            ledger.append(
                "undo.start",
                step=item.step,
                uses=item.uses,
                description=item.description,
                how=item.how,
            )
            try:
                undo(item, files, run_id)
            except Exception as exc:
                failed.append(item.description)
                ledger.append(
                    "undo.end",
                    step=item.step,
                    status="failed",
                    error=f"{type(exc).__name__}: {exc}",
                )
            else:
                restored.append(item.description)
                ledger.append("undo.end", step=item.step, status="succeeded")
        ledger.append(
            "run.end",
            status="failed" if failed else "succeeded",
            restored=restored,
            still_in_place=failed,
        )
        if not failed:
            mark = home.run(run_id).rolled_back_mark
            write_private(mark, json.dumps({"rollback_id": rollback_id, "at": now(), **(by or {})}))
    finally:
        ledger.close()
        lock.unlink(missing_ok=True)
    return RollbackResult(rollback_id, run_id, restored, failed, ledger.path)


class RollbackRun(Action):
    """Roll back a named earlier run from inside a run (``release-containment``).

    The same code path as ``clampdown rollback`` (:func:`rollback_run`), without a
    Prefect task per undo: the step itself is the task. It refuses a run that does
    not exist, has not finished, is itself a rollback, or was already rolled back,
    and its outputs say exactly what it restored and what is still in place. It
    records no undo of its own: re-apply a containment by running its runbook again.
    """

    name = "core.rollback_run"
    summary = "Undo every change an earlier run made (its own rollback ledger too)"
    destructive = True  # it reopens what a containment closed: behind an approval

    class Input(ActionInput):
        run_id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="the run to roll back")

    class Output(ActionOutput):
        rolled_back_run: str
        rollback_id: str
        restored: list[str]
        still_in_place: list[str]
        rollback_ledger: str

    def run(self, params: Input, ctx: ActionContext) -> Output:
        from clampdown.core.ledger import new_run_id

        if params.run_id == ctx.run_id:
            raise RollbackRefused("a run cannot roll itself back", "name an earlier run")
        result = rollback_run(
            params.run_id,
            new_run_id(),
            ctx.home,
            allow_repeat=False,
            by={"by_run": ctx.run_id, "by_step": ctx.step_id},
        )
        for description in result.restored:
            ctx.logger.info("restored: %s", description)
        if result.still_in_place:
            raise ClampdownError(
                f"rollback {result.rollback_id} of {params.run_id}: "
                f"{len(result.still_in_place)} change(s) could not be undone: "
                + "; ".join(result.still_in_place),
                f"see {result.ledger}; fix the cause and run `clampdown rollback "
                f"{params.run_id}` (undo is idempotent)",
            )
        return self.Output(
            rolled_back_run=params.run_id,
            rollback_id=result.rollback_id,
            restored=result.restored,
            still_in_place=result.still_in_place,
            rollback_ledger=str(result.ledger),
        )
