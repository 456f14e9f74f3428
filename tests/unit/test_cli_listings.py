"""Every command's --help, and every listing as JSON and as text off a terminal.

CliRunner's stdout is not a terminal, like a pipe or CI: there a listing must print
ids and names whole (Rich would fit a table into 80 columns and cut them with "…").
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from clampdown.app.cli import app
from clampdown.core.ledger import Ledger
from tests.paths import REPO

runner = CliRunner()
LONG_RUNBOOK = "contain-a-runbook-name-long-enough-to-be-cut-in-eighty-columns"


def all_commands() -> list[list[str]]:
    found: list[list[str]] = []
    for name, command in typer.main.get_command(app).commands.items():
        if hasattr(command, "commands"):
            found.append([name])
            found += [[name, sub] for sub in command.commands]
        else:
            found.append([name])
    return found


def test_clampdown_help_lists_every_command() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0, result.output
    for path in all_commands():
        assert f" {path[0]} " in result.output, path


@pytest.mark.parametrize("path", all_commands(), ids=" ".join)
def test_every_command_has_help(path: list[str]) -> None:
    result = runner.invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert f"Usage: clampdown {' '.join(path)}" in result.output
    assert "Traceback" not in result.output


def write_run(home: Path, run_id: str, runbook: str, end: dict[str, Any] | None) -> None:
    ledger = Ledger(home / "runs" / run_id / "ledger.jsonl")
    ledger.append(
        "run.start",
        run={
            "id": run_id,
            "runbook": runbook,
            "started_at": "2026-11-26T06:00:00Z",
            "trigger": {"type": "manual"},
        },
    )
    if end is not None:
        ledger.append("run.end", **end)
    ledger.close()


@pytest.fixture
def two_runs(clampdown_home: Path) -> None:
    write_run(clampdown_home, "0123456789ab", LONG_RUNBOOK, {"status": "succeeded"})
    write_run(clampdown_home, "ba9876543210", "contain-iam-user", {"status": "succeeded"})
    mark = clampdown_home / "runs" / "ba9876543210" / "rolled-back.json"
    mark.write_text(json.dumps({"rollback_id": "feedfacecafe", "at": "2026-11-26T07:00:00Z"}))


def test_runs_text_keeps_ids_and_names_whole_and_says_rolled_back(two_runs: None) -> None:
    result = runner.invoke(app, ["runs"])
    assert result.exit_code == 0, result.output
    assert "…" not in result.output
    assert "0123456789ab" in result.output and LONG_RUNBOOK in result.output
    assert "succeeded, rolled back by feedfacecafe" in result.output


def test_runs_json(two_runs: None) -> None:
    rows = json.loads(runner.invoke(app, ["runs", "--format", "json"]).stdout)
    by_id = {r["run_id"]: r for r in rows}
    assert by_id["ba9876543210"]["rolled_back_by"] == "feedfacecafe"
    assert by_id["ba9876543210"]["status"] == "succeeded"
    assert by_id["0123456789ab"]["rolled_back_by"] is None
    assert by_id["0123456789ab"]["runbook"] == LONG_RUNBOOK


def test_drill_list_text_and_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLAMPDOWN_LIBRARY", str(REPO / "runbooks"))
    rows = json.loads(runner.invoke(app, ["drill", "--list", "--format", "json"]).stdout)
    names = {r["name"] for r in rows}
    assert {"model-theft", "artifact-exfiltration", "containment-release"} <= names
    assert [r["name"] for r in rows if r["default"]] == ["model-theft"]
    assert all(r["lint_errors"] == 0 and r["runbook"] for r in rows)
    text = runner.invoke(app, ["drill", "--list"])
    assert text.exit_code == 0 and "…" not in text.output
    for row in rows:
        assert row["name"] in text.output and row["title"] in text.output


def test_actions_json_and_text() -> None:
    rows = json.loads(runner.invoke(app, ["actions", "--format", "json"]).stdout)
    assert {"core.wait", "approval.request"} <= {r["name"] for r in rows}
    text = runner.invoke(app, ["actions"])
    assert "…" not in text.output
    for row in rows:
        assert row["name"] in text.output and row["summary"] in text.output


def test_triggers_held_json_and_a_bad_format_is_refused(clampdown_home: Path) -> None:
    from clampdown.core.state_store import StateStore

    store = StateStore()
    try:
        store.hold(
            runbook="contain-iam-user",
            trigger="guardduty-iam-user",
            dedup_key="guardduty:f-1",
            alert={"title": "key used from Tor"},
            reason="max_concurrent_runs 1 reached",
        )
    finally:
        store.close()
    rows = json.loads(runner.invoke(app, ["triggers", "held", "--format", "json"]).stdout)
    assert [(r["runbook"], r["reason"]) for r in rows] == [
        ("contain-iam-user", "max_concurrent_runs 1 reached")
    ]
    refused = runner.invoke(app, ["triggers", "held", "--format", "xml"])
    assert refused.exit_code == 2
    assert "Invalid value for '--format'" in refused.output and "'xml'" in refused.output


@pytest.mark.parametrize(
    "argv",
    [["runs"], ["actions"], ["drill", "--list"], ["lint"], ["triggers", "held"]],
    ids=" ".join,
)
def test_every_listing_refuses_an_unknown_format(argv: list[str]) -> None:
    result = runner.invoke(app, [*argv, "--format", "xml"])
    assert result.exit_code == 2, result.output
    assert "Invalid value for '--format'" in result.output


def test_i_means_input_only() -> None:
    """One meaning per short flag: -i is --input (run, plan); drill has no -i."""
    for path in (["run"], ["plan"]):
        command = typer.main.get_command(app).commands[path[0]]
        assert any("-i" in p.opts and "--input" in p.opts for p in command.params)
    drill = typer.main.get_command(app).commands["drill"]
    assert all("-i" not in p.opts for p in drill.params)
    result = runner.invoke(app, ["drill", "-i"])
    assert result.exit_code == 2 and "No such option: -i" in result.output


def test_drill_format_without_list_is_refused() -> None:
    result = runner.invoke(app, ["drill", "--format", "json"])
    assert result.exit_code == 2
    assert "--format applies to --list" in result.output
