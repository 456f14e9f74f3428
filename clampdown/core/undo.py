"""Undo records of a run, read back from its ledger for rollback.

Actions declare each change and its undo before making it (``ActionContext.changing``):
the engine writes an ``undo.intent`` record at once, and the attempt's end confirms it
(the undo record in ``undo`` and the intent's id in ``confirmed`` of the step's
``step.end``, or of ``step.attempt_failed`` for an attempt that changed something and
then failed; ``not_made`` for a call that changed nothing). Actions that record only
after the change (``ActionContext.record_undo``) appear in ``undo`` alone.

The undo plan is every confirmed undo record and every intent never settled: a process
killed between a call and the step's end leaves an intent without a confirmation, and
that change *may have been applied*, so it is undone too (every undo is idempotent: a
change that never happened, or was already put back, is left as it is). An intent that
was confirmed appears once, as its confirmed record; an unsettled intent that repeats a
record already in the plan (a re-run of the step made the same change) is not listed
twice. Rollback takes them newest first: the last change is put back first, so a step
that built on an earlier one is undone before it (an unsettled intent stands where it
was written).

:func:`rollback_run` is the one rollback code path: the ``rollback`` Prefect flow
(``clampdown rollback``) runs it with one Prefect task per undo, and the
``core.rollback_run`` action (the ``release-containment`` runbook) runs it inside
its step.

Rollback executes only what the engine wrote: before anything is undone, the ledger
is verified (chain and every signature, :mod:`clampdown.core.ledger_signing`), and a
ledger that fails is refused, naming the record, with the refusal recorded in the
rollback's own ledger. A ledger without any signature is accepted only where no
signing key is configured at all (nothing could have signed it); the rollback
records that it was not authenticated. What each undo does — action, target and
parameters — is shown in full (:func:`describe`) and, for ``core.rollback_run``,
bound to the approval by hash (:meth:`RollbackRun.approval_details`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field

from clampdown.core.actions import Action, ActionContext, ActionInput, ActionOutput
from clampdown.core.diagnostics import ClampdownError

if TYPE_CHECKING:  # the ledger's modules are imported where a rollback uses them, below:
    # lint and plan load this module for its action (core.rollback_run) and read only
    # its input and output models; the ledger, its signing and the run files cost
    # them some 25 ms of imports they never use
    from clampdown.core.home import Home, RunFiles
    from clampdown.core.ledger_signing import Anchor, LedgerSigner, LedgerVerdict


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
    confirmed: bool = True  # False: an intent the run never confirmed (it may have been applied)

    @property
    def identity(self) -> str:
        """What the undo does and where: two items alike in it put back the same change."""
        import json

        what = (self.step, self.uses, self.region, self.account, self.description, self.how)
        return json.dumps(what, sort_keys=True, default=str)

    def shown(self) -> dict[str, Any]:
        """Everything this undo will do, as an approver and ``rollback --plan`` see it."""
        shown = {
            "step": self.step,
            "action": self.uses,
            "region": self.region,
            "account": self.account,
            "says": self.description,
            "does": self.how,
        }
        if not self.confirmed:  # bound by the approval hash too
            shown["may have been applied"] = UNCONFIRMED
        return shown


UNCONFIRMED = "the run stopped before confirming it"


def describe(item: UndoItem) -> str:
    """One line: the action, where, and its exact parameters (not only its description)."""
    import json

    where = ", ".join(x for x in (item.region, item.account) if x) or "default region/account"
    how = json.dumps(item.how, sort_keys=True, default=str)
    line = f"[{item.step}] {item.uses} in {where}: {item.description}\n     parameters: {how}"
    if not item.confirmed:
        line += f"\n     may have been applied: {UNCONFIRMED} (undoing it is safe either way)"
    return line


class LedgerNotTrusted(ClampdownError):
    """The ledger to roll back does not verify: its undo records are not executed."""


def undo_items(ledger: Path, verifier: LedgerSigner | None = None) -> list[UndoItem]:
    """The run's undo records, newest first, from a ledger that verifies (else refused)."""
    return checked_undo_items(ledger, verifier)[0]


