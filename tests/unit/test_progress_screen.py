"""The live progress table holds still while the interactive drill asks a question."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from clampdown.app.progress import RunProgress, Screen
from clampdown.core.loader import load
from tests.paths import LIBRARY


def progress(tmp_path: Path, console: Console) -> RunProgress:
    model = load(LIBRARY / "engine-self-check.yaml").model
    return RunProgress(tmp_path / "run1" / "ledger.jsonl", model, console)


def test_a_prompt_stops_the_live_table_and_it_starts_again_after(tmp_path: Path) -> None:
    console = Console(file=io.StringIO(), force_terminal=True, width=120)
    live = progress(tmp_path, console)
    screen = Screen()
    with live:
        screen.show(live)
        assert live._live is not None and live._live.is_started
        with screen.held():
            assert not live._live.is_started  # nothing redraws over the question
            console.print("approve or deny?")
        assert live._live.is_started
        screen.show(None)
    text = console.file.getvalue()
    assert "approve or deny?" in text


def test_without_a_terminal_or_a_live_table_holding_changes_nothing(tmp_path: Path) -> None:
    console = Console(file=io.StringIO())  # not a terminal: one line per event, no live view
    screen = Screen()
    with screen.held():  # nothing shown yet
        pass
    with progress(tmp_path, console) as plain:
        screen.show(plain)
        assert plain._live is None
        with screen.held():
            console.print("approve or deny?")
    assert "approve or deny?" in console.file.getvalue()
