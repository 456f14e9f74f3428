"""Who vouches for a decision (:mod:`clampdown.core.decision_proof`) and OpenSSH signatures
(:mod:`clampdown.core.signatures`), with real ``ssh-keygen`` keys made in a temporary folder:
an attacker's decision without the approver's private key, with another person's key, with
one key claiming two ids, or posted unsigned, is refused with a message that says why."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from clampdown.core.approvals import Decision, Request, params_hash
from clampdown.core.decision_proof import UI_OFF, Verifier
from clampdown.core.signatures import (
    NAMESPACE,
    SERVE_PRINCIPAL,
    SLACK_NAMESPACE,
    SignatureError,
    allowed_signers_line,
    lists_principal,
    sign,
    verify,
)

LEAD, ONCALL, STARTER = "U0LEAD", "U0ONCALL1", "U0STARTER"
GATED = {"revoke": {"uses": "aws.iam.revoke_credentials", "params": {"principal_arn": "x"}}}
T0 = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)


@dataclass
class Keys:
    lead: Path
    oncall: Path
    outsider: Path  # a key nobody listed
    shared: Path  # one key listed for two ids: it must count once
    allowed: Path
    home: Path


def keygen(path: Path) -> Path:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)],
        check=True,
    )
    return path


def public(path: Path) -> str:
    return " ".join(path.with_suffix(".pub").read_text().split()[:2])


KEY_NAMES = ("lead", "oncall", "outsider", "shared")


@pytest.fixture(scope="module")
def key_pairs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The four key pairs, made once for the module (an ssh-keygen each); every test gets
    copies of its own (:func:`keys`), so none can change another's files."""
    folder = tmp_path_factory.mktemp("key-pairs")
    for name in KEY_NAMES:
        keygen(folder / name)
    return folder


@pytest.fixture
def keys(tmp_path: Path, key_pairs: Path) -> Keys:
    folder = tmp_path / "keys"
    folder.mkdir()
    for name in KEY_NAMES:
        for made in (key_pairs / name, key_pairs / f"{name}.pub"):
            shutil.copy2(made, folder / made.name)  # the mode too: the private key is 0600
    lead, oncall, outsider, shared = (folder / name for name in KEY_NAMES)
    allowed = tmp_path / "etc" / "allowed_signers"
    allowed.parent.mkdir()
    allowed.write_text(
        f"{LEAD} {public(lead)}\n{ONCALL} {public(oncall)}\nU0TWIN1,U0TWIN2 {public(shared)}\n"
    )
    allowed.chmod(0o644)
    home = tmp_path / "clampdown-home"
    home.mkdir()
    return Keys(lead, oncall, outsider, shared, allowed, home)


def request() -> Request:
    made = Request(
        run_id="a1b2c3d4e5f6",
        step="approve",
        summary="Revoke?",
        gated=GATED,
        params_hash=params_hash(GATED),
        allowed_users=frozenset({LEAD, ONCALL, STARTER, "U0TWIN1", "U0TWIN2"}),
        groups=(),
        min_approvals=2,
        two_person_rule=True,
        started_by=STARTER,
        requested_at=T0,
        deadline=T0 + timedelta(minutes=15),
        on_timeout="deny",
    )
    made.new_nonce()
    return made


def decision(req: Request, approver: str, source: str = "terminal", **extra: str) -> Decision:
    return Decision(
        run_id=req.run_id,
        step=req.step,
        params_hash=req.params_hash,
        nonce=req.nonce,
        decision="approve",
        approver=approver,
        source=source,  # type: ignore[arg-type]
        **extra,  # type: ignore[arg-type]
    )


def signed(d: Decision, key: Path) -> Decision:
    return d.model_copy(update={"signature": sign(d.signing_payload(), key)})


def verifier(keys: Keys, **overrides: object) -> Verifier:
    values: dict[str, object] = {
        "run_key": b"k" * 32,
        "allowed_signers": keys.allowed,
        "home": keys.home,
        "prefect_ui": False,
    }
    return Verifier(**{**values, **overrides})  # type: ignore[arg-type]


def test_a_signature_verifies_only_for_the_ids_its_key_is_listed_for(keys: Keys) -> None:
    signature = sign(b"payload", keys.lead)
    assert "BEGIN SSH SIGNATURE" in signature
    good = verify(b"payload", signature, LEAD, keys.allowed)
    assert good is not None and good.principal == LEAD and good.fingerprint.startswith("SHA256:")
    assert verify(b"payload", signature, ONCALL, keys.allowed) is None  # another person's id
    assert verify(b"payloaX", signature, LEAD, keys.allowed) is None  # altered
    assert verify(b"payload", signature, LEAD, keys.allowed, namespace="git") is None
    assert verify(b"payload", "not a signature", LEAD, keys.allowed) is None
    assert NAMESPACE == "clampdown-approval"


