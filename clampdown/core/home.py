"""Every path under ``CLAMPDOWN_HOME``, in one place.

The layout (operators and tests rely on it; keep it byte-for-byte)::

    $CLAMPDOWN_HOME/
        state.sqlite3                  dedup state (local mode), see clampdown.core.state_store
        drills/<drill>-<UTC time>-<hex>/   one drill's workspace (a home of its own)
        runs/<run-id>/
            start.json                 how the run was started, written before "started"
                                       is answered (clampdown.core.run_start; 0600)
            owner.lock                 flock-held by the process running the run
                                       (clampdown.core.run_ownership)
            ledger.jsonl               the run's hash-chained ledger
            decisions/<id>.json        decisions that arrived while no process held the
                                       run, counted when it resumes
            approvals/<step>.json      an approval request (clampdown_flows.approval_store)
            approvals/.key             the run's approval key (0600)
            slack.json                 the run's Slack thread state (clampdown_slack.status)
            slack.json.lock            its lock file
            rolled-back.json           written once a rollback undid every change
            rollback.lock              held while a rollback of the run is in progress

:class:`Home` is built from the configured home (``Settings.paths``); nothing else
joins these names. No environment is read here.

Private by default: the folder holds ledgers, approval requests (which name the paused
run's Prefect API and flow run), Slack thread state and the dedup database, none of
which another local user should read. Folders clampdown creates here are 0700
(:func:`private_dirs`) and files 0600 (:func:`private_opener`, :func:`write_private`),
whatever the umask. :meth:`Home.secure` creates the home 0700 and tightens a home (and
its ``runs``/``drills`` folders and the state database) that an older version left
group- or world-readable; ``clampdown serve`` calls it at start and logs what it changed.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from clampdown.core.diagnostics import ClampdownError

if TYPE_CHECKING:
    from clampdown.core.run_store import LedgerPrimary, RunStore

log = logging.getLogger("clampdown.home")

LEDGER = "ledger.jsonl"
APPROVALS = "approvals"
APPROVAL_KEY = ".key"
SLACK_THREAD_STATE = "slack.json"
ROLLED_BACK_MARK = "rolled-back.json"
ROLLBACK_LOCK = "rollback.lock"
RUN_START = "start.json"
OWNER_LOCK = "owner.lock"
DECISION_INBOX = "decisions"
STATE_DB = "state.sqlite3"
PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
_LOOSE = stat.S_IRWXG | stat.S_IRWXO  # any permission for the group or others


def private_dirs(path: Path) -> list[Path]:
    """Create ``path`` and its missing parents 0700 (existing folders are left as they are);
    the folders it created, outermost first.

    ``Path.mkdir(parents=True)`` creates parents with the default mode; this does not.
    """
    missing = []
    current = path
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another process made it meanwhile
            folder.mkdir(mode=PRIVATE_DIR)
    return list(reversed(missing))


def sync_entries(folder: Path, created: Iterable[Path] = ()) -> None:
    """fsync ``folder`` and the parent of each folder in ``created``, so the names in them
    (a new file, a new run folder) survive a power loss, not only the files' contents:
    POSIX makes a file's fsync cover its data, not the entry that names it.

    A file system that cannot fsync a folder (``EINVAL``) has nothing to make durable."""
    for entry_holder in dict.fromkeys([*(c.parent for c in created), folder]):
        try:
            fd = os.open(entry_holder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            os.fsync(fd)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
        finally:
            os.close(fd)


def private_opener(path: str | os.PathLike[str], flags: int) -> int:
    """``open(path, mode, opener=private_opener)``: a file it creates is 0600."""
    return os.open(path, flags, PRIVATE_FILE)


def write_private(path: Path, text: str, durable: bool = False) -> None:
    """Replace ``path`` atomically with ``text`` in a 0600 file (folders created 0700).

    ``durable``: the file, its folder entry and the entries of the folders made for it
    (a new run's folder) are fsync'd before this returns, so a crash (or power loss)
    right after cannot lose it — for what an answer depends on.
    """
    created = private_dirs(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:  # mkstemp: 0600
            handle.write(text)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
        if durable:
            sync_entries(path.parent, created)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def tighten(path: Path, mode: int) -> str | None:
    """``path`` to ``mode`` if the group or others have any permission on it.

    Returns what was done (or why it could not be done), None when nothing was needed.
    """
    try:
        current = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return None
    if not current & _LOOSE:
        return None
    try:
        path.chmod(mode)
    except OSError as exc:
        return f"{path} is {current:o} and could not be made {mode:o}: {exc.strerror}"
    return f"{path} was {current:o}, now {mode:o}"


@dataclass(frozen=True)
class RunFiles:
    """The files of one run, under ``<home>/runs/<run-id>/``.

    With a shared run store (``home.store``: the scaled mode, :mod:`clampdown.core.run_store`)
    the store is the primary and this folder a cache: :meth:`write`, :meth:`read`,
    :meth:`remove` and :meth:`names` go to the store first, and :meth:`materialize`
    brings the folder up to date before a reader of files (verify, reports) runs. Without
    one they are the folder's files, as they always were. ``name`` is a path relative to
    the run folder (``start.json``, ``approvals/<step>.json``).
    """

    home: Home
    run_id: str

    @property
    def store(self) -> RunStore | None:
        return self.home.store

    @property
    def ledger_primary(self) -> LedgerPrimary | None:
        """Where the ledger's lines go first (None: the file is the ledger)."""
        return None if self.home.store is None else self.home.store.ledger(self.run_id)

    def write(self, name: str, text: str, *, durable: bool = False) -> None:
        """Write ``name`` (0600, atomic). With a store it is stored there first and the
        local copy is a cache: a local failure is logged, the stored copy counts."""
        if self.home.store is None:
            write_private(self.dir / name, text, durable=durable)
            return
        self.home.store.put(self.run_id, name, text.encode())
        try:
            write_private(self.dir / name, text)
        except OSError as exc:
            log.warning("run %s: local copy of %s not written: %s", self.run_id, name, exc)

    def read(self, name: str) -> str | None:
        """``name``'s text, None when there is none."""
        if self.home.store is not None:
            data = self.home.store.get(self.run_id, name)
            return None if data is None else data.decode("utf-8", errors="replace")
        try:
            return (self.dir / name).read_text(encoding="utf-8")
        except (FileNotFoundError, NotADirectoryError):
            return None

    def remove(self, name: str) -> None:
        if self.home.store is not None:
            self.home.store.remove(self.run_id, name)
        with contextlib.suppress(OSError):
            (self.dir / name).unlink(missing_ok=True)

    def names(self, folder: str) -> list[str]:
        """The file names in ``folder`` (oldest first), hidden ones (``.key``) left out."""
        if self.home.store is not None:
            found = self.home.store.names(self.run_id, folder)
        else:
            local = self.dir / folder
            paths = [p for p in local.iterdir() if p.is_file()] if local.is_dir() else []
            found = [p.name for p in sorted(paths, key=_mtime)]
        return [n for n in found if not n.startswith(".") and "/" not in n]

    def materialize(self) -> RunFiles:
        """Bring the local folder up to date with the run store (no-op without one)."""
        if self.home.store is not None:
            self.home.store.materialize(self)
        return self

    @property
    def dir(self) -> Path:
        return self.home.runs_dir / self.run_id

    @property
    def ledger(self) -> Path:
        return self.dir / LEDGER

    @property
    def approvals_dir(self) -> Path:
        return self.dir / APPROVALS

    def approval_request(self, step: str) -> Path:
        return self.approvals_dir / f"{step}.json"

    @property
    def approval_key(self) -> Path:
        return self.approvals_dir / APPROVAL_KEY

    @property
    def slack_thread_state(self) -> Path:
        return self.dir / SLACK_THREAD_STATE

    @property
    def rolled_back_mark(self) -> Path:
        return self.dir / ROLLED_BACK_MARK

    @property
    def rollback_lock(self) -> Path:
        return self.dir / ROLLBACK_LOCK

    @property
    def start(self) -> Path:
        return self.dir / RUN_START

    @property
    def owner_lock(self) -> Path:
        return self.dir / OWNER_LOCK

    @property
    def decision_inbox(self) -> Path:
        return self.dir / DECISION_INBOX


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


@dataclass(frozen=True)
class Home:
    """``CLAMPDOWN_HOME`` as configured (``configured``, for messages) and its paths.

    ``store``: the shared run store of the scaled mode (``CLAMPDOWN_RUN_STORE=postgresql``);
    None in local mode, where the run folders are the runs' state."""

    configured: Path
    store: RunStore | None = field(default=None, compare=False, repr=False)

    @property
    def root(self) -> Path:
        return self.configured.expanduser()

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def drills_dir(self) -> Path:
        return self.root / "drills"

    @property
    def state_db(self) -> Path:
        return self.root / STATE_DB

    def run(self, run_id: str) -> RunFiles:
        return RunFiles(self, run_id)

    def secure(self) -> list[str]:
        """Create the home 0700, or tighten it: the home, ``runs``, ``drills`` to 0700, the
        state database (and its WAL files) to 0600. Returns one line per change (for a
        warning); files inside older run folders keep their modes, but nobody else can
        reach them once the home is 0700."""
        private_dirs(self.root)
        changes = [tighten(d, PRIVATE_DIR) for d in (self.root, self.runs_dir, self.drills_dir)]
        for suffix in ("", "-wal", "-shm", "-journal"):
            db = self.state_db.with_name(self.state_db.name + suffix)
            changes.append(tighten(db, PRIVATE_FILE))
        return [c for c in changes if c]

    def existing_ledger(self, run_id: str) -> Path:
        """The ledger of a past run (brought from the run store first, in the scaled mode),
        or a user error that says where ledgers live."""
        path = self.run(run_id).materialize().ledger
        if not path.is_file():
            where = (
                "in the run store (PostgreSQL, CLAMPDOWN_STATE_URL)"
                if self.store is not None
                else f"under {self.configured}/runs/<run-id>/ledger.jsonl"
            )
            raise ClampdownError(f"no ledger for run '{run_id}'", f"ledgers live {where}")
        return path

    def materialize_recent(self, limit: int) -> list[str] | None:
        """Bring the ``limit`` most recently started runs of the run store into this home,
        and return their ids, newest first (None without a store): ``clampdown runs`` then
        lists them from any machine."""
        if self.store is None:
            return None
        found = self.store.recent(limit)
        for run_id in found:
            self.run(run_id).materialize()
        return found
