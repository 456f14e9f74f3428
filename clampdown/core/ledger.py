"""The run ledger: append-only JSON lines, each record chained to the one before.

Every record carries ``seq``, ``prev`` (SHA-256 of the previous line's bytes, or
64 zeros for the first) and ``hash`` (SHA-256 of the record's canonical JSON —
sorted keys, no spaces — without ``hash``). Lines are written in a readable key
order; the hash does not depend on it. Changing a byte breaks that record's own hash; deleting or
reordering a line breaks the next record's ``prev`` and ``seq``. So
``clampdown verify`` can name the first record that was altered, not only say
that "something" was. A ledger without a ``run.end`` record was cut short (or
the run is still going) and verify says so.

A chain alone does not stop someone who can write the file from rewriting it and
recomputing every hash: a :class:`RecordHook` (``clampdown.core.ledger_signing``)
signs the chain head as the run goes and copies it out of reach, and ``clampdown
verify`` checks those signatures (docs/verify.md).

Secrets never reach the ledger: every string value registered with
:meth:`Ledger.redact` is replaced by ``***`` before a record is written.

A record is written whole or not at all: one ``write`` of the whole line to a file
opened ``O_APPEND``, then ``fsync``. When the disk is full, the home read-only or the
disk failing (or the write is short), the file is cut back to its length before the
write and :class:`LedgerWriteError` says which file, what the system said and what to
do; the in-memory chain head does not move, so the next append (once there is room)
chains to the last record on disk and ``clampdown verify`` still holds.

In the scaled mode a :class:`~clampdown.core.run_store.LedgerPrimary` (PostgreSQL) holds
the lines first: each record is stored there in one transaction that checks it extends
the stored chain head, then written to the file, which is a cache any machine can
rebuild (:func:`sync_file`). The record is the same bytes either way: scrubbed and
sealed before it exists.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from clampdown.core.diagnostics import ClampdownError
from clampdown.core.home import PRIVATE_FILE, private_dirs, sync_entries

if TYPE_CHECKING:
    from clampdown.core.run_store import LedgerPrimary

log = logging.getLogger("clampdown.ledger")
GENESIS = "0" * 64
MASK = "***"


def new_run_id() -> str:
    """Short enough to type in ``clampdown approve``; 48 random bits."""
    return uuid.uuid4().hex[:12]


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _canonical(record: dict[str, Any]) -> bytes:
    return json.dumps(
        record, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    ).encode()


SEAL = "sig"
"""A record's signature (:mod:`clampdown.core.ledger_signing`): kept out of its own hash,
which it signs; the next record's ``prev`` (the line's hash) covers it."""


_HINTS = {
    errno.ENOSPC: "free space on the disk that holds CLAMPDOWN_HOME",
    errno.EDQUOT: "raise the disk quota of the user running clampdown, or free space in it",
    errno.EROFS: "CLAMPDOWN_HOME is on a read-only filesystem: make it writable "
    "(or point CLAMPDOWN_HOME at a writable disk)",
    errno.EACCES: "make CLAMPDOWN_HOME writable by the user running clampdown",
    errno.EPERM: "make CLAMPDOWN_HOME writable by the user running clampdown",
    errno.EIO: "the disk reported an I/O error: check it (dmesg) before trusting it",
}


class LedgerWriteError(ClampdownError):
    """A ledger record could not be written (disk full, read-only, I/O error, short write).

    Nothing of the record is left in the file (it was cut back to its length before the
    write) and the chain head did not move: the ledger still verifies. The run cannot go
    on without its record, so it stops; a caller that starts runs answers "not started".
    """

    path: Path | None = None
    code: int = 0  # the OS error number (errno.ENOSPC, errno.EROFS, ...)
    record_type: str | None = None

    @classmethod
    def of(
        cls, path: Path, type_: str | None, exc: OSError, cut: OSError | None = None
    ) -> LedgerWriteError:
        """The error for ``exc`` met writing ``type_`` (None: creating the ledger's folder);
        ``cut``: cutting the file back after the failed write failed too."""
        code = exc.errno or 0
        what = f"write the {type_} record to" if type_ else "create the folder of"
        left = (
            "nothing of it was written and the ledger is as it was"
            if cut is None
            else f"cutting the file back failed too ({cut.strerror or cut}): the next append "
            "removes a partial last line"
        )
        error = cls(
            f"could not {what} the run ledger {path}: {exc.strerror or exc} "
            f"({errno.errorcode.get(code, code)}); {left}, so the run stops",
            _HINTS.get(code, "make CLAMPDOWN_HOME writable and check its disk")
            + (
                ", then start the run again"
                if type_ in (None, "run.start")
                else f", then continue the run: `clampdown resume {path.parent.name}` "
                "(`clampdown serve` continues stopped runs of its home by itself)"
            ),
        )
        error.path, error.code, error.record_type = path, code, type_
        return error


class RecordHook(Protocol):
    """Seals each record as it is written (signs its hash) and hears when it is on disk."""

    def seal(self, record: dict[str, Any]) -> dict[str, Any] | None:
        """The signature to add to ``record`` (its ``hash`` is set); None: unsigned."""
        ...

    def written(self, record: dict[str, Any], line: bytes) -> None:
        """``record`` is on disk as ``line`` (called outside the ledger's lock)."""
        ...

    def close(self) -> None: ...


def line_hash(line: bytes) -> str:
    """What the next record's ``prev`` holds: SHA-256 of a record's line (no newline)."""
    return hashlib.sha256(line.rstrip(b"\r\n")).hexdigest()


class Ledger:
    """Appends chained records to one file; safe to call from several threads.

    Each record is flushed and fsync'd before ``append`` returns: a crash loses
    no record that a caller saw written. The file stays open between records
    (reopening it cost more than the fsync); :meth:`close` releases it, and a
    later ``append`` reopens it.

    ``hook`` (the run's signer) signs each record before it is written and hears of
    it once it is on disk (to copy the signed head out of reach).
    """

    CONFLICT_RETRIES = 5
    """Appends that found the stored head moved (another writer appended: an alert
    joining) chain on the new head again, as the flock makes a local append do."""

    def __init__(
        self, path: Path, hook: RecordHook | None = None, primary: LedgerPrimary | None = None
    ) -> None:
        self.path = path
        self.hook = hook
        self.primary = primary
        self._lock = threading.Lock()
        self._secrets: set[str] = set()
        self._fd: int | None = None
        try:  # 0700: CLAMPDOWN_HOME is readable by its owner only
            self._new_folders = private_dirs(path.parent)
        except OSError as exc:
            raise LedgerWriteError.of(path, None, exc) from None
        # the chain's tail is read under the file lock at each append whose file size
        # is not the one we left: another writer (an alert joining) may have appended
        self._seq, self._prev, self._size = 0, GENESIS, -1

    def close(self) -> None:
        if self.hook is not None:
            self.hook.close()  # e.g. wait for signed heads still on their way to S3
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def redact(self, *values: Any) -> None:
        """Never write these values (e.g. secret inputs) into the ledger."""
        self._secrets.update(str(v) for v in values if v not in (None, "") and len(str(v)) >= 4)

    def scrub(self, value: Any) -> Any:
        if not self._secrets:
            return value
        if isinstance(value, str):
            for secret in self._secrets:
                value = value.replace(secret, MASK)
            return value
        if isinstance(value, dict):
            return {k: self.scrub(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.scrub(v) for v in value]
        return value

    def append(self, type_: str, **fields: Any) -> dict[str, Any]:
        """Append one record; an exclusive flock keeps other writers (``append_to``) out.

        Raises :class:`LedgerWriteError` when the record cannot be written whole.
        """
        with self._lock:
            if self._fd is None:
                self._fd = self._open(type_)
            fd = self._fd
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if self.primary is not None:
                    record, line = self._append_primary(fd, self.primary, type_, fields)
                else:
                    record, line = self._append_locked(fd, type_, fields)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        if self.hook is not None:
            self.hook.written(record, line)  # outside the lock: e.g. queue the head for S3
        return record

    def _open(self, type_: str) -> int:
        """The file, created 0600 if missing. A file this opens into being has its name
        (and the names of folders made for it) fsync'd before any record is written: a
        record's own fsync covers its bytes, not the entry that names the file."""
        flags = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC
        try:
            try:
                fd = os.open(self.path, flags | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
            except FileExistsError:
                return os.open(self.path, flags)
            try:
                sync_entries(self.path.parent, self._new_folders)
            except OSError:
                os.close(fd)
                raise
            return fd
        except OSError as exc:
            raise LedgerWriteError.of(self.path, type_, exc) from None

    def _record(
        self, seq: int, prev: str, type_: str, fields: dict[str, Any]
    ) -> tuple[dict[str, Any], bytes]:
        """The record and its line (with newline): scrubbed, hashed and sealed."""
        record = {
            "seq": seq,
            "ts": now(),
            "type": type_,
            **self.scrub(json.loads(json.dumps(fields, default=str))),
            "prev": prev,
        }
        record["hash"] = hashlib.sha256(_canonical(record)).hexdigest()
        seal = self.hook.seal(record) if self.hook is not None else None
        if seal is not None:
            record[SEAL] = seal
        return record, json.dumps(record, ensure_ascii=False, default=str).encode() + b"\n"

    def _append_primary(
        self, fd: int, primary: LedgerPrimary, type_: str, fields: dict[str, Any]
    ) -> tuple[dict[str, Any], bytes]:
        """Store the record in ``primary`` (one checked transaction), then cache it here."""
        from clampdown.core.run_store import ChainConflict

        known = self._size >= 0 and os.fstat(fd).st_size == self._size
        seq, prev = (self._seq, self._prev) if known else self._stored_head(primary, type_)
        for _ in range(self.CONFLICT_RETRIES):
            record, line = self._record(seq, prev, type_, fields)
            try:
                primary.append(seq, prev, line, type_)
                break
            except ChainConflict:
                seq, prev = self._stored_head(primary, type_)
            except Exception as exc:
                raise self._store_error(type_, exc) from None
        else:
            raise LedgerWriteError(
                f"could not write the {type_} record of run {primary.run_id}: other writers "
                f"kept moving its chain head ({self.CONFLICT_RETRIES} tries); nothing of it "
                "was written",
                f"make sure one process runs the run, then continue it: "
                f"`clampdown resume {primary.run_id}`",
            )
        self._cache(fd, primary, seq, line)
        self._prev, self._seq = line_hash(line), seq + 1
        return record, line.rstrip(b"\n")

    def _stored_head(self, primary: LedgerPrimary, type_: str) -> tuple[int, str]:
        try:
            return primary.head()
        except Exception as exc:
            raise self._store_error(type_, exc) from None

    def _store_error(self, type_: str, exc: Exception) -> LedgerWriteError:
        from clampdown.core.run_store import LostHold

        run_id = getattr(self.primary, "run_id", self.path.parent.name)
        hint = (
            "another process may be running it now: see `clampdown runs`"
            if isinstance(exc, LostHold)
            else "check that the database of CLAMPDOWN_STATE_URL answers, then continue the "
            f"run: `clampdown resume {run_id}` (`clampdown worker` continues stopped runs "
            "by itself)"
        )
        why = exc.message if isinstance(exc, ClampdownError) else getattr(exc, "orig", None) or exc
        error = LedgerWriteError(
            f"could not write the {type_} record of run {run_id} to the run store "
            f"(PostgreSQL): {why}; nothing of it was written, so the run stops",
            hint,
        )
        error.path, error.record_type = self.path, type_
        return error

    def _cache(self, fd: int, primary: LedgerPrimary, seq: int, line: bytes) -> None:
        """Write the stored line to the local file; when the file is not the store's
        ``seq`` lines (a run continued from another machine, a record another writer
        stored) it is rebuilt from the store. The store holds the record already: a
        local failure is logged and repaired at the next append or read. A line the disk
        took only part of is cut off again, as in a ledger without the store: whoever reads
        this copy before the repair (progress, ``runs``) must not meet a torn line."""
        try:
            if self._size >= 0 and self._seq == seq and os.fstat(fd).st_size == self._size:
                try:
                    if os.write(fd, line) != len(line):
                        raise OSError(errno.ENOSPC, "short write")
                    os.fsync(fd)
                except OSError:
                    with contextlib.suppress(OSError):
                        os.ftruncate(fd, self._size)  # shrinking needs no free space
                    raise
                self._size += len(line)
            else:
                self._size = _sync_fd(fd, self.path, primary.lines())
        except Exception as exc:
            self._size = -1
            log.warning(
                "ledger %s: local copy not updated (%s); the run store has it", self.path, exc
            )

    def _append_locked(
        self, fd: int, type_: str, fields: dict[str, Any]
    ) -> tuple[dict[str, Any], bytes]:
        size = os.fstat(fd).st_size
        if size != self._size:
            try:
                size = _drop_torn_tail(fd, self.path, size)
            except OSError as exc:
                raise LedgerWriteError.of(self.path, type_, exc) from None
            self._seq, self._prev = _tail(self.path)
        record, line = self._record(self._seq, self._prev, type_, fields)
        self._write_whole(fd, line, size, type_)
        self._prev = line_hash(line)
        self._seq += 1
        self._size = size + len(line)
        return record, line.rstrip(b"\n")

    def _write_whole(self, fd: int, line: bytes, size: int, type_: str) -> None:
        """One write of the whole line, fsync'd; on any failure the file is cut back to
        ``size`` (its length before the write) and :class:`LedgerWriteError` raised."""
        try:
            written = os.write(fd, line)
            if written != len(line):  # a full disk may take part of a line, then refuse
                raise OSError(
                    errno.ENOSPC,
                    f"No space left on device (the disk took {written} of {len(line)} bytes)",
                )
            os.fsync(fd)
        except OSError as exc:
            self._size = -1  # re-read the tail at the next append, whatever happens below
            failed: OSError | None = None
            try:
                os.ftruncate(fd, size)
            except OSError as cut:
                failed = cut
            with contextlib.suppress(OSError):  # best effort: a failing disk may refuse it
                os.fsync(fd)
            raise LedgerWriteError.of(self.path, type_, exc, failed) from None


def _drop_torn_tail(fd: int, path: Path, size: int) -> int:
    """Cut off a last line without its newline (a record whose write never completed: a
    crash or power loss mid-write, or a failed cut-back); the new size.

    Such a line was never a record anyone saw written (``append`` had not returned), and
    chaining after it would break the chain for good.
    """
    if size == 0:
        return 0
    with path.open("rb") as fh:
        fh.seek(size - 1)
        if fh.read(1) == b"\n":
            return size
        fh.seek(0)
        keep = fh.read(size).rfind(b"\n") + 1
    log.warning(
        "ledger %s ended with a partial record (%d bytes, its write never completed): "
        "removed before appending",
        path,
        size - keep,
    )
    os.ftruncate(fd, keep)
    os.fsync(fd)
    return keep


def _sync_fd(fd: int, path: Path, lines: list[bytes]) -> int:
    """Make the file of ``fd`` (flock held by the caller) hold exactly ``lines``; its size.

    A file that is a prefix of them gets the rest appended; any other content is
    replaced (the store is the primary: a stale or altered cache loses)."""
    want = b"".join(line.rstrip(b"\r\n") + b"\n" for line in lines)
    with path.open("rb") as fh:
        have = fh.read()
    if have == want:
        return len(want)
    if want.startswith(have) and (not have or have.endswith(b"\n")):
        rest = want[len(have) :]
    else:
        os.ftruncate(fd, 0)
        rest = want
    if os.write(fd, rest) != len(rest):
        raise OSError(errno.ENOSPC, "short write")
    os.fsync(fd)
    return len(want)


def sync_file(path: Path, lines: list[bytes]) -> None:
    """Write a ledger's ``lines`` (from the run store) to its local file, under the same
    flock as appends, so a local reader (verify, reports) sees what the store holds."""
    private_dirs(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        _sync_fd(fd, path, lines)
    finally:
        os.close(fd)


def append_to(
    path: Path, type_: str, *, primary: LedgerPrimary | None = None, **fields: Any
) -> dict[str, Any]:
    """Append to the ledger of a run this process does not own (an alert joining it);
    ``primary``: the run store's copy, in the scaled mode."""
    ledger = Ledger(path, primary=primary)
    try:
        return ledger.append(type_, **fields)
    finally:
        ledger.close()


def _tail(path: Path) -> tuple[int, str]:
    """Next seq and prev hash when reopening an existing ledger (e.g. a resumed run)."""
    if not path.exists() or path.stat().st_size == 0:
        return 0, GENESIS
    last = path.read_bytes().rstrip(b"\n").rsplit(b"\n", 1)[-1]
    return json.loads(last)["seq"] + 1, hashlib.sha256(last).hexdigest()


@dataclass(frozen=True)
class ChainCheck:
    """What checking a ledger's hash chain found (``clampdown verify``)."""

    ok: bool
    records: int
    message: str
    broken_line: int | None = None
    complete: bool = False


def verify_lines(lines: Iterable[bytes]) -> ChainCheck:
    """Check the chain; name the first broken record by line and seq."""
    return walk(lines)[0]


def walk(lines: Iterable[bytes]) -> tuple[ChainCheck, list[tuple[dict[str, Any], str]]]:
    """Check the chain, and return the records that hold (each with its line hash).

    The records are those before the first broken one: what a signature check
    (:mod:`clampdown.core.ledger_signing`) can go on to examine.
    """
    prev, count, complete = GENESIS, 0, False
    checked: list[tuple[dict[str, Any], str]] = []
    for number, raw in enumerate(lines, start=1):
        line = raw.rstrip(b"\r\n")
        if not line:
            continue
        problem, record = _check_line(line, number, prev, count)
        if problem is not None:
            return ChainCheck(False, count, problem, number), checked
        prev = line_hash(line)
        checked.append((record, prev))
        count += 1
        complete = complete or record.get("type") == "run.end"  # alerts may join after it
    if count == 0:
        return ChainCheck(False, 0, "the ledger is empty"), checked
    if not complete:
        return ChainCheck(
            True,
            count,
            f"chain intact over {count} records, but there is no run.end "
            "record: the run is still going or the ledger was cut short",
            None,
            False,
        ), checked
    message = f"chain intact over {count} records, run.end present"
    return ChainCheck(True, count, message, None, True), checked


def _check_line(
    line: bytes, number: int, prev: str, count: int
) -> tuple[str | None, dict[str, Any]]:
    """What is wrong with one line given the chain so far (None: it holds)."""
    try:
        record = json.loads(line)
        claimed = record.pop("hash")
        seal = record.pop(SEAL, None)
    except (ValueError, KeyError, AttributeError, TypeError):
        return f"line {number}: not a ledger record (unreadable JSON or no hash)", {}
    where = f"line {number} (seq {record.get('seq')}, {record.get('type')})"
    if hashlib.sha256(_canonical(record)).hexdigest() != claimed:
        return f"{where}: the record was altered — its hash does not match its content", record
    if record.get("prev") != prev or record.get("seq") != count:
        return (
            f"{where}: the chain is broken before it — a record was "
            f"deleted, inserted or reordered (expected seq {count})",
            record,
        )
    record["hash"] = claimed
    if seal is not None:
        record[SEAL] = seal
    return None, record


def verify_file(path: Path) -> ChainCheck:
    with path.open("rb") as fh:
        return verify_lines(fh)


def read(path: Path) -> list[dict[str, Any]]:
    """All records of a ledger file (no verification)."""
    return [json.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def read_written(path: Path) -> list[dict[str, Any]]:
    """The records of a ledger another process is writing: its whole lines only.

    Why: an append is one ``write`` of a line and its newline, but a reader may see the
    file between the bytes of it; a line without its newline is not a record yet (the
    next read gets it whole). :func:`read` is for ledgers at rest, where such a tail is
    a torn write for ``verify`` to report."""
    data = path.read_bytes()
    whole = data[: data.rfind(b"\n") + 1]
    return [json.loads(line) for line in whole.splitlines() if line.strip()]


def has_record(path: Path, type_: str) -> bool:
    """Whether the ledger holds a record of ``type_`` (e.g. ``run.end``: the run finished)."""
    return first_record(path, type_) is not None


def started_as_drill(path: Path) -> bool | None:
    """What the ledger's first record, ``run.start``, says of its run being a drill; None
    without a readable ``run.start`` first (no ledger, a torn or foreign first line).

    Read before the ledger is verified (resume, rollback: the flag picks the settings the
    run works with), so a flag changed on disk then fails the verification it chose."""
    try:
        with path.open("rb") as fh:
            first = json.loads(fh.readline() or b"{}")
    except (OSError, ValueError):
        return None
    run = first.get("run") if isinstance(first, dict) and first.get("type") == "run.start" else None
    return bool(run.get("drill")) if isinstance(run, dict) else None


def first_record(path: Path, type_: str) -> dict[str, Any] | None:
    """The ledger's first record of ``type_``, None without one (or without a ledger).

    Scans bytes first and parses only candidate lines: a finished run's ledger may
    have records after ``run.end`` (alerts that joined late), so the last record
    alone does not tell; a torn last line (a run still writing, a killed process) is
    not a record.
    """
    needle = json.dumps(type_).encode()
    try:
        with path.open("rb") as fh:
            for line in fh:
                if needle in line:
                    try:
                        record = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(record, dict) and record.get("type") == type_:
                        return record
    except FileNotFoundError:
        return None
    return None
