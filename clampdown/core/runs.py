"""Recent runs, read from their ledgers (``clampdown runs``).

The ledger is the record of a run, so the list comes from the ledgers under
``$CLAMPDOWN_HOME/runs/`` rather than from Prefect: it works without a Prefect
server and shows rollbacks and runs whose process died (no ``run.end``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from clampdown.core.diagnostics import ClampdownError
from clampdown.core.home import LEDGER, ROLLED_BACK_MARK, Home
from clampdown.core.run_ownership import is_stopped


class RunNotStarted(ClampdownError):
    """A run could not be durably started (its start could not be recorded, or the
    orchestrator is unreachable): nothing was started, the sender should retry.

    A starter raises it instead of returning a run id; ``serve`` answers the alert
    with 503 and ``Retry-After`` and remembers nothing that would refuse the retry.
    """

    retry_after = 30  # seconds a sender is asked to wait before retrying


@dataclass(frozen=True)
class RunSummary:
    run_id: str
    runbook: str
    started: str
    trigger: str
    status: str
    detail: str  # what a responder reads next to the status
    rolled_back_by: str | None = None  # the rollback run that undid every change

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def label(self) -> str:
        """The status as a person reads it: a rolled-back run says so and by which run."""
        if self.rolled_back_by:
            return f"{self.status}, rolled back by {self.rolled_back_by}"
        return self.status


def recent_runs(folder: Path, limit: int = 20, *, home: Home | None = None) -> list[RunSummary]:
    """The ``limit`` most recently started runs, newest first.

    ``home``: the home ``folder`` belongs to, with its run store in the scaled mode: the
    most recent runs are then brought from the store first (any machine lists every run)
    and whether a run is stopped is asked of the store's locks."""
    stored = home.materialize_recent(limit) if home is not None else None
    if stored is not None:  # the store's newest runs, not this machine's cache of older ones
        ledgers = [p for r in stored if (p := folder / r / LEDGER).is_file()]
    else:
        ledgers = (
            [p for p in folder.glob("*/ledger.jsonl") if p.is_file()] if folder.is_dir() else []
        )
        ledgers.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    summaries = [summary for p in ledgers[: max(limit, 0)] if (summary := _summarise(p, home))]
    return sorted(summaries, key=lambda s: s.started, reverse=True)


def _summarise(ledger: Path, home: Home | None = None) -> RunSummary | None:
    first: dict[str, Any] | None = None
    end: dict[str, Any] | None = None  # not always the last record: alerts may join after it
    running: list[str] = []
    waiting: dict[str, str] = {}  # approval step -> deadline
    with ledger.open("rb") as fh:
        for line in fh:
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a torn last line of a run still writing; verify reports it
            first = first or record
            if record.get("type") == "run.end":
                end = record
            if record.get("type") == "step.start":
                running.append(record.get("step", "?"))
            elif record.get("type") in ("step.end", "step.skip", "step.cancel") and (
                record.get("step") in running
            ):
                running.remove(record["step"])
            if record.get("type") == "approval.request":
                waiting[record.get("step", "?")] = str(record.get("deadline", ""))[:19]
            elif record.get("type") == "approval.end":
                waiting.pop(record.get("step", "?"), None)
    if first is None or first.get("type") != "run.start":
        return None
    run = first.get("run", {})
    trigger = run.get("trigger", {})
    trigger_text = trigger.get("type", "?") + (f" of {trigger['of']}" if "of" in trigger else "")
    status, detail = _status(end, waiting, running, ledger.parent, home)
    return RunSummary(
        run_id=str(run.get("id", ledger.parent.name)),
        runbook=str(run.get("runbook", "?")),
        started=str(run.get("started_at", first.get("ts", ""))),
        trigger=trigger_text,
        status=status,
        detail=str(detail)[:200],
        rolled_back_by=_rolled_back_by(ledger.parent / ROLLED_BACK_MARK),
    )


def _status(
    end: dict[str, Any] | None,
    waiting: dict[str, str],
    running: list[str],
    folder: Path,
    home: Home | None = None,
) -> tuple[str, str]:
    """What ``clampdown runs`` says of a run: its status and a line of detail."""
    if end is not None:
        status = str(end.get("status", "?"))
        detail = end.get("error") or (
            f"aborted by {end['aborted_by']}" if end.get("aborted_by") else ""
        )
        if end.get("still_in_place"):
            detail = f"{len(end['still_in_place'])} change(s) still in place"
    elif _stopped(folder, home):
        status = "stopped"
        waits = "; ".join(f"approval at {step} until {at}Z" for step, at in waiting.items())
        detail = (
            "no process runs it now: `clampdown serve` continues it, or `clampdown resume "
            f"{folder.name}`" + (f" ({waits})" if waits else "")
        )
    elif waiting:
        status = "waiting for approval"
        detail = "; ".join(f"approval at {step} until {at}Z" for step, at in waiting.items())
    else:
        status = "in progress"
        detail = (
            f"running: {', '.join(running)}" if running else "no run.end (still going, or stopped)"
        )
    return status, str(detail)


def _stopped(folder: Path, home: Home | None = None) -> bool:
    """A run (with a start record, so it can be continued) that no live process holds."""
    return is_stopped((home or Home(folder.parent.parent)).run(folder.name))


def _rolled_back_by(mark: Path) -> str | None:
    """The id of the rollback that undid the run (its mark file), None when not rolled back."""
    try:
        found = json.loads(mark.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return str(found.get("rollback_id") or "?") if isinstance(found, dict) else None
