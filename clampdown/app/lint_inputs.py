"""What one lint read, recorded while it runs, so that its verdict can be reused only while
all of it is unchanged (:mod:`clampdown.app.lint_cache`).

Why recorded and not listed by hand: what a lint reads is decided by lint, by its libraries
and by the action plug-ins (a runbook names actions, whose modules are imported; a library's
drills and triggers are read when they exist; ``importlib.metadata`` reads every installed
package's entry points). Python reports every file it opens and every folder it lists to
audit hooks (PEP 578), so the record holds everything read through Python's own I/O, and
whatever could not be put back into a path (a folder listed by descriptor) makes the record
unusable. Looking at a path without opening it (``exists``, ``is_dir``: a missing file is a
verdict too) is not audited, so ``os.stat`` and ``os.lstat`` are wrapped while the lint runs.

A record is kept only if nothing it names changed while the lint ran: each file's status
(size, times, inode) when lint first reached it equals its status after the run, and was
not so recent that a change in the same clock tick could hide (the file system's timestamps
lag the clock by up to a tick). The modules imported before the recording began are held
to a wider margin, as they were read before anything here could look at them.
"""

from __future__ import annotations

import hashlib
import os
import stat
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

TYPE_CHECKING = False  # typing's own, without importing typing (~1 ms of a replay)

if TYPE_CHECKING:  # a replay imports as little as it can
    from typing import Any

State = tuple[int, int, int, int, int]  # size, mtime_ns, ctime_ns, inode, device
TICK_NS = 20_000_000  # 20 ms: two ticks of the coarsest kernel clock (100 Hz)
BEFORE_NS = 2_000_000_000  # read before the recording began: a generous start-up
_WRITING = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
# The audit hook is process-wide and cannot be removed (PEP 578): it is added once and
# records only while a Recorder is active.
_ACTIVE: list[Recorder] = []
_stat, _lstat = os.stat, os.lstat  # the real ones: os's are wrapped while recording


class Unsure(Exception):
    """Something about the inputs could not be told for certain: reuse nothing."""


def state_of(path: str) -> State | None:
    """A file's or folder's status (following links); None when it does not exist."""
    try:
        info = _stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:  # unreadable: what lint saw cannot be told
        raise Unsure(path) from exc
    return (info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino, info.st_dev)


def content_digest(path: str) -> str:
    """SHA-256 of a file's bytes; ``missing`` when there is none."""
    try:
        with open(path, "rb") as handle:  # whole: small files (file_digest zeroes 256 KiB)
            return hashlib.sha256(handle.read()).hexdigest()
    except (FileNotFoundError, NotADirectoryError):
        return "missing"
    except OSError as exc:
        raise Unsure(path) from exc


def listing_digest(path: str) -> str:
    """SHA-256 of a folder's entries: each name with what it is (link, folder, file)."""
    try:
        with os.scandir(path) as entries:
            lines = sorted(
                f"{e.name}\0{e.is_symlink():d}{e.is_dir():d}{e.is_file():d}" for e in entries
            )
    except (FileNotFoundError, NotADirectoryError):
        return "missing"
    except OSError as exc:
        raise Unsure(path) from exc
    return hashlib.sha256("\n".join(lines).encode("utf-8", "surrogateescape")).hexdigest()


def looks(path: str) -> str:
    """What a look at ``path`` without opening it can see: the link and its target, the
    kind of what it names and, for a file, its size."""
    parts = []
    try:
        info = _lstat(path)
        if stat.S_ISLNK(info.st_mode):
            parts.append("link:" + os.readlink(path))
            info = _stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return "|".join([*parts, "missing"])
    except OSError as exc:
        raise Unsure(path) from exc
    kind = "dir" if stat.S_ISDIR(info.st_mode) else "file" if stat.S_ISREG(info.st_mode) else "?"
    parts.append(f"{kind}:{info.st_size}" if kind == "file" else kind)
    return "|".join(parts)


def module_mark(path: str, hashed: bool) -> str:
    """How a module's file is checked again: its SHA-256 (``hashed``: clampdown's code and
    the plug-ins'), else its status: size, times and inode, as for the libraries and the
    standard library, which an install changes (any write changes the change time; hashing
    their 300-odd files would double the time a replay takes)."""
    if hashed:
        return "sha256:" + content_digest(path)
    found = state_of(path)
    return "stat:" + ("missing" if found is None else ",".join(map(str, found)))


def module_matches(path: str, mark: str) -> bool:
    """Whether a module's file still has the :func:`module_mark` ``mark``."""
    return module_mark(path, mark.startswith("sha256:")) == mark


def module_files() -> dict[str, str]:
    """The file of every module imported now (sys.modules' ``__file__``): its package."""
    files: dict[str, str] = {}
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if isinstance(path, str):
            files.setdefault(path, name.partition(".")[0])
    return dict(sorted(files.items()))


def _source_of(compiled: str) -> str | None:
    """``pkg/name.py`` for ``pkg/__pycache__/name.<tag>.pyc``: the import that opened the
    bytecode compared it with that source first."""
    if not compiled.endswith(".pyc"):  # most files opened: answered without splitting
        return None
    folder, name = os.path.split(compiled)
    if os.path.basename(folder) != "__pycache__":
        return None
    return os.path.join(os.path.dirname(folder), name.split(".", 1)[0] + ".py")


