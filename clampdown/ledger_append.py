"""Append a record to a run's ledger from a process or thread that does not own the run.

The triage records an alert that joins a run (``alert.joined``) in *that* run's
ledger, even when the run is executing elsewhere in the process, in another
process, or has already ended. The chain stays intact because every writer
takes an exclusive ``flock`` on the ledger file and reads the last record's
hash and ``seq`` from the file itself while holding it, instead of trusting a
value remembered in memory.

:class:`clampdown.ledger.Ledger` must take the same lock for this to be safe
while the run is still writing (see the report that introduced this module for
the diff); after ``run.end`` the run has no writer left, so appending is
always safe.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from clampdown.ledger import GENESIS, _canonical, now

TAIL_CHUNK = 64 * 1024


def append_to(path: Path, type_: str, **fields: Any) -> dict[str, Any]:
    """Append one chained record to the ledger at ``path`` (which must exist) and fsync it."""
    with path.open("a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            seq, prev = tail(fh)
            record = {
                "seq": seq,
                "ts": now(),
                "type": type_,
                **json.loads(json.dumps(fields, default=str)),
                "prev": prev,
            }
            record["hash"] = hashlib.sha256(_canonical(record)).hexdigest()
            line = json.dumps(record, ensure_ascii=False, default=str).encode() + b"\n"
            fh.write(line)  # "a" mode: lands at the end whatever the position
            fh.flush()
            os.fsync(fh.fileno())
            return record
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def tail(fh: Any) -> tuple[int, str]:
    """Next ``seq`` and ``prev`` hash, read from the end of an open ledger file."""
    size = os.fstat(fh.fileno()).st_size
    if size == 0:
        return 0, GENESIS
    start = size
    data = b""
    while start > 0:  # read backwards until the chunk holds a whole last line
        start = max(0, start - TAIL_CHUNK)
        fh.seek(start)
        data = fh.read(size - start)
        body = data.rstrip(b"\n")
        if b"\n" in body or start == 0:
            break
    last = data.rstrip(b"\n").rsplit(b"\n", 1)[-1]
    return json.loads(last)["seq"] + 1, hashlib.sha256(last).hexdigest()


def has_record(path: Path, type_: str) -> bool:
    """Whether the ledger holds a record of ``type_`` (e.g. ``run.end``: the run finished).

    Scans bytes first and parses only candidate lines: a finished run's ledger may
    have records after ``run.end`` (alerts that joined late), so the last record
    alone does not tell.
    """
    needle = json.dumps(type_).encode()
    try:
        with path.open("rb") as fh:
            for line in fh:
                if needle in line:
                    try:
                        if json.loads(line).get("type") == type_:
                            return True
                    except ValueError:
                        continue  # a torn last line of a run still writing
    except FileNotFoundError:
        return False
    return False
