"""Following the runs of a drill through their ledgers, until every one has ended.

The alert's run comes first; second alerts and slash commands may start more. The
drill learns everything from the ledgers in its own workspace (never from the flow's
memory), the way an auditor would.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from clampdown.app.drill.world import POLL
from clampdown.core.diagnostics import ClampdownError
from clampdown.core.drill_model import Drill
from clampdown.core.report import Marker

RUN_START_TIMEOUT = 30.0
EVIDENCE_WAIT = 15.0


@dataclass
class Clock:
    """The drill's clock: seconds since the alert was posted (T+0)."""

    alert_epoch: float = 0.0

    def now(self) -> float:
        return time.time() - self.alert_epoch


@dataclass
class TrackedRun:
    """A run of the drill as its ledger tells it (re-read on every poll)."""

    run_id: str
    runbook: str
    origin: str
    ledger: Path
    started_at: float
    records: list[dict[str, Any]] = field(default_factory=list)
    ended_at: float | None = None

    @property
    def end(self) -> dict[str, Any] | None:
        return next((r for r in reversed(self.records) if r.get("type") == "run.end"), None)


def _origin(trigger: dict[str, Any], *, primary: bool) -> str:
    """How a run started, for the report: the alert, a second alert, a command, a rollback."""
    kind = trigger.get("type")
    if kind == "alert":
        source = trigger.get("source", "?")
        return f"the alert ({source})" if primary else f"a second alert ({source})"
    if kind == "slack":
        return f"/clampdown run by {trigger.get('user', '?')}"
    if kind == "rollback":
        by = f" by run {trigger['by_run']}" if trigger.get("by_run") else ""
        return f"rollback of run {trigger.get('of', '?')}{by}"
    return str(kind or "unknown")


@dataclass
class DrillOutcome:
    """What the drill learns about the run as it goes."""

    run_id: str | None = None
    runbook: str | None = None
    ledger: Path | None = None
    notified_at: float | None = None
    markers: list[Marker] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    posted_alerts: list[str] = field(default_factory=list)  # ids the endpoint accepted
    new_keys: list[str] = field(default_factory=list)


def epoch(ts: str) -> float:
    """A ledger timestamp (ISO 8601, ``Z``) as epoch seconds."""
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


