"""The alert and the drill's injects: what happens to the team on the clock.

:func:`post_alert` posts the drill's alert at T+0. Timed injects (a Slack outage,
AWS throttling, the attacker minting a key, a second alert) fire at T+``at`` in a
thread of their own (:class:`TimedInjects`); slash commands are typed a while after
the alert's run ended, as a person acting on what they saw would
(:class:`SlashCommands`).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from clampdown.app.drill.requests import alert_request, post, post_slack_event, slash_command
from clampdown.app.drill.runs import RUN_START_TIMEOUT, TrackedRun
from clampdown.app.drill.session import DrillSession
from clampdown.app.drill.timeline import Timeline
from clampdown.app.drill.world import POLL
from clampdown.core.drill_model import (
    AttackerCreatesKey,
    AwsThrottling,
    Decide,
    SecondAlert,
    SlackOutage,
    SlashCommand,
)
from clampdown.core.drill_placeholders import fill_placeholders


def post_alert(session: DrillSession, timeline: Timeline) -> str | None:
    """T+0: the drill's alert, posted as its source would; the run it started, if any."""
    session.clock.start()
    alert = session.drill.alert
    payload = fill_placeholders(alert.payload, session.context())
    body, headers = alert_request(alert.source, payload, session.keys)
    status, answer = post(f"{session.base_url}/alerts/{alert.source}", body, headers)
    session.console.print(f"T+0s  alert posted to /alerts/{alert.source}: HTTP {status}")
    if status in (200, 202):
        timeline.alerts_accepted([str(a["id"]) for a in answer.get("alerts", []) if a.get("id")])
        run_id = next((a["run_id"] for a in answer.get("alerts", []) if a.get("run_id")), None)
        if not run_id:
            timeline.fail(f"the alert was accepted but no run started: {answer}")
        return str(run_id) if run_id else None
    detail = answer.get("detail") or answer.get("error") or answer
    timeline.fail(f"the alert endpoint refused the alert: HTTP {status} {detail}")
    return None


class SlashCommands:
    """The scripted ``/clampdown`` commands: typed when due, each ``run`` matched to its run.

    Called from the run follower's thread only: :meth:`type_due` on every poll,
    :meth:`run_started` when a run started from Slack appears, :meth:`settled` when
    every run has ended.
    """

    def __init__(self, session: DrillSession, timeline: Timeline) -> None:
        self._session = session
        self._timeline = timeline
        self._due = sorted(
            (i for i in session.drill.injects if isinstance(i, SlashCommand)),
            key=lambda i: i.after,
        )
        self._waiting: list[tuple[float, str]] = []  # (posted at, text): a run is expected
        self._answers: dict[float, str] = {}  # posted at -> what the Slack app answered
        self._tokens: dict[str, float] = {}  # response_url token -> posted at

    @property
    def left(self) -> int:
        """Commands not typed yet."""
        return len(self._due)

    def type_due(self, primary: TrackedRun | None) -> None:
        """Type each command whose time has come (``after`` seconds after the alert's run ended)."""
        if primary is None or primary.ended_at is None:
            return
        while self._due and time.time() >= primary.ended_at + self._due[0].after:
            self._type(self._due.pop(0), primary.run_id)

    def run_started(self, started_at: float) -> None:
        """A run started from Slack: the first command typed before it is answered."""
        typed = [c for c in self._waiting if c[0] <= started_at + 1.0]
        if typed:
            self._waiting.remove(typed[0])

    def settled(self) -> bool:
        """Every ``run`` command has its run; one waiting too long is recorded as a failure."""
        now = time.time()
        self.read_answers()
        for posted, text in [c for c in self._waiting if now - c[0] > RUN_START_TIMEOUT]:
            self._waiting.remove((posted, text))
            answer = self._answers.get(posted) or "no answer reached the stand-in"
            self._timeline.fail(f"'/clampdown {text}' started no run: {answer}")
        return not self._waiting

    def read_answers(self) -> None:
        """What the Slack app answered each command (its response_url post to the stand-in)."""
        slack = self._session.slack
        if slack is None:
            return
        for token, posted in self._tokens.items():
            calls = slack.calls_to(f"response_url/{token}")
            if calls:
                self._answers[posted] = str(calls[-1].params.get("text", ""))

    def _type(self, inject: SlashCommand, run_id: str) -> None:
        session = self._session
        person = session.drill.roles.get(inject.by)
        assert person is not None  # lint checked it
        context = {**session.context(), "run": {"id": run_id}}
        text = str(fill_placeholders(inject.text, context))
        token = secrets.token_hex(4)
        response_url = f"{session.slack.url}response_url/{token}" if session.slack else ""
        body, headers = slash_command(text, person.slack_user, session.signing_secret, response_url)
        posted = time.time()
        self._timeline.mark(session.clock.now(), f"/clampdown {text} (by {person.slack_user})")
        try:
            post_slack_event(session.base_url, body, headers)
        except Exception as exc:
            self._timeline.fail(f"'/clampdown {text}' could not be delivered: {exc}")
            return
        if text.split()[:1] == ["run"]:
            self._waiting.append((posted, text))
            self._answers[posted] = ""
            self._tokens[token] = posted


