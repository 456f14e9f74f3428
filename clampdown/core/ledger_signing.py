"""Signed chain heads: a ledger nobody can rewrite quietly, even with write access to it.

The hash chain (:mod:`clampdown.core.ledger`) shows that a record changed, unless
whoever changed it recomputed every hash after it — which anyone who can write
``CLAMPDOWN_HOME`` can do. So every record is sealed as it is written: its ``hash``
(which covers its ``prev``, hence the whole chain before it) is signed with a key
that is not in ``CLAMPDOWN_HOME`` — an AWS KMS asymmetric key in production, a local
Ed25519 key for drills and development — and the signature is kept in the record::

    {"seq": 7, "type": "step.end", ..., "prev": "...", "hash": "...",
     "sig": {"key_id": "...", "alg": "ECDSA_SHA_256", "value": "<base64>"}}

``sig`` is left out of the record's own hash (it signs that hash) and is covered by
the next record's ``prev``. The signed message is :func:`head_message` (run id, seq,
hash). Each signed head is also copied, in the background, to the run's anchors (the
Object Lock evidence bucket: ``heads/<seq>.json``), the newest one first when they
queue up, so deleting a ledger's last records shows against the copy
(:func:`compare_copy`).

:func:`verify_ledger` checks chain, signatures and truncation and names the record
that is wrong; ``clampdown verify`` and rollback run it (docs/verify.md). Sealing
every record costs one signature per record (``benchmarks/ledger_signing.py``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import stat
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from clampdown.core.diagnostics import ClampdownError
from clampdown.core.ledger import SEAL, Ledger, walk

if TYPE_CHECKING:
    from clampdown.core.run_store import LedgerPrimary

UNSIGNED = "ledger.unsigned"
LOCAL_ALGORITHM = "ed25519"
MAY_BE_UNSIGNED = frozenset({"alert.joined", "alert.correlated"})
"""What another process appends to a run's ledger (an alert joining it, a link to a related
run): chained, not signed, listed as such. Every other record is the engine's and must be
signed: readers act on them (a ``step.skip`` makes a resumed run skip that step, and the
report show it skipped), so an allowlist, not a list of the engine's types — a type added
later, or one an attacker makes up, is not trusted unsigned."""


def must_be_signed(record: dict[str, Any]) -> bool:
    """Whether ``record`` is one the engine wrote itself (unsigned, it is not trusted)."""
    return record.get("type") not in MAY_BE_UNSIGNED


log = logging.getLogger("clampdown.ledger")


class LedgerSigner(Protocol):
    """Signs and checks chain heads with a key outside ``CLAMPDOWN_HOME``.

    Registered through the entry-point group ``clampdown.ledger_signers`` as a factory
    ``(settings) -> LedgerSigner | None`` (None: not configured).
    """

    key_id: str  # which key, as the ledger names it (a KMS key ARN, ed25519:<fingerprint>)
    algorithm: str

    def sign(self, message: bytes) -> bytes: ...

    def verify(self, message: bytes, signature: bytes) -> bool: ...


Anchor = Callable[[str, int, bytes], None]
"""Copies one signed head out of reach: ``(run_id, seq, the head as JSON)``."""


def head_message(run_id: str, covers: int, head: str) -> bytes:
    """What a head's signature covers: this run, this record, this chain head."""
    body = json.dumps({"run": run_id, "seq": covers, "head": head}, sort_keys=True)
    return b"clampdown-ledger-head-v1\n" + body.encode()


# --- the local Ed25519 key (drills and development) -------------------------------------


class Ed25519Signer:
    """A local Ed25519 key: for drills and development, never for production evidence.

    Built from a private key (signs and checks) or a public key (checks only: what
    a reviewer holds).
    """

    algorithm = LOCAL_ALGORITHM

    def __init__(self, private: Any = None, public: Any = None) -> None:
        self._private = private
        self._public = public if public is not None else private.public_key()
        raw = self._public.public_bytes(*_raw_format())
        self.key_id = f"ed25519:{hashlib.sha256(raw).hexdigest()[:16]}"

    def sign(self, message: bytes) -> bytes:
        if self._private is None:
            raise ClampdownError(
                f"the ledger key {self.key_id} is a public key: it can check, not sign",
                "point CLAMPDOWN_LEDGER_KEY at the private key",
            )
        return bytes(self._private.sign(message))

    def verify(self, message: bytes, signature: bytes) -> bool:
        from cryptography.exceptions import InvalidSignature

        try:
            self._public.verify(signature, message)
        except InvalidSignature:
            return False
        return True


