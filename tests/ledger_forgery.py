"""What an attacker with write access to CLAMPDOWN_HOME does to a ledger: edit records and
recompute the whole hash chain after them (``sha256`` is no secret), keeping or dropping
the signatures, which they cannot make."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from clampdown.core.ledger import GENESIS, SEAL, _canonical

Edit = Callable[[list[dict[str, Any]]], list[dict[str, Any]]]


def rewrite(path: Path, edit: Edit, *, drop_signatures: bool = False) -> None:
    """Apply ``edit`` to the records, then renumber and re-chain every one of them."""
    records = [json.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
    records = edit(records)
    prev, lines = GENESIS, []
    for seq, record in enumerate(records):
        seal = record.pop(SEAL, None)
        record.pop("hash", None)
        record["seq"], record["prev"] = seq, prev
        record["hash"] = hashlib.sha256(_canonical(record)).hexdigest()
        if seal is not None and not drop_signatures:
            record[SEAL] = seal
        line = json.dumps(record).encode()
        prev = hashlib.sha256(line).hexdigest()
        lines.append(line)
    path.write_bytes(b"\n".join(lines) + b"\n")


def forge_undo(step: str, how: dict[str, Any]) -> Edit:
    """Put a different undo into the ``step.end`` of ``step`` (the disguise text kept)."""

    def edit(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for record in records:
            if record.get("type") == "step.end" and record.get("step") == step:
                description = record["undo"][0]["description"]
                record["undo"] = [{"description": description, **how}]
        return records

    return edit


def write_signed(
    path: Path,
    records: list[dict[str, Any]],
    signer: Any,
    run_id: str,
    monkeypatch: Any,
    anchors: Sequence[Any] = (),
) -> Path:
    """Write ``records`` (each with its ``ts``) through the real ledger, signed by ``signer``
    as the engine signs a run (None: unsigned, with the ``ledger.unsigned`` record), each
    signed head sent to ``anchors`` as a run sends them to the evidence bucket."""
    from clampdown.core import ledger as ledger_mod
    from clampdown.core.ledger_signing import note_unsigned, open_ledger

    ledger = open_ledger(path, run_id, signer, anchors)
    for n, record in enumerate(records):
        fields = {k: v for k, v in record.items() if k not in ("type", "ts")}
        monkeypatch.setattr(ledger_mod, "now", lambda at=record["ts"]: at)
        ledger.append(record["type"], **fields)
        if n == 0:
            note_unsigned(ledger)
    ledger.close()
    return path


def drop_signatures(path: Path) -> None:
    """Strip every signature and re-chain: what is left looks like an unsigned run."""
    rewrite(path, lambda records: records, drop_signatures=True)


def edit_run_start(path: Path, **run: Any) -> None:
    """Rewrite ``run.start``'s run fields (who or what started it), chain recomputed."""

    def edit(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        records[0]["run"] = {**records[0]["run"], **run}
        return records

    rewrite(path, edit)
