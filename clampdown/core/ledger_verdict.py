"""One verdict on a run's ledger, the same wherever it is shown.

``clampdown verify RUN_ID``, ``clampdown report``, ``clampdown export`` and
``clampdown verify <package>.tar.gz`` all say whether a ledger can be trusted. A report
that checked only the hash chain called a ledger "intact" that verify called TAMPERED
(the chain of a rewritten ledger is easy to recompute; the signatures are not), so
there is one judge, :func:`judge_run`, and every command shows its :class:`RunVerdict`:
the chain, every record's signature with the configured key, truncation
(:func:`~clampdown.core.ledger_signing.verify_ledger`), and, when an evidence bucket is
configured, the signed heads and ledger copy in S3
(:func:`~clampdown.core.ledger_signing.compare_copy`). The S3 reads are the caller's
(``read_copy``): the core reaches no provider.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from clampdown.core.ledger_signing import CopyCheck, LedgerSigner, LedgerVerdict, verify_ledger

LABELS = {
    "intact": "SIGNED",
    "unsigned": "UNSIGNED",
    "unverified": "UNVERIFIED",
    "tampered": "TAMPERED",
    "not-signed": "NOT SIGNED",
    "truncated": "TRUNCATED",
}
"""How each :class:`LedgerVerdict` status is named in a result line."""

COPY_LABELS = {
    "matches": "ANCHORED",
    "differs": "S3 COPY DIFFERS",
    "missing": "S3 COPY MISSING",
    "truncated": "TRUNCATED",
}
"""How each :class:`CopyCheck` status is named in a result line."""

CopyReader = Callable[[str], tuple[bytes | None, list[bytes]]]
"""``run id -> (the ledger object in S3 or None, the signed heads anchored there)``."""


@dataclass(frozen=True)
class Row:
    """One line of a verdict as ``clampdown verify`` prints it: ``label  text``."""

    label: str  # key, ledger, note, s3, copy
    text: str
    color: str = ""  # green, yellow, red, or "" (plain)


@dataclass(frozen=True)
class RunVerdict:
    """What ``clampdown verify RUN_ID`` concludes about a ledger, and why.

    ``ok`` only for intact and signed (and anchored when a bucket was compared).
    """

    ledger: LedgerVerdict
    key: str  # the configured key's id, or "none configured"
    copy: CopyCheck | None = None  # None: no evidence bucket configured (or no run id)
    where: str = ""  # the S3 prefix compared with

    @property
    def problems(self) -> list[str]:
        """The labels of what does not hold, in verify's order (empty: OK)."""
        found = [] if self.ledger.trusted else [LABELS[self.ledger.status]]
        if self.copy is not None and not self.copy.ok:
            label = COPY_LABELS[self.copy.status]
            if label not in found:
                found.append(label)
        return found

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def result(self) -> str:
        """verify's result line: ``OK: intact, signed, anchored`` or the problems."""
        if self.problems:
            return ", ".join(self.problems)
        anchored = ", anchored" if self.copy is not None else " (no evidence bucket configured)"
        return f"OK: intact, signed{anchored}"

    def rows(self) -> list[Row]:
        """Every line verify prints between ``file`` and ``result``."""
        status = self.ledger.status
        color = "green" if self.ledger.trusted else ("yellow" if status == "unsigned" else "red")
        rows = [Row("key", self.key), Row("ledger", self.ledger.message, color)]
        rows += [Row("note", note) for note in self.ledger.notes]
        if self.copy is not None:
            rows.append(Row("s3", self.where))
            rows.append(Row("copy", self.copy.message, "green" if self.copy.ok else "red"))
            rows += [Row("note", note) for note in self.copy.notes]
        return rows

    def to_dict(self) -> dict[str, Any]:
        """The verdict as JSON-able data (a report's JSON, a package's manifest)."""
        return {
            "result": self.result,
            "ok": self.ok,
            "status": self.ledger.status,
            "message": self.ledger.message,
            "key": self.key,
            "signed_by": self.ledger.key_id,
            "bad_record": self.ledger.bad_seq,
            "records": self.ledger.records,
            "notes": list(self.ledger.notes),
            "copy": None
            if self.copy is None
            else {"status": self.copy.status, "message": self.copy.message, "where": self.where},
        }


def judge_run(
    local: bytes,
    signer: LedgerSigner | None,
    read_copy: CopyReader | None = None,
    where: Callable[[str], str] = lambda run_id: "",
) -> RunVerdict:
    """Judge the ledger ``local`` as ``clampdown verify`` does.

    ``signer``: the configured key (None: none, so a signed ledger is UNVERIFIED).
    ``read_copy``: reads the run's copy in the evidence bucket (None: no bucket is
    configured, so the copy is not compared); ``where`` names that place for a run id.
    """
    from clampdown.core.ledger_signing import compare_copy

    verdict = verify_ledger(local.splitlines(), signer)
    key = signer.key_id if signer is not None else "none configured"
    if read_copy is None or not verdict.run_id:
        return RunVerdict(verdict, key)
    copy, heads = read_copy(verdict.run_id)
    check = compare_copy(local, verdict, copy, heads, signer)
    return RunVerdict(verdict, key, check, where(verdict.run_id))
