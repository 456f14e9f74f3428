"""How often a paused run asks the Prefect API whether it was resumed.

Each ask costs the local Prefect server CPU (benchmarks/paused_runs.py): the interval grows
with the time people are given to decide, so many long waits do not saturate the server,
while short waits (tests, drills) are still picked up within half a second.
"""

from __future__ import annotations

import pytest

from clampdown_flows.approval_gate import POLL_MAX_SECONDS, POLL_SECONDS, poll_seconds


@pytest.mark.parametrize(
    ("wait", "expected"),
    [
        (0, POLL_SECONDS),  # a request at its deadline
        (-5, POLL_SECONDS),  # past it (the gate expires it; never a negative sleep)
        (60, POLL_SECONDS),  # a one-minute approval: as quick as ever
        (90, POLL_SECONDS),
        (600, 600 / 180),  # ten minutes: every 3.3 s
        (900, POLL_MAX_SECONDS),  # fifteen minutes and longer: every 5 s
        (86_400, POLL_MAX_SECONDS),
    ],
)
def test_the_poll_interval_is_a_share_of_the_time_left_within_bounds(
    wait: float, expected: float
) -> None:
    assert poll_seconds(wait) == pytest.approx(expected)
