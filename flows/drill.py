"""``clampdown drill``: run a tabletop scenario end to end on simulated AWS, and score it.

The drill exercises the real path, not a shortcut:

1. moto as a real HTTP server on loopback and the local Slack stand-in start; the
   environment is pointed at them with dummy credentials (the user's AWS
   configuration and any other endpoint are shut out, and a botocore hook refuses
   any request to another host — see :mod:`integrations.aws.seed`);
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
import hashlib
import hmac
import json
import logging
import os
import secrets
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from clampdown.diagnostics import ClampdownError
from clampdown.drill_model import (
    AttackerCreatesKey,
    AwsThrottling,
    Decide,
    Drill,
    SecondAlert,
    SlackOutage,
    SlashCommand,
    fill_placeholders,
    load_checked,
    resolve_drill,
)
from clampdown.report import DrillReport, Marker, timeline_from_ledger, to_html, to_markdown

log = logging.getLogger("clampdown.drill")

SLACK_CHANNEL = "C0INCIDENT"
TEAM = "T0DRILL01"
POLL = 0.05
RUN_START_TIMEOUT = 30.0
EVIDENCE_WAIT = 15.0
RETRY_SECONDS = 3.0  # a refused decision is tried again this much later, like a person would
MAX_TRIES = 20
_AWS_VARIABLES_SHUT_OUT = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_CA_BUNDLE",
)


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


# --- environment ------------------------------------------------------------------------------


@contextlib.contextmanager
def _patched_environ(values: dict[str, str | None]) -> Iterator[None]:
    """Set (or, with None, remove) environment variables; put everything back afterwards."""
    saved = {name: os.environ.get(name) for name in values}
    try:
        for name, value in values.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _aws_environment(endpoint: str, region: str, workspace: Path) -> dict[str, str | None]:
    """Dummy credentials and the loopback endpoint; the user's AWS configuration is shut out."""
    env: dict[str, str | None] = {name: None for name in _AWS_VARIABLES_SHUT_OUT}
    env.update({name: None for name in os.environ if name.startswith("AWS_ENDPOINT_URL_")})
    env.update(
        {
            "AWS_ACCESS_KEY_ID": "AKIADRILLDUMMY000000",
            "AWS_SECRET_ACCESS_KEY": "drill-dummy-secret-not-a-real-key",
            "AWS_DEFAULT_REGION": region,
            "AWS_REGION": region,
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_CONFIG_FILE": str(workspace / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(workspace / "no-aws-credentials"),
            "AWS_EC2_METADATA_DISABLED": "true",
        }
    )
    return env


@dataclass
class Secrets:
    """The drill's own secrets, made fresh for every drill and never printed."""

    slack_token: str = field(default_factory=lambda: "xoxb-drill-" + secrets.token_hex(12))
    signing_secret: str = field(default_factory=lambda: secrets.token_hex(16))
    alert_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    pagerduty_secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    hmac_secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))


def _clampdown_environment(
    drill: Drill, workspace: Path, keys: Secrets, slack_url: str | None
) -> dict[str, str | None]:
    env: dict[str, str | None] = {
        "CLAMPDOWN_HOME": str(workspace),
        "CLAMPDOWN_EXECUTION": "local",
        "CLAMPDOWN_EVIDENCE_BUCKET": drill.seed.evidence_bucket,
        "CLAMPDOWN_APPROVERS": drill.roles.approver.slack_user,
        "CLAMPDOWN_RESPONDERS": ",".join(_responders(drill)),
        "CLAMPDOWN_ALERT_TOKEN": keys.alert_token,
        "CLAMPDOWN_PAGERDUTY_SECRET": keys.pagerduty_secret,
        "CLAMPDOWN_ALERT_HMAC_SECRET": keys.hmac_secret,
        "CLAMPDOWN_SNS_TOPIC_ARNS": None,
        "CLAMPDOWN_DRILL": "true",
    }
    if slack_url is not None:  # the stand-in; otherwise the user's real Slack settings stay
        env.update(
            {
                "CLAMPDOWN_SLACK_BOT_TOKEN": keys.slack_token,
                "CLAMPDOWN_SLACK_SIGNING_SECRET": keys.signing_secret,
                "CLAMPDOWN_SLACK_CHANNEL": SLACK_CHANNEL,
                "CLAMPDOWN_SLACK_API_URL": slack_url,
                "CLAMPDOWN_SLACK_RETRY_INTERVAL": "0.2",
            }
        )
    return env


