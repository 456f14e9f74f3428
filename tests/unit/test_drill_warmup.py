"""While the drill waits for its scripted approver, it loads what comes after the click.

The default drill's containment runs the exfiltration scope after the approval, which
imports DuckDB on first use (~0.2 CPU-s on the drill's clock); the scoring then imports its
modules and makes the clients of the services its objectives read. :class:`IdleWarmup`
does that in the wait, once, and only when the wait is long enough to hold it.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from clampdown.app.drill import warmup
from clampdown.app.drill.warmup import LEAD, IdleWarmup
from clampdown.core.drill_library import load_drill


def _session(library: Path) -> SimpleNamespace:
    drill, _ = load_drill(library / "drills" / "model-theft.yaml")
    made: list[str] = []
    return SimpleNamespace(
        drill=drill, library=library, made=made, client=made.append, console=None
    )


@pytest.fixture
def library() -> Path:
    from clampdown.core.settings import settings

    return Path(settings().library)


@pytest.fixture
def imported(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    names: list[str] = []
    monkeypatch.setattr(warmup.importlib, "import_module", names.append)
    return names


def test_the_default_drill_warms_duckdb_and_its_scorings_clients(
    library: Path, imported: list[str]
) -> None:
    session = _session(library)
    idle = IdleWarmup(session)  # type: ignore[arg-type]
    idle.pending(time.time() + LEAD + 0.1)  # due in LEAD s and a bit: it begins in a bit
    assert idle._thread is not None
    idle._thread.join()
    assert imported[0] == "clampdown_aws.forensics.scope"  # the scope step's DuckDB
    assert "clampdown.app.drill.objectives" in imported
    assert session.made == ["iam", "s3"]  # keys and the deny policy; the evidence bucket


def test_once_per_drill(library: Path, imported: list[str]) -> None:
    idle = IdleWarmup(_session(library))  # type: ignore[arg-type]
    idle.pending(time.time() + LEAD + 0.1)
    first = idle._thread
    idle.pending(time.time() + LEAD + 0.1)
    assert idle._thread is first is not None
    first.join()
    assert imported.count("clampdown.app.drill.objectives") == 1


def test_no_warmup_when_the_decision_is_due_sooner_than_it_takes(
    library: Path, imported: list[str]
) -> None:
    idle = IdleWarmup(_session(library))  # type: ignore[arg-type]
    idle.pending(time.time() + LEAD / 4)  # an approver deciding at once
    idle.stop()
    assert imported == []


def test_a_warmup_not_begun_when_the_story_ends_is_dropped(
    library: Path, imported: list[str]
) -> None:
    idle = IdleWarmup(_session(library))  # type: ignore[arg-type]
    idle.pending(time.time() + 3600)  # would begin in an hour
    idle.stop()
    assert imported == []


def test_the_ballots_say_when_a_scripted_decision_is_due(library: Path) -> None:
    """The approver's ballot tells the warm-up when it is due: the card's time plus the
    decision's ``after``."""
    import io
    from datetime import UTC, datetime

    from rich.console import Console

    from clampdown.app.drill.decisions import Ballots
    from clampdown.app.drill.timeline import Clock, Timeline

    session: Any = _session(library)
    dues: list[float] = []
    ballots = Ballots(
        session, Timeline(Clock(), Console(file=io.StringIO())), on_pending=dues.append
    )
    asked = datetime.now(UTC)
    record = {"type": "approval.request", "step": "approve_containment"}
    record["ts"] = asked.isoformat().replace("+00:00", "Z")
    ballots._ballot(("run", "approve_containment"), record)
    assert dues == [pytest.approx(asked.timestamp() + 5.0)]  # model-theft: 5 s after the card
