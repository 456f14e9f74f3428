"""``clampdown drill``: run a tabletop scenario end to end on simulated AWS, and score it.

The drill exercises the real path, not a shortcut:

1. moto as a real HTTP server on loopback and the local Slack stand-in start; the
   environment is pointed at them with dummy credentials (the user's AWS
   configuration and any other endpoint are shut out, and a botocore hook refuses
   any request to another host — see :mod:`clampdown_aws.testing.simulated`);
2. the scenario is seeded (users and keys, the model bucket, the endpoint, the
   CloudTrail files and log events of the story);
3. ``clampdown serve`` (the same ASGI app) runs in this process on a loopback port,
   with a local Prefect API of the drills' own, its database beside the drill
   workspaces (never the Prefect of real incidents, not even one at ``PREFECT_API_URL``);
4. the alert is posted to it exactly as its source would, with the drill's own
   generated secrets, and the triggers pick the runbook;
5. scripted decisions arrive as signed Slack clicks (or, with ``--interactive``,
   from the person at the terminal), and the injects fire on the drill's clock;
6. the objectives are checked against the simulated AWS end state and the ledger,
   and the after-action report is written (Markdown and HTML) and attached to the
   Prefect run as an artifact.

Everything the drill changes lives in a drill workspace (its own
``CLAMPDOWN_HOME``), so a drill never mixes with real runs.

The pieces, each given what it needs when it is made (in ``clampdown.app.drill``):
``session.DrillSession`` (what is running: servers, secrets, clock),
``timeline.Timeline`` (what the drill saw, behind a lock), ``follower.RunFollower``
(discover, poll and show the runs), ``decisions.Ballots`` (the approvals),
``injects.SlashCommands`` and ``injects.TimedInjects`` (the injects) and
``report.AfterAction`` (the report); :class:`DrillRunner` puts them together.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

from clampdown.app.drill.decisions import Asker, Ballots
from clampdown.app.drill.follower import RunFollower
from clampdown.app.drill.injects import SlashCommands, TimedInjects, post_alert
from clampdown.app.drill.report import AfterAction, DrillResult
from clampdown.app.drill.session import DrillSession, open_session
from clampdown.app.drill.timeline import Clock, Timeline
from clampdown.app.drill.world import POLL
from clampdown.app.progress import Screen
from clampdown.core.drill_library import resolve_drill
from clampdown.core.drill_lint import load_checked
from clampdown.core.drill_model import Drill
from clampdown.core.home import Home, private_dirs

__all__ = ["DrillResult", "DrillRunner", "run_drill", "workspace_for"]


class DrillRunner:
    """One drill from start to report (see the module docstring)."""

    def __init__(
        self,
        drill: Drill,
        *,
        library: Path,
        workspace: Path,
        report_dir: Path | None = None,
        interactive: bool = False,
        console: Console | None = None,
        ask: Asker | None = None,
        freeze_start: bool = False,
    ) -> None:
        self._drill = drill
        self._library = library
        self._workspace = workspace
        self._report_dir = report_dir
        self._interactive = interactive
        self._console = console or Console(stderr=True)
        self._ask = ask
        self._freeze_start = freeze_start

    def execute(self) -> DrillResult:
        """Start the world, post the alert, follow every run, then score and write the report."""
        private_dirs(self._workspace)  # 0700, and so is ~/.clampdown when this makes it
        real_slack = self._interactive and bool(os.environ.get("CLAMPDOWN_SLACK_BOT_TOKEN"))
        clock = Clock()
        timeline = Timeline(clock, self._console)
        with contextlib.ExitStack() as stack:
            with self._start_phase():
                session = stack.enter_context(
                    open_session(
                        self._drill,
                        library=self._library,
                        workspace=self._workspace,
                        console=self._console,
                        clock=clock,
                        timeline=timeline,
                        real_slack=real_slack,
                    )
                )
            runs = self._play(session, timeline)
            runs.wait_for_run_threads()  # the flows' last uploads after run.end
            if runs.all_ended():  # serve has nothing left to do: it stops while we score
                session.stop_serving()
            after = AfterAction(session, timeline, runs)
            return after.write(after.report(), self._report_dir)

    def _start_phase(self) -> contextlib.AbstractContextManager[None]:
        """What the world's start runs inside: with ``freeze_start`` (a process that is this
        drill's alone: the CLI's), Python's cyclic collector off, then everything the start
        built frozen out of its reach (:func:`~clampdown_flows.frozen_imports.imports_frozen`).

        Why: the start imports Prefect, serve and the flows (about 2,000 modules) and builds
        the drill's models, hundreds of thousands of objects that live as long as the drill;
        the collector's passes over them took about a tenth of the start's CPU, on the path
        to the alert (this process is busy from its start to the first ``run.start``).
        Frozen, the collections during the story and the scoring walk only what they
        allocate. Off by default: in a process that runs more than this drill (a test
        session), a freeze would keep what the others leave behind."""
        if not self._freeze_start:
            return contextlib.nullcontext()
        from clampdown_flows.frozen_imports import imports_frozen

        return imports_frozen()

    def _play(self, session: DrillSession, timeline: Timeline) -> RunFollower:
        """The drill itself: the alert, the injects and decisions, until every run ended."""
        screen = Screen()  # the live table, which the interactive prompt holds
        ballots = Ballots(
            session,
            timeline,
            interactive=self._interactive,
            ask=self._ask,
            screen=screen,
        )
        commands = SlashCommands(session, timeline)
        injects = TimedInjects(session, timeline)
        runs = RunFollower(
            session, timeline, ballots=ballots, commands=commands, injects=injects, screen=screen
        )
        watch = SlackWatch(session, timeline)
        watch.start()
        try:
            run_id = post_alert(session, timeline)
            injects.start()
            runs.follow(run_id)
            commands.read_answers()
        finally:
            watch.stop()
            injects.stop()
        return runs


class SlackWatch:
    """Time to notify: the first message that reached Slack after the alert (a thread)."""

    def __init__(self, session: DrillSession, timeline: Timeline) -> None:
        self._session = session
        self._timeline = timeline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="drill-slack", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)

    def _watch(self) -> None:
        slack, clock = self._session.slack, self._session.clock
        while not self._stop.is_set() and self._timeline.notified_at is None:
            if (
                slack is not None
                and clock.alert_epoch
                and any(
                    c.method == "chat.postMessage" and c.status == 200 and not c.error
                    for c in slack.calls
                )
            ):
                self._timeline.notified(clock.now())
                return
            self._stop.wait(POLL)


def workspace_for(drill: Drill, home: Path) -> Path:
    """Where one drill keeps its state: ``$CLAMPDOWN_HOME/drills/<name>-<UTC time>/``."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    return Home(home).drills_dir / f"{drill.metadata.name}-{stamp}-{secrets.token_hex(2)}"


def run_drill(
    name: str | None = None,
    *,
    interactive: bool = False,
    report_dir: Path | None = None,
    console: Console | None = None,
    library: Path | None = None,
    ask: Asker | None = None,
    freeze_start: bool = False,
) -> DrillResult:
    """Run drill ``name`` (default: model-theft) and write its report; ``freeze_start``: see
    :meth:`DrillRunner._start_phase` (for a process that runs this drill alone)."""
    from clampdown.core.settings import settings

    conf = settings()
    library = library or conf.library
    path = resolve_drill(name, library)
    drill, warnings = load_checked(path, library)
    out = console or Console(stderr=True)
    for warning in warnings:
        out.print(f"[yellow]{warning}[/]", highlight=False)
    home = conf.home
    if str(home).startswith("~"):
        home = home.expanduser()
    workspace = workspace_for(drill, home)
    runner = DrillRunner(
        drill,
        library=Path(library).resolve(),
        workspace=workspace,
        report_dir=report_dir,
        interactive=interactive,
        console=out,
        ask=ask,
        freeze_start=freeze_start,
    )
    return runner.execute()
