"""The API a drill starts for itself: given time for a new database's migrations, and a
start that never answers is a message that says what to do, not a traceback."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

import clampdown_flows.prefect_api as prefect_api
from clampdown.app.drill import world
from clampdown.core.diagnostics import ClampdownError


def test_a_drills_api_that_never_answers_is_a_clampdown_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[int] = []

    @contextlib.contextmanager
    def never_up(timeout: int = 60) -> Iterator[str]:
        asked.append(timeout)
        raise RuntimeError("Timed out while attempting to connect to ephemeral Prefect API server.")
        yield "unreachable"

    monkeypatch.setattr(prefect_api, "local_api", never_up)
    workspace = tmp_path / "drills" / "model-theft-1"
    with pytest.raises(ClampdownError) as raised, world.drill_prefect(workspace):
        pytest.fail("the block must not run without an API")
    assert asked == [world.API_START_TIMEOUT] and world.API_START_TIMEOUT > 60
    error = raised.value
    assert "did not answer within" in error.message
    assert str(tmp_path / "drills" / "prefect" / "prefect.db") in error.message
    assert "Timed out" in error.message and "migrates a new database" in error.hint


def test_an_error_inside_the_drill_is_not_taken_for_a_start_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    @contextlib.contextmanager
    def up(timeout: int = 60) -> Iterator[str]:
        yield "http://127.0.0.1:1/api"

    monkeypatch.setattr(prefect_api, "local_api", up)
    with (
        pytest.raises(RuntimeError, match="the drill's own"),
        world.drill_prefect(tmp_path / "d" / "w"),
    ):
        raise RuntimeError("the drill's own failure")