def test_signing_without_a_key_file_says_what_to_pass(tmp_path: Path) -> None:
    with pytest.raises(SignatureError) as caught:
        sign(b"x", tmp_path / "missing")
    assert "no SSH key at" in caught.value.message and "--key" in str(caught.value.hint)


def test_a_terminal_decision_signed_by_the_approver_is_authenticated(keys: Keys) -> None:
    req = request()
    proof = verifier(keys).check(signed(decision(req, LEAD), keys.lead))
    assert proof.refusal is None
    assert proof.key is not None and proof.by == f"ssh key {proof.key}"


def test_terminal_decisions_that_do_not_prove_the_claimed_id_are_refused(keys: Keys) -> None:
    req = request()
    check = verifier(keys).check
    unsigned = check(decision(req, LEAD))
    assert unsigned.refusal == (
        f"the terminal decision by {LEAD} is not signed: terminal decisions must be signed "
        "with the approver's own SSH key (`clampdown approve --key`)"
    )
    not_listed = (
        f"the terminal decision by {LEAD} is not signed by a key that CLAMPDOWN_ALLOWED_SIGNERS "
        f"lists for {LEAD} (or was altered after signing)"
    )
    # --as U0LEAD signed with the on-call's key, or with a key nobody listed
    assert check(signed(decision(req, LEAD), keys.oncall)).refusal == not_listed
    assert check(signed(decision(req, LEAD), keys.outsider)).refusal == not_listed
    # signed, then changed in transit (deny turned into approve)
    sent = signed(decision(req, LEAD, reason="ok"), keys.lead)
    assert check(sent.model_copy(update={"reason": "changed"})).refusal == not_listed


def test_the_allowed_signers_file_must_be_set_outside_the_home_and_not_writable_by_others(
    keys: Keys,
) -> None:
    sent = signed(decision(request(), LEAD), keys.lead)
    missing = verifier(keys, allowed_signers=None).check(sent).refusal
    assert missing is not None and "CLAMPDOWN_ALLOWED_SIGNERS is not set" in missing
    inside = keys.home / "allowed_signers"
    inside.write_text(keys.allowed.read_text())
    inside.chmod(0o644)
    refusal = verifier(keys, allowed_signers=inside).check(sent).refusal
    assert refusal is not None and "is inside CLAMPDOWN_HOME" in refusal
    keys.allowed.chmod(0o666)
    refusal = verifier(keys).check(sent).refusal
    assert refusal is not None and "writable by others (mode 666)" in refusal
    keys.allowed.chmod(0o644)
    assert verifier(keys).check(sent).refusal is None


def test_prefect_ui_decisions_count_only_when_turned_on(keys: Keys) -> None:
    typed = decision(request(), LEAD, source="prefect-ui")
    assert verifier(keys).check(typed).refusal == UI_OFF
    assert "CLAMPDOWN_PREFECT_UI_DECISIONS=false" in UI_OFF
    on = verifier(keys, prefect_ui=True).check(typed)
    assert on.refusal is None and on.by is not None and "unauthenticated" in on.by


def test_a_slack_decision_needs_serve_s_signature_with_the_run_key(keys: Keys) -> None:
    clicked = decision(request(), LEAD, source="slack")
    assert verifier(keys).check(clicked.signed(b"k" * 32)).refusal is None
    forged = verifier(keys).check(clicked.signed(b"guessed-key"))
    assert forged.refusal == (
        "the decision claims to come from Slack but is not signed by clampdown serve "
        "(the run's approval key)"
    )
    assert verifier(keys).check(clicked.model_copy(update={"signature": "é"})).refusal


def test_one_key_listed_for_two_ids_counts_once_in_a_quorum(keys: Keys) -> None:
    req = request()
    first = signed(decision(req, "U0TWIN1"), keys.shared)
    second = signed(decision(req, "U0TWIN2"), keys.shared)
    proofs = [verifier(keys).check(d) for d in (first, second)]
    assert [p.refusal for p in proofs] == [None, None]  # each id is listed for the key
    assert req.refusal(first, set(), T0, proofs[0].key) is None
    req.record(first, proofs[0].key)
    assert req.refusal(second, set(), T0, proofs[1].key) == (
        f"the key {proofs[0].key} has already decided as U0TWIN1: one key counts once, "
        "whatever id it claims"
    )
    assert req.decided is None


