"""The seam of shared run state: what a run's files and ledger go through in the scaled mode.

In local mode a run's state is its folder ``$CLAMPDOWN_HOME/runs/<id>/``
(:mod:`clampdown.core.home`). With ``CLAMPDOWN_RUN_STORE=postgresql`` serve and the
workers may run on machines with separate disks: a :class:`RunStore` holds the same state
(:mod:`clampdown.core.run_store_pg` is the PostgreSQL one) and each machine's run folder is
a cache of it. :class:`~clampdown.core.home.RunFiles` goes through the store when its home
has one (``write``, ``read``, ``names``, ``materialize``), the
:class:`~clampdown.core.ledger.Ledger` stores each line in its :class:`LedgerPrimary`
before the file, and :mod:`clampdown.core.run_ownership` asks it who runs a run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from clampdown.core.diagnostics import ClampdownError

GENESIS = "0" * 64


class RunFolder(Protocol):
    """Where a run's cache is on this machine (a :class:`~clampdown.core.home.RunFiles`)."""

    @property
    def run_id(self) -> str: ...

    @property
    def dir(self) -> Path: ...

    @property
    def ledger(self) -> Path: ...


class ChainConflict(Exception):
    """The line does not extend the run's chain head: another writer appended first."""


class LostHold(Exception):
    """This process held the run, and the store says it does not any more: stop writing."""


class RunStoreError(ClampdownError):
    """The run store (PostgreSQL) cannot be reached or refused a write."""


class LedgerPrimary(Protocol):
    """Where a run's ledger lines are kept first (the local file is then a cache)."""

    run_id: str

    def head(self) -> tuple[int, str]:
        """Next seq and the SHA-256 of the last line (``GENESIS`` when empty)."""
        ...

    def lines(self) -> list[bytes]: ...

    def append(self, seq: int, prev: str, line: bytes, type_: str) -> None:
        """Store ``line`` as record ``seq`` if ``prev`` is the head; else :class:`ChainConflict`."""
        ...


class Holding(Protocol):
    def release(self) -> None: ...


class RunStore(Protocol):
    """The seam :class:`~clampdown.core.home.RunFiles` goes through when runs are shared."""

    def ledger(self, run_id: str) -> LedgerPrimary: ...

    def put(self, run_id: str, name: str, data: bytes) -> None: ...

    def get(self, run_id: str, name: str) -> bytes | None: ...

    def remove(self, run_id: str, name: str) -> None: ...

    def names(self, run_id: str, folder: str) -> list[str]: ...

    def try_hold(self, run_id: str, what: str = "run") -> Holding | None: ...

    def is_held(self, run_id: str, what: str = "run") -> bool: ...

    def ended(self, run_id: str) -> bool:
        """Whether ``run_id``'s ledger holds ``run.end`` (False for an unknown run)."""
        ...

    def unended(self) -> list[str]: ...

    def recent(self, limit: int) -> list[str]: ...

    def materialize(self, files: RunFolder) -> None: ...


__all__ = [
    "GENESIS",
    "ChainConflict",
    "Holding",
    "LedgerPrimary",
    "LostHold",
    "RunFolder",
    "RunStore",
    "RunStoreError",
]
