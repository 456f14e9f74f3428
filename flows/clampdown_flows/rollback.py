"""The ``rollback`` flow: put back what a run changed, newest change first.

The work is :func:`clampdown.core.undo.rollback_run`, the one rollback code path (the
``core.rollback_run`` action uses it too); this flow only makes each undo a Prefect
task, so the Prefect UI shows one task run per change put back; the run's ledger is
verified with the configured signing key first, and the rollback's own ledger is signed
and copied to the evidence bucket like a run's. What is undone is every confirmed undo
record and every undo intent the run never confirmed (its process died between the call
and the step's end: the change may have been applied; :mod:`clampdown.core.undo`). Undo
operations are idempotent (a change that never happened is left as it is), so a rollback
can be re-run after a partial failure. One failed undo does
not stop the others; the rollback then fails and its ledger says which changes are
still in place. Evidence is never touched: evidence actions record no undo.
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from clampdown.core.engine.evidence import anchors, store_ledger
from clampdown.core.extensions import evidence_sinks, ledger_signer
from clampdown.core.home import RunFiles
from clampdown.core.ledger import Ledger, new_run_id
from clampdown.core.settings import settings
from clampdown.core.undo import UndoItem, apply_undo, rollback_run
from clampdown_flows.plain_flow import plain_json_flow
from clampdown_flows.respond import RunFailed, recorded_drill, settings_of_run


@task(
    name="undo",
    task_run_name="undo-{item.step}",
    cache_policy=NO_CACHE,
    persist_result=False,
    retries=2,
    retry_delay_seconds=2,
)
def undo_one(item: UndoItem, rollback: RunFiles, original_run: str) -> None:
    apply_undo(item, rollback, original_run)


@plain_json_flow(  # its parameters are JSON: no FastAPI import to send them
    name="rollback",
    flow_run_name="rollback-{run_id}",
    persist_result=False,
    validate_parameters=False,
    log_prints=False,
)
def rollback(
    run_id: str,
    rollback_id: str | None = None,
    allow_repeat: bool = True,
    expected: str | None = None,
) -> dict[str, Any]:
    """Undo every change recorded in run ``run_id``'s ledger; write a ledger of its own.

    ``allow_repeat`` (default on, as ``clampdown rollback`` has always behaved) lets a
    responder finish or re-check a rollback; the ``core.rollback_run`` action refuses it.
    ``expected``: the hash of the undo actions the responder confirmed (nothing is undone
    when they differ now). The settings are read once, here: the flow is an entry point
    (a stock Prefect worker).
    """
    conf = settings()
    # a drill's rollback is a drill's: the drill's key checks its ledger, and its evidence
    # lock mode is the drill's (GOVERNANCE by default); a real run's, a real run's
    conf = settings_of_run(conf, recorded_drill(conf.paths.run(run_id).materialize()))
    sinks = evidence_sinks(conf)
    result = rollback_run(
        run_id,
        rollback_id or new_run_id(),
        conf.paths,
        undo=undo_one,
        allow_repeat=allow_repeat,
        signer=ledger_signer(conf),
        anchors=anchors(sinks),
        expected=expected,
    )
    store_ledger(sinks, result.rollback_id, Ledger(result.ledger))
    if result.still_in_place:
        raise RunFailed(
            f"rollback {result.rollback_id} of {run_id}: {len(result.still_in_place)} change(s) "
            f"could not be undone: {'; '.join(result.still_in_place)}"
        )
    return {
        "rollback_id": result.rollback_id,
        "run_id": run_id,
        "undone": len(result.restored),
        "restored": result.restored,
        "ledger": str(result.ledger),
    }
