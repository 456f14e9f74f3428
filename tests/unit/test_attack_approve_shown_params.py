"""Attack: make an approver sign parameters other than the ones `clampdown approve` shows.

`clampdown approve` prints the gated steps' parameters from the run's approval request
file (``runs/<id>/approvals/<step>.json``) and signs that file's ``params_hash``. Whoever
can write ``CLAMPDOWN_HOME`` cannot sign a terminal decision, but could rewrite the
``gated`` parameters shown and keep the hash: the approver read "disable mallory's key",
signed the hash of "disable the admin's key", and the run counted it (the hash is the
real one). The command now refuses a request whose shown parameters do not hash to the
hash it would sign, and sends nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clampdown.app.cli import app as cli_app
from clampdown.core.approvals import Request, params_hash
from clampdown.core.settings import settings
from clampdown_flows.approval_store import write_request
from clampdown_flows.decision_inbox import inbox_decisions
from tests.approver_keys import approver_keys

RUN = "a1b2c3d4e5f6"
REAL = {
    "disable": {
        "uses": "aws.iam.deactivate_access_keys",
        "params": {"user_name": "breakglass-admin"},
        "reversible": True,
    }
}
SHOWN = {
    "disable": {
        "uses": "aws.iam.deactivate_access_keys",
        "params": {"user_name": "mallory"},
        "reversible": True,
    }
}


def pending(gated: dict, bound: dict) -> dict:
    now = datetime.now(UTC)
    request = Request(
        run_id=RUN,
        step="approve",
        summary="Disable the key?",
        gated=gated,
        params_hash=params_hash(bound),
        allowed_users=frozenset({"U0LEAD"}),
        groups=(),
        min_approvals=1,
        two_person_rule=True,
        started_by=None,
        requested_at=now,
        deadline=now + timedelta(minutes=15),
        on_timeout="deny",
    )
    request.new_nonce()
    return request.to_json() | {"status": "pending", "api_url": None, "flow_run_id": "x"}


@pytest.fixture
def lead_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return approver_keys(tmp_path, monkeypatch, "U0LEAD")["U0LEAD"]


def approve(key: Path):
    return CliRunner().invoke(cli_app, ["approve", RUN, "--as", "U0LEAD", "--key", str(key)])


def test_shown_parameters_that_do_not_match_the_bound_hash_are_refused(lead_key: Path) -> None:
    files = settings().paths.run(RUN)
    write_request(files, "approve", pending(SHOWN, REAL))  # the forger's edit
    result = approve(lead_key)
    assert result.exit_code == 1, result.output
    assert "was changed after the run wrote it" in result.output
    assert "mallory" not in result.output  # the forged parameters are not shown as the ask
    assert list(inbox_decisions(files, "approve")) == []  # nothing signed, nothing sent


def test_an_untouched_request_is_signed_and_kept_for_the_run(lead_key: Path) -> None:
    files = settings().paths.run(RUN)
    write_request(files, "approve", pending(REAL, REAL))
    result = approve(lead_key)
    # no process holds the run: the signed decision is kept for it (exit 3)
    assert result.exit_code == 3, result.output
    assert "breakglass-admin" in result.output
    assert [d.params_hash for _, d in inbox_decisions(files, "approve")] == [params_hash(REAL)]
