"""The ``rollback`` flow: put back what a run changed, newest change first.

Each undo record becomes a Prefect task that calls the recording action's
``rollback``; undo operations are idempotent, so a rollback can be re-run after
a partial failure. One failed undo does not stop the others (each is
independent and a responder wants as much restored as possible); the rollback
then fails and its ledger says which changes are still in place. Evidence is
never touched: evidence actions record no undo.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from clampdown.actions import ActionContext, registry
from clampdown.diagnostics import ClampdownError
from clampdown.ledger import Ledger, new_run_id, now
from clampdown.settings import settings
from clampdown.undo import UndoItem, undo_items
from flows.respond import RunFailed


@task(
    name="undo",
    task_run_name="undo-{item.step}",
    cache_policy=NO_CACHE,
    persist_result=False,
    retries=2,
    retry_delay_seconds=2,
)
def undo_one(item: UndoItem, rollback_id: str, original_run: str) -> None:
    action = registry().get(item.uses)()
    rollback = getattr(action, "rollback", None)
    if rollback is None:
        raise ClampdownError(f"action {item.uses} cannot undo changes")
    ctx = ActionContext(
        run_id=rollback_id,
        step_id=item.step,
        runbook=f"rollback:{original_run}",
        region=item.region,
        account=item.account,
    )
    rollback(item.how, ctx)


@flow(
    name="rollback",
    flow_run_name="rollback-{run_id}",
    persist_result=False,
    validate_parameters=False,
    log_prints=False,
)
def rollback(run_id: str, rollback_id: str | None = None) -> dict[str, Any]:
    """Undo every change recorded in run ``run_id``'s ledger; write a ledger of its own."""
    conf = settings()
    items = undo_items(conf.existing_ledger(run_id))
    rollback_id = rollback_id or new_run_id()
    ledger = Ledger(conf.ledger_path(rollback_id))
    ledger.append(
        "run.start",
        run={
            "id": rollback_id,
            "runbook": "rollback",
            "started_at": now(),
            "trigger": {"type": "rollback", "of": run_id},
            "drill": False,
        },
        rollback_of=run_id,
        undo_count=len(items),
    )
    failed: list[str] = []
    try:
        for item in items:
            ledger.append(
                "undo.start",
                step=item.step,
                uses=item.uses,
                description=item.description,
                how=item.how,
            )
            try:
                undo_one(item, rollback_id, run_id)
            except Exception as exc:
                failed.append(item.description)
                ledger.append(
                    "undo.end",
                    step=item.step,
                    status="failed",
                    error=f"{type(exc).__name__}: {exc}",
                )
            else:
                ledger.append("undo.end", step=item.step, status="succeeded")
        status = "failed" if failed else "succeeded"
        ledger.append("run.end", status=status, still_in_place=failed)
    finally:
        ledger.close()
    if failed:
        raise RunFailed(
            f"rollback {rollback_id} of {run_id}: {len(failed)} change(s) could not be "
            f"undone: {'; '.join(failed)}"
        )
    return {
        "rollback_id": rollback_id,
        "run_id": run_id,
        "undone": len(items),
        "ledger": str(ledger.path),
    }
