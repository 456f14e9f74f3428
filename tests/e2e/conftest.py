"""Fixtures shared by the end-to-end tests."""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest
from rich.console import Console

from clampdown.app.drill.runner import DrillResult, run_drill
from tests.paths import REPO

LIBRARY = REPO / "runbooks"


@pytest.fixture(scope="session")
def drill_results() -> dict[str, DrillResult]:
    """Each drill's result, run once per session whichever test file asks first (a drill
    takes 20-35 s; several files check different things of the same run)."""
    return {}


@pytest.fixture
def drill(
    prefect_server, drill_results: dict[str, DrillResult], tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], DrillResult]:
    """``drill(name)``: the drill's result, run once per session."""

    def run(name: str) -> DrillResult:
        if name not in drill_results:
            console = Console(file=io.StringIO(), width=200)
            report_dir = tmp_path_factory.mktemp(name) / "report"
            drill_results[name] = run_drill(
                name, report_dir=report_dir, console=console, library=LIBRARY
            )
        return drill_results[name]

    return run
