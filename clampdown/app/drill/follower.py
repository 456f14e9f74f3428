"""Following the runs of a drill through their ledgers, until every one has ended.

The alert's run comes first; second alerts and slash commands may start more. The
drill learns everything from the ledgers in its own workspace (never from the flow's
memory), the way an auditor would.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

from clampdown.app.drill.decisions import Ballots
from clampdown.app.drill.injects import SlashCommands, TimedInjects
from clampdown.app.drill.runs import (
    EVIDENCE_WAIT,
    RUN_START_TIMEOUT,
    TrackedRun,
    epoch,
    origin_of,
)
from clampdown.app.drill.session import DrillSession
from clampdown.app.drill.timeline import Timeline
from clampdown.app.drill.world import POLL
from clampdown.app.progress import Screen
from clampdown.core.diagnostics import ClampdownError


class RunFollower:
    """Discover, poll and show the runs of a drill, until each has ended.

    On every poll each run's records go to the :class:`~clampdown.app.drill.decisions.Ballots`
    and due commands are typed (:class:`~clampdown.app.drill.injects.SlashCommands`); the
    drill is over when every run ended, no inject is still due and every command's
    run was found (:class:`~clampdown.app.drill.injects.TimedInjects` says what is due).
    """

    def __init__(
        self,
        session: DrillSession,
        timeline: Timeline,
        *,
        ballots: Ballots,
        commands: SlashCommands,
        injects: TimedInjects,
        screen: Screen | None = None,
    ) -> None:
        self._session = session
        self._screen = screen or Screen()
        self._timeline = timeline
        self._ballots = ballots
        self._commands = commands
        self._injects = injects
        self._tracked: dict[str, TrackedRun] = {}  # every run of the drill, the alert's first
        self._shown: tuple[str, Any] | None = None  # the run whose progress table is live
        self._progress_done: set[str] = set()
        self._run_id: str | None = None  # the alert's run
        self._runbook: str | None = None
        self._ledger: Path | None = None

    @property
    def run_id(self) -> str | None:
        """The alert's run (None: the alert started none)."""
        return self._run_id

    @property
    def runbook(self) -> str | None:
        """The runbook of the alert's run, as its ledger says."""
        return self._runbook

    @property
    def ledger(self) -> Path | None:
        """The ledger of the alert's run."""
        return self._ledger

    @property
    def primary(self) -> TrackedRun | None:
        """The alert's run, once its ledger was found."""
        return self._tracked.get(str(self._run_id))

    def runs(self) -> list[TrackedRun]:
        """The alert's run first, then the others as they started."""
        return sorted(self._tracked.values(), key=lambda t: (t.run_id != self.run_id, t.started_at))

    def all_ended(self) -> bool:
        """Every run of the drill was found and has ended (``run.end`` in its ledger)."""
        return bool(self._tracked) and all(t.end is not None for t in self._tracked.values())

    def follow(self, run_id: str | None) -> None:
        """Follow every run of the drill until each has ended and no inject is left to come
        (each run's ``run.end``; its flow's last uploads may still run:
        :meth:`wait_for_run_threads`).

        The alert's run (``run_id``) comes first; second alerts and slash commands may
        start more (a release, a rotation), and a release writes a rollback ledger of its
        own. Runs are found in the drill workspace, where only this drill's runs live.
        """
        from clampdown.core.home import Home

        self._run_id = run_id
        if run_id is None:
            return
        ledger = Home(self._session.workspace).run(run_id).ledger  # the workspace is the home
        self._ledger = ledger
        start = _first_record(ledger, time.time() + RUN_START_TIMEOUT)
        if start is None:
            self._timeline.fail(f"run {run_id} wrote no ledger")
            return
        self._runbook = start.get("run", {}).get("runbook")
        try:
            self._poll_until_settled()
        finally:
            self._show_progress(stop=True)
        if self.all_ended():  # its manifest is final: read back while the flows finish
            self._session.read_evidence_soon(run_id)

    def _poll_until_settled(self) -> None:
        drill = self._session.drill
        limit = self._session.clock.alert_epoch + drill.time_limit
        while time.time() < limit:
            self._discover()
            for tracked in list(self._tracked.values()):
                self._poll(tracked)
            self._show_progress()
            self._commands.type_due(self.primary)
            if self._settled():
                return
            time.sleep(self._pause())
        unfinished = [t.run_id for t in self._tracked.values() if t.end is None]
        self._timeline.fail(
            f"run(s) {', '.join(unfinished) or '—'} did not end within the drill's "
            f"time limit ({drill.time_limit:g} s)"
            if unfinished
            else f"injects still due when the drill's time limit "
            f"({drill.time_limit:g} s) was reached"
        )

    def _pause(self) -> float:
        """Until the next poll: :data:`POLL`, or less when a scripted decision is due sooner."""
        due = self._ballots.next_due()
        if due is None:
            return POLL
        return min(POLL, max(0.0, due - time.time()))

    def _poll(self, tracked: TrackedRun) -> None:
        from clampdown.core.ledger import read_written

        tracked.records = read_written(tracked.ledger)  # the run may be writing it now
        if tracked.ended_at is None and tracked.end is not None:
            tracked.ended_at = epoch(tracked.end["ts"])
            if tracked.run_id != self.run_id:
                self._timeline.mark(
                    tracked.ended_at - self._session.clock.alert_epoch,
                    f"{tracked.runbook} run {tracked.run_id} ended {tracked.end.get('status')}",
                )
        self._ballots.decide(tracked.run_id, tracked.records)

    def _discover(self) -> None:
        """Track each run that has a ledger in the workspace (how it started: its trigger)."""
        from clampdown.core.home import Home
        from clampdown.core.ledger import read

        runs = Home(self._session.workspace).runs_dir
        for ledger in sorted(runs.glob("*/ledger.jsonl")):
            run_id = ledger.parent.name
            if run_id in self._tracked or not ledger.stat().st_size:
                continue
            try:
                start = read(ledger)[0]
            except (IndexError, ValueError):  # its first record is still being written
                continue
            info = start.get("run", {})
            runbook = str(info.get("runbook") or "?")
            origin = origin_of(info.get("trigger") or {}, primary=run_id == self.run_id)
            tracked = TrackedRun(run_id, runbook, origin, ledger, epoch(start["ts"]))
            self._tracked[run_id] = tracked
            if run_id != self.run_id:
                self._timeline.mark(
                    tracked.started_at - self._session.clock.alert_epoch,
                    f"{runbook} run {run_id} started by {origin}",
                )
            if (info.get("trigger") or {}).get("type") == "slack":  # a command's run is here
                self._commands.run_started(tracked.started_at)

    def _settled(self) -> bool:
        """Every run ended, every inject fired, every command's run found (or given up on)."""
        if any(t.end is None for t in self._tracked.values()):
            return False
        if self._commands.left or self._injects.still_due():
            return False
        return self._commands.settled()

    def _show_progress(self, *, stop: bool = False) -> None:
        """The live step table of one run at a time: the alert's, then each later one."""
        from clampdown.app.progress import RunProgress
        from clampdown.core.loader import load, resolve

        shown = self._shown
        if shown is not None and (stop or self._tracked[shown[0]].end is not None):
            self._screen.show(None)
            shown[1].__exit__(None, None, None)
            self._shown = shown = None
        if stop or shown is not None:
            return
        for tracked in self._tracked.values():
            if tracked.end is not None or tracked.run_id in self._progress_done:
                continue
            self._progress_done.add(tracked.run_id)
            try:  # its steps, for the table: the triage that started the run linted it
                loaded = load(resolve(tracked.runbook, self._session.library))
            except ClampdownError:
                continue
            progress = RunProgress(tracked.ledger, loaded.model, self._session.console)
            progress.__enter__()
            self._screen.show(progress)
            self._shown = (tracked.run_id, progress)
            return

    def wait_for_run_threads(self) -> None:
        """A flow uploads its ledger as evidence after ``run.end`` (and Prefect records its
        end): wait for that too, before serve stops and the scoring begins. (Scoring during
        the wait measured a longer end, not a shorter one: the flows' last work is this
        process's CPU too, and serve's stop began later.)"""
        futures = self._session.run_futures()
        for run_id in self._tracked:
            future = futures.get(run_id)
            if future is not None:
                with contextlib.suppress(Exception):
                    future.result(timeout=EVIDENCE_WAIT)


def _first_record(ledger: Path, deadline: float) -> dict[str, Any] | None:
    """The ledger's first record once it is written (the file exists a moment before it)."""
    from clampdown.core.ledger import read

    while time.time() < deadline:
        if ledger.exists() and ledger.stat().st_size:
            try:
                return read(ledger)[0]
            except (IndexError, ValueError):  # the first record is still being written
                pass
        time.sleep(POLL)
    return None
