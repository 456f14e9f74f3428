"""The drills' API a drill starts (the drills' home's resident one): given time for a new
database's migrations, a start that never answers is a message that says what to do, not a
traceback, and only the drill that started it says so."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

import clampdown_flows.prefect_api as prefect_api
from clampdown.app.drill import world
from clampdown.core.diagnostics import ClampdownError
from clampdown_flows.resident_api import Resident


def test_a_drills_api_that_never_answers_is_a_clampdown_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[int] = []

    @contextlib.contextmanager
    def never_up(timeout: int = 120, while_starting: object = None) -> Iterator[object]:
        asked.append(timeout)
        raise ClampdownError(
            f"the local Prefect API did not answer within {timeout} s",
            "its output is in /x/clampdown-api.log; a busy machine may need a second try",
        )
        yield None

    monkeypatch.setattr(prefect_api, "resident_api", never_up)
    workspace = tmp_path / "drills" / "model-theft-1"
    with pytest.raises(ClampdownError) as raised, world.drill_prefect(workspace):
        pytest.fail("the block must not run without an API")
    assert asked == [world.API_START_TIMEOUT] and world.API_START_TIMEOUT > 60
    error = raised.value
    assert "did not answer within" in error.message
    assert str(tmp_path / "drills" / "prefect" / "prefect.db") in error.message
    assert "clampdown-api.log" in error.hint and "migrates a new database" in error.hint


def test_only_a_drill_that_started_the_api_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first drill starts the drills' resident API and says so; the next one reuses it."""
    runs: list[bool] = [True, False]

    @contextlib.contextmanager
    def resident(timeout: int = 120, while_starting: object = None) -> Iterator[object]:
        yield Resident(4242, 777, started=runs.pop(0))

    monkeypatch.setattr(prefect_api, "resident_api", resident)
    said: list[tuple[str, int]] = []
    for name in ("first", "second"):
        with world.drill_prefect(tmp_path / "drills" / name, on_started=lambda *a: said.append(a)):
            pass
    assert said == [("http://127.0.0.1:4242/api", 777)]


def test_an_error_inside_the_drill_is_not_taken_for_a_start_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    @contextlib.contextmanager
    def up(timeout: int = 120, while_starting: object = None) -> Iterator[object]:
        yield Resident(1, 1)

    monkeypatch.setattr(prefect_api, "resident_api", up)
    with (
        pytest.raises(RuntimeError, match="the drill's own"),
        world.drill_prefect(tmp_path / "d" / "w"),
    ):
        raise RuntimeError("the drill's own failure")