def _responders(drill: Drill) -> list[str]:
    """Who may use /clampdown: the incident lead, and whoever the drill has type a command."""
    people = [drill.roles.incident_lead.slack_user]
    for inject in drill.injects:
        person = drill.roles.get(inject.by) if isinstance(inject, SlashCommand) else None
        if person is not None and person.slack_user not in people:
            people.append(person.slack_user)
    return people


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def _moto() -> Iterator[str]:
    """moto as a real HTTP server on loopback, with fresh state."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    try:
        urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"))
        yield url
    finally:
        server.stop()


@contextlib.contextmanager
def _serve(app: Any) -> Iterator[str]:
    """``clampdown serve``'s app on a loopback port, in a thread of this process."""
    import uvicorn

    port = _free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="clampdown-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise ClampdownError("clampdown serve did not start for the drill")
        time.sleep(POLL)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


# --- posting alerts and clicks as their senders do --------------------------------------------


def alert_request(
    source: str, payload: dict[str, Any], keys: Secrets
) -> tuple[bytes, dict[str, str]]:
    """The body and headers ``source`` sends, authenticated the way that source does."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "clampdown-drill"}
    if source in ("guardduty", "eventbridge", "alertmanager"):
        headers["Authorization"] = f"Bearer {keys.alert_token}"
    elif source == "pagerduty":
        digest = hmac.new(keys.pagerduty_secret.encode(), body, hashlib.sha256).hexdigest()
        headers["X-PagerDuty-Signature"] = f"v1={digest}"
    elif source == "generic":
        stamp = str(int(time.time()))
        signed = b"v1:" + stamp.encode() + b":" + body
        digest = hmac.new(keys.hmac_secret.encode(), signed, hashlib.sha256).hexdigest()
        headers["X-Clampdown-Timestamp"] = stamp
        headers["X-Clampdown-Signature"] = f"v1={digest}"
    else:
        raise ClampdownError(f"a drill cannot sign '{source}' alerts")
    return body, headers


def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        answer = json.loads(raw) if raw else {}
    except ValueError:
        answer = {"text": raw[:500].decode(errors="replace")}
    return status, answer if isinstance(answer, dict) else {"answer": answer}


def slack_click(
    action_id: str, value: str, user: str, card: dict[str, Any], secret: str, response_url: str
) -> tuple[bytes, dict[str, str]]:
    """A ``block_actions`` request for a button on ``card``, signed as Slack signs it."""
    payload = {
        "type": "block_actions",
        "user": {"id": user, "username": user.lower(), "team_id": TEAM},
        "api_app_id": "A0DRILL001",
        "token": "drill-verification-token-unused",
        "container": {
            "type": "message",
            "message_ts": card["ts"],
            "channel_id": card.get("channel", SLACK_CHANNEL),
            "is_ephemeral": False,
        },
        "trigger_id": f"{int(time.time())}.drill.{secrets.token_hex(8)}",
        "team": {"id": TEAM, "domain": "drill"},
        "channel": {"id": card.get("channel", SLACK_CHANNEL), "name": "incident-response"},
        "message": {k: v for k, v in card.items() if k != "channel"},
        "response_url": response_url,
        "actions": [
            {
                "action_id": action_id,
                "block_id": "clampdown_decision",
                "type": "button",
                "value": value,
                "action_ts": f"{time.time():.6f}",
            }
        ],
    }
    body = urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()
    return body, slack_signed_headers(body, secret)


def deny_submission(
    value: str, channel: str, user: str, reason: str, secret: str
) -> tuple[bytes, dict[str, str]]:
    """The deny modal's ``view_submission``, with the reason typed in, signed as Slack signs it."""
    from integrations.slack.approval_card import (
        DENY_VIEW,
        REASON_BLOCK,
        REASON_INPUT,
        parse_button_value,
    )

    metadata = json.dumps({"value": parse_button_value(value), "channel": channel})
    payload = {
        "type": "view_submission",
        "team": {"id": TEAM, "domain": "drill"},
        "user": {"id": user, "username": user.lower(), "team_id": TEAM},
        "api_app_id": "A0DRILL001",
        "token": "drill-verification-token-unused",
        "trigger_id": f"{int(time.time())}.drill.{secrets.token_hex(8)}",
        "view": {
            "id": "V0DRILL" + secrets.token_hex(3).upper(),
            "type": "modal",
            "callback_id": DENY_VIEW,
            "private_metadata": metadata,
            "state": {
                "values": {
                    REASON_BLOCK: {REASON_INPUT: {"type": "plain_text_input", "value": reason}}
                }
            },
        },
    }
    body = urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()
    return body, slack_signed_headers(body, secret)