def checked_undo_items(
    ledger: Path, verifier: LedgerSigner | None
) -> tuple[list[UndoItem], LedgerVerdict]:
    """The undo records and the verdict that let them through.

    Refuses (:class:`LedgerNotTrusted`) a ledger whose chain is broken, a signature
    fails, an engine record is unsigned, or that is unsigned while a key is configured.
    """
    from clampdown.core.ledger import read
    from clampdown.core.ledger_signing import verify_ledger

    verdict = verify_ledger(ledger.read_bytes().splitlines(), verifier)
    unsigned_ok = verdict.status == "unsigned" and verifier is None
    if not (verdict.trusted or unsigned_ok):
        where = f" (record {verdict.bad_seq})" if verdict.bad_seq is not None else ""
        raise LedgerNotTrusted(
            f"the ledger {ledger} fails verification{where}: {verdict.message}",
            "rollback executes only undo records from a ledger that verifies; nothing was "
            "undone. Investigate the tampering (`clampdown verify <run-id>` compares it "
            "with the evidence bucket)",
        )
    return _items(read(ledger)), verdict


def _items(records: list[dict[str, Any]]) -> list[UndoItem]:
    """The undo plan: confirmed records and unsettled intents, newest first (module doc)."""
    started: dict[str, dict[str, Any]] = {}
    items: list[UndoItem] = []
    intents: dict[str, UndoItem] = {}
    settled: set[str] = set()
    for record in records:
        kind = record["type"]
        if kind == "step.start":
            started[record["step"]] = record
        elif kind == "undo.intent":
            intents[str(record.get("intent"))] = _intent_item(record, started)
        elif kind in ("step.end", "step.attempt_failed"):
            settled.update(map(str, record.get("confirmed") or ()))
            settled.update(map(str, record.get("not_made") or ()))
            for index, entry in enumerate(record.get("undo") or []):
                how = {k: v for k, v in entry.items() if k != "description"}
                items.append(_item(record, started, record["seq"] * 1000 + index, entry, how, True))
    seen = {item.identity for item in items}
    for intent_id, item in intents.items():
        if intent_id in settled or item.identity in seen:
            continue
        seen.add(item.identity)
        items.append(item)
    return sorted(items, key=lambda item: item.seq, reverse=True)


def _intent_item(record: dict[str, Any], started: dict[str, dict[str, Any]]) -> UndoItem:
    """An ``undo.intent`` as the undo it would be if never confirmed."""
    return _item(record, started, record["seq"] * 1000, record, record.get("how") or {}, False)


def _item(
    record: dict[str, Any],
    started: dict[str, dict[str, Any]],
    seq: int,
    entry: dict[str, Any],
    how: dict[str, Any],
    confirmed: bool,
) -> UndoItem:
    start = started.get(record["step"], {})
    return UndoItem(
        seq=seq,
        step=record["step"],
        uses=start.get("uses", record.get("uses", "")),
        region=start.get("region"),
        account=start.get("account"),
        description=entry.get("description", ""),
        how=dict(how),
        confirmed=confirmed,
    )


# --- rolling a run back: one code path for `clampdown rollback` and `core.rollback_run` ---


class RollbackRefused(ClampdownError):
    """The run cannot be rolled back now (unknown, unfinished, already rolled back, busy).

    ``final``: asking again cannot change the answer (not a run, a rollback itself, already
    rolled back, undo records changed after approval), so a step is not retried on it; an
    unfinished or busy run may be rolled back a moment later."""

    def __init__(self, message: str, hint: str = "", *, final: bool = False) -> None:
        super().__init__(message, hint)
        self.retry_may_help = not final


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

    from clampdown.core.home import ROLLED_BACK_MARK

    try:
        text = home.run(run_id).read(ROLLED_BACK_MARK)
        return None if text is None else dict(json.loads(text))
    except (OSError, ValueError):
        return None