def _raw_format() -> tuple[Any, Any]:
    from cryptography.hazmat.primitives import serialization

    return serialization.Encoding.Raw, serialization.PublicFormat.Raw


def generate_local_key(path: Path) -> Path:
    """Write a new Ed25519 private key (PEM, mode 0600) at ``path``; refuse to overwrite."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    return path


def load_local_key(path: Path, home: Path) -> Ed25519Signer:
    """The key at ``path``; refused inside ``home`` (whoever writes the ledger could read
    it) or when others may read it. A public key file gives a checker only."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

    where = path.expanduser()
    hint = "generate one outside CLAMPDOWN_HOME: openssl genpkey -algorithm ed25519 -out PATH"
    if _inside(where, home.expanduser()):
        raise ClampdownError(
            f"CLAMPDOWN_LEDGER_KEY {path} is inside CLAMPDOWN_HOME ({home}): whoever can "
            "rewrite the ledger could sign it",
            "keep the key outside CLAMPDOWN_HOME",
        )
    try:
        data = where.read_bytes()
    except OSError as exc:
        raise ClampdownError(
            f"cannot read CLAMPDOWN_LEDGER_KEY {path}: {exc.strerror}", hint
        ) from None
    if b"PRIVATE KEY" in data:
        if where.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ClampdownError(
                f"CLAMPDOWN_LEDGER_KEY {path} can be read by other users",
                f"chmod 600 {path}",
            )
        key: Any = serialization.load_pem_private_key(data, password=None)
        if isinstance(key, Ed25519PrivateKey):
            return Ed25519Signer(private=key)
    else:
        try:
            key = serialization.load_pem_public_key(data)
        except ValueError:
            key = None
        if isinstance(key, Ed25519PublicKey):
            return Ed25519Signer(public=key)
    raise ClampdownError(f"CLAMPDOWN_LEDGER_KEY {path} is not an Ed25519 key in PEM", hint)


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def drill_key_path(home: Path) -> Path:
    """A drill's own key: beside its workspace (the drill's CLAMPDOWN_HOME), not in it."""
    root = home.expanduser()
    return root.parent / f"{root.name}.ledger-key" / "ed25519.pem"


def local_signer(settings: Any) -> Ed25519Signer | None:
    """The ``clampdown.ledger_signers`` factory of the local key.

    ``CLAMPDOWN_LEDGER_KEY`` when set; in a drill with no key configured, the drill's
    own key (generated on first use beside its workspace); otherwise None.
    """
    path = settings.ledger_key
    if path is None and settings.drill and not settings.ledger_kms_key_id:
        path = drill_key_path(settings.home)
        if not path.exists():
            generate_local_key(path)
    return None if path is None else load_local_key(Path(path), Path(settings.home))


# --- signing as the run goes --------------------------------------------------------------


