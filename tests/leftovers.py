"""Processes a test session leaves behind, found and stopped when the session ends.

``clampdown run`` (and ``resume``, ``rollback``) leave the Prefect home's resident local
API running for an hour on purpose (:mod:`clampdown_flows.resident_api`), and a test
that kills a process group can leave a child behind. Started by tests, they run on a
Prefect home or a CLAMPDOWN_HOME inside the session's temporary folders, which is how
they are recognised here: a process of this user whose ``PREFECT_HOME`` or
``CLAMPDOWN_HOME`` is under one of those folders (read from ``/proc``; not this process
or its ancestors). Nothing else on the machine is touched.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable
from pathlib import Path

HOME_VARIABLES = (b"PREFECT_HOME=", b"CLAMPDOWN_HOME=")


def _ancestors() -> set[int]:
    found, pid = set(), os.getpid()
    while pid > 1 and pid not in found:
        found.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            break
    return found


def _homes(pid: int) -> list[str]:
    """The PREFECT_HOME and CLAMPDOWN_HOME a process was started with (none if unreadable)."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:  # gone, or another user's
        return []
    return [
        entry.split(b"=", 1)[1].decode(errors="replace")
        for entry in environ
        if entry.startswith(HOME_VARIABLES)
    ]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def session_processes(roots: Iterable[Path]) -> list[int]:
    """Live processes whose PREFECT_HOME or CLAMPDOWN_HOME is inside one of ``roots``."""
    prefixes = {str(path).rstrip("/") + "/" for root in roots for path in (root, root.resolve())}
    mine, uid = _ancestors(), os.getuid()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in mine:
            continue
        with contextlib.suppress(OSError):
            if entry.stat().st_uid != uid:
                continue
        homes = [home.rstrip("/") + "/" for home in _homes(int(entry.name))]
        inside = any(home.startswith(p) for home in homes for p in prefixes)
        if inside and _alive(int(entry.name)):
            found.append(int(entry.name))
    return sorted(found)


def _parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def detached(pids: Iterable[int]) -> list[int]:
    """Those of ``pids`` that are not this process's own children: a server a session
    fixture started and still holds (the drills' standing API) is its child, while a
    resident API that ``clampdown run`` left has been re-parented."""
    me = os.getpid()
    return [pid for pid in pids if _parent(pid) not in (me, None)]


def terminate(pids: Iterable[int]) -> None:
    """SIGTERM each, without waiting: a resident API shuts itself down cleanly, and
    whatever is still there at the session's end gets :func:`stop`."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)


def describe(pid: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return f"{pid} (gone)"
    return f"{pid} {' '.join(a.decode(errors='replace') for a in argv if a)[:160]}"


def stop(pids: list[int], timeout: float = 15.0) -> list[int]:
    """SIGTERM (a resident API shuts down cleanly), SIGKILL whatever is left after
    ``timeout``; returns the ones that needed SIGKILL."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        for pid in pids:  # reap our own children, if any are
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        time.sleep(0.1)
    killed = [pid for pid in pids if _alive(pid)]
    for pid in killed:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return killed
