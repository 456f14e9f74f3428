"""What an attacker with write access to CLAMPDOWN_HOME does to a ledger: edit records and
recompute the whole hash chain after them (``sha256`` is no secret), keeping or dropping
the signatures, which they cannot make."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
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
