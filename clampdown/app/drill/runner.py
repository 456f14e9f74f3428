"""``clampdown drill``: run a tabletop scenario end to end on simulated AWS, and score it.

The drill exercises the real path, not a shortcut:

1. moto as a real HTTP server on loopback and the local Slack stand-in start; the
   environment is pointed at them with dummy credentials (the user's AWS
   configuration and any other endpoint are shut out, and a botocore hook refuses
   any request to another host — see :mod:`clampdown_aws.testing.seed`);
2. the scenario is seeded (users and keys, the model bucket, the endpoint, the
   CloudTrail files and log events of the story);
3. ``clampdown serve`` (the same ASGI app) runs in this process on a loopback port,
   with the one local Prefect API of the process;
4. the alert is posted to it exactly as its source would, with the drill's own
   generated secrets, and the triggers pick the runbook;
5. scripted decisions arrive as signed Slack clicks (or, with ``--interactive``,
   from the person at the terminal), and the injects fire on the drill's clock;
6. the objectives are checked against the simulated AWS end state and the ledger,
   and the after-action report is written (Markdown and HTML) and attached to the
   Prefect run as an artifact.

Everything the drill changes lives in a drill workspace (its own
``CLAMPDOWN_HOME``), so a drill never mixes with real runs.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from clampdown.app.drill.decisions import Ballot, ScriptedDecisions
from clampdown.app.drill.injects import Injects
from clampdown.app.drill.report import AfterActionReport
from clampdown.app.drill.requests import alert_request, post
from clampdown.app.drill.runs import Clock, DrillOutcome, FollowingRuns, TrackedRun
from clampdown.app.drill.world import (
    POLL,
    Secrets,
    aws_environment,
    clampdown_environment,
    moto_server,
    patched_environ,
    serve_on_loopback,
)
from clampdown.core.drill_library import resolve_drill
from clampdown.core.drill_lint import load_checked
from clampdown.core.drill_model import Drill, SecondAlert, SlashCommand
from clampdown.core.drill_placeholders import fill_placeholders
from clampdown.core.report import DrillReport, Marker
from clampdown.core.report_html import to_html
from clampdown.core.report_markdown import to_markdown


@dataclass
class DrillResult:
    """What the command prints and returns: the report, where it is, the exit code."""

    report: DrillReport
    markdown: Path
    html: Path
    workspace: Path

    @property
    def exit_code(self) -> int:
        return 0 if self.report.all_met else 1


class DrillRunner(FollowingRuns, ScriptedDecisions, Injects, AfterActionReport):
    """One drill from start to report (see the module docstring).

    The world, the requests, the runs, the decisions, the injects and the report live in
    the ``flows.drill_*`` modules; this class holds the drill's state and runs the steps.
    """

    def __init__(
        self,
        drill: Drill,
        *,
        library: Path,
        workspace: Path,
        report_dir: Path | None = None,
        interactive: bool = False,
        console: Console | None = None,
        ask: Callable[[str, str], tuple[str, str]] | None = None,
    ) -> None:
        self.drill = drill
        self.library = library
        self.workspace = workspace
        self.report_dir = report_dir
        self.interactive = interactive
        self.console = console or Console(stderr=True)
        self.ask = ask or self._ask_terminal
        self.keys = Secrets()
        self.clock = Clock()
        self.run = DrillOutcome()
        self.slack: Any = None
        self.sim: Any = None
        self.seeded: Any = None
        self.base_url = ""
        self._stop = threading.Event()
        self._ballots: dict[tuple[str, str], Ballot] = {}
        self._scripted: list[tuple[str, str]] = []  # (run, approval step) asked so far
        self.tracked: dict[str, TrackedRun] = {}  # every run of the drill, the alert's first
        self._shown: tuple[str, Any] | None = None  # the run whose progress table is live
        self._progress_done: set[str] = set()
        self._commands = sorted(
            (i for i in drill.injects if isinstance(i, SlashCommand)), key=lambda i: i.after
        )
        self._commands_left = len(self._commands)
        self._commands_waiting: list[tuple[float, str]] = []  # (posted at, text): run expected
        self._command_answers: dict[float, str] = {}
        self._answers: dict[str, float] = {}  # response_url token -> posted at
        self._alerts_left = sum(1 for i in drill.injects if isinstance(i, SecondAlert))

    # --- top level ----------------------------------------------------------------------------

    def execute(self) -> DrillResult:
        from clampdown_aws.testing.seed import SimulatedAws
        from clampdown_slack.testing.standin import SlackStandIn

        self.workspace.mkdir(parents=True, exist_ok=True)
        real_slack = self.interactive and bool(os.environ.get("CLAMPDOWN_SLACK_BOT_TOKEN"))
        with contextlib.ExitStack() as stack:
            endpoint = stack.enter_context(moto_server())
            stack.enter_context(
                patched_environ(aws_environment(endpoint, self.drill.seed.region, self.workspace))
            )
            if not real_slack:
                self.slack = stack.enter_context(
                    SlackStandIn(
                        token=self.keys.slack_token,
                        usergroups={"security-oncall": [self.drill.roles.approver.slack_user]},
                    )
                )
            else:
                self.run.notes.append("Slack: the real workspace of CLAMPDOWN_SLACK_* was used")
            slack_url = self.slack.url if self.slack is not None else None
            stack.enter_context(
                patched_environ(
                    clampdown_environment(self.drill, self.workspace, self.keys, slack_url)
                )
            )
            self.sim = stack.enter_context(SimulatedAws(endpoint))
            alert_time = datetime.now(UTC)
            self.console.print(
                f"[bold]Drill[/] {self.drill.metadata.title}: seeding simulated AWS…"
            )
            self.seeded = self._seed(alert_time)
            self.sim.records = self.seeded.trail_records
            return self._with_server(stack)

    def _seed(self, alert_time: datetime) -> Any:
        import boto3

        from clampdown_aws.testing.seed import seed

        session = boto3.session.Session(region_name=self.drill.seed.region)
        return seed(self.drill.seed, alert_time, session.client)

    def _client(self, service: str) -> Any:
        import boto3

        return boto3.session.Session(region_name=self.drill.seed.region).client(service)

    def _with_server(self, stack: contextlib.ExitStack) -> DrillResult:
        from clampdown.app.serve import create_app
        from clampdown_flows.prefect_api import local_api

        self.console.print("starting the local Prefect API and clampdown serve…")
        stack.enter_context(local_api())
        app = create_app()
        self.app = app
        self.base_url = stack.enter_context(serve_on_loopback(app))
        watcher = threading.Thread(target=self._watch_slack, name="drill-slack", daemon=True)
        watcher.start()
        injector = threading.Thread(target=self._timed_injects, name="drill-injects", daemon=True)
        self._injector = injector
        try:
            self._post_alert()
            injector.start()
            self._follow_runs()
            self._read_answers()
        finally:
            self._stop.set()
            watcher.join(2)
            if injector.is_alive():
                injector.join(2)
        report = self._report()
        return self._write(report)

    # --- the alert ----------------------------------------------------------------------------

    def _context(self) -> dict[str, Any]:
        stamp = datetime.fromtimestamp(self.clock.alert_epoch or time.time(), UTC)
        return {
            "seed": self.seeded.context(),
            "drill": {
                "name": self.drill.metadata.name,
                "alert_time": stamp.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
                "alert_epoch": int(stamp.timestamp()),
            },
        }

    def _post_alert(self) -> None:
        self.clock.alert_epoch = time.time()
        alert = self.drill.alert
        payload = fill_placeholders(alert.payload, self._context())
        body, headers = alert_request(alert.source, payload, self.keys)
        url = f"{self.base_url}/alerts/{alert.source}"
        status, answer = post(url, body, headers)
        self.console.print(f"T+0s  alert posted to /alerts/{alert.source}: HTTP {status}")
        if status in (200, 202):
            self.run.posted_alerts += [
                str(a["id"]) for a in answer.get("alerts", []) if a.get("id")
            ]
            run_id = next((a["run_id"] for a in answer.get("alerts", []) if a.get("run_id")), None)
            if not run_id:
                self.run.failures.append(f"the alert was accepted but no run started: {answer}")
            self.run.run_id = str(run_id) if run_id else None
            return
        detail = answer.get("detail") or answer.get("error") or answer
        self.run.failures.append(f"the alert endpoint refused the alert: HTTP {status} {detail}")

    def _check_inputs(self, records: list[dict[str, Any]]) -> None:
        """The inputs the triggers gave the runbook are the ones the drill expects."""
        start = next((r for r in records if r.get("type") == "run.start"), None)
        if start is None or not self.drill.inputs:
            return
        expected = fill_placeholders(self.drill.inputs, self._context())
        given = start.get("inputs", {})
        for name, value in expected.items():
            if given.get(name) != value:
                self.run.failures.append(
                    f"the triggers gave {self.drill.runbook} {name}={given.get(name)!r}, "
                    f"the drill expects {value!r}: check runbooks/triggers.yaml"
                )

    def _mark(self, at: float, label: str) -> None:
        self.run.markers.append(Marker(at, label))
        self.console.print(f"T+{at:.1f}s  {label}")

    def _watch_slack(self) -> None:
        """Time to notify: the first message that reached Slack after the alert."""
        while not self._stop.is_set() and self.run.notified_at is None:
            if (
                self.slack is not None
                and self.clock.alert_epoch
                and any(
                    c.method == "chat.postMessage" and c.status == 200 and not c.error
                    for c in self.slack.calls
                )
            ):
                self.run.notified_at = self.clock.now()
                return
            self._stop.wait(POLL)

    def _write(self, report: DrillReport) -> DrillResult:
        folder = self.report_dir or self.workspace.parent / (report.run_id or self.workspace.name)
        folder.mkdir(parents=True, exist_ok=True)
        markdown = folder / "report.md"
        page = folder / "report.html"
        text = to_markdown(report)
        markdown.write_text(text, encoding="utf-8")
        page.write_text(to_html(report), encoding="utf-8")
        self._attach(text, report)
        return DrillResult(report, markdown, page, self.workspace)


def workspace_for(drill: Drill, home: Path) -> Path:
    """Where one drill keeps its state: ``$CLAMPDOWN_HOME/drills/<name>-<UTC time>/``."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    return home.expanduser() / "drills" / f"{drill.metadata.name}-{stamp}-{secrets.token_hex(2)}"


def run_drill(
    name: str | None = None,
    *,
    interactive: bool = False,
    report_dir: Path | None = None,
    console: Console | None = None,
    library: Path | None = None,
    ask: Callable[[str, str], tuple[str, str]] | None = None,
) -> DrillResult:
    """Run drill ``name`` (default: model-theft) and write its report."""
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
    )
    return runner.execute()
