"""Who vouches for a decision that reached a paused run: the proof each source must carry.

Every decision reaches the run the same way, as Prefect run input posted to the Prefect
API, so the channel proves nothing: whoever can reach that API can post any JSON. The
run therefore checks a proof per claimed source, with nothing the sender can choose:

* ``terminal`` — an OpenSSH signature (:mod:`clampdown.core.signatures`) of the decision
  by a key that ``CLAMPDOWN_ALLOWED_SIGNERS`` lists for the claimed approver id. The
  approver is authenticated by their own private key; the key's fingerprint is what a
  quorum counts.
* ``slack`` — ``clampdown serve``'s word: serve verified Slack's signed request and took
  the user id from it. When the allowed-signers file lists a key for ``clampdown-serve``,
  serve must have signed the decision with that key (``CLAMPDOWN_SERVE_KEY``, a file
  outside ``CLAMPDOWN_HOME`` only serve's account reads; namespace ``clampdown-slack``).
  Otherwise, an HMAC with the run's approval key (a 0600 file the run made in its
  folder): a local user who can reach the Prefect API but cannot read the run's folder
  cannot make one, whoever can read ``CLAMPDOWN_HOME`` can (docs/security.md).
* ``prefect-ui`` — no proof: refused unless ``CLAMPDOWN_PREFECT_UI_DECISIONS`` is on, in
  which case it trusts whoever can reach the Prefect API.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from clampdown.core.approvals import Decision
from clampdown.core.signatures import (
    SERVE_PRINCIPAL,
    SLACK_NAMESPACE,
    allowed_signers_problem,
    lists_principal,
    verify,
)

UI_OFF = (
    "decisions typed in the Prefect UI or posted to the Prefect API are off "
    "(CLAMPDOWN_PREFECT_UI_DECISIONS=false): decide in Slack, or with "
    "`clampdown approve --key` signed by your own SSH key"
)


@dataclass(frozen=True)
class Proof:
    """The outcome of checking a decision's proof.

    ``refusal``: why it does not count (None: the proof holds). ``by``: how the
    approver was authenticated, for the ledger. ``key``: the SSH key fingerprint of a
    signed terminal decision (one key counts once in a quorum).
    """

    refusal: str | None
    by: str | None = None
    key: str | None = None


@dataclass(frozen=True)
class Verifier:
    """What a run checks proofs with: its own approval key (Slack decisions via serve),
    the allowed-signers file and the state folder it must lie outside (terminal
    decisions), and whether unauthenticated Prefect UI decisions are allowed."""

    run_key: bytes
    allowed_signers: Path | None
    home: Path
    prefect_ui: bool = False

    def check(self, decision: Decision) -> Proof:
        if decision.source == "terminal":
            return self._terminal(decision)
        if decision.source == "slack":
            return self._slack(decision)
        if not self.prefect_ui:
            return Proof(UI_OFF)
        return Proof(None, "prefect-ui (unauthenticated: CLAMPDOWN_PREFECT_UI_DECISIONS=true)")

    def _serve_key_listed(self) -> bool:
        """Whether a trustworthy allowed-signers file lists serve's key: then only a
        signature by that key vouches for a Slack decision, not the run's approval key."""
        if self.allowed_signers is None:
            return False
        if allowed_signers_problem(self.allowed_signers, self.home) is not None:
            return False
        return lists_principal(self.allowed_signers, SERVE_PRINCIPAL)

    def _untrusted_serve_listing(self) -> str | None:
        """Why a Slack decision cannot be checked: an allowed-signers file is configured but
        cannot be trusted (writable by others, a pattern principal, inside
        ``CLAMPDOWN_HOME``). Whether it lists ``clampdown-serve`` is not asked: whoever can
        write such a file can delete that line, and the run's approval key, which anyone
        who reads ``CLAMPDOWN_HOME`` holds, would vouch for Slack clicks again (h-review27).
        So the decision is refused with the file's problem, as a terminal decision is."""
        if self.allowed_signers is None:
            return None
        problem = allowed_signers_problem(self.allowed_signers, self.home)
        if problem is None:
            return None
        return (
            "the decision claims to come from Slack but cannot be checked: "
            f"CLAMPDOWN_ALLOWED_SIGNERS cannot be trusted: {problem}"
        )

    def _slack(self, decision: Decision) -> Proof:
        untrusted = self._untrusted_serve_listing()
        if untrusted is not None:
            return Proof(untrusted)
        if self._serve_key_listed():
            assert self.allowed_signers is not None
            signer = verify(
                decision.signing_payload(),
                decision.signature,
                SERVE_PRINCIPAL,
                self.allowed_signers.expanduser(),
                namespace=SLACK_NAMESPACE,
            )
            if signer is None:
                return Proof(
                    "the decision claims to come from Slack but is not signed with clampdown "
                    f"serve's key (CLAMPDOWN_ALLOWED_SIGNERS lists {SERVE_PRINCIPAL})"
                )
            return Proof(None, f"slack (clampdown serve key {signer.fingerprint})")
        if self.run_key and decision.signature_valid(self.run_key):
            return Proof(None, "slack (clampdown serve)")
        return Proof(
            "the decision claims to come from Slack but is not signed by clampdown "
            "serve (the run's approval key)"
        )

    def _terminal(self, decision: Decision) -> Proof:
        who = decision.approver
        if not decision.signature.strip():
            return Proof(
                f"the terminal decision by {who} is not signed: terminal decisions must be "
                "signed with the approver's own SSH key (`clampdown approve --key`)"
            )
        problem = allowed_signers_problem(self.allowed_signers, self.home)
        if problem is not None:
            return Proof(f"the terminal decision by {who} cannot be verified: {problem}")
        assert self.allowed_signers is not None
        signer = verify(
            decision.signing_payload(), decision.signature, who, self.allowed_signers.expanduser()
        )
        if signer is None:
            return Proof(
                f"the terminal decision by {who} is not signed by a key that "
                f"CLAMPDOWN_ALLOWED_SIGNERS lists for {who} (or was altered after signing)"
            )
        return Proof(None, f"ssh key {signer.fingerprint}", signer.fingerprint)