class Recorder:
    """The inputs of one run: files opened, folders listed, paths looked at, modules."""

    def __init__(self) -> None:
        self.started_ns = time.time_ns()
        self.opened: dict[str, State | None] = {}  # status when lint first opened it
        self.listed: dict[str, State | None] = {}
        self.looked: dict[str, str] = {}
        self.sure = True
        self.early: dict[str, State | None] = {}  # read before this recording: BEFORE_NS
        try:
            self.early = {f: state_of(f) for f in module_files()}
            for entry in sys.path:  # where a new module would be found first
                folder = entry or "."
                if os.path.isdir(folder):
                    self.listed.setdefault(folder, state_of(folder))
        except Unsure:  # an unreadable module or folder: the lint runs, nothing is kept
            self.sure = False

    def audit(self, event: str, args: tuple[Any, ...]) -> None:
        """PEP 578 events: ``open`` (reading) and ``os.listdir``/``os.scandir``."""
        if event == "open":
            path, mode, flags = args
            writing = any(c in (mode or "") for c in "wax+") or (flags or 0) & _WRITING
            if isinstance(path, int) or writing:
                return  # a descriptor opened earlier (recorded then), or an output
            path = os.fsdecode(path)
            if path in self.opened:
                return
            source = _source_of(path)
            if source is None:
                self.opened[path] = state_of(path)
            elif source not in self.opened:  # bytecode: what counts is its source, as found
                self.opened[source] = state_of(source)
        elif event in ("os.listdir", "os.scandir"):
            folder = "." if args[0] is None else args[0]
            if isinstance(folder, int):
                raise Unsure("a folder listed by descriptor")
            folder = os.fsdecode(folder)
            if folder not in self.listed:
                self.listed[folder] = state_of(folder)

    def look(self, path: Any, dir_fd: Any) -> None:
        """A stat of ``path`` (not a descriptor): what it showed is part of the verdict."""
        if dir_fd is not None:
            raise Unsure("a path looked at relative to a descriptor")
        if isinstance(path, int):
            return
        path = os.fsdecode(path)
        if path not in self.looked:
            self.looked[path] = looks(path)

    def inputs(self, hashed: Callable[[str], bool]) -> dict[str, list[list[str]]]:
        """The record, checked unchanged since lint first reached each input (or Unsure);
        ``hashed(package)``: whether a top-level package's modules are checked by hash."""
        if not self.sure or self in _ACTIVE:
            raise Unsure("the run could not be recorded completely")
        modules = module_files()
        files = [  # bytecode is not in ``opened`` (its source is); modules are marked below
            [p, self._steady(p, first, content_digest)]
            for p, first in self.opened.items()
            if p not in modules
        ]
        folders = [[p, self._steady(p, first, listing_digest)] for p, first in self.listed.items()]
        looked = [[p, seen] for p, seen in self.looked.items()]
        if any(looks(p) != seen for p, seen in looked):
            raise Unsure("a path looked at changed")
        marks = [[f, self._module(f, hashed(package))] for f, package in modules.items()]
        return {"files": files, "folders": folders, "looked": looked, "modules": marks}

    def _steady(
        self,
        path: str,
        first: State | None,
        digest: Callable[[str], str],
        margin_ns: int = TICK_NS,
    ) -> str:
        """``digest(path)``, if ``path`` is as lint found it (``first``) and was not changed
        within ``margin_ns`` before the recording began."""
        found = digest(path)
        if state_of(path) != first:
            raise Unsure(f"{path} changed while lint ran")
        if first is not None and max(first[1], first[2]) >= self.started_ns - margin_ns:
            raise Unsure(f"{path} changed just before lint ran")
        return found

    def _module(self, path: str, hashed: bool) -> str:
        def mark_of(path: str) -> str:
            return module_mark(path, hashed)

        if path in self.opened:  # imported while recording: as its import found it
            return self._steady(path, self.opened[path], mark_of)
        first = self.early[path] if path in self.early else state_of(path)
        return self._steady(path, first, mark_of, BEFORE_NS)  # read before the recording


def unchanged(record: dict[str, Any]) -> bool:
    """Whether everything a record names is as it was when it was made (the cache's hit)."""
    checks: list[tuple[str, Callable[[str], str]]] = [
        ("looked", looks),
        ("folders", listing_digest),
        ("files", content_digest),
    ]
    try:
        for part, digest in checks:
            for path, mark in record[part]:
                if digest(path) != mark:
                    return False
        return all(module_matches(path, mark) for path, mark in record["modules"])
    except Unsure:
        return False


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if not _ACTIVE or event not in ("open", "os.listdir", "os.scandir"):
        return
    recorder = _ACTIVE[-1]
    try:
        recorder.audit(event, args)
    except Exception:  # never let the record change what lint does
        recorder.sure = False


_hooked: list[bool] = []


@contextmanager
def recording() -> Iterator[Recorder]:
    """Record what the code run inside reads (one recording at a time in a process)."""
    if _ACTIVE:
        raise RuntimeError("lint inputs are already being recorded")
    if not _hooked:
        sys.addaudithook(_hook)
        _hooked.append(True)
    recorder = Recorder()
    real_stat, real_lstat = os.stat, os.lstat

    def watched(real: Callable[..., os.stat_result]) -> Callable[..., os.stat_result]:
        def call(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
            if recorder.sure:
                try:
                    recorder.look(path, kwargs.get("dir_fd"))
                except Exception:
                    recorder.sure = False
            return real(path, *args, **kwargs)

        return call

    _ACTIVE.append(recorder)
    os.stat, os.lstat = watched(real_stat), watched(real_lstat)  # type: ignore[assignment]
    try:
        yield recorder
    finally:
        os.stat, os.lstat = real_stat, real_lstat  # type: ignore[assignment]
        _ACTIVE.remove(recorder)