class HeadSigner:
    """The ledger hook that signs each record's hash and anchors the signed heads.

    A failed signature (KMS unreachable) does not stop a containment: it is logged and
    that record stays unsigned (``verify`` lists it). Anchors run on one background
    thread; when heads queue up only the newest is sent (it covers the others);
    :meth:`close` waits until it has gone.
    """

    def __init__(self, signer: LedgerSigner, run_id: str, anchors: Sequence[Anchor] = ()) -> None:
        self.signer = signer
        self.run_id = run_id
        self.anchors = list(anchors)
        self.failures = 0
        self._pool: ThreadPoolExecutor | None = None
        self._latest: tuple[int, bytes] | None = None
        self._guard = threading.Lock()

    def seal(self, record: dict[str, Any]) -> dict[str, Any] | None:
        seq = int(record["seq"])
        try:
            signature = self.signer.sign(head_message(self.run_id, seq, str(record["hash"])))
        except Exception as exc:
            self.failures += 1
            log.error("ledger record %s of run %s not signed: %s", seq, self.run_id, exc)
            return None
        return {
            "key_id": self.signer.key_id,
            "alg": self.signer.algorithm,
            "value": base64.b64encode(signature).decode(),
        }

    def written(self, record: dict[str, Any], line: bytes) -> None:
        if not self.anchors or SEAL not in record:
            return
        head = {
            "run": self.run_id,
            "seq": record["seq"],
            "type": record.get("type"),
            "hash": record["hash"],
            SEAL: record[SEAL],
        }
        with self._guard:
            self._latest = (int(record["seq"]), json.dumps(head, sort_keys=True).encode())
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="ledger-anchor")
            self._pool.submit(self._send_latest)

    def _send_latest(self) -> None:
        with self._guard:
            taken, self._latest = self._latest, None
        if taken is None:  # a newer head was already sent
            return
        seq, body = taken
        for anchor in self.anchors:
            try:
                anchor(self.run_id, seq, body)
            except Exception as exc:  # verify reports heads missing from the copy
                log.error("signed head %s of run %s not anchored: %s", seq, self.run_id, exc)

    def close(self) -> None:
        """Wait until the newest signed head has reached the anchors."""
        with self._guard:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)


def open_ledger(
    path: Path,
    run_id: str,
    signer: LedgerSigner | None,
    anchors: Sequence[Anchor] = (),
    primary: LedgerPrimary | None = None,
) -> Ledger:
    """A run's ledger, signing its head when a signer is configured (``primary``: the run
    store that holds its lines first, in the scaled mode).

    Without one the run says so loudly: a warning now and a ``ledger.unsigned`` record
    (written by :func:`note_unsigned` after ``run.start``), and ``verify`` says unsigned.
    """
    hook = HeadSigner(signer, run_id, anchors) if signer is not None else None
    return Ledger(path, hook=hook, primary=primary)


UNSIGNED_REASON = (
    "no ledger signing key is configured (CLAMPDOWN_LEDGER_KMS_KEY_ID or CLAMPDOWN_LEDGER_KEY): "
    "this ledger can be rewritten without detection by anyone who can write CLAMPDOWN_HOME"
)


def note_unsigned(ledger: Ledger, logger: Any = None) -> None:
    """Say loudly that ``ledger`` is not signed (no-op when it is): ``logger`` (the flow
    run's, which the Prefect UI shows) or clampdown's, and a ``ledger.unsigned`` record."""
    if ledger.hook is None:
        (logger or log).warning("run ledger %s is UNSIGNED: %s", ledger.path, UNSIGNED_REASON)
        ledger.append(UNSIGNED, reason=UNSIGNED_REASON)


# --- verifying ----------------------------------------------------------------------------


@dataclass
class LedgerVerdict:
    """What ``clampdown verify`` says of a ledger, and rollback acts on.

    ``status``: ``intact`` (chain holds, every record the engine wrote is signed with
    the configured key, run.end present), ``unsigned`` (no signature at all),
    ``unverified`` (signed, but no key configured to check with), ``tampered`` (a
    record changed after it was signed: ``bad_seq``), ``not-signed`` (engine records
    without a signature: inserted, or written while signing failed), ``truncated``
    (no run.end after the last signed record).
    """

    status: str
    message: str
    records: int = 0
    bad_seq: int | None = None
    signed_through: int | None = None  # the last record whose signature verified
    signed: int = 0
    key_id: str | None = None
    complete: bool = False
    notes: list[str] = field(default_factory=list)
    run_id: str = ""
    hashes: list[str] = field(default_factory=list)  # each record's hash, by seq

    @property
    def trusted(self) -> bool:
        """Rollback may act on it: chain intact, every engine record signed, run.end."""
        return self.status == "intact"