def test_a_signed_decision_is_valid_for_its_request_only_and_counts_once(keys: Keys) -> None:
    req = request()
    sent = signed(decision(req, LEAD), keys.lead)
    proof = verifier(keys).check(sent)
    other = request()  # same run, step and parameters; a new request (another nonce)
    assert other.refusal(sent, set(), T0, proof.key) == (
        "the decision was made for another approval request (its nonce differs)"
    )
    req.record(sent, proof.key)
    assert req.refusal(sent, set(), T0, proof.key) == (
        f"decision {sent.decision_id} was already counted: a decision counts once"
    )
    # two distinct keys make the quorum of two
    second = signed(decision(req, ONCALL), keys.oncall)
    second_proof = verifier(keys).check(second)
    assert req.refusal(second, set(), T0, second_proof.key) is None
    req.record(second, second_proof.key)
    assert req.decided == "approved"


def test_the_two_person_rule_compares_the_authenticated_id(keys: Keys, tmp_path: Path) -> None:
    starter_key = keygen(tmp_path / "starter")
    keys.allowed.write_text(keys.allowed.read_text() + f"{STARTER} {public(starter_key)}\n")
    req = request()
    sent = signed(decision(req, STARTER), starter_key)
    proof = verifier(keys).check(sent)
    assert proof.refusal is None
    assert req.refusal(sent, set(), T0, proof.key) == (
        f"{STARTER} started this run; two-person rule: someone else must decide"
    )


def test_once_serve_s_key_is_listed_only_its_signature_vouches_for_slack(
    keys: Keys, tmp_path: Path
) -> None:
    """Whoever can read CLAMPDOWN_HOME has the run's approval key; once the allowed-signers
    file lists clampdown-serve, that key no longer makes a Slack decision."""
    serve = keygen(tmp_path / "serve")
    clicked = decision(request(), LEAD, source="slack")
    with_run_key = clicked.signed(b"k" * 32)
    assert verifier(keys).check(with_run_key).refusal is None  # before: the run key's HMAC

    keys.allowed.write_text(keys.allowed.read_text() + f"{SERVE_PRINCIPAL} {public(serve)}\n")
    listed = (
        "the decision claims to come from Slack but is not signed with clampdown serve's key "
        "(CLAMPDOWN_ALLOWED_SIGNERS lists clampdown-serve)"
    )
    assert verifier(keys).check(with_run_key).refusal == listed
    by_serve = clicked.model_copy(
        update={"signature": sign(clicked.signing_payload(), serve, SLACK_NAMESPACE)}
    )
    proof = verifier(keys).check(by_serve)
    assert proof.refusal is None and proof.by is not None
    assert proof.by.startswith("slack (clampdown serve key SHA256:")
    # an approver's key cannot pose as serve, nor serve's approval-namespace signature
    by_lead = clicked.model_copy(
        update={"signature": sign(clicked.signing_payload(), keys.lead, SLACK_NAMESPACE)}
    )
    assert verifier(keys).check(by_lead).refusal == listed
    wrong_ns = clicked.model_copy(update={"signature": sign(clicked.signing_payload(), serve)})
    assert verifier(keys).check(wrong_ns).refusal == listed
    # and serve's key cannot sign a terminal decision for an approver
    as_terminal = signed(decision(request(), LEAD), serve)
    assert verifier(keys).check(as_terminal).refusal is not None


def test_serve_is_listed_only_by_a_principals_field_that_names_it(
    keys: Keys, tmp_path: Path
) -> None:
    serve = keygen(tmp_path / "serve")
    line = allowed_signers_line(SERVE_PRINCIPAL, serve)
    assert line == f"{SERVE_PRINCIPAL} {public(serve)}\n"
    assert not lists_principal(keys.allowed, SERVE_PRINCIPAL)
    keys.allowed.write_text(keys.allowed.read_text() + f"# {line}" + f"#{line}" + f"U0X,not-{line}")
    assert not lists_principal(keys.allowed, SERVE_PRINCIPAL)  # comments, other names
    keys.allowed.write_text(keys.allowed.read_text() + f"U0X,{line}")
    assert lists_principal(keys.allowed, SERVE_PRINCIPAL)
    assert not lists_principal(tmp_path / "missing", SERVE_PRINCIPAL)


def test_an_allowed_signers_file_with_a_pattern_principal_is_not_trusted(keys: Keys) -> None:
    sent = signed(decision(request(), LEAD), keys.lead)
    keys.allowed.write_text(keys.allowed.read_text() + f"* {public(keys.outsider)}\n")
    refusal = verifier(keys).check(sent).refusal
    assert refusal is not None
    assert f"{keys.allowed} line 4 lists a pattern (*) as principal" in refusal
