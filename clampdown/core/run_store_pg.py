"""The PostgreSQL run store of the scaled mode: runs' ledgers, files and owners, no shared disk.

In local mode a run's state is its folder ``$CLAMPDOWN_HOME/runs/<id>/``
(:mod:`clampdown.core.home`). In the scaled mode (``CLAMPDOWN_RUN_STORE=postgresql``) serve
and the workers run on machines with separate disks, so the same state lives in the
database of ``CLAMPDOWN_STATE_URL`` and each machine's run folder is a *cache* of it:

* ``clampdown_run_ledgers``: one row per ledger line, primary key ``(run_id, seq)``. The
  line is the exact bytes the :class:`~clampdown.core.ledger.Ledger` wrote — already
  scrubbed of secrets and sealed (signed) before it exists — so a row rewritten in the
  database breaks the hash chain and its signature, and ``clampdown verify`` says so.
* ``clampdown_runs``: one row per run, the chain head (next ``seq``, SHA-256 of the last
  line) and whether ``run.end`` was written. An append locks this row
  (``SELECT … FOR UPDATE``), checks that the line extends the head, inserts it and moves
  the head, in one transaction: two writers racing for one ``seq`` cannot both win, and
  the chain can neither fork nor tear (:class:`ChainConflict` for the loser).
* ``clampdown_run_files``: the run's small files by their name in the run folder
  (``start.json``, ``approvals/<step>.json``, ``approvals/.key``, ``decisions/<id>.json``
  — the decision inbox —, ``rolled-back.json``).

Who runs a run: a session advisory lock (``pg_try_advisory_lock``) on a hash of the run
id, held on a connection of its own for as long as a process runs the run. PostgreSQL
releases it when that connection ends — a ``kill -9`` of the process closes its socket —
so "nobody runs it" stays a fact read from the database, as ``flock`` is on one machine.

:meth:`PostgresRunStore.materialize` writes a run's lines and files into a local run
folder, so every reader of run folders (``verify``, reports, ``runs``) works unchanged
on whichever machine. Tables are created like the state store's (``create_all``) and
start with ``clampdown_``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from clampdown.core.diagnostics import ClampdownError
from clampdown.core.run_store import (
    GENESIS,
    ChainConflict,
    Holding,
    LedgerPrimary,
    LostHold,
    RunFolder,
    RunStoreError,
)

log = logging.getLogger("clampdown.run_store")
MIRRORED = ("approvals", "decisions")  # folders a materialized run folder holds exactly

metadata = sa.MetaData()

runs = sa.Table(
    "clampdown_runs",
    metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("next_seq", sa.Integer, nullable=False),
    sa.Column("head", sa.String(64), nullable=False),  # SHA-256 of the last line
    sa.Column("ended", sa.Boolean, nullable=False),  # a run.end line was written
    sa.Column("created", sa.Float, nullable=False, index=True),
    sa.Column("updated", sa.Float, nullable=False),
)
ledger_lines = sa.Table(
    "clampdown_run_ledgers",
    metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True),
    sa.Column("line", sa.Text, nullable=False),
)
run_files = sa.Table(
    "clampdown_run_files",
    metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(300), primary_key=True),
    sa.Column("data", sa.LargeBinary, nullable=False),
    sa.Column("updated", sa.Float, nullable=False),
)


_T = TypeVar("_T")
_P = ParamSpec("_P")


def _reachable(method: Callable[_P, _T]) -> Callable[_P, _T]:
    """A database that cannot be reached (or fails) is a :class:`RunStoreError` that says
    so, never a driver traceback; :class:`ChainConflict` and :class:`LostHold` pass."""

    @functools.wraps(method)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return method(*args, **kwargs)
        except sa.exc.SQLAlchemyError as exc:  # the URL may hold a password: not shown
            raise RunStoreError(
                f"the run store (PostgreSQL) failed: {getattr(exc, 'orig', None) or exc}",
                "check that the database of CLAMPDOWN_STATE_URL answers, then try again",
            ) from None

    return wrapper


def _line_hash(line: bytes) -> str:
    return hashlib.sha256(line.rstrip(b"\r\n")).hexdigest()


def lock_key(run_id: str, what: str = "run") -> int:
    """The advisory lock id of ``run_id`` (a signed 64-bit int from its SHA-256)."""
    digest = hashlib.sha256(f"clampdown-{what}:{run_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def safe_name(name: str) -> bool:
    """A run file name as the store may hold it: relative, inside the run folder."""
    parts = name.split("/")
    return bool(name) and not name.startswith("/") and all(p not in ("", ".", "..") for p in parts)


@dataclass
class _Held:
    conn: sa.Connection
    key: int
    pid: int  # the server process of the lock's session (pg_locks.pid)
    forget: Callable[[], None]

    def release(self) -> None:
        self.forget()
        with contextlib.suppress(sa.exc.SQLAlchemyError):
            self.conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
        with contextlib.suppress(sa.exc.SQLAlchemyError):
            self.conn.close()


@dataclass(frozen=True)
class _RunLedger:
    store: PostgresRunStore
    run_id: str

    def head(self) -> tuple[int, str]:
        return self.store.head(self.run_id)

    def lines(self) -> list[bytes]:
        return self.store.lines(self.run_id)

    def append(self, seq: int, prev: str, line: bytes, type_: str) -> None:
        self.store.append(self.run_id, seq, prev, line, ended=type_ == "run.end")


class PostgresRunStore:
    """Runs' ledgers, files and ownership in PostgreSQL; safe across threads and machines."""

    def __init__(self, url: str) -> None:
        parsed = _engine_url(url)
        if parsed is None:
            raise ClampdownError(
                "CLAMPDOWN_RUN_STORE=postgresql needs CLAMPDOWN_STATE_URL to be a PostgreSQL URL",
                "set CLAMPDOWN_STATE_URL=postgresql://user:password@host:5432/db "
                "(or unset CLAMPDOWN_RUN_STORE to keep runs in CLAMPDOWN_HOME)",
            )
        self.engine = sa.create_engine(parsed, pool_size=4, max_overflow=32, pool_pre_ping=True)
        self._holding: dict[str, _Held] = {}  # runs this process holds: their lock sessions
        self._guard = threading.Lock()
        try:
            with self.engine.begin() as conn:
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock_key("ddl")})
                metadata.create_all(conn)
        except sa.exc.SQLAlchemyError as exc:  # the URL may hold a password: not shown
            raise RunStoreError(
                f"the run store (PostgreSQL) cannot be opened: {getattr(exc, 'orig', exc)}",
                "check CLAMPDOWN_STATE_URL and that the server answers",
            ) from None

    def __repr__(self) -> str:  # never the URL: it may hold a password
        return "PostgresRunStore()"

    def close(self) -> None:
        self.engine.dispose()

    # --- the ledger ----------------------------------------------------------------------

    def ledger(self, run_id: str) -> LedgerPrimary:
        return _RunLedger(self, run_id)

    @_reachable
    def head(self, run_id: str) -> tuple[int, str]:
        with self._connect() as conn:
            row = conn.execute(
                sa.select(runs.c.next_seq, runs.c.head).where(runs.c.run_id == run_id)
            ).first()
        return (0, GENESIS) if row is None else (int(row.next_seq), str(row.head))

    @_reachable
    def lines(self, run_id: str) -> list[bytes]:
        with self._connect() as conn:
            rows = conn.execute(
                sa.select(ledger_lines.c.line)
                .where(ledger_lines.c.run_id == run_id)
                .order_by(ledger_lines.c.seq)
            )
            return [str(r.line).encode() for r in rows]

    @_reachable
    def append(self, run_id: str, seq: int, prev: str, line: bytes, *, ended: bool) -> None:
        """One transaction: lock the run's row, check ``(seq, prev)`` is its head, insert.

        When this process holds the run, the transaction also checks that its lock session
        still holds the lock: a session the server dropped (a database restart, a network
        partition) may have let another worker take the run, and two owners must never
        both write (:class:`LostHold`, no retry), while an alert joining (a writer that does
        not hold the run) just chains on whatever head it finds."""
        now = time.time()
        text = line.rstrip(b"\n").decode()
        with self._guard:
            held = self._holding.get(run_id)
        try:
            with self.engine.begin() as conn:
                if held is not None and not self._still_holds(conn, held):
                    raise LostHold(
                        f"this process no longer holds run {run_id}: its lock session in "
                        "the run store ended (database restart or network failure), so "
                        "another process may be running it"
                    )
                self._ensure_run(conn, run_id, now)
                row = conn.execute(
                    sa.select(runs.c.next_seq, runs.c.head)
                    .where(runs.c.run_id == run_id)
                    .with_for_update()
                ).one()
                if (int(row.next_seq), str(row.head)) != (seq, prev):
                    raise ChainConflict(
                        f"run {run_id}: record {seq} does not extend the chain head "
                        f"(the store is at record {row.next_seq})"
                    )
                conn.execute(ledger_lines.insert().values(run_id=run_id, seq=seq, line=text))
                conn.execute(
                    runs.update()
                    .where(runs.c.run_id == run_id)
                    .values(
                        next_seq=seq + 1,
                        head=_line_hash(line),
                        ended=runs.c.ended | sa.literal(ended),
                        updated=now,
                    )
                )
        except sa.exc.IntegrityError as exc:  # the (run_id, seq) key: a racing writer won
            raise ChainConflict(f"run {run_id}: record {seq} exists already") from exc

    # --- files ---------------------------------------------------------------------------

    @_reachable
    def put(self, run_id: str, name: str, data: bytes) -> None:
        now = time.time()
        with self.engine.begin() as conn:
            self._ensure_run(conn, run_id, now)
            stmt = pg_insert(run_files).values(run_id=run_id, name=name, data=data, updated=now)
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=[run_files.c.run_id, run_files.c.name],
                    set_={"data": stmt.excluded.data, "updated": now},
                )
            )

    @_reachable
    def get(self, run_id: str, name: str) -> bytes | None:
        with self._connect() as conn:
            row = conn.execute(
                sa.select(run_files.c.data).where(
                    run_files.c.run_id == run_id, run_files.c.name == name
                )
            ).first()
        return None if row is None else bytes(row.data)

    @_reachable
    def remove(self, run_id: str, name: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                run_files.delete().where(run_files.c.run_id == run_id, run_files.c.name == name)
            )

    @_reachable
    def names(self, run_id: str, folder: str) -> list[str]:
        """Names under ``folder/`` (oldest write first), without the folder."""
        prefix = folder.rstrip("/") + "/"
        with self._connect() as conn:
            rows = conn.execute(
                sa.select(run_files.c.name)
                .where(run_files.c.run_id == run_id, run_files.c.name.startswith(prefix))
                .order_by(run_files.c.updated, run_files.c.name)
            )
            return [str(r.name)[len(prefix) :] for r in rows]

    @_reachable
    def _files(self, run_id: str) -> dict[str, bytes]:
        with self._connect() as conn:
            rows = conn.execute(
                sa.select(run_files.c.name, run_files.c.data).where(run_files.c.run_id == run_id)
            )
            return {str(r.name): bytes(r.data) for r in rows}

    # --- who runs a run ------------------------------------------------------------------

    @_reachable
    def try_hold(self, run_id: str, what: str = "run") -> Holding | None:
        """Take the run's advisory lock on a connection of its own; None when another
        session holds it. :meth:`_Held.release` (or the connection dying) lets it go."""
        key = lock_key(run_id, what)
        conn = self.engine.connect()
        try:
            got = conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar()
            conn.commit()  # the lock is the session's, not the transaction's
        except BaseException:
            conn.close()
            raise
        if not got:
            conn.close()
            return None
        pid = int(conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())
        conn.commit()
        if what != "run":
            return _Held(conn, key, pid, lambda: None)

        def forget() -> None:
            with self._guard:
                self._holding.pop(run_id, None)

        held = _Held(conn, key, pid, forget)
        with self._guard:
            self._holding[run_id] = held
        return held

    @staticmethod
    def _still_holds(conn: sa.Connection, held: _Held) -> bool:
        unsigned = held.key & 0xFFFFFFFFFFFFFFFF
        return (
            conn.execute(
                sa.text(
                    "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted "
                    "AND classid = :hi AND objid = :lo AND objsubid = 1 AND pid = :pid"
                ),
                {"hi": unsigned >> 32, "lo": unsigned & 0xFFFFFFFF, "pid": held.pid},
            ).first()
            is not None
        )

    @_reachable
    def is_held(self, run_id: str, what: str = "run") -> bool:
        """Whether a live session holds the run's lock (read from ``pg_locks``)."""
        key = lock_key(run_id, what)
        unsigned = key & 0xFFFFFFFFFFFFFFFF
        with self._connect() as conn:
            found = conn.execute(
                sa.text(
                    "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted "
                    "AND classid = :hi AND objid = :lo AND objsubid = 1 "
                    "AND database = "
                    "(SELECT oid FROM pg_database WHERE datname = current_database())"
                ),
                {"hi": unsigned >> 32, "lo": unsigned & 0xFFFFFFFF},
            ).first()
        return found is not None

    # --- listing -------------------------------------------------------------------------

    @_reachable
    def ended(self, run_id: str) -> bool:
        """Whether ``run_id``'s ledger holds ``run.end``: the flag its append set, one
        indexed read (serve asks it of every active run when it counts them)."""
        with self._connect() as conn:
            row = conn.execute(sa.select(runs.c.ended).where(runs.c.run_id == run_id)).first()
            return bool(row is not None and row.ended)

    @_reachable
    def unended(self) -> list[str]:
        """Runs without ``run.end``, oldest first (candidates to continue)."""
        with self._connect() as conn:
            rows = conn.execute(
                sa.select(runs.c.run_id).where(sa.not_(runs.c.ended)).order_by(runs.c.created)
            )
            return [str(r.run_id) for r in rows]

    @_reachable
    def recent(self, limit: int) -> list[str]:
        with self._connect() as conn:
            rows = conn.execute(
                sa.select(runs.c.run_id).order_by(runs.c.created.desc()).limit(max(limit, 0))
            )
            return [str(r.run_id) for r in rows]

    # --- the local cache -----------------------------------------------------------------

    def materialize(self, files: RunFolder) -> None:
        """Bring ``files``' folder up to date with the store: the ledger's lines and every
        file (the approval and inbox folders exactly: a decision the run has taken is gone)."""
        from clampdown.core.home import write_private
        from clampdown.core.ledger import sync_file

        stored = self._files(files.run_id)
        lines = self.lines(files.run_id)
        if not stored and not lines:
            return
        if lines:
            sync_file(files.ledger, lines)
        for name, data in stored.items():
            if not safe_name(name):
                log.warning("run %s: run store file name %r refused", files.run_id, name)
                continue
            path = files.dir / name
            with contextlib.suppress(OSError):
                if path.is_file() and path.read_bytes() == data:
                    continue
            write_private(path, data.decode())
        for folder in MIRRORED:
            local = files.dir / folder
            for path in local.iterdir() if local.is_dir() else []:
                if path.is_file() and f"{folder}/{path.name}" not in stored:
                    with contextlib.suppress(OSError):
                        path.unlink()

    # --- helpers -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sa.Connection]:
        with self.engine.connect() as conn:
            yield conn

    @staticmethod
    def _ensure_run(conn: sa.Connection, run_id: str, now: float) -> None:
        conn.execute(
            pg_insert(runs)
            .values(run_id=run_id, next_seq=0, head=GENESIS, ended=False, created=now, updated=now)
            .on_conflict_do_nothing(index_elements=[runs.c.run_id])
        )


def _engine_url(url: str) -> sa.URL | None:
    """The psycopg 3 URL of a PostgreSQL ``url`` (``postgresql://`` as operators write it);
    None when it is not one (the state store's own check does the same for its URL)."""
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError:
        return None
    if parsed.get_backend_name() != "postgresql":
        return None
    return parsed.set(drivername="postgresql+psycopg")


@functools.lru_cache(maxsize=4)
def postgres_run_store(url: str) -> PostgresRunStore:
    """One store (one connection pool) per database URL in a process: every entry point's
    :class:`~clampdown.core.settings.Settings` shares it instead of opening a pool per run."""
    return PostgresRunStore(url)


__all__ = ["PostgresRunStore", "lock_key", "postgres_run_store"]
