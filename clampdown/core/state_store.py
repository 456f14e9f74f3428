"""Dedup, correlation, run-slot and delivery state that survives a restart of ``clampdown serve``
(and the approver groups' members as the member directory last gave them, for approvals
while it cannot answer: :meth:`StateStore.remember_members`).

One code path (SQLAlchemy Core) over two databases:

* local mode: SQLite at ``$CLAMPDOWN_HOME/state.sqlite3`` beside the ledgers, in WAL
  mode; every decision runs in ``BEGIN IMMEDIATE``, which takes SQLite's write lock
  up front, so a check-then-insert is atomic across threads *and* processes;
* scaled mode: PostgreSQL at ``CLAMPDOWN_STATE_URL`` (``postgresql://…``, driver
  psycopg 3); a decision takes a transaction-scoped advisory lock
  (``pg_advisory_xact_lock``), which serialises decisions of every server sharing
  the database. Table names start with ``clampdown_`` so the Prefect database can
  hold them.

A decision (:meth:`StateStore.claim`) is tiny (a few indexed rows), so one lock
for all of them costs little and rules out every interleaving: two alerts of one
incident can never both be told "start a run".

How a run is claimed, in one transaction: a caller that chooses the run id before the
decision (serve's local starter) passes it with ``on_start``, which records the run's
start durably *inside* the decision's transaction. The keys and the run slot are then
written with the run id, and the start record exists before they commit: every other
alert sees either nothing (it waits for the lock) or a run that has started — never a
half-started one — and a start that cannot be recorded rolls the claim back. One commit
per alert instead of three (claim, start, attach: issue 15's 202 answer), shared with the
other alerts of its batch (below).

Why runs may instead be *reserved*: a caller whose run id is only known once
``start_run`` returns (a deployment starter, Slack) must still take the dedup key before
it starts the run, or two threads would both start one. So ``claim`` without a run id
inserts the keys with no run id (a reservation), the caller starts the run, and
:meth:`attach` fills the id in. An alert that meets a reservation gets ``pending`` and
asks again a moment later; a reservation older than :data:`PENDING_STALE` (its process
died) is discarded.

Why decisions are committed in groups (issue 15's 202 answer): every write's commit is an
fsync (SQLite's WAL; PostgreSQL's WAL), and a run's start record adds two more, all under
the one lock. One at a time, a burst of 32 alerts queued behind 128 fsyncs (about 5 ms each
on the project's machine), and SQLite's busy handler let waiters sleep up to 100 ms between
tries. So every write (:meth:`StateStore.first_seen`, :meth:`claim`, …) joins a *batch*:
the first caller to find no batch running takes every write queued meanwhile and runs
them in one transaction, each in a savepoint of its own and in arrival order (each sees the
ones before it, exactly as if they had taken turns), then makes the runs' start records
durable together (in parallel: the file system merges the concurrent fsyncs into few
journal commits), then commits once. Each caller gets its own answer or exception; nothing
is answered before the commit. A write that fails rolls back its savepoint only; a start
record that cannot be written rolls the whole batch back, fails that claim, and the others
run again in the next batch. Reads (:meth:`held_alerts`, :meth:`active_run_ids`, …) take no
write lock: SQLite's WAL gives them a snapshot.

How the store learns that a run finished (for ``max_concurrent_runs`` and for
"join only a run still in progress"): the caller passes ``is_finished(run_id)``.
The triage's default reads the run's ledger for ``run.end`` — the ledger is the
record of a run, written by whichever process ran it, so the answer survives
restarts and needs no second bookkeeping that could drift; a deployment-mode
caller can ask Prefect instead. Finished runs are dropped from the slot table. A claim
asks only when the slots would otherwise be full: below the limit the answer does not
depend on which runs ended, and each question reads a ledger under the lock.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import sqlalchemy as sa
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from clampdown.core.diagnostics import ClampdownError
from clampdown.core.home import PRIVATE_FILE, private_dirs

if TYPE_CHECKING:
    from clampdown.core.settings import Settings

PENDING_STALE = 60.0  # seconds a reservation may wait for its run id
MAX_KEY = 200  # longer keys are stored as their SHA-256
PURGE_EVERY = 256  # decisions between sweeps of expired rows
_ADVISORY_LOCK = 0x636C616D70  # "clamp": one lock id for every clampdown decision
_READ_ONLY = "clampdown_read_only"  # execution option: SQLite's plain BEGIN, no write lock
DURABLE_THREADS = 8  # start records of one batch made durable at once

metadata = sa.MetaData()
incidents = sa.Table(
    "clampdown_incidents",
    metadata,
    sa.Column("key", sa.String(300), primary_key=True),
    sa.Column("run_id", sa.String(64), nullable=True),
    sa.Column("runbook", sa.String(100), nullable=False),
    sa.Column("reservation", sa.String(32), nullable=True, index=True),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("expires", sa.Float, nullable=False, index=True),
)
correlations = sa.Table(
    "clampdown_correlations",
    metadata,
    sa.Column("key", sa.String(300), primary_key=True),
    sa.Column("run_id", sa.String(64), nullable=True),
    sa.Column("reservation", sa.String(32), nullable=True, index=True),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("expires", sa.Float, nullable=False, index=True),
)
active_runs = sa.Table(
    "clampdown_active_runs",
    metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("runbook", sa.String(100), nullable=False, index=True),
    sa.Column("started", sa.Float, nullable=False),
)
deliveries = sa.Table(
    "clampdown_deliveries",
    metadata,
    sa.Column("key", sa.String(300), primary_key=True),
    sa.Column("expires", sa.Float, nullable=False, index=True),
)
held = sa.Table(
    "clampdown_held_alerts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("runbook", sa.String(100), nullable=False),
    sa.Column("trigger", sa.String(100), nullable=False),
    sa.Column("dedup_key", sa.String(300), nullable=False),
    sa.Column("alert", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
)

group_members = sa.Table(
    "clampdown_group_members",
    metadata,
    sa.Column("group_name", sa.String(300), primary_key=True),
    sa.Column("members", sa.Text, nullable=False),  # JSON list of user ids
    sa.Column("looked_up", sa.Float, nullable=False),  # when the directory last answered
)

ClaimStatus = Literal["started", "reserved", "duplicate", "joined", "pending", "full"]


@dataclass(frozen=True)
class Claim:
    """The store's decision for one alert.

    ``started``: the claim's ``run_id`` now holds the keys and a run slot, and its
    ``on_start`` recorded the start in the same transaction;
    ``reserved``: start a run, then :meth:`StateStore.attach` (or :meth:`StateStore.release`)
    the ``reservation``; ``duplicate``/``joined``: the alert belongs to ``run_id``;
    ``pending``: a run for this incident is being started, ask again shortly;
    ``full``: ``active`` runs of the runbook are in progress, at its limit.
    """

    status: ClaimStatus
    run_id: str | None = None
    reservation: str | None = None
    active: int = 0


@dataclass(frozen=True)
class _Asked:
    """What one claim asks, its keys as stored."""

    dkey: str
    dedup_ttl: float
    ckey: str | None
    correlation_ttl: float
    runbook: str
    max_runs: int
    is_finished: Callable[[str], bool]
    run_id: str | None


@dataclass(frozen=True)
class HeldAlert:
    at: float
    runbook: str
    trigger: str
    dedup_key: str
    alert: dict[str, Any]
    reason: str


Work = Callable[[sa.Connection], "tuple[Any, Callable[[], None] | None]"]
"""One write: run inside a batch's transaction, it returns its answer and, optionally, what
must be made durable before that transaction commits (a run's start record)."""


@dataclass(eq=False)
class _Write:
    """A write waiting for its batch, then its answer (or exception)."""

    work: Work
    value: Any = None
    error: BaseException | None = None
    durable: Callable[[], None] | None = None
    done: bool = False

    def answer(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value


@dataclass
class _Undurable(Exception):
    """Start records of a batch that could not be made durable: the batch rolls back."""

    failed: dict[int, BaseException] = field(default_factory=dict)


class StateSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CLAMPDOWN_", extra="ignore")

    state_url: SecretStr | None = Field(
        None,
        description="database of the dedup state: postgresql://user:pass@host/db for the "
        "scaled mode; default SQLite at $CLAMPDOWN_HOME/state.sqlite3",
    )


def default_url(conf: Settings | None = None) -> str:
    """``CLAMPDOWN_STATE_URL`` (read from the environment at this call), else SQLite beside
    the ledgers of ``conf``'s home (without ``conf``: the settings now)."""
    from clampdown.core.settings import settings

    configured = StateSettings().state_url
    if configured is not None and configured.get_secret_value().strip():
        return configured.get_secret_value().strip()
    return f"sqlite:///{(conf if conf is not None else settings()).paths.state_db}"


def _engine_url(url: str) -> sa.URL:
    """Accept the ``postgresql://`` form operators write; use the psycopg 3 driver for it."""
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError:
        raise ClampdownError(
            "CLAMPDOWN_STATE_URL is not a database URL",
            "write postgresql://user:password@host:5432/db or sqlite:////path/state.sqlite3",
        ) from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise ClampdownError(
            f"unsupported state database '{parsed.get_backend_name()}'",
            "use PostgreSQL (postgresql://…) or leave CLAMPDOWN_STATE_URL unset for SQLite",
        )
    return parsed


def _stored_key(key: str) -> str:
    """Keys are bounded in the index; a long one is stored as its hash (still unique)."""
    if len(key) <= MAX_KEY:
        return key
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


class StateStore:
    """The persistent state of the triage; safe to share between threads and processes."""

    def __init__(self, url: str | None = None) -> None:
        parsed = _engine_url(url or default_url())
        self.backend = parsed.get_backend_name()
        self._decisions = 0
        self._count_lock = threading.Lock()
        self._batch = threading.Condition()  # guards _queue and _leading
        self._queue: list[_Write] = []
        self._leading = False
        self._durable_pool: ThreadPoolExecutor | None = None
        try:
            if self.backend == "sqlite":
                self.engine = _sqlite_engine(parsed)
            else:
                self.engine = sa.create_engine(
                    parsed, pool_size=8, max_overflow=16, pool_pre_ping=True
                )
            with self._transaction() as conn:  # the lock also serialises concurrent first starts
                metadata.create_all(conn)
        except (sa.exc.SQLAlchemyError, OSError) as exc:  # the URL may hold a password: not shown
            cause = getattr(exc, "orig", None) or exc
            raise ClampdownError(
                f"the state store ({self.backend}) cannot be opened: {cause}",
                "for SQLite in CLAMPDOWN_HOME free disk space and make the folder writable; "
                "for PostgreSQL check CLAMPDOWN_STATE_URL and that the server answers",
            ) from None

    def close(self) -> None:
        if self._durable_pool is not None:
            self._durable_pool.shutdown(wait=True)
        self.engine.dispose()

    def __repr__(self) -> str:  # never the URL: it may hold a password
        return f"StateStore({self.backend})"

    @contextmanager
    def _transaction(self) -> Iterator[sa.Connection]:
        """A write transaction: SQLite's write lock (``BEGIN IMMEDIATE``) or PostgreSQL's
        advisory lock, taken up front and held to the commit."""
        with self.engine.begin() as conn:
            if self.backend == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _ADVISORY_LOCK})
            yield conn

    @contextmanager
    def _reading(self) -> Iterator[sa.Connection]:
        """A read: a snapshot, no write lock (SQLite's WAL readers never wait for writers)."""
        with self.engine.connect() as conn:
            conn.execution_options(**{_READ_ONLY: True})
            with conn.begin():
                yield conn

    # --- group commit ----------------------------------------------------------------------

    def _write(self, work: Work) -> Any:
        """Run ``work`` in the next batch (see the module's docstring) and return its answer.

        The caller that finds no batch running leads: it takes every write queued, commits
        them, and goes on while its own is not answered (a write run again after another's
        start record failed); the others wait and are woken when their batch committed."""
        mine = _Write(work)
        with self._batch:
            self._queue.append(mine)
            while self._leading and not mine.done:
                self._batch.wait()
            if mine.done:
                return mine.answer()
            self._leading = True
        try:
            while not mine.done:
                with self._batch:
                    batch, self._queue = self._queue, []
                self._commit(batch)
                with self._batch:
                    self._batch.notify_all()
        finally:
            with self._batch:
                self._leading = False
                self._batch.notify_all()
        return mine.answer()

    def _commit(self, batch: list[_Write]) -> None:
        """One transaction for ``batch``: each write in a savepoint, then the start records
        made durable, then one commit. Every write is answered, or queued again (first, in
        its order) when another's start record failed and the batch rolled back."""
        try:
            with self._transaction() as conn:
                self._run_writes(conn, batch)
                failed = self._make_durable([w for w in batch if not w.done and w.durable])
                if failed:
                    raise _Undurable(failed)
        except _Undurable as undone:
            again = [w for w in batch if not w.done and id(w) not in undone.failed]
            for write in batch:
                if id(write) in undone.failed:
                    write.error, write.done = undone.failed[id(write)], True
            with self._batch:
                self._queue[:0] = again
            return
        except BaseException as exc:  # BEGIN or the commit failed: no write of the batch holds
            for write in batch:
                if not write.done:
                    write.error, write.done = exc, True
            if not isinstance(exc, Exception):
                raise
            return
        for write in batch:
            write.done = True

    @staticmethod
    def _run_writes(conn: sa.Connection, batch: list[_Write]) -> None:
        """Each write of ``batch`` in its savepoint, in order: one that fails is answered
        with its error and leaves nothing, the others go on."""
        for write in batch:
            savepoint = conn.begin_nested()
            try:
                write.value, write.durable = write.work(conn)
            except Exception as exc:
                savepoint.rollback()
                write.error, write.done = exc, True
            else:
                savepoint.commit()

    def _make_durable(self, writes: list[_Write]) -> dict[int, BaseException]:
        """Call each write's ``durable`` (its run's start record), at once; the failures by
        the write's id."""
        failed: dict[int, BaseException] = {}

        def one(write: _Write) -> None:
            assert write.durable is not None
            try:
                write.durable()
            except Exception as exc:
                failed[id(write)] = exc

        if len(writes) == 1:
            one(writes[0])
        elif writes:
            if self._durable_pool is None:
                self._durable_pool = ThreadPoolExecutor(
                    DURABLE_THREADS, thread_name_prefix="clampdown-state-durable"
                )
            list(self._durable_pool.map(one, writes))
        return failed

    # --- replay protection ---------------------------------------------------------------

    def first_seen(self, key: str, ttl_seconds: float) -> bool:
        """True the first time ``key`` is seen inside ``ttl_seconds`` (a delivery id), else False.

        One ``INSERT … ON CONFLICT`` that only overwrites an expired row: atomic in
        both databases without any further lock. Expired ids are swept every
        :data:`PURGE_EVERY` calls, so the table stays bounded by what arrives in one ttl.
        """
        now = time.time()

        def work(conn: sa.Connection) -> tuple[bool, None]:
            if self._due():
                conn.execute(deliveries.delete().where(deliveries.c.expires <= now))
            result = conn.execute(
                sa.text(
                    "INSERT INTO clampdown_deliveries (key, expires) VALUES (:key, :expires) "
                    "ON CONFLICT (key) DO UPDATE SET expires = excluded.expires "
                    "WHERE clampdown_deliveries.expires <= :now"
                ),
                {"key": _stored_key(key), "expires": now + ttl_seconds, "now": now},
            )
            return result.rowcount == 1, None

        return bool(self._write(work))

    def forget(self, key: str) -> None:
        """Drop a delivery id (its alert could not be handled: the sender's retry must pass)."""

        def work(conn: sa.Connection) -> tuple[None, None]:
            conn.execute(
                sa.text("DELETE FROM clampdown_deliveries WHERE key = :key"),
                {"key": _stored_key(key)},
            )
            return None, None

        self._write(work)

    # --- one decision per alert ----------------------------------------------------------

    def claim(
        self,
        *,
        dedup_key: str,
        dedup_ttl: float,
        correlation_key: str | None,
        correlation_ttl: float,
        runbook: str,
        max_runs: int,
        is_finished: Callable[[str], bool],
        run_id: str | None = None,
        on_start: Callable[[], None] | None = None,
    ) -> Claim:
        """Decide, atomically, whether an alert starts a run, repeats one or joins one.

        With ``run_id`` (the id the caller will start the run with) a decision to start is
        ``started``: the keys and the run slot are taken by ``run_id`` and ``on_start`` is
        called before the transaction commits, to record the run's start durably (from a
        thread of the store, beside the other starts of the batch); when it raises, nothing
        of the claim is kept and the exception goes up. ``on_start`` may be called again
        when another start of its batch failed (the claim is then decided again): it must
        be safe to repeat, and neither it nor ``is_finished`` may call this store (the batch
        holds it). Without ``run_id`` it is ``reserved`` (then :meth:`attach` or
        :meth:`release`)."""
        asked = _Asked(
            _stored_key(dedup_key),
            dedup_ttl,
            _stored_key(correlation_key) if correlation_key else None,
            correlation_ttl,
            runbook,
            max_runs,
            is_finished,
            run_id,
        )

        def work(conn: sa.Connection) -> tuple[Claim, Callable[[], None] | None]:
            decided = self._decide(conn, asked, time.time())
            return decided, on_start if decided.status == "started" else None

        return self._write(work)  # type: ignore[no-any-return]

    def _decide(self, conn: sa.Connection, asked: _Asked, now: float) -> Claim:
        """One claim's decision inside a batch's transaction (see :meth:`claim`)."""
        self._maybe_purge(conn, now)
        found = self._live(conn, incidents, asked.dkey, now)
        if found is not None:
            return Claim("pending") if found.run_id is None else Claim("duplicate", found.run_id)
        if asked.ckey is not None:
            linked = self._live(conn, correlations, asked.ckey, now)
            if linked is not None and linked.run_id is None:
                return Claim("pending")
            if linked is not None and not asked.is_finished(linked.run_id):
                self._insert_incident(conn, asked, linked.run_id, None, now)
                return Claim("joined", linked.run_id)
        active = self._active(conn, asked, now)
        if active >= asked.max_runs:
            return Claim("full", active=active)
        reservation = None if asked.run_id is not None else uuid.uuid4().hex
        self._insert_incident(conn, asked, asked.run_id, reservation, now)
        if asked.ckey is not None:
            conn.execute(correlations.delete().where(correlations.c.key == asked.ckey))
            conn.execute(
                correlations.insert().values(
                    key=asked.ckey,
                    run_id=asked.run_id,
                    reservation=reservation,
                    created=now,
                    expires=now + asked.correlation_ttl,
                )
            )
        if asked.run_id is None:
            return Claim("reserved", reservation=reservation)
        conn.execute(
            active_runs.insert().values(run_id=asked.run_id, runbook=asked.runbook, started=now)
        )
        return Claim("started", asked.run_id)

    @staticmethod
    def _insert_incident(
        conn: sa.Connection, asked: _Asked, run_id: str | None, reservation: str | None, now: float
    ) -> None:
        conn.execute(
            incidents.insert().values(
                key=asked.dkey,
                run_id=run_id,
                runbook=asked.runbook,
                reservation=reservation,
                created=now,
                expires=now + asked.dedup_ttl,
            )
        )

    def attach(self, reservation: str, run_id: str) -> None:
        """The run of a reservation started: point its keys at it and take a run slot."""

        def work(conn: sa.Connection) -> tuple[None, None]:
            row = conn.execute(
                sa.select(incidents.c.runbook).where(incidents.c.reservation == reservation)
            ).first()
            for table in (incidents, correlations):
                conn.execute(
                    table.update()
                    .where(table.c.reservation == reservation)
                    .values(run_id=run_id, reservation=None)
                )
            if row is not None:
                conn.execute(
                    active_runs.insert().values(
                        run_id=run_id, runbook=row.runbook, started=time.time()
                    )
                )
            return None, None

        self._write(work)

    def release(self, reservation: str) -> None:
        """The run of a reservation could not start: free its keys for the next alert."""

        def work(conn: sa.Connection) -> tuple[None, None]:
            for table in (incidents, correlations):
                conn.execute(
                    table.delete().where(
                        table.c.reservation == reservation, table.c.run_id.is_(None)
                    )
                )
            return None, None

        self._write(work)

    def _live(self, conn: sa.Connection, table: sa.Table, key: str, now: float) -> Any:
        """The row of ``key`` if it is still inside its window (stale reservations are dropped)."""
        row = conn.execute(sa.select(table).where(table.c.key == key)).first()
        if row is None:
            return None
        stale = row.run_id is None and row.created < now - PENDING_STALE
        if row.expires <= now or stale:
            conn.execute(table.delete().where(table.c.key == key))
            return None
        return row

    def _active(self, conn: sa.Connection, asked: _Asked, now: float) -> int:
        """Runs of the runbook in progress, plus reservations about to become runs.

        Which runs ended is asked (each a ledger read, under the lock) only when the runs
        on record would fill the slots: below the limit the decision is the same either
        way, and finished runs are dropped at the next look that needs it."""
        run_ids = conn.scalars(
            sa.select(active_runs.c.run_id).where(active_runs.c.runbook == asked.runbook)
        ).all()
        starting = int(
            conn.scalar(
                sa.select(sa.func.count())
                .select_from(incidents)
                .where(
                    incidents.c.runbook == asked.runbook,
                    incidents.c.run_id.is_(None),
                    incidents.c.created >= now - PENDING_STALE,
                )
            )
            or 0
        )
        if len(run_ids) + starting < asked.max_runs:
            return len(run_ids) + starting
        done = [r for r in run_ids if asked.is_finished(r)]
        if done:
            conn.execute(active_runs.delete().where(active_runs.c.run_id.in_(done)))
        return len(run_ids) - len(done) + starting

    def _due(self) -> bool:
        """True once every PURGE_EVERY calls (the first included): time to sweep."""
        with self._count_lock:
            self._decisions += 1
            return self._decisions % PURGE_EVERY == 1

    def _maybe_purge(self, conn: sa.Connection, now: float) -> None:
        if self._due():
            for table in (incidents, correlations, deliveries):
                conn.execute(table.delete().where(table.c.expires <= now))

    # --- alerts held back by max_concurrent_runs -----------------------------------------

    def hold(
        self, *, runbook: str, trigger: str, dedup_key: str, alert: dict[str, Any], reason: str
    ) -> None:
        """Keep an alert that started nothing, so a responder can find it (never lose one)."""
        row = {
            "at": time.time(),
            "runbook": runbook,
            "trigger": trigger,
            "dedup_key": _stored_key(dedup_key),
            "alert": json.dumps(alert, default=str),
            "reason": reason,
        }

        def work(conn: sa.Connection) -> tuple[None, None]:
            conn.execute(held.insert().values(**row))
            return None, None

        self._write(work)

    def held_alerts(self, limit: int = 100) -> list[HeldAlert]:
        """The most recent held alerts, newest first."""
        with self._reading() as conn:
            rows = conn.execute(sa.select(held).order_by(held.c.id.desc()).limit(limit)).all()
        return [
            HeldAlert(r.at, r.runbook, r.trigger, r.dedup_key, json.loads(r.alert), r.reason)
            for r in rows
        ]

    # --- approver groups as the member directory last answered -------------------------

    def remember_members(
        self, by_group: Mapping[str, Iterable[str]], at: float | None = None
    ) -> None:
        """Keep each group's members as a directory just answered (replacing older answers).

        Why durable: while the directory (Slack) cannot answer, approvals must still be
        decidable; a run resumed by another process, or a worker in scaled mode (the
        PostgreSQL store is shared), finds the last answer here.
        """
        when = time.time() if at is None else at
        rows = {_stored_key(g): json.dumps(sorted(members)) for g, members in by_group.items()}

        def work(conn: sa.Connection) -> tuple[None, None]:
            for key, members in rows.items():
                conn.execute(group_members.delete().where(group_members.c.group_name == key))
                conn.execute(
                    group_members.insert().values(group_name=key, members=members, looked_up=when)
                )
            return None, None

        self._write(work)

    def cached_members(self, groups: Iterable[str]) -> tuple[set[str], float] | None:
        """Everyone in ``groups`` as last answered, and when the oldest of those answers was
        given; None unless every group has one."""
        asked = {_stored_key(g): g for g in groups}
        if not asked:
            return None
        with self._reading() as conn:
            rows = conn.execute(
                sa.select(group_members).where(group_members.c.group_name.in_(list(asked)))
            ).all()
        if len(rows) != len(asked):
            return None
        members: set[str] = set()
        for row in rows:
            members.update(json.loads(row.members))
        return members, min(row.looked_up for row in rows)

    def active_run_ids(self, runbook: str | None = None) -> list[str]:
        """Runs holding a slot (as last known; finished ones leave at the next decision)."""
        query = sa.select(active_runs.c.run_id).order_by(active_runs.c.started)
        if runbook is not None:
            query = query.where(active_runs.c.runbook == runbook)
        with self._reading() as conn:
            return list(conn.scalars(query).all())


def _sqlite_engine(url: sa.URL) -> sa.Engine:
    """SQLite with WAL, a long busy timeout, and ``BEGIN IMMEDIATE`` for every write
    transaction (a read, :meth:`StateStore._reading`, begins without a lock).

    pysqlite's own transaction handling starts transactions lazily (``BEGIN
    DEFERRED``), which lets two processes read, then both try to write; taking over
    BEGIN is SQLAlchemy's documented recipe for real SQLite locking.
    """
    if url.database and url.database != ":memory:":
        # made 0600 before SQLite opens it: its -wal and -shm files take the same mode
        database = Path(url.database).expanduser()
        private_dirs(database.parent)
        os.close(os.open(database, os.O_CREAT | os.O_RDWR, PRIVATE_FILE))
    engine = sa.create_engine(
        url,
        connect_args={"timeout": 60, "check_same_thread": False},
        pool_size=8,
        max_overflow=24,
        pool_timeout=60,
    )

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: sa.Connection) -> None:  # a read (StateStore._reading) takes no lock
        conn.exec_driver_sql(
            "BEGIN" if conn.get_execution_options().get(_READ_ONLY) else "BEGIN IMMEDIATE"
        )

    return engine
