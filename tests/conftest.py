"""Shared fixtures: one Prefect test server per session, a fresh CLAMPDOWN_HOME per test."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# Before Prefect is imported anywhere: no telemetry (offline), state in a temp dir.
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="clampdown-prefect-"))

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[str]:
    """A real Prefect API (SQLite under the temporary PREFECT_HOME) shared by every test
    that runs flows: the same local server `clampdown run` uses."""
    from flows.prefect_api import local_api

    with local_api() as url:
        yield url


@pytest.fixture(autouse=True)
def clampdown_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "clampdown-home"
    monkeypatch.setenv("CLAMPDOWN_HOME", str(home))
    monkeypatch.setenv("CLAMPDOWN_LIBRARY", str(REPO / "runbooks"))
    return home


@pytest.fixture
def write_runbook(tmp_path: Path):
    """Write a runbook YAML text to a file and return its path."""

    def write(text: str, name: str = "runbook.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write