class TimedInjects:
    """The injects that fire at T+``at``, in a thread of their own (:meth:`start`, :meth:`stop`).

    A Slack outage ends after its ``duration``; one still on when the drill stops is
    ended then, so Slack is always back.
    """

    def __init__(self, session: DrillSession, timeline: Timeline) -> None:
        self._session = session
        self._timeline = timeline
        self._pending = sorted(
            (i for i in session.drill.injects if not isinstance(i, Decide | SlashCommand)),
            key=lambda i: i.at,
        )
        self._lock = threading.Lock()
        self._alerts_left = sum(1 for i in self._pending if isinstance(i, SecondAlert))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fire, name="drill-injects", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop firing (an outage still on is ended); wait a little for the thread."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2)

    def still_due(self) -> bool:
        """A second alert is still to come (a run it starts must be waited for)."""
        with self._lock:
            left = self._alerts_left
        return bool(left) and self._thread.is_alive()

    def _fire(self) -> None:
        pending = list(self._pending)
        ends: list[tuple[float, Callable[[], None]]] = []
        while (pending or ends) and not self._stop.is_set():
            now = self._session.clock.now()
            while pending and pending[0].at <= now:
                inject = pending.pop(0)
                try:
                    end = self._apply(inject)
                except Exception as exc:
                    self._timeline.fail(f"inject {inject.type} at T+{inject.at:g}s failed: {exc}")
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
        at = self._session.clock.now()
        if isinstance(inject, SlackOutage):
            return self._slack_outage(inject, at)
        if isinstance(inject, AwsThrottling):
            self._session.sim.throttle(inject.service, inject.calls)
            self._timeline.mark(at, f"AWS {inject.service} throttles the next {inject.calls} calls")
            self._timeline.note(
                f"AWS throttling is simulated: {inject.calls} {inject.service} calls answered "
                "Throttling by a botocore hook of the drill (moto never throttles)"
            )
        elif isinstance(inject, AttackerCreatesKey):
            iam = self._session.client("iam")
            key = iam.create_access_key(UserName=inject.user)["AccessKey"]
            self._timeline.key_minted(key["AccessKeyId"])
            masked = f"{key['AccessKeyId'][:4]}…{key['AccessKeyId'][-4:]}"
            self._timeline.mark(at, f"attacker creates access key {masked} for {inject.user}")
        elif isinstance(inject, SecondAlert):
            self._second_alert(inject, at)
        return None

    def _slack_outage(
        self, inject: SlackOutage, at: float
    ) -> tuple[float, Callable[[], None]] | None:
        slack = self._session.slack
        if slack is None:
            self._timeline.note("Slack outage inject skipped: a real workspace is in use")
            return None
        status = {"down": 503, "server_error": 500, "ratelimited": 429}[inject.mode]
        slack.down(status)
        self._timeline.mark(at, f"Slack {inject.mode} for {inject.duration:g}s")

        def restore() -> None:
            slack.up()
            self._timeline.mark(self._session.clock.now(), "Slack back")

        return inject.at + inject.duration, restore

    def _second_alert(self, inject: SecondAlert, at: float) -> None:
        session = self._session
        try:
            payload = fill_placeholders(inject.payload, session.context())
            body, headers = alert_request(inject.source, payload, session.keys)
            status, answer = post(f"{session.base_url}/alerts/{inject.source}", body, headers)
        finally:
            with self._lock:
                self._alerts_left -= 1
        outcomes = [
            f"{a.get('status', '?')} {a.get('run_id') or ''}".strip()
            for a in answer.get("alerts", [])
        ]
        self._timeline.mark(
            at, f"second alert ({inject.source}): HTTP {status} {', '.join(outcomes)}"
        )
        if status not in (200, 202):
            self._timeline.fail(f"the second alert was refused: HTTP {status} {answer}")
        else:
            self._timeline.alerts_accepted(
                [str(a["id"]) for a in answer.get("alerts", []) if a.get("id")]
            )
