"""`clampdown worker` keeps polling after Prefect's worker gives up during a long outage."""

from __future__ import annotations

import asyncio

import pytest

from clampdown.app.deployment import keep_polling

GAVE_UP = RuntimeError("Service exceeded error threshold.")


class Worker:
    """A stand-in for Prefect's worker: ``start`` raises what it was given, or returns."""

    def __init__(self, outcome: BaseException | None, started: list[int]) -> None:
        self.outcome, self.started = outcome, started

    async def start(self) -> None:
        self.started.append(1)
        if self.outcome is not None:
            raise self.outcome


def run(outcomes: list[BaseException | None]) -> int:
    started: list[int] = []
    pending = list(outcomes)
    asyncio.run(keep_polling(lambda: Worker(pending.pop(0), started), pause=0))
    return len(started)


def test_a_worker_that_gave_up_polling_is_replaced_until_one_returns() -> None:
    assert run([GAVE_UP, ExceptionGroup("loops", [GAVE_UP, GAVE_UP]), None]) == 3


def test_a_worker_that_returns_is_not_restarted() -> None:
    assert run([None, GAVE_UP]) == 1


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError("something else"),
        ValueError("Service exceeded error threshold."),
        ExceptionGroup("loops", [GAVE_UP, KeyError("bug")]),
    ],
)
def test_any_other_error_still_stops_the_worker(error: Exception) -> None:
    with pytest.raises(type(error)):
        run([error, None])
