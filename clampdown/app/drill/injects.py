"""The drill's injects: what happens to the team on the clock, beyond the alert.

Timed injects (a Slack outage, AWS throttling, the attacker minting a key, a second
alert) fire at T+``at`` in a thread of their own; slash commands are typed a while
after the alert's run ended, as a person acting on what they saw would.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from clampdown.app.drill.requests import alert_request, post, post_slack_event, slash_command
from clampdown.app.drill.runs import Clock, DrillOutcome, TrackedRun
from clampdown.app.drill.world import POLL, Secrets
from clampdown.core.drill_model import (
    AttackerCreatesKey,
    AwsThrottling,
    Decide,
    Drill,
    SecondAlert,
    SlackOutage,
    SlashCommand,
)
from clampdown.core.drill_placeholders import fill_placeholders


class Injects:
    """Mixed into the drill runner: slash commands and timed injects."""

    drill: Drill
    keys: Secrets
    clock: Clock
    run: DrillOutcome
    slack: Any
    sim: Any
    base_url: str
    tracked: dict[str, TrackedRun]
    _stop: threading.Event
    _commands: list[SlashCommand]
    _commands_left: int
    _commands_waiting: list[tuple[float, str]]
    _command_answers: dict[float, str]
    _answers: dict[str, float]
    _alerts_left: int

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
            post_slack_event(self.base_url, body, headers)
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
                status, answer = post(f"{self.base_url}/alerts/{inject.source}", body, headers)
            finally:
                self._alerts_left -= 1
            outcomes = [
                f"{a.get('status', '?')} {a.get('run_id') or ''}".strip()
                for a in answer.get("alerts", [])
            ]
            self._mark(at, f"second alert ({inject.source}): HTTP {status} {', '.join(outcomes)}")
            if status not in (200, 202):
                self.run.failures.append(f"the second alert was refused: HTTP {status} {answer}")
            else:
                self.run.posted_alerts += [
                    str(a["id"]) for a in answer.get("alerts", []) if a.get("id")
                ]
        return None
