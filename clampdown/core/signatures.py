"""OpenSSH signatures for approval decisions: the approver's own key, the mechanism git uses.

A terminal decision is signed by the person deciding, with their own SSH key
(``ssh-keygen -Y sign -n clampdown-approval``), and the run verifies it against an
``allowed_signers`` file (``CLAMPDOWN_ALLOWED_SIGNERS``; git's format: one line per
key, ``<principals> <key type> <base64 key>``, principals being approver ids such as
Slack user ids). The claimed approver id must be a principal of the key that signed:
``ssh-keygen -Y verify -I <claimed id>`` fails otherwise. So nobody can decide as
someone else without that person's private key, and nothing a run keeps in
``CLAMPDOWN_HOME`` lets anyone sign.

We call ``ssh-keygen`` (OpenSSH 8.2+) rather than re-implement SSHSIG: it is what
operators already use for signed git commits, it signs with a key held in ssh-agent
(``-f`` naming the *public* key) or on a hardware token, and it handles every key
type and the allowed-signers options (``valid-before``, ``namespaces=``, ``cert-authority``).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from clampdown.core.diagnostics import ClampdownError

NAMESPACE = "clampdown-approval"
"""``-n`` of every approver's signature: one made for git or for ssh logins is not valid here."""
SLACK_NAMESPACE = "clampdown-slack"
"""``-n`` of serve's signature on a Slack decision (never valid as an approver's)."""
SERVE_PRINCIPAL = "clampdown-serve"
"""The allowed-signers principal of ``clampdown serve``'s key (``CLAMPDOWN_SERVE_KEY``)."""

_GOOD = re.compile(
    r'^Good "[^"]*" signature for (?P<principal>.+) with (?P<kind>\S+) key (?P<fp>\S+)'
)
SIGN_TIMEOUT = 120.0  # seconds: a passphrase prompt or a hardware token touch


class SignatureError(ClampdownError):
    """A decision cannot be signed here (no key, no ssh-keygen, ssh-keygen refused)."""


@dataclass(frozen=True)
class Verified:
    """Who signed: the principal the signature was checked for, and the key's fingerprint."""

    principal: str
    fingerprint: str  # SHA256:…, as ssh-keygen prints it: one key counts once in a quorum


def ssh_keygen() -> str:
    """The ``ssh-keygen`` program, or a user error that says how to get it."""
    found = shutil.which("ssh-keygen")
    if found is None:
        raise SignatureError(
            "ssh-keygen is not installed: terminal approvals are signed and verified with it",
            "install OpenSSH's client (Debian/Ubuntu: apt-get install openssh-client)",
        )
    return found