def slash_command(
    text: str, user: str, secret: str, response_url: str
) -> tuple[bytes, dict[str, str]]:
    """``/clampdown <text>`` typed by ``user`` in the incident channel, signed as Slack signs it."""
    form = {
        "token": "drill-verification-token-unused",
        "team_id": TEAM,
        "team_domain": "drill",
        "channel_id": SLACK_CHANNEL,
        "channel_name": "incident-response",
        "user_id": user,
        "user_name": user.lower(),
        "command": "/clampdown",
        "text": text,
        "api_app_id": "A0DRILL001",
        "is_enterprise_install": "false",
        "response_url": response_url,
        "trigger_id": f"{int(time.time())}.drill.{secrets.token_hex(8)}",
    }
    body = urllib.parse.urlencode(form).encode()
    return body, slack_signed_headers(body, secret)


def slack_signed_headers(body: bytes, secret: str) -> dict[str, str]:
    stamp = str(int(time.time()))
    base = f"v0:{stamp}:".encode() + body
    signature = "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": signature,
    }


# --- the drill --------------------------------------------------------------------------------


@dataclass
class _Clock:
    alert_epoch: float = 0.0

    def now(self) -> float:
        return time.time() - self.alert_epoch


@dataclass
class _Ballot:
    """One scripted (or typed) decision for one approval, until the flow counts it."""

    decision: str
    approver: str
    reason: str
    due: float
    done: bool = False
    tries: int = 0
    waiting_since: float | None = None  # clicked; the verdict comes through the ledger


def _verdict(
    records: list[dict[str, Any]], step: str, approver: str, since: float
) -> tuple[bool, str | None] | None:
    """The flow's verdict on ``approver``'s decision sent after ``since`` (None: not yet)."""
    for r in records:
        if (
            r.get("type") == "approval.decision"
            and r.get("step") == step
            and r.get("approver") == approver
            and _epoch(r["ts"]) >= since
        ):
            return bool(r.get("accepted")), r.get("refusal")
    return None