def rollback_target(run_id: str, home: Home, *, allow_repeat: bool) -> Path:
    """The ledger of a run that may be rolled back now, or a refusal saying why not.

    ``allow_repeat=False`` (the ``core.rollback_run`` action) refuses a run that was
    already rolled back: the same undo played again after a *new* containment would
    silently reopen what that containment closed (a key deactivated again, reactivated).
    """
    from clampdown.core.ledger import read
    from clampdown.core.run_ownership import is_stopped

    if not run_id or "/" in run_id or run_id.startswith("."):
        raise RollbackRefused(
            f"'{run_id}' is not a run id", "copy it from `clampdown runs`", final=True
        )
    path = home.run(run_id).materialize().ledger  # from the run store, in the scaled mode
    if not path.is_file():
        raise RollbackRefused(
            f"no run '{run_id}': there is no ledger at {path}",
            "check the run id with `clampdown runs`",
            final=True,
        )
    records = read(path)
    first = records[0] if records else {}
    if first.get("rollback_of"):
        raise RollbackRefused(
            f"run '{run_id}' is itself a rollback (of {first['rollback_of']}); a rollback "
            "cannot be rolled back",
            "run the containment runbook again to re-apply what it undid",
            final=True,
        )
    if not any(r.get("type") == "run.end" for r in records):
        files = home.run(run_id)
        if is_stopped(files):
            raise RollbackRefused(
                f"run '{run_id}' stopped before it finished (no process runs it; no run.end)",
                f"`clampdown resume {run_id}` finishes it (Ctrl-C there ends it as cancelled), "
                "then roll it back; `clampdown serve` also continues it by itself",
            )
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
            final=True,
        )
    return path


UndoFn = Callable[[UndoItem, "RunFiles", str], None]


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
    signer: LedgerSigner | None = None,
    anchors: Sequence[Anchor] = (),
    expected: str | None = None,
) -> RollbackResult:
    """Undo every change recorded in run ``run_id``, newest first, with a ledger of its own.

    ``signer`` checks the run's ledger before anything is undone and signs the rollback's
    own ledger. ``expected`` is the hash of the undo actions an approver saw
    (:func:`undo_hash`): when they differ now, nothing is undone. A refusal of either
    kind is recorded in the rollback's ledger. One failed undo does not stop the others
    (each is independent, and a responder wants as much restored as possible); the
    result lists what is still in place. Only a rollback that undid everything marks
    the run as rolled back. A lock file keeps two rollbacks of one run from interleaving.
    """
    import json

    from clampdown.core.home import ROLLED_BACK_MARK
    from clampdown.core.ledger import now, started_as_drill
    from clampdown.core.ledger_signing import note_unsigned, open_ledger

    path = rollback_target(run_id, home, allow_repeat=allow_repeat)
    files = home.run(rollback_id)
    ledger = open_ledger(files.ledger, rollback_id, signer, anchors, files.ledger_primary)
    start = _rollback_start(run_id, rollback_id, by, drill=bool(started_as_drill(path)))
    try:
        items, verdict = checked_undo_items(path, signer)
        if expected is not None and undo_hash(items) != expected:
            raise RollbackRefused(
                f"the undo records of run '{run_id}' changed after they were approved",
                "nothing was undone; look at `clampdown rollback --plan` and ask again",
                final=True,
            )
    except ClampdownError as exc:
        _record_refusal(ledger, start, exc)
        raise
    try:
        release = _lock_rollback(home.run(run_id), rollback_id)
    except RollbackRefused:
        ledger.close()
        raise
    restored: list[str] = []
    failed: list[str] = []
    try:
        ledger.append(
            "run.start",
            **start,
            undo_count=len(items),
            source={
                "status": verdict.status,  # intact (signed, verified) or unsigned (no key)
                "signed_through": verdict.signed_through,
                "key_id": verdict.key_id,
                "undo_sha256": undo_hash(items),
            },
        )
        note_unsigned(ledger)
        for item in items:
            ledger.append(
                "undo.start",
                step=item.step,
                uses=item.uses,
                description=item.description,
                how=item.how,
                **({} if item.confirmed else {"confirmed": False}),
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
            mark = json.dumps({"rollback_id": rollback_id, "at": now(), **(by or {})})
            home.run(run_id).write(ROLLED_BACK_MARK, mark)
    finally:
        ledger.close()
        release()
    return RollbackResult(rollback_id, run_id, restored, failed, ledger.path)


def _lock_rollback(files: RunFiles, rollback_id: str) -> Callable[[], None]:
    """Take the run's rollback lock (a lock file; in the scaled mode the run store's
    advisory lock, across machines); the function that releases it. Refused when held."""
    import os

    from clampdown.core.home import PRIVATE_FILE

    if files.store is not None:
        holding = files.store.try_hold(files.run_id, "rollback")
        if holding is None:
            raise RollbackRefused(
                f"a rollback of run '{files.run_id}' is already in progress (on another "
                "process or machine)",
                "wait for it to finish (its lock goes when its process ends)",
            )
        return holding.release
    lock = files.rollback_lock
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, PRIVATE_FILE)
    except FileExistsError:
        raise RollbackRefused(
            f"a rollback of run '{files.run_id}' is already in progress ({lock} exists)",
            "wait for it to finish; if its process died, delete the lock file and run it again",
        ) from None
    os.write(fd, rollback_id.encode())
    os.close(fd)
    return lambda: lock.unlink(missing_ok=True)


