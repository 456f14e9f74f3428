"""The paths under CLAMPDOWN_HOME (one object owns them) and settings read once."""

from __future__ import annotations

from pathlib import Path

import pytest

from clampdown.core.diagnostics import ClampdownError
from clampdown.core.home import Home
from clampdown.core.settings import Settings


def test_layout_is_exact(tmp_path: Path) -> None:
    home = Home(tmp_path)
    run = home.run("abc123")
    assert home.root == tmp_path
    assert home.runs_dir == tmp_path / "runs"
    assert home.drills_dir == tmp_path / "drills"
    assert home.state_db == tmp_path / "state.sqlite3"
    assert run.dir == tmp_path / "runs" / "abc123"
    assert run.ledger == tmp_path / "runs" / "abc123" / "ledger.jsonl"
    assert run.approvals_dir == tmp_path / "runs" / "abc123" / "approvals"
    assert run.approval_request("gate") == tmp_path / "runs" / "abc123" / "approvals" / "gate.json"
    assert run.approval_key == tmp_path / "runs" / "abc123" / "approvals" / ".key"
    assert run.slack_thread_state == tmp_path / "runs" / "abc123" / "slack.json"
    assert run.rolled_back_mark == tmp_path / "runs" / "abc123" / "rolled-back.json"
    assert run.rollback_lock == tmp_path / "runs" / "abc123" / "rollback.lock"


def test_home_expands_user_but_messages_keep_the_configured_form() -> None:
    home = Home(Path("~/.clampdown"))
    assert home.root == Path("~/.clampdown").expanduser()
    with pytest.raises(ClampdownError) as caught:
        home.existing_ledger("nosuchrun")
    assert caught.value.message == "no ledger for run 'nosuchrun'"
    assert "~/.clampdown/runs/<run-id>/ledger.jsonl" in str(caught.value.hint)


def test_settings_paths_is_the_home_object(tmp_path: Path) -> None:
    conf = Settings(home=tmp_path)
    assert conf.paths == Home(tmp_path)
    assert conf.ledger_path("r1") == Home(tmp_path).run("r1").ledger
    assert conf.run_dir("r1") == tmp_path / "runs" / "r1"


def test_existing_ledger_found(tmp_path: Path) -> None:
    ledger = Home(tmp_path).run("r2").ledger
    ledger.parent.mkdir(parents=True)
    ledger.write_text("")
    assert Home(tmp_path).existing_ledger("r2") == ledger