def verify_ledger(lines: Iterable[bytes], verifier: LedgerSigner | None) -> LedgerVerdict:
    """Check chain, signatures and truncation; name the first record that is wrong."""
    chain, records = walk(lines)
    run_id = _run_id(records)
    hashes = [str(r.get("hash")) for r, _ in records]
    if not chain.ok:  # the record that breaks the chain is the one after `records`
        return LedgerVerdict(
            "tampered", chain.message, chain.records, len(records), run_id=run_id, hashes=hashes
        )
    signed = [r for r, _ in records if SEAL in r]
    verdict = LedgerVerdict(
        "intact",
        "",
        chain.records,
        run_id=run_id,
        signed=len(signed),
        complete=chain.complete,
        hashes=hashes,
    )
    if not signed:
        recorded = any(r.get("type") == UNSIGNED for r, _ in records)
        verdict.status = "unsigned"
        verdict.message = (
            f"chain intact over {chain.records} records but UNSIGNED: no record is signed, "
            "so whoever can write the ledger could have rewritten it and recomputed the chain"
            + (" (the run recorded that no signing key was configured)" if recorded else "")
        )
        return verdict
    verdict.key_id = str(signed[-1][SEAL].get("key_id"))
    if verifier is None:
        verdict.status = "unverified"
        verdict.message = (
            f"chain intact over {chain.records} records, {len(signed)} signed (key "
            f"{verdict.key_id}), but no key is configured to check the signatures"
        )
        verdict.notes.append("set CLAMPDOWN_LEDGER_KMS_KEY_ID or CLAMPDOWN_LEDGER_KEY")
        return verdict
    if _check_seals(verdict, [r for r, _ in records], verifier):
        _check_end(verdict, [r for r, _ in records])
    return verdict


def _run_id(records: list[tuple[dict[str, Any], str]]) -> str:
    first = records[0][0] if records else {}
    run = first.get("run")
    return str(run.get("id") or "") if isinstance(run, dict) else ""


def _check_seals(
    verdict: LedgerVerdict, records: list[dict[str, Any]], verifier: LedgerSigner
) -> bool:
    """Every signature verifies; engine records without one are named (False: stop)."""
    last = -1
    missing: list[dict[str, Any]] = []
    for record in records:
        seq = int(record["seq"])
        if SEAL not in record:
            if must_be_signed(record):
                missing.append(record)
            continue
        problem = _seal_problem(record, verifier, verdict.run_id)
        if problem is not None:
            verdict.status, verdict.bad_seq = "tampered", seq
            verdict.signed_through = last if last >= 0 else None
            verdict.message = (
                f"TAMPERED at record {seq} ({record.get('type')}): {problem} — it was "
                "changed after it was signed, or signed by someone else"
            )
            return False
        last = seq
    verdict.signed_through = last
    others = [r for r in records if SEAL not in r and not must_be_signed(r)]
    if others:
        verdict.notes.append(
            f"{len(others)} record(s) not signed, written by another process (chained, not "
            f"signed): {_listed(others)}"
        )
    if missing:
        first = missing[0]
        after = int(first["seq"]) > last
        verdict.status, verdict.bad_seq = "not-signed", int(first["seq"])
        verdict.message = (
            f"NOT SIGNED: record {first['seq']} ({first.get('type')})"
            + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
            + (
                f" after the last signed record {last}: anyone who can write the ledger "
                "could have added them"
                if after
                else " among signed records: it was inserted or rewritten (or signing "
                "failed when it was written)"
            )
            + f": {_listed(missing)}"
        )
        return False
    return True


def _seal_problem(record: dict[str, Any], verifier: LedgerSigner, run_id: str) -> str | None:
    seal = record[SEAL]
    if not isinstance(seal, dict):
        return "its signature is not readable"
    if seal.get("key_id") != verifier.key_id:
        return f"it is signed by key {seal.get('key_id')}, not the configured key {verifier.key_id}"
    try:
        signature = base64.b64decode(str(seal.get("value")), validate=True)
    except ValueError:
        return "its signature is not base64"
    message = head_message(run_id, int(record["seq"]), str(record.get("hash")))
    if not verifier.verify(message, signature):
        return f"its signature does not verify with key {verifier.key_id}"
    return None


