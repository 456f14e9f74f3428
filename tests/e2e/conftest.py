"""Fixtures shared by the end-to-end tests."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from rich.console import Console

from clampdown.app.drill.runner import DrillResult, run_drill
from tests.paths import REPO
from tests.prefect_homes import seed_prefect_home

LIBRARY = REPO / "runbooks"


@pytest.fixture(scope="session")
def drills_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The CLAMPDOWN_HOME every drill of the session runs in, so they share one drills'
    Prefect home and database (not made here: the drill harness makes it, 0700)."""
    return tmp_path_factory.mktemp("drills") / "clampdown-home"


@pytest.fixture(scope="session")
def drills_prefect(prefect_server: str, drills_home: Path) -> Iterator[str]:
    """One standing drills' Prefect API for the session: each drill uses it instead of
    starting its own (a server start is 8-14 s of a drill on this machine).

    Started after the session's Prefect API, not beside it: two starts at once on a
    loaded 2-core machine pushed the session's past its 60 s start timeout. Its database
    starts as a copy of the session's migrated template (tests/prefect_homes.py)."""
    from clampdown.app.drill.world import PREFECT_DIR, standing_drill_prefect
    from clampdown.core.home import Home

    drills_dir = Home(drills_home).drills_dir
    # the drills' Prefect home made as standing_drill_prefect makes it (private_dirs: 0700),
    # and the session's template ready for its server to start from
    seed_prefect_home((drills_dir / PREFECT_DIR).resolve())
    with standing_drill_prefect(drills_dir) as url:
        yield url


def _no_api_of_its_own(*args: object, **kwargs: object) -> None:
    raise AssertionError(
        "a drill of the test session started a Prefect API of its own: it should have used "
        "the session's standing drills' API (clampdown.app.drill.world.standing_api)"
    )


def _in_drills_home(patch: pytest.MonkeyPatch, drills_home: Path) -> None:
    """CLAMPDOWN_HOME is the session's drills home, and a drill that would start a Prefect
    API instead of using the standing one fails (it would cost 8-14 s, unnoticed)."""
    patch.setenv("CLAMPDOWN_HOME", str(drills_home))
    # respond binds local_api when it is imported: patched there first (which imports it
    # with the real one), or a respond first imported under the patch below would keep
    # the guard after this test, and every later `clampdown run` of the worker would fail
    patch.setattr("clampdown_flows.respond.local_api", _no_api_of_its_own)
    patch.setattr("clampdown_flows.prefect_api.local_api", _no_api_of_its_own)
    patch.setattr("clampdown_flows.prefect_api.resident_api", _no_api_of_its_own)


@pytest.fixture
def in_drills_home(drills_prefect: str, drills_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """For this test, a drill (also one run through the CLI) runs in the session's drills
    home, with its standing drills' Prefect API."""
    _in_drills_home(monkeypatch, drills_home)
    return drills_home


@pytest.fixture(scope="session")
def drill_results() -> dict[str, DrillResult]:
    """Each drill's result, run once per session whichever test file asks first (a drill
    takes 20-35 s; several files check different things of the same run)."""
    return {}


@pytest.fixture
def drill(
    prefect_server: str,
    drills_prefect: str,
    drills_home: Path,
    drill_results: dict[str, DrillResult],
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[[str], DrillResult]:
    """``drill(name)``: the drill's result, run once per session in the session's drills
    home (:func:`drills_home`), with its standing Prefect API."""

    def run(name: str) -> DrillResult:
        if name not in drill_results:
            console = Console(file=io.StringIO(), width=200)
            report_dir = tmp_path_factory.mktemp(name) / "report"
            with pytest.MonkeyPatch.context() as patch:
                _in_drills_home(patch, drills_home)
                drill_results[name] = run_drill(
                    name, report_dir=report_dir, console=console, library=LIBRARY
                )
        return drill_results[name]

    return run
