"""Fixtures shared by the end-to-end tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from clampdown.app.drill.runner import DrillResult
from tests.e2e.drill_pool import DrillPool, patch_drills_home, worker_prefect
from tests.paths import REPO
from tests.prefect_homes import seed_prefect_home

LIBRARY = REPO / "runbooks"
# Drill processes at once (tests/e2e/drill_pool.py), beside the drill a test runs in this
# process while it waits: three drills' waits overlap, and on a 2-core machine shared with
# the other xdist worker no more compete for the cores with their simulated AWS and the
# standing Prefect API.
DRILL_WORKERS = 2


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "drills(*names): the drills a test reads with the `drill` fixture; the session's "
        "selected tests' drills start side by side when the first is asked for",
    )


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


@pytest.fixture
def in_drills_home(drills_prefect: str, drills_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """For this test, a drill (also one run through the CLI) runs in the session's drills
    home, with its standing drills' Prefect API."""
    patch_drills_home(monkeypatch, drills_home)
    return drills_home


def _declared_drills(items: list[pytest.Item]) -> list[str]:
    """The drills the selected tests declare (``@pytest.mark.drills``), in their order."""
    names: dict[str, None] = {}
    for item in items:
        for mark in item.iter_markers("drills"):
            names.update(dict.fromkeys(mark.args))
    return list(names)


@pytest.fixture(scope="session")
def drill_pool(
    request: pytest.FixtureRequest,
    prefect_server: str,
    drills_prefect: str,
    drills_home: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[DrillPool]:
    """The session's drills, side by side in drill processes (tests/e2e/drill_pool.py):
    every drill the selected tests declare begins when the first is asked for."""
    pool = DrillPool(
        workers=DRILL_WORKERS,
        library=LIBRARY,
        drills_home=drills_home,
        prefect=worker_prefect(),
        folder=tmp_path_factory.mktemp("drill-runs"),
    )
    try:
        pool.start(_declared_drills(request.session.items))
        yield pool
    finally:
        pool.close()


@pytest.fixture
def drill(drill_pool: DrillPool) -> Callable[[str], DrillResult]:
    """``drill(name)``: the drill's result, run once per session in the session's drills
    home (:func:`drills_home`), with its standing Prefect API; declare the drills a test
    reads with ``@pytest.mark.drills(name, ...)`` so they run beside the others."""
    return drill_pool.result