def sign(payload: bytes, key: Path, namespace: str = NAMESPACE) -> str:
    """Sign ``payload`` with the SSH key at ``key`` (a private key, or a public key whose
    private half is in ssh-agent); returns the armored ``SSH SIGNATURE`` text."""
    key = key.expanduser()
    if not key.is_file():
        raise SignatureError(
            f"no SSH key at {key}",
            "pass --key with your own private key (e.g. ~/.ssh/id_ed25519), or its .pub "
            "when the key is in ssh-agent",
        )
    try:
        done = subprocess.run(
            [ssh_keygen(), "-Y", "sign", "-q", "-f", str(key), "-n", namespace],
            input=payload,
            capture_output=True,
            timeout=SIGN_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise SignatureError(
            f"ssh-keygen did not sign with {key} within {SIGN_TIMEOUT:.0f} s",
            "is a passphrase prompt or a hardware key waiting?",
        ) from None
    text = done.stdout.decode("ascii", "replace")
    if done.returncode != 0 or "BEGIN SSH SIGNATURE" not in text:
        why = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise SignatureError(
            f"ssh-keygen could not sign with {key}: {why[-1] if why else 'no signature'}",
            "check the key file (and its passphrase), or that ssh-agent holds the key",
        )
    return text


def verify(
    payload: bytes,
    signature: str,
    principal: str,
    allowed_signers: Path,
    namespace: str = NAMESPACE,
) -> Verified | None:
    """The signer, when ``signature`` is a valid signature of ``payload`` by a key that
    ``allowed_signers`` lists for ``principal``; None otherwise (forged, altered, another
    person's key, another namespace, a key outside its validity interval)."""
    if "BEGIN SSH SIGNATURE" not in signature or not principal or "\n" in principal:
        return None
    with tempfile.TemporaryDirectory(prefix="clampdown-sig-") as tmp:
        sig_file = Path(tmp) / "decision.sig"
        sig_file.write_text(signature, encoding="ascii", errors="replace")
        try:
            done = subprocess.run(
                [
                    ssh_keygen(),
                    "-Y",
                    "verify",
                    "-f",
                    str(allowed_signers),
                    "-I",
                    principal,
                    "-n",
                    namespace,
                    "-s",
                    str(sig_file),
                ],
                input=payload,
                capture_output=True,
                timeout=30,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return None
    if done.returncode != 0:
        return None
    match = _GOOD.match(done.stdout.decode("utf-8", "replace").strip())
    if match is None or match["principal"] != principal:
        return None
    return Verified(principal=principal, fingerprint=match["fp"])


def generate_key(path: Path, comment: str) -> Path:
    """A new Ed25519 key pair without passphrase at ``path`` (and ``path.pub``): for drills
    and tests, whose simulated approvers need keys of their own. People make theirs with
    ``ssh-keygen`` and a passphrase, or on a hardware token."""
    subprocess.run(
        [ssh_keygen(), "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return path


def allowed_signers_line(principals: str, key: Path) -> str:
    """``<principals> <key type> <base64 key>``: the allowed-signers line for ``key`` (a
    private key whose ``.pub`` lies beside it, or the ``.pub`` itself)."""
    public = key if key.suffix == ".pub" else key.with_name(key.name + ".pub")
    kind, blob = public.read_text(encoding="ascii").split()[:2]
    return f"{principals} {kind} {blob}\n"


def lists_principal(allowed_signers: Path, principal: str) -> bool:
    """Whether a line of ``allowed_signers`` names ``principal`` (its first, comma-separated
    field, as ``ssh-keygen`` reads it; a comment line never names a valid principal)."""
    try:
        lines = allowed_signers.expanduser().read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return False
    for line in lines:
        fields = line.strip().split()
        if fields and principal in fields[0].strip('"').split(","):
            return True
    return False


def allowed_signers_problem(path: Path | None, home: Path) -> str | None:
    """Why ``path`` cannot be trusted as the allowed-signers file (None: it can).

    It must exist, lie outside ``CLAMPDOWN_HOME`` (whoever can write the state folder
    must not be able to add a key), be writable by its owner only, and name exact ids
    (no ``*`` or ``?`` patterns).
    """
    if path is None:
        return (
            "CLAMPDOWN_ALLOWED_SIGNERS is not set: terminal decisions cannot be verified "
            "(list each approver's public key there, in git's allowed_signers format)"
        )
    path = path.expanduser()
    try:
        info = path.stat()
    except OSError:
        return f"the allowed-signers file {path} (CLAMPDOWN_ALLOWED_SIGNERS) cannot be read"
    resolved, state = path.resolve(), home.expanduser().resolve()
    if resolved == state or state in resolved.parents:
        return (
            f"the allowed-signers file {path} is inside CLAMPDOWN_HOME: keep it where only "
            "administrators can write"
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return (
            f"the allowed-signers file {path} is writable by others "
            f"(mode {stat.S_IMODE(info.st_mode):o}): chmod go-w it"
        )
    if not os.access(path, os.R_OK):
        return f"the allowed-signers file {path} cannot be read"
    return _wildcard_line(path)


def _wildcard_line(path: Path) -> str | None:
    """A line whose principals are patterns (``*``, ``?``): ssh-keygen would let that key
    sign as any id they match, so the file is not trusted at all."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return f"the allowed-signers file {path} cannot be read as text"
    for number, line in enumerate(lines, start=1):
        fields = line.strip().split()
        if fields and not fields[0].startswith("#") and any(c in fields[0] for c in "*?"):
            return (
                f"the allowed-signers file {path} line {number} lists a pattern "
                f"({fields[0]}) as principal: list exact approver ids"
            )
    return None
