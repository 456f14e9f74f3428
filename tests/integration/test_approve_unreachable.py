"""`clampdown approve` when the run's Prefect API is gone (issue 11): no httpx traceback;
the decision is kept in the run's inbox (the run waits out the outage and reads it) and
the approver is told it is in but not counted yet (exit 3).

The run is held by a live process (its owner lock, as a running serve holds it) but its
Prefect API does not answer: a port on 127.0.0.1 that nothing listens on."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clampdown.app.cli import app as cli_app
from clampdown.core.approvals import params_hash
from clampdown.core.home import private_dirs, write_private
from clampdown.core.settings import settings
from tests.approver_keys import approver_keys

RUN = "gone0001"


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # closed again when the block ends


def _pending_request(api_url: str) -> None:
    """A request as the gate writes it, for a run whose Prefect API is ``api_url``."""
    now = datetime.now(UTC)
    request = {
        "run_id": RUN,
        "step": "approve",
        "summary": "Revoke the key?",
        "gated": {},
        "params_hash": params_hash({}),  # the hash of "gated", as the gate writes it
        "nonce": "1" * 32,
        "allowed_users": ["U0TERM2"],
        "groups": [],
        "min_approvals": 1,
        "two_person_rule": True,
        "started_by": None,
        "requested_at": now.isoformat(),
        "deadline": (now + timedelta(minutes=10)).isoformat(),
        "on_timeout": "deny",
        "approvals": [],
        "denied_by": None,
        "status": "pending",
        "api_url": api_url,
        "flow_run_id": str(uuid.uuid4()),
    }
    path = settings().paths.run(RUN).approval_request("approve")
    private_dirs(path.parent)
    write_private(path, json.dumps(request))


def test_approve_says_the_runs_prefect_api_does_not_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = approver_keys(tmp_path, monkeypatch, "U0TERM2")
    api = f"http://127.0.0.1:{_closed_port()}/api"
    _pending_request(api)
    files = settings().paths.run(RUN)
    fd = os.open(files.owner_lock, os.O_RDWR | os.O_CREAT, 0o600)  # a live process holds it
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        result = CliRunner().invoke(
            cli_app, ["approve", RUN, "--as", "U0TERM2", "--key", str(keys["U0TERM2"])]
        )
    finally:
        os.close(fd)
    said = " ".join(result.output.split())
    # the run waits out an API outage and reads its inbox when it answers again: the
    # decision is kept there, and the approver is told it is in but not counted yet
    assert result.exit_code == 3, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # not ConnectError
    assert "Traceback" not in result.output
    assert "recorded, not counted yet" in said and "Prefect API cannot be reached" in said
    assert len(list(files.decision_inbox.glob("*.json"))) == 1