def _rollback_start(
    run_id: str, rollback_id: str, by: dict[str, Any] | None, *, drill: bool = False
) -> dict[str, Any]:
    from clampdown.core.ledger import now

    return {
        "run": {
            "id": rollback_id,
            "runbook": "rollback",
            "started_at": now(),
            "trigger": {"type": "rollback", "of": run_id, **(by or {})},
            "drill": drill,
        },
        "rollback_of": run_id,
    }


def _record_refusal(ledger: Any, start: dict[str, Any], exc: ClampdownError) -> None:
    from clampdown.core.ledger_signing import note_unsigned

    ledger.append("run.start", **start, undo_count=0)
    note_unsigned(ledger)
    ledger.append("rollback.refused", reason=exc.message, hint=exc.hint)
    ledger.append("run.end", status="failed", error=str(exc), restored=[], still_in_place=[])
    ledger.close()


def refuse_rollback(
    run_id: str,
    rollback_id: str,
    home: Home,
    exc: ClampdownError,
    signer: LedgerSigner | None = None,
    by: dict[str, Any] | None = None,
) -> Path:
    """Record in a rollback ledger of its own that a rollback of ``run_id`` was refused."""
    from clampdown.core.ledger import started_as_drill
    from clampdown.core.ledger_signing import open_ledger

    files = home.run(rollback_id)
    ledger = open_ledger(files.ledger, rollback_id, signer, primary=files.ledger_primary)
    target = home.run(run_id).ledger
    drill = bool(started_as_drill(target))
    _record_refusal(ledger, _rollback_start(run_id, rollback_id, by, drill=drill), exc)
    return ledger.path


def undo_hash(items: Sequence[UndoItem]) -> str:
    """SHA-256 of every undo action in order (what an approval of a rollback binds)."""
    from clampdown.core.approvals import params_hash

    return params_hash({"undo": [item.shown() for item in items]})


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

    @classmethod
    def approval_details(
        cls, params: Input, home: Home, signer: LedgerSigner | None
    ) -> dict[str, Any]:
        """Every undo action this step will execute, for the approval to show and bind.

        The ledger is verified first: a forged ledger is refused before anyone is asked.
        A run that cannot be rolled back now (unknown, unfinished, already rolled back)
        is shown as such: the step will refuse it with the same words.
        """
        try:
            path = rollback_target(params.run_id, home, allow_repeat=False)
        except RollbackRefused as exc:
            return {"will be refused": str(exc)}
        items, verdict = checked_undo_items(path, signer)
        shown: dict[str, Any] = {"ledger": f"{verdict.status}: {verdict.message}"}
        for number, item in enumerate(items, start=1):
            shown[f"undo {number} of {len(items)}"] = item.shown()
        return shown

    def run(self, params: Input, ctx: ActionContext) -> Output:
        from clampdown.core.ledger import new_run_id

        if params.run_id == ctx.run_id:
            raise RollbackRefused(
                "a run cannot roll itself back", "name an earlier run", final=True
            )
        result = rollback_run(
            params.run_id,
            new_run_id(),
            ctx.home,
            allow_repeat=False,
            by={"by_run": ctx.run_id, "by_step": ctx.step_id},
            signer=ctx.ledger_signer,
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
