"""format_duration: the one way clampdown prints a duration (plans, progress, reports)."""

from __future__ import annotations

import pytest

from clampdown.core.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0ms"),
        (0.2, "200ms"),
        (0.9996, "1s"),
        (4.49377, "4.49s"),
        (10, "10s"),
        (42.54, "42.5s"),
        (59.96, "1m"),
        (90.5, "1m30s"),
        (300, "5m"),
        (5400, "1h30m"),
        (2 * 86400 + 5, "2d5s"),
    ],
)
def test_durations_print_rounded(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize("seconds", [0.25, 1.5, 30, 300, 5400, 86400])
def test_a_written_duration_reads_back_as_the_same_seconds(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == seconds