@dataclass
class _Tracked:
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
class _Run:
    """What the drill learns about the run as it goes."""

    run_id: str | None = None
    runbook: str | None = None
    ledger: Path | None = None
    notified_at: float | None = None
    markers: list[Marker] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    new_keys: list[str] = field(default_factory=list)


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
        self.clock = _Clock()
        self.run = _Run()
        self.slack: Any = None
        self.sim: Any = None
        self.seeded: Any = None
        self.base_url = ""
        self._stop = threading.Event()
        self._ballots: dict[tuple[str, str], _Ballot] = {}
        self._scripted: list[tuple[str, str]] = []  # (run, approval step) asked so far
        self.tracked: dict[str, _Tracked] = {}  # every run of the drill, the alert's first
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
        from integrations.aws.seed import SimulatedAws
        from integrations.slack.standin import SlackStandIn

        self.workspace.mkdir(parents=True, exist_ok=True)
        real_slack = self.interactive and bool(os.environ.get("CLAMPDOWN_SLACK_BOT_TOKEN"))
        with contextlib.ExitStack() as stack:
            endpoint = stack.enter_context(_moto())
            stack.enter_context(
                _patched_environ(_aws_environment(endpoint, self.drill.seed.region, self.workspace))
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
                _patched_environ(
                    _clampdown_environment(self.drill, self.workspace, self.keys, slack_url)
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

        from integrations.aws.seed import seed

        session = boto3.session.Session(region_name=self.drill.seed.region)
        return seed(self.drill.seed, alert_time, session.client)

    def _client(self, service: str) -> Any:
        import boto3

        return boto3.session.Session(region_name=self.drill.seed.region).client(service)

    def _with_server(self, stack: contextlib.ExitStack) -> DrillResult:
        from flows.prefect_api import local_api
        from integrations.serve import create_app

        self.console.print("starting the local Prefect API and clampdown serve…")
        stack.enter_context(local_api())
        app = create_app()
        self.app = app
        self.base_url = stack.enter_context(_serve(app))
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
        status, answer = _post(url, body, headers)
        self.console.print(f"T+0s  alert posted to /alerts/{alert.source}: HTTP {status}")
        if status in (200, 202):
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

    # --- following the runs -------------------------------------------------------------------

    def _follow_runs(self) -> None:
        """Follow every run of the drill until each has ended and no inject is left to come.

        The alert's run comes first; second alerts and slash commands may start more (a
        release, a rotation), and a release writes a rollback ledger of its own. Runs are
        found in the drill workspace, where only this drill's runs live.
        """
        from clampdown.ledger import read
        from clampdown.settings import settings

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
                        tracked.ended_at = _epoch(tracked.end["ts"])
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
        from clampdown.ledger import read
        from clampdown.settings import settings

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
            tracked = _Tracked(run_id, runbook, origin, ledger, _epoch(start["ts"]))
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
        from clampdown.lint import load_runbook
        from clampdown.loader import resolve
        from clampdown.progress import RunProgress

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

    # --- slash commands ------------------------------------------------------------------------

    def _slash_commands(self) -> None:
        """Type each scripted ``/clampdown`` command when due (after the alert's run ended)."""
        primary = self.tracked.get(str(self.run.run_id))
        if primary is None or primary.ended_at is None:
            return
        while self._commands and time.time() >= primary.ended_at + self._commands[0].after:
            inject = self._commands.pop(0)
            self._commands_left = len(self._commands)
            self._type_command(inject)

    def _type_command(self, inject: SlashCommand) -> None:
        person = self.drill.roles.get(inject.by)
        assert person is not None  # lint checked it
        context = {**self._context(), "run": {"id": self.run.run_id}}
        text = str(fill_placeholders(inject.text, context))
        token = secrets.token_hex(4)
        response_url = f"{self.slack.url}response_url/{token}" if self.slack else ""
        body, headers = slash_command(text, person.slack_user, self._signing_secret(), response_url)
        posted = time.time()
        self._mark(self.clock.now(), f"/clampdown {text} (by {person.slack_user})")
        try:
            self._post_slack(body, headers)
        except Exception as exc:
            self.run.failures.append(f"'/clampdown {text}' could not be delivered: {exc}")
            return
        if text.split()[:1] == ["run"]:
            self._commands_waiting.append((posted, text))
            self._command_answers[posted] = ""
            self._answers[token] = posted

    def _signing_secret(self) -> str:
        """The stand-in's secret, or the real workspace's (the server verifies with it)."""
        if self.slack is not None:
            return self.keys.signing_secret
        return os.environ.get("CLAMPDOWN_SLACK_SIGNING_SECRET", "")

    def _read_answers(self) -> None:
        """What the Slack app answered each command (its response_url post to the stand-in)."""
        if self.slack is None:
            return
        for token, posted in self._answers.items():
            calls = self.slack.calls_to(f"response_url/{token}")
            if calls:
                self._command_answers[posted] = str(calls[-1].params.get("text", ""))

    # --- decisions ----------------------------------------------------------------------------

    def _pending_approvals(self, run_id: str, records: list[dict[str, Any]]) -> dict[str, float]:
        """Approval requests of a run not yet ended: step -> when it was asked (epoch seconds)."""
        asked: dict[str, float] = {}
        for r in records:
            step = r.get("step")
            if r.get("type") == "approval.request" and step:
                asked.setdefault(step, _epoch(r["ts"]))
            elif r.get("type") == "approval.end" and step in asked:
                asked.pop(step)
                self._ballots.pop((run_id, step), None)
        return asked

    def _decide(self, run_id: str, records: list[dict[str, Any]]) -> None:
        """Deliver each scripted decision when due; retry a refused one, as a person would."""
        for step, asked in self._pending_approvals(run_id, records).items():
            key = (run_id, step)
            ballot = self._ballots.get(key)
            if ballot is None:
                ballot = self._ballot(key, asked)
                if ballot is None:
                    continue
                self._ballots[key] = ballot
            if ballot.waiting_since is not None:
                verdict = _verdict(records, step, ballot.approver, ballot.waiting_since)
                if verdict is None:
                    continue
                accepted, refusal = verdict
                ballot.waiting_since = None
                if accepted:
                    ballot.done = True
                    continue
                self._refused(step, ballot, refusal)
            if ballot.done or time.time() < ballot.due:
                continue
            self._deliver(run_id, step, ballot)

    def _ballot(self, key: tuple[str, str], asked: float) -> _Ballot | None:
        run_id, step = key
        approver = self.drill.roles.approver.slack_user
        if self.interactive:
            decision, reason = self.ask(step, approver)
            return _Ballot(decision, approver, reason, due=time.time())
        inject = self._decision_for(step)
        self._scripted.append(key)
        if inject is None:
            self.run.notes.append(f"no decision is scripted for approval {step} of run {run_id}")
            return _Ballot("none", approver, "", due=float("inf"), done=True)
        person = self.drill.roles.get(inject.by)
        assert person is not None  # lint checked it
        return _Ballot(inject.type, person.slack_user, inject.reason, due=asked + inject.after)

    def _refused(self, step: str, ballot: _Ballot, refusal: str | None) -> None:
        ballot.tries += 1
        at = self.clock.now()
        self.console.print(
            f"T+{at:.1f}s  {ballot.decision} by {ballot.approver} not counted: {refusal}"
        )
        if ballot.tries >= MAX_TRIES:
            ballot.done = True
            self.run.failures.append(
                f"the {ballot.decision} of {step} by {ballot.approver} was refused "
                f"{ballot.tries} times; last: {refusal}"
            )
        else:
            ballot.due = time.time() + RETRY_SECONDS

    def _decision_for(self, step: str) -> Decide | None:
        decides = [i for i in self.drill.injects if isinstance(i, Decide)]
        named = [i for i in decides if i.step == step]
        if named:
            return named[0]
        unnamed = [i for i in decides if i.step is None]
        used = len([k for k in self._scripted if not any(i.step == k[1] for i in decides)])
        return unnamed[used] if used < len(unnamed) else None

    def _deliver(self, run_id: str, step: str, ballot: _Ballot) -> None:
        """A signed Slack click on the card when it reached Slack; else the terminal path."""
        at = self.clock.now()
        label = f"{ballot.decision} by {ballot.approver}"
        card = self._card(run_id, step)
        try:
            if card is not None:
                self._click(card, ballot)
                ballot.waiting_since = time.time() - 1.0  # ledger timestamps vs. this clock
                how = "signed Slack click"
            else:
                how = "clampdown approve (no card reached Slack)"
                verdict = self._submit(run_id, step, ballot)
                if not verdict.accepted:
                    self._refused(step, ballot, verdict.reason)
                    return
                ballot.done = True
        except Exception as exc:
            ballot.tries += 1
            self.run.failures.append(
                f"the {ballot.decision} of {step} could not be delivered: {exc}"
            )
            ballot.due = time.time() + RETRY_SECONDS
            ballot.done = ballot.tries >= MAX_TRIES
            return
        self.console.print(f"T+{at:.1f}s  {label} ({how})")

    def _card(self, run_id: str, step: str) -> dict[str, Any] | None:
        """The approval card for ``step`` as the Slack stand-in received it, if any."""
        if self.slack is None:
            return None
        for message in reversed(self.slack.messages(SLACK_CHANNEL)):
            for value in _button_values(message.get("blocks") or []):
                try:
                    data = json.loads(value)
                except ValueError:
                    continue
                if data.get("run_id") == run_id and data.get("step") == step:
                    return {**message, "channel": SLACK_CHANNEL, "_value": value}
        return None

    def _click(self, card: dict[str, Any], ballot: _Ballot) -> None:
        """Approve: one click. Deny: the click, then the reason modal's submission."""
        from integrations.slack.approval_card import APPROVE_ACTION, DENY_ACTION

        value = card.pop("_value")
        action = APPROVE_ACTION if ballot.decision == "approve" else DENY_ACTION
        response_url = f"{self.slack.url}response_url/{secrets.token_hex(4)}"
        body, headers = slack_click(
            action, value, ballot.approver, card, self.keys.signing_secret, response_url
        )
        self._post_slack(body, headers)
        if ballot.decision == "deny":
            body, headers = deny_submission(
                value, card["channel"], ballot.approver, ballot.reason, self.keys.signing_secret
            )
            self._post_slack(body, headers)

    def _post_slack(self, body: bytes, headers: dict[str, str]) -> None:
        status, answer = _post(f"{self.base_url}/slack/events", body, headers)
        if status != 200:
            raise ClampdownError(f"/slack/events answered HTTP {status}: {answer}")

    def _submit(self, run_id: str, step: str, ballot: _Ballot) -> Any:
        from flows.decisions import submit_decision

        return submit_decision(
            run_id,
            step,
            ballot.approver,
            ballot.decision,  # type: ignore[arg-type]
            ballot.reason,
            "terminal",
        )

    def _ask_terminal(self, step: str, default_approver: str) -> tuple[str, str]:
        from rich.prompt import Prompt

        self.console.print(f"[bold yellow]Approval needed[/] for step [bold]{step}[/]")
        answer = Prompt.ask("approve or deny?", choices=["approve", "deny"], console=self.console)
        reason = ""
        if answer == "deny":
            reason = Prompt.ask("why (required)", console=self.console) or "denied in the drill"
        return answer, reason

    # --- injects on the clock -----------------------------------------------------------------

    def _timed_injects(self) -> None:
        pending = [i for i in self.drill.injects if not isinstance(i, Decide | SlashCommand)]
        pending.sort(key=lambda i: i.at)
        ends: list[tuple[float, Callable[[], None]]] = []
        while (pending or ends) and not self._stop.is_set():
            now = self.clock.now()
            while pending and pending[0].at <= now:
                inject = pending.pop(0)
                try:
                    end = self._apply(inject)
                except Exception as exc:
                    self.run.failures.append(
                        f"inject {inject.type} at T+{inject.at:g}s failed: {exc}"
                    )
                    continue
                if end is not None:
                    ends.append(end)
            for end in [e for e in ends if e[0] <= now]:
                ends.remove(end)
                end[1]()
            self._stop.wait(POLL)
        for _, undo in ends:  # the drill is over: put Slack back
            undo()

    def _apply(self, inject: Any) -> tuple[float, Callable[[], None]] | None:
        at = self.clock.now()
        if isinstance(inject, SlackOutage):
            if self.slack is None:
                self.run.notes.append("Slack outage inject skipped: a real workspace is in use")
                return None
            status = {"down": 503, "server_error": 500, "ratelimited": 429}[inject.mode]
            self.slack.down(status)
            self._mark(at, f"Slack {inject.mode} for {inject.duration:g}s")

            def restore() -> None:
                self.slack.up()
                self._mark(self.clock.now(), "Slack back")

            return inject.at + inject.duration, restore
        if isinstance(inject, AwsThrottling):
            self.sim.throttle(inject.service, inject.calls)
            self._mark(at, f"AWS {inject.service} throttles the next {inject.calls} calls")
            self.run.notes.append(
                f"AWS throttling is simulated: {inject.calls} {inject.service} calls answered "
                "Throttling by a botocore hook of the drill (moto never throttles)"
            )
        elif isinstance(inject, AttackerCreatesKey):
            key = self._client("iam").create_access_key(UserName=inject.user)["AccessKey"]
            self.run.new_keys.append(key["AccessKeyId"])
            masked = f"{key['AccessKeyId'][:4]}…{key['AccessKeyId'][-4:]}"
            self._mark(at, f"attacker creates access key {masked} for {inject.user}")
        elif isinstance(inject, SecondAlert):
            try:
                payload = fill_placeholders(inject.payload, self._context())
                body, headers = alert_request(inject.source, payload, self.keys)
                status, answer = _post(f"{self.base_url}/alerts/{inject.source}", body, headers)
            finally:
                self._alerts_left -= 1
            outcomes = [
                f"{a.get('status', '?')} {a.get('run_id') or ''}".strip()
                for a in answer.get("alerts", [])
            ]
            self._mark(at, f"second alert ({inject.source}): HTTP {status} {', '.join(outcomes)}")
            if status not in (200, 202):
                self.run.failures.append(f"the second alert was refused: HTTP {status} {answer}")
        return None

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

    # --- scoring and the report ---------------------------------------------------------------

    def _report(self) -> DrillReport:
        from clampdown.actions import registry
        from clampdown.ledger import read
        from flows.objectives import DrillFacts, RunFacts, score

        records = read(self.run.ledger) if self.run.ledger and self.run.ledger.exists() else []
        actions, _ = registry().load_all()
        containment = {a.name for a in actions if a.destructive and not a.approval_gate}
        gates = {a.name for a in actions if a.approval_gate}
        steps, ledger_markers, decisions = timeline_from_ledger(
            records, self.clock.alert_epoch, containment=containment, approvals=gates
        )
        runs: list[RunFacts] = []
        later_failures: list[str] = []
        for tracked in self._runs_in_order():
            if tracked.run_id == self.run.run_id:
                runs.append(
                    RunFacts(tracked.run_id, tracked.runbook, tracked.origin, records, steps)
                )
                continue
            more = read(tracked.ledger)
            spans, marks, said = timeline_from_ledger(
                more, self.clock.alert_epoch, containment=containment, approvals=gates
            )
            runs.append(RunFacts(tracked.run_id, tracked.runbook, tracked.origin, more, spans))
            ledger_markers += [Marker(m.at, f"{tracked.runbook}: {m.label}") for m in marks]
            decisions += [f"{tracked.runbook}: {line}" for line in said]
            later_failures += [
                f"{tracked.runbook} step {s.id} ({s.uses}) failed: {s.note}"
                for s in spans
                if s.status == "failed"
            ]
        facts = DrillFacts(
            drill=self.drill,
            seeded=self.seeded,
            alert_epoch=self.clock.alert_epoch,
            client=self._client,
            run_id=self.run.run_id,
            runbook=self.run.runbook,
            records=records,
            steps=steps,
            slack_messages=self.slack.messages(SLACK_CHANNEL) if self.slack is not None else [],
            runs=runs,
        )
        objectives = score(facts)
        self._check_inputs(records)
        done = [s for s in steps if s.containment and s.status == "succeeded" and s.end]
        broken = [s for s in steps if s.containment and s.status == "failed"]
        gate_ends = [s.end for s in steps if s.approval and s.end is not None]
        failures = [
            f"step {s.id} ({s.uses}) failed: {s.note}" for s in steps if s.status == "failed"
        ]
        failures += [
            f"Slack: {r.get('count')} update(s) missed, last error: {r.get('last_error')}"
            for r in records
            if r.get("type") == "slack.miss"
        ]
        failures += later_failures + self.run.failures
        evidence, manifest_uri = self._evidence()
        notes = list(self.run.notes)
        if self.sim.lookups:
            notes.append(
                "CloudTrail LookupEvents (not implemented by moto) was answered "
                f"{self.sim.lookups} time(s) by the drill from the seeded story"
            )
        if self.sim.throttled:
            notes.append(f"AWS calls answered Throttling by the drill: {self.sim.throttled}")
        roles = {
            name: f"{person.name} ({person.slack_user})"
            for name in self.drill.roles.names()
            if (person := self.drill.roles.get(name)) is not None
        }
        return DrillReport(
            drill=self.drill.metadata.name,
            title=self.drill.metadata.title,
            family=self.drill.metadata.family,
            run_id=self.run.run_id,
            runbook=self.run.runbook,
            alert_source=self.drill.alert.source,
            alert_time=datetime.fromtimestamp(self.clock.alert_epoch, UTC),
            roles=roles,
            time_to_notify=self.run.notified_at,
            time_to_approve=min(gate_ends) if gate_ends else None,
            time_to_contain=max(s.end for s in done if s.end) if done and not broken else None,
            steps=steps,
            markers=sorted([*self.run.markers, *ledger_markers], key=lambda m: m.at),
            objectives=objectives,
            expected_missed=list(self.drill.expect.missed),
            failures=failures,
            evidence=evidence,
            manifest_uri=manifest_uri,
            decisions=decisions,
            notes=notes,
            runs=[self._run_line(run) for run in runs],
        )

    def _runs_in_order(self) -> list[_Tracked]:
        """The alert's run first, then the others as they started."""
        return sorted(
            self.tracked.values(), key=lambda t: (t.run_id != self.run.run_id, t.started_at)
        )

    def _run_line(self, run: Any) -> str:
        """One line of the report's run list: what ran, how it started, how it ended."""
        tracked = self.tracked[run.run_id]
        start = tracked.started_at - self.clock.alert_epoch
        end = (
            f", ended T+{tracked.ended_at - self.clock.alert_epoch:.1f}s"
            if tracked.ended_at is not None
            else ""
        )
        return (
            f"run {run.run_id} of {run.runbook}: {run.status or 'not ended'} "
            f"(started T+{start:.1f}s by {run.origin}{end})"
        )

    def _evidence(self) -> tuple[list[dict[str, Any]], str | None]:
        if self.run.run_id is None:
            return [], None
        bucket = self.seeded.evidence_bucket
        key = f"incidents/{self.run.run_id}/manifest.json"
        try:
            body = self._client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
        except Exception:
            return [], None
        return list(json.loads(body).get("objects", [])), f"s3://{bucket}/{key}"

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

    def _attach(self, markdown: str, report: DrillReport) -> None:
        """The report as a markdown artifact of the run's Prefect flow run."""
        from uuid import UUID

        from clampdown.ledger import read

        if self.run.ledger is None or not self.run.ledger.exists():
            return
        flow_run_id = read(self.run.ledger)[0].get("flow_run_id")
        try:
            from prefect.client.orchestration import get_client
            from prefect.client.schemas.actions import ArtifactCreate

            with get_client(sync_client=True) as client:
                client.create_artifact(
                    ArtifactCreate(
                        key=f"drill-report-{report.run_id}".lower(),
                        type="markdown",
                        data=markdown,
                        description=f"after-action report of drill {report.drill}",
                        flow_run_id=UUID(flow_run_id) if flow_run_id else None,
                    )
                )
        except Exception as exc:  # the files are written; the artifact is a convenience
            report.notes.append(f"the report could not be attached to the Prefect run: {exc}")


def _button_values(blocks: list[dict[str, Any]]) -> Iterator[str]:
    for block in blocks:
        for element in block.get("elements", []) or []:
            if element.get("type") == "button" and element.get("value"):
                yield str(element["value"])
        accessory = block.get("accessory") or {}
        if accessory.get("type") == "button" and accessory.get("value"):
            yield str(accessory["value"])


def _epoch(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


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
    from clampdown.settings import settings

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
