"""The drill's own approver keys: one per person, listed outside the drill workspace,
gone when the drill ends; a decision signed with one verifies for that person only."""

from __future__ import annotations

import stat
from pathlib import Path

from clampdown.app.drill.signers import drill_signers
from clampdown.core.drill_library import load_drill, resolve_drill
from clampdown.core.signatures import allowed_signers_problem, sign, verify
from tests.paths import REPO


def test_each_person_of_the_drill_signs_as_themselves_only(tmp_path: Path) -> None:
    drill, _ = load_drill(resolve_drill("slack-outage", REPO / "runbooks"))
    approver = drill.roles.approver.slack_user
    lead = drill.roles.incident_lead.slack_user
    assert approver != lead
    workspace = tmp_path / "drills" / "slack-outage-1"  # the drill's CLAMPDOWN_HOME
    with drill_signers(drill) as signers:
        folder = signers.allowed_signers.parent
        assert set(signers.keys) >= {approver, lead}
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        assert stat.S_IMODE(signers.allowed_signers.stat().st_mode) == 0o600
        assert allowed_signers_problem(signers.allowed_signers, workspace) is None
        key = signers.key_for(approver)
        assert key is not None and signers.key_for("U0NOBODY") is None
        signature = sign(b"approve step x", key)
        mine = verify(b"approve step x", signature, approver, signers.allowed_signers)
        assert mine is not None and mine.principal == approver
        assert verify(b"approve step x", signature, lead, signers.allowed_signers) is None
    assert not folder.exists()  # the private keys went with the drill