def _check_end(verdict: LedgerVerdict, records: list[dict[str, Any]]) -> None:
    through = verdict.signed_through
    if not verdict.complete:
        verdict.status = "truncated"
        verdict.message = (
            f"TRUNCATED (or still running): no run.end; cut short after signed record "
            f"{through} (chain intact over {verdict.records} records)"
        )
        return
    verdict.message = (
        f"chain intact over {verdict.records} records, every engine record signed "
        f"(through record {through}, key {verdict.key_id}), run.end present"
    )


def _listed(records: Sequence[dict[str, Any]]) -> str:
    shown = ", ".join(f"{r['seq']} {r.get('type')}" for r in records[:6])
    return shown + (" …" if len(records) > 6 else "")


# --- the copy in the evidence bucket ------------------------------------------------------


@dataclass(frozen=True)
class CopyCheck:
    """How the local ledger compares with its Object Lock copy (``clampdown verify``)."""

    status: str  # matches, differs, missing, truncated
    message: str
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status == "matches"


def compare_copy(
    local: bytes,
    verdict: LedgerVerdict,
    copy: bytes | None,
    anchored: Sequence[bytes],
    verifier: LedgerSigner | None,
) -> CopyCheck:
    """Compare the local ledger with its copy in S3: the ledger object and signed heads.

    A signed head in S3 for a record the local ledger does not have means the local
    ledger lost records (TRUNCATED); a head whose hash differs from the local record
    at the same seq means the local ledger was rewritten from there.
    """
    if copy is None and not anchored:
        return CopyCheck(
            "missing", "S3 COPY MISSING: no copy of this ledger in the evidence bucket"
        )
    heads = [h for h in (_parse(line) for line in anchored) if h is not None]
    proven = sorted(
        (h for h in heads if _anchored_valid(h, verdict.run_id, verifier)),
        key=lambda h: int(h["seq"]),
    )
    newest = proven[-1] if proven else None
    if newest is not None and int(newest["seq"]) >= len(verdict.hashes):
        return CopyCheck(
            "truncated",
            f"TRUNCATED: the evidence bucket holds signed record {newest['seq']} "
            f"({newest.get('type')}); the local ledger ends at record {len(verdict.hashes) - 1}",
        )
    for head in proven:
        seq = int(head["seq"])
        if verdict.hashes[seq] != head.get("hash"):
            return CopyCheck(
                "differs",
                f"S3 COPY DIFFERS: signed record {seq} ({head.get('type')}) in the evidence "
                "bucket is not the local record: the local ledger was rewritten from there",
            )
    notes = []
    if heads and not proven:
        notes.append("no signed head in S3 verifies with the configured key")
    elif proven:
        notes.append(f"newest signed head in S3: record {proven[-1]['seq']}")
    return _compare_ledger_object(local, copy, notes)


def _compare_ledger_object(local: bytes, copy: bytes | None, notes: list[str]) -> CopyCheck:
    if copy is None:
        notes.append("the ledger object is not in S3 yet (it is stored when the run ends)")
        return CopyCheck("matches", "signed heads in S3 match the local ledger", tuple(notes))
    digest = hashlib.sha256(copy).hexdigest()
    if copy == local:
        return CopyCheck("matches", f"S3 copy identical (sha256 {digest})", tuple(notes))
    ours, theirs = local.splitlines(), copy.splitlines()
    if local.startswith(copy) and copy.endswith(b"\n"):
        notes.append(f"{len(ours) - len(theirs)} later local record(s) are not in the S3 copy")
        return CopyCheck(
            "matches", f"S3 copy is the local ledger's first {len(theirs)} records", tuple(notes)
        )
    at = next(
        (i for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b),
        min(len(ours), len(theirs)),
    )
    return CopyCheck(
        "differs",
        f"S3 COPY DIFFERS from the local ledger at record {at} (S3 sha256 {digest}, local "
        f"{hashlib.sha256(local).hexdigest()})",
        tuple(notes),
    )


def _parse(line: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _anchored_valid(head: dict[str, Any], run_id: str, verifier: LedgerSigner | None) -> bool:
    """A head from S3 counts when its signature holds (or there is no key to check it)."""
    if not isinstance(head.get("seq"), int) or not isinstance(head.get(SEAL), dict):
        return False
    if verifier is None:
        return True
    return _seal_problem(head, verifier, run_id) is None
