"""A drill's start runs without Python's cyclic collector, then freezes what it built.

The start (imports of Prefect, serve and the flows in the drill's process; moto's imports and
the seed in moto's) builds objects that live as long as the drill, and the collector's passes
over them cost about a tenth of the CPU on the path to the alert. The command's drill
(``freeze_start``) and moto's process turn it off for the start and back on, with the
start's objects frozen, before the story; a drill run by a process that runs other things
(``freeze_start`` off: a test session) leaves the collector alone.
"""

from __future__ import annotations

import gc
import io
from pathlib import Path
from typing import Any

import pytest

from clampdown.app.drill import moto_process
from clampdown.app.drill.runner import DrillRunner
from clampdown.core.drill_library import load_drill


def _runner(tmp_path: Path, library: Path, *, freeze_start: bool) -> DrillRunner:
    drill, _ = load_drill(library / "drills" / "model-theft.yaml")
    return DrillRunner(drill, library=library, workspace=tmp_path / "ws", freeze_start=freeze_start)


def _library() -> Path:
    from clampdown.core.settings import settings

    return Path(settings().library)


def test_the_commands_drill_starts_without_collections_then_freezes(
    collector: None, tmp_path: Path
) -> None:
    runner = _runner(tmp_path, _library(), freeze_start=True)
    gc.enable()
    with runner._start_phase():
        during = gc.isenabled()
    assert during is False
    assert gc.isenabled()
    assert gc.get_freeze_count() > 0


def test_a_drill_in_a_shared_process_leaves_the_collector_alone(
    collector: None, tmp_path: Path
) -> None:
    runner = _runner(tmp_path, _library(), freeze_start=False)
    gc.enable()
    with runner._start_phase():
        during = gc.isenabled()
    assert during is True
    assert gc.get_freeze_count() == 0


def test_moto_collects_again_once_the_seed_is_answered(
    collector: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[bool] = []

    def seed(line: str) -> dict[str, Any]:
        seen.append(gc.isenabled())
        return {"seeded": {"line": line.strip()}}

    monkeypatch.setattr(moto_process, "seed_request", seed)
    gc.disable()  # as moto's process has it from its start (serve)
    stdout = io.StringIO()
    stdout.fileno = lambda: (_ for _ in ()).throw(OSError("no fd"))  # type: ignore[method-assign]
    moto_process._answer_seed(io.StringIO('{"seed": 1}\n'), stdout)
    assert seen == [False]  # the seed ran without collections
    assert stdout.getvalue().startswith(moto_process.SEEDED)
    assert gc.isenabled()
    assert gc.get_freeze_count() > 0


def test_moto_collects_again_when_no_seed_comes(collector: None) -> None:
    gc.disable()
    stdout = io.StringIO()
    stdout.fileno = lambda: (_ for _ in ()).throw(OSError("no fd"))  # type: ignore[method-assign]
    moto_process._answer_seed(io.StringIO(""), stdout)
    assert stdout.getvalue() == ""
    assert gc.isenabled()
