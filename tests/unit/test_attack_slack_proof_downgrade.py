"""Attack: make a Slack decision with the run's approval key after serve's key is listed.

Once ``CLAMPDOWN_ALLOWED_SIGNERS`` lists ``clampdown-serve``, only serve's signature vouches
for a Slack click: the run's approval key (``$CLAMPDOWN_HOME/runs/<id>/approvals/.key``)
is readable by whoever holds ``CLAMPDOWN_HOME``. But when that file stopped being
trusted — made group-writable, or given a pattern principal by an administrator — the
run treated serve's key as not listed and took the approval key's HMAC again: the
holder of the home could approve as any Slack user. Such a decision is now refused,
with the file's problem named.
"""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from clampdown.core.approvals import Decision, Request, params_hash
from clampdown.core.decision_proof import Verifier
from clampdown.core.signatures import SERVE_PRINCIPAL, SLACK_NAMESPACE, sign

GATED = {"revoke": {"uses": "aws.iam.revoke_credentials", "params": {"principal_arn": "x"}}}
RUN_KEY = b"k" * 32


def keygen(path: Path) -> Path:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)],
        check=True,
    )
    return path


def public(path: Path) -> str:
    return " ".join(path.with_suffix(".pub").read_text().split()[:2])


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Verifier, Path, Path, Decision]:
    serve = keygen(tmp_path / "serve")
    allowed = tmp_path / "etc" / "allowed_signers"
    allowed.parent.mkdir()
    allowed.write_text(f"{SERVE_PRINCIPAL} {public(serve)}\n")
    allowed.chmod(0o644)
    home = tmp_path / "home"
    home.mkdir()
    at = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
    req = Request(
        run_id="a1b2c3d4e5f6",
        step="approve",
        summary="Revoke?",
        gated=GATED,
        params_hash=params_hash(GATED),
        allowed_users=frozenset({"U0LEAD"}),
        groups=(),
        min_approvals=1,
        two_person_rule=True,
        started_by=None,
        requested_at=at,
        deadline=at + timedelta(minutes=15),
        on_timeout="deny",
    )
    req.new_nonce()
    clicked = Decision(
        run_id=req.run_id,
        step=req.step,
        params_hash=req.params_hash,
        nonce=req.nonce,
        decision="approve",
        approver="U0LEAD",
        source="slack",
    )
    return Verifier(RUN_KEY, allowed, home), allowed, serve, clicked


def forged_with_run_key(clicked: Decision) -> Decision:
    return clicked.signed(RUN_KEY)  # what a reader of CLAMPDOWN_HOME can make


def test_a_group_writable_file_naming_serve_does_not_bring_back_the_run_key(setup) -> None:
    verifier, allowed, _, clicked = setup
    assert verifier.check(forged_with_run_key(clicked)).refusal is not None  # listed: refused
    allowed.chmod(0o664)
    refusal = verifier.check(forged_with_run_key(clicked)).refusal
    assert refusal is not None, "the run's approval key vouched for a Slack click again"
    assert "CLAMPDOWN_ALLOWED_SIGNERS cannot be trusted" in refusal
    assert "is writable by others (mode 664)" in refusal


def test_a_pattern_principal_does_not_bring_back_the_run_key(setup, tmp_path: Path) -> None:
    verifier, allowed, _, clicked = setup
    other = keygen(tmp_path / "other")
    allowed.write_text(allowed.read_text() + f"* {public(other)}\n")
    refusal = verifier.check(forged_with_run_key(clicked)).refusal
    assert refusal is not None and "lists a pattern (*) as principal" in refusal


def test_serve_s_own_signature_counts_while_the_file_is_trusted(setup) -> None:
    verifier, _, serve, clicked = setup
    by_serve = clicked.model_copy(
        update={"signature": sign(clicked.signing_payload(), serve, SLACK_NAMESPACE)}
    )
    assert verifier.check(by_serve).refusal is None


def test_deleting_serve_s_line_from_an_untrusted_file_does_not_bring_back_the_run_key(
    setup, tmp_path: Path
) -> None:
    """Whoever can write an untrusted file can delete its clampdown-serve line: an untrusted
    file refuses Slack decisions whatever it lists (h-review27)."""
    verifier, allowed, _, clicked = setup
    allowed.write_text("U0LEAD " + public(keygen(tmp_path / "lead")) + "\n")
    allowed.chmod(0o664)
    refusal = verifier.check(forged_with_run_key(clicked)).refusal
    assert refusal is not None and "is writable by others (mode 664)" in refusal


def test_without_a_file_the_run_key_still_vouches(setup) -> None:
    """No allowed-signers file at all: Slack decisions are vouched by the run's approval
    key, as before serve's key existed."""
    _, _, _, clicked = setup
    verifier = Verifier(RUN_KEY, None, Path("/nonexistent-home"))
    assert verifier.check(forged_with_run_key(clicked)).refusal is None
