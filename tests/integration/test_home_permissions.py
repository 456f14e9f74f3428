"""CLAMPDOWN_HOME as another local user sees it: the folder 0700, the files clampdown writes
0600, and a process running as ``nobody`` reads none of them (when the tests run as root).

The home is placed under a world-traversable folder, so nothing but clampdown's own modes
stands between ``nobody`` and the files; a control file beside it shows ``nobody`` can read
what is not protected."""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from clampdown.app.serve import create_app
from clampdown.core.home import Home
from clampdown.core.ledger import new_run_id
from clampdown.core.settings import settings
from clampdown_slack.testing.standin import SlackStandIn

RUNBOOK = """\
apiVersion: clampdown/v1
kind: Runbook
metadata: {name: private-files, title: Private files, severity: low}
steps:
  - {id: say, uses: slack.status, with: {text: "hello"}}
"""


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_base(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A 0755 folder any local user can enter, with CLAMPDOWN_HOME inside it (not yet made)."""
    base = Path(tempfile.mkdtemp(prefix="clampdown-perm-"))
    base.chmod(0o755)
    monkeypatch.setenv("CLAMPDOWN_HOME", str(base / "home"))
    yield base
    shutil.rmtree(base, ignore_errors=True)


def test_secure_tightens_a_home_an_older_version_left_open(open_base: Path) -> None:
    home = Home(open_base / "home")
    (home.runs_dir / "old").mkdir(parents=True, mode=0o755)
    home.root.chmod(0o755)
    home.runs_dir.chmod(0o755)
    home.state_db.write_text("")
    home.state_db.chmod(0o644)
    changes = home.secure()
    assert mode(home.root) == 0o700 and mode(home.runs_dir) == 0o700
    assert mode(home.state_db) == 0o600
    assert f"{home.root} was 755, now 700" in changes
    assert home.secure() == []  # nothing left to do


def test_a_new_home_is_made_0700(open_base: Path) -> None:
    home = Home(open_base / "home" / "deeper")
    home.secure()
    assert mode(open_base / "home") == 0o700 and mode(home.root) == 0o700


@pytest.mark.usefixtures("prefect_server")
def test_every_file_a_run_and_serve_write_is_private(
    open_base: Path, write_runbook, monkeypatch: pytest.MonkeyPatch
) -> None:
    from clampdown_flows.respond import respond

    home = open_base / "home"
    with SlackStandIn() as slack:
        monkeypatch.setenv("CLAMPDOWN_SLACK_BOT_TOKEN", slack.token)
        monkeypatch.setenv("CLAMPDOWN_SLACK_CHANNEL", "C0INCIDENT")
        monkeypatch.setenv("CLAMPDOWN_SLACK_API_URL", slack.url)
        run_id = new_run_id()
        asyncio.run(respond(str(write_runbook(RUNBOOK)), {}, run_id=run_id))
        monkeypatch.setenv("CLAMPDOWN_ALERT_TOKEN", "t")
        monkeypatch.setenv("CLAMPDOWN_SLACK_SIGNING_SECRET", "s")
        with TestClient(create_app(start_run=lambda *a: "x")) as client:
            assert client.get("/healthz").status_code == 200
    files = settings().paths.run(run_id)
    written = [files.ledger, files.slack_thread_state, Path(f"{files.slack_thread_state}.lock")]
    written += list(home.glob("state.sqlite3*"))
    assert len(written) >= 4, written
    assert mode(home) == 0o700
    assert mode(files.dir) == 0o700 and mode(home / "runs") == 0o700
    for path in written:
        assert mode(path) == 0o600, f"{path} is {mode(path):o}"
    everything = list(home.rglob("*"))

    if os.geteuid() != 0:
        pytest.skip("reading as `nobody` needs root to switch users (the modes were checked)")
    control = open_base / "control.txt"
    control.write_text("readable")
    control.chmod(0o644)
    as_nobody = subprocess.run(["cat", str(control)], user="nobody", capture_output=True)
    assert as_nobody.returncode == 0 and as_nobody.stdout == b"readable"  # the probe works
    for path in [home, *everything]:
        tried = ["ls", str(path)] if path.is_dir() else ["cat", str(path)]
        probe = subprocess.run(tried, user="nobody", capture_output=True)
        assert probe.returncode != 0, f"nobody could read {path}"
        assert b"Permission denied" in probe.stderr