class FollowingRuns:
    """Mixed into the drill runner: discover, poll and show the runs.

    Each poll also lets the runner decide (:class:`clampdown.app.drill.decisions.ScriptedDecisions`)
    and type due commands (:class:`clampdown.app.drill.injects.Injects`).
    """

    drill: Drill
    library: Path
    console: Console
    clock: Clock
    run: DrillOutcome
    app: Any
    tracked: dict[str, TrackedRun]
    _injector: threading.Thread
    _shown: tuple[str, Any] | None
    _progress_done: set[str]
    _commands_left: int
    _commands_waiting: list[tuple[float, str]]
    _command_answers: dict[float, str]
    _alerts_left: int

    def _follow_runs(self) -> None:
        """Follow every run of the drill until each has ended and no inject is left to come.

        The alert's run comes first; second alerts and slash commands may start more (a
        release, a rotation), and a release writes a rollback ledger of its own. Runs are
        found in the drill workspace, where only this drill's runs live.
        """
        from clampdown.core.ledger import read
        from clampdown.core.settings import settings

        if self.run.run_id is None:
            return
        ledger = settings().ledger_path(self.run.run_id)
        self.run.ledger = ledger
        deadline = time.time() + RUN_START_TIMEOUT
        while not ledger.exists() and time.time() < deadline:
            time.sleep(POLL)
        if not ledger.exists():
            self.run.failures.append(f"run {self.run.run_id} wrote no ledger")
            return
        self.run.runbook = read(ledger)[0].get("run", {}).get("runbook")
        limit = self.clock.alert_epoch + self.drill.time_limit
        try:
            while time.time() < limit:
                self._discover()
                for tracked in list(self.tracked.values()):
                    tracked.records = read(tracked.ledger)
                    if tracked.ended_at is None and tracked.end is not None:
                        tracked.ended_at = epoch(tracked.end["ts"])
                        if tracked.run_id != self.run.run_id:
                            self._mark(
                                tracked.ended_at - self.clock.alert_epoch,
                                f"{tracked.runbook} run {tracked.run_id} ended "
                                f"{tracked.end.get('status')}",
                            )
                    self._decide(tracked.run_id, tracked.records)
                self._show_progress()
                self._slash_commands()
                if self._settled():
                    break
                time.sleep(POLL)
            else:
                unfinished = [t.run_id for t in self.tracked.values() if t.end is None]
                self.run.failures.append(
                    f"run(s) {', '.join(unfinished) or '—'} did not end within the drill's "
                    f"time limit ({self.drill.time_limit:g} s)"
                    if unfinished
                    else f"injects still due when the drill's time limit "
                    f"({self.drill.time_limit:g} s) was reached"
                )
        finally:
            self._show_progress(stop=True)
        self._wait_for_run_threads()

    def _discover(self) -> None:
        """Track each run that has a ledger in the workspace (how it started: its trigger)."""
        from clampdown.core.ledger import read
        from clampdown.core.settings import settings

        runs = settings().home.expanduser() / "runs"
        for ledger in sorted(runs.glob("*/ledger.jsonl")):
            run_id = ledger.parent.name
            if run_id in self.tracked or not ledger.stat().st_size:
                continue
            try:
                start = read(ledger)[0]
            except (IndexError, ValueError):  # its first record is still being written
                continue
            info = start.get("run", {})
            runbook = str(info.get("runbook") or "?")
            origin = _origin(info.get("trigger") or {}, primary=run_id == self.run.run_id)
            tracked = TrackedRun(run_id, runbook, origin, ledger, epoch(start["ts"]))
            self.tracked[run_id] = tracked
            if run_id != self.run.run_id:
                self._mark(
                    tracked.started_at - self.clock.alert_epoch,
                    f"{runbook} run {run_id} started by {origin}",
                )
            if (info.get("trigger") or {}).get("type") == "slack":  # a command's run is here
                typed = [c for c in self._commands_waiting if c[0] <= tracked.started_at + 1.0]
                if typed:
                    self._commands_waiting.remove(typed[0])

    def _settled(self) -> bool:
        """Every run ended, every inject fired, every command's run found (or given up on)."""
        if any(t.end is None for t in self.tracked.values()):
            return False
        if self._commands_left or (self._alerts_left and self._injector.is_alive()):
            return False
        now = time.time()
        self._read_answers()
        for posted, text in [c for c in self._commands_waiting if now - c[0] > RUN_START_TIMEOUT]:
            self._commands_waiting.remove((posted, text))
            answer = self._command_answers.get(posted) or "no answer reached the stand-in"
            self.run.failures.append(f"'/clampdown {text}' started no run: {answer}")
        return not self._commands_waiting

    def _show_progress(self, *, stop: bool = False) -> None:
        """The live step table of one run at a time: the alert's, then each later one."""
        from clampdown.app.progress import RunProgress
        from clampdown.core.lint import load_runbook
        from clampdown.core.loader import resolve

        shown = self._shown
        if shown is not None and (stop or self.tracked[shown[0]].end is not None):
            shown[1].__exit__(None, None, None)
            self._shown = shown = None
        if stop or shown is not None:
            return
        for tracked in self.tracked.values():
            if tracked.end is not None or tracked.run_id in self._progress_done:
                continue
            self._progress_done.add(tracked.run_id)
            try:
                loaded, _ = load_runbook(resolve(tracked.runbook, self.library))
            except ClampdownError:
                continue
            progress = RunProgress(tracked.ledger, loaded.model, self.console)
            progress.__enter__()
            self._shown = (tracked.run_id, progress)
            return

    def _wait_for_run_threads(self) -> None:
        """A flow uploads its ledger as evidence after ``run.end``: wait for that too."""
        starter = getattr(self.app.state, "starter", None)
        futures = getattr(starter, "futures", {})
        for run_id in self.tracked:
            future = futures.get(run_id)
            if future is not None:
                with contextlib.suppress(Exception):
                    future.result(timeout=EVIDENCE_WAIT)
