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
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from clampdown.core.diagnostics import ClampdownError

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


def private_dirs(path: Path) -> None:
    """Create ``path`` and its missing parents 0700 (existing folders are left as they are).

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


def private_opener(path: str | os.PathLike[str], flags: int) -> int:
    """``open(path, mode, opener=private_opener)``: a file it creates is 0600."""
    return os.open(path, flags, PRIVATE_FILE)


def write_private(path: Path, text: str, durable: bool = False) -> None:
    """Replace ``path`` atomically with ``text`` in a 0600 file (folders created 0700).

    ``durable``: the file and its folder entry are fsync'd before this returns, so a
    crash (or power loss) right after cannot lose it — for what an answer depends on.
    """
    private_dirs(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:  # mkstemp: 0600
            handle.write(text)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
        if durable:
            folder = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)
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
    """The files of one run, under ``<home>/runs/<run-id>/``."""

    home: Home
    run_id: str

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


@dataclass(frozen=True)
class Home:
    """``CLAMPDOWN_HOME`` as configured (``configured``, for messages) and its paths."""

    configured: Path

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
        """The ledger of a past run, or a user error that says where ledgers live."""
        path = self.run(run_id).ledger
        if not path.is_file():
            raise ClampdownError(
                f"no ledger for run '{run_id}'",
                f"ledgers live under {self.configured}/runs/<run-id>/ledger.jsonl",
            )
        return path
