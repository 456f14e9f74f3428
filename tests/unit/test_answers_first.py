"""serve's local starter launches the runs alerts start once the answers are out (issue 15):
held while an alert is being answered, released by the last answer or by the hold's timer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from clampdown.app.local_runs import _AnswersFirst
from clampdown.app.serve import AnswersFirst


@dataclass(frozen=True)
class Run:
    run_id: str


class Clock:
    """Stands in for the loop's call_later: the test decides when the hold runs out."""

    def __init__(self) -> None:
        self.scheduled: list[tuple[float, Callable[[], None]]] = []

    def later(self, delay: float, call: Callable[[], None]) -> None:
        self.scheduled.append((delay, call))


def make() -> tuple[_AnswersFirst, list[str], Clock]:
    launched: list[str] = []
    clock = Clock()
    gate = _AnswersFirst(lambda run: launched.append(run.run_id), clock.later, 1.0)
    return gate, launched, clock


def test_a_run_started_while_nothing_is_answered_is_launched_at_once() -> None:
    gate, launched, clock = make()
    gate.launch(Run("a"))  # type: ignore[arg-type]
    assert launched == ["a"] and clock.scheduled == []


def test_runs_wait_for_the_last_answer_in_progress() -> None:
    gate, launched, clock = make()
    with gate.answering():
        with gate.answering():
            gate.launch(Run("a"))  # type: ignore[arg-type]
        gate.launch(Run("b"))  # type: ignore[arg-type]
        assert launched == [] and gate.held() == {"a", "b"}
    assert launched == ["a", "b"] and gate.held() == set()
    assert [delay for delay, _ in clock.scheduled] == [1.0]  # one timer for the batch


def test_the_hold_runs_out_while_answers_go_on() -> None:
    gate, launched, clock = make()
    with gate.answering():
        gate.launch(Run("a"))  # type: ignore[arg-type]
        clock.scheduled[0][1]()  # the hold ran out
        assert launched == ["a"]
        gate.launch(Run("b"))  # type: ignore[arg-type]
        assert len(clock.scheduled) == 2  # a new batch, a new timer
    assert launched == ["a", "b"]
    clock.scheduled[1][1]()  # its timer later finds nothing left to launch
    assert launched == ["a", "b"]


def test_a_launch_that_fails_does_not_keep_the_others(caplog: pytest.LogCaptureFixture) -> None:
    launched: list[str] = []

    def launch(run: Run) -> None:
        if run.run_id == "a":
            raise RuntimeError("the loop is closed")
        launched.append(run.run_id)

    gate = _AnswersFirst(launch, lambda *_: None, 1.0)  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR, "clampdown.serve"), gate.answering():
        gate.launch(Run("a"))  # type: ignore[arg-type]
        gate.launch(Run("b"))  # type: ignore[arg-type]
    assert launched == ["b"]
    assert "run a could not be launched" in caplog.text


def test_serve_answers_alert_requests_inside_the_block_only() -> None:
    seen: list[tuple[str, int]] = []
    depth = 0

    @contextlib.contextmanager
    def answering() -> Iterator[None]:
        nonlocal depth
        depth += 1
        try:
            yield
        finally:
            depth -= 1

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append((scope["path"], depth))

    middleware = AnswersFirst(app, answering)
    for path in ("/alerts/generic", "/healthz", "/slack/events"):
        asyncio.run(middleware({"type": "http", "path": path}, None, None))
    assert seen == [("/alerts/generic", 1), ("/healthz", 0), ("/slack/events", 0)]
    assert depth == 0
