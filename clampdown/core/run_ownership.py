"""Which process is running a run: an exclusive ``flock`` on ``runs/<id>/owner.lock``.

A run is durable, its process is not: when the process that holds a run dies (a
``kill -9``, a crash, a deploy's SIGTERM) the kernel releases its lock, so "nobody holds
it" is a fact read from the lock, not a guess from a timestamp or a heartbeat. A run
without ``run.end`` whose lock is free is an orphan: ``serve`` continues it
(:mod:`clampdown.app.local_runs`), ``clampdown resume`` does by hand, and a decision sent
meanwhile waits in the run's inbox (:mod:`clampdown_flows.decisions`).

``flock`` locks belong to an open file description, so the check is exact between the
processes of one machine sharing ``CLAMPDOWN_HOME`` (local mode) and even between two
opens in one process. Over a network filesystem it is not to be trusted: in the scaled
mode (a home with a run store, ``CLAMPDOWN_RUN_STORE=postgresql``) the lock is a
PostgreSQL session advisory lock instead (:meth:`~clampdown.core.run_store.RunStore.try_hold`),
held on a connection of its own, which the server releases when that connection dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from collections.abc import Iterator
from datetime import UTC, datetime

from clampdown.core.diagnostics import ClampdownError
from clampdown.core.home import RUN_START, RunFiles, private_dirs


class RunHeld(ClampdownError):
    """Another process holds the run: it must not be run twice at once."""


@contextlib.contextmanager
def hold(files: RunFiles) -> Iterator[None]:
    """Hold ``files``' run for the duration; raise :class:`RunHeld` when another process does.

    The lock file says who holds it (host, pid, since when) for the message a second
    process gets; the lock, not the text, is what counts.
    """
    if files.store is not None:
        with _hold_in_store(files):
            yield
        return
    try:
        private_dirs(files.dir)
        fd = os.open(files.owner_lock, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise ClampdownError(
            f"run '{files.run_id}' cannot be started here: {files.owner_lock}: "
            f"{exc.strerror or exc}",
            "free disk space or make CLAMPDOWN_HOME writable, then start it again",
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise RunHeld(
                f"run '{files.run_id}' is being run by {holder}",
                "wait for it (`clampdown runs`), or stop that process first",
            ) from None
        since = datetime.now(UTC).isoformat(timespec="seconds")
        with contextlib.suppress(OSError):  # the text is for messages; the lock is what counts
            os.ftruncate(fd, 0)
            os.pwrite(
                fd, f"pid {os.getpid()} on {socket.gethostname()} since {since}\n".encode(), 0
            )
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _hold_in_store(files: RunFiles) -> Iterator[None]:
    """:func:`hold` in the run store: its advisory lock, across machines."""
    assert files.store is not None
    try:
        holding = files.store.try_hold(files.run_id)
    except Exception as exc:
        raise ClampdownError(
            f"run '{files.run_id}' cannot be started here: the run store cannot be reached "
            f"({getattr(exc, 'orig', None) or exc})",
            "check that the database of CLAMPDOWN_STATE_URL answers, then start it again",
        ) from None
    if holding is None:
        raise RunHeld(
            f"run '{files.run_id}' is being run by another process (its lock in the run store "
            "is held)",
            "wait for it (`clampdown runs`), or stop that process first",
        )
    try:
        yield
    finally:
        holding.release()


def is_held(files: RunFiles) -> bool:
    """Whether a live process holds the run now (a lock never taken: not held)."""
    if files.store is not None:
        return files.store.is_held(files.run_id)
    try:
        fd = os.open(files.owner_lock, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases a lock we took
    return False


def is_stopped(files: RunFiles) -> bool:
    """A run that can be continued (it has a start record) and that no live process holds:
    its process died, or serve is restarting. Whether it also lacks ``run.end`` is the
    caller's to know (it has read, or will read, the ledger)."""
    return files.read(RUN_START) is not None and not is_held(files)  # the store's or the file


__all__ = ["RunHeld", "hold", "is_held", "is_stopped"]
