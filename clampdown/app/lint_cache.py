"""Lint's verdict cache: the same lint of the same files gives its output again, unread.

Pre-commit hooks, CI and editors lint the same unchanged files again and again, and a cold
lint costs a few hundred milliseconds, most of it building pydantic models before the first
runbook is read. So the console script (:mod:`clampdown.app.entry`) keeps, per user, what a
lint printed and its exit code, keyed by everything that could make a lint print something
else (:func:`invocation_key`) and next to everything it read
(:mod:`clampdown.app.lint_inputs`: each file with its SHA-256, each folder's listing, each
path it looked at, each module it ran). A later lint with the same key replays the output
only after checking every one of these again; it imports neither yaml, pydantic, jinja2
nor typer. Any difference, error or doubt: the lint runs as it always did, and its entry
is written again.

Trust, as for the Prefect template (:mod:`clampdown_flows.prefect_template`): the entries
live in ``$XDG_CACHE_HOME/clampdown/lint/`` (default ``~/.cache/clampdown/lint/``), a
folder that must be the user's own, not a link and private (0700); each entry must be the
user's own regular file, not a link, private (0600). Anything else is ignored, never
followed or trusted. An entry is written to a private temporary file and renamed into
place. Only the user (and root) can write there, so only they could forge a verdict; a
forged or damaged entry whose recorded inputs do not match the files is not used. The
folder keeps the :data:`KEEP` entries used last; deleting it is always safe.

Cached only when the output is plain text that Rich would not touch (not a terminal, no
forced colours), the lint ended with its verdict (exit 0 or 1) and nothing it read changed
while it ran. ``--no-cache`` or ``CLAMPDOWN_LINT_CACHE=off`` turn it off: nothing is read
or written.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import sys
import time
from collections.abc import Callable, Mapping

import clampdown
from clampdown.app.lint_inputs import recording, unchanged
from clampdown.app.plain_output import as_is

TYPE_CHECKING = False  # typing's own, without importing typing (~1 ms of a replay)

if TYPE_CHECKING:  # a replay imports as little as it can: no pathlib, typing, dataclasses
    from typing import Any

    from clampdown.app.cli_lint import LintArgs

FORMAT = 1  # of an entry; another format is not read
KEEP = 32  # entries kept, the most recently used
MAX_BYTES = 16 << 20  # an entry larger than this is not read
OFF = ("off", "0", "false", "no")
# what in the environment can change what a lint prints: its settings, pydantic's, Python's
# (and sysconfig's), the locale (output encoding) and the terminal variables Rich reads;
# names in any case, as pydantic-settings reads CLAMPDOWN_* in any case
KEYED_PREFIXES = ("CLAMPDOWN_", "PYDANTIC", "PYTHON", "_PYTHON", "LC_", "TTY_", "JUPYTER")
KEYED_NAMES = (
    "LANG",
    "LANGUAGE",
    "HOME",
    "TERM",
    "COLORTERM",
    "NO_COLOR",
    "FORCE_COLOR",
    "COLUMNS",
    "LINES",
)
_PARTS = ("files", "folders", "looked", "modules")


def wanted(raw_args: list[str], environ: Mapping[str, str]) -> bool:
    """The cache is on unless ``--no-cache`` (an option: before any ``--``) or
    ``CLAMPDOWN_LINT_CACHE`` says off (read here, once per lint, not through
    :class:`clampdown.core.settings.Settings`: a replay must not import pydantic)."""
    options = raw_args[: raw_args.index("--")] if "--" in raw_args else raw_args
    setting = environ.get("CLAMPDOWN_LINT_CACHE", "").strip().lower()
    return "--no-cache" not in options and setting not in OFF


def keyed(name: str) -> bool:
    """Whether the environment variable ``name`` is part of :func:`invocation_key`."""
    upper = name.upper()
    return upper.startswith(KEYED_PREFIXES) or upper in KEYED_NAMES


def cache_folder(environ: Mapping[str, str]) -> str:
    """``$XDG_CACHE_HOME/clampdown/lint`` (an absolute XDG_CACHE_HOME), else ``~/.cache/…``."""
    base = environ.get("XDG_CACHE_HOME", "")
    root = base if os.path.isabs(base) else os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "clampdown", "lint")


def invocation_key(raw_args: list[str], environ: Mapping[str, str]) -> str:
    """SHA-256 of what, besides the files, decides a lint's output: its command line and
    folder, the keyed environment variables, the Python that runs it and how its output is
    encoded, clampdown's version. Only the digest is stored (settings may hold secrets)."""
    material = {
        "args": raw_args,
        "cwd": os.getcwd(),
        "env": sorted((k, v) for k, v in environ.items() if keyed(k)),
        "python": [sys.version, sys.executable, list(sys.flags), sys.warnoptions],
        "xoptions": sorted(map(str, sys._xoptions.items())),
        "path": sys.path,
        "streams": [
            [getattr(s, "encoding", None), getattr(s, "errors", None)]
            for s in (sys.stdout, sys.stderr)
        ],
        "plain": as_is(),
        "clampdown": clampdown.__version__,
        "uid": os.getuid(),
    }
    text = json.dumps(material, sort_keys=True, ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def _private(info: os.stat_result, kind: int) -> bool:
    """The user's own, of ``kind`` (folder or file), and nobody else may read or write it."""
    return (
        stat.S_IFMT(info.st_mode) == kind
        and info.st_uid == os.getuid()
        and not info.st_mode & 0o077
    )


def _well_formed(entry: Any, key: str) -> bool:
    """An entry of this format for this key, every part of the expected shape."""
    if not isinstance(entry, dict) or entry.get("format") != FORMAT or entry.get("key") != key:
        return False
    if entry.get("exit") not in (0, 1) or not isinstance(entry.get("inputs"), dict):
        return False
    pairs = [entry.get("output"), *(entry["inputs"].get(p) for p in _PARTS)]
    return all(
        isinstance(part, list)
        and all(
            isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) for x in pair)
            for pair in part
        )
        for part in pairs
    ) and all(stream in ("out", "err") for stream, _ in entry["output"])


class VerdictCache:
    """The user's private folder of lint verdicts (see the module docstring)."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def _open_folder(self, create: bool) -> int | None:
        """A descriptor of the folder if it is private (made so if ``create``); else None."""
        if create:
            os.makedirs(os.path.dirname(self.folder), exist_ok=True)
            with contextlib.suppress(FileExistsError):
                os.mkdir(self.folder, 0o700)
        try:
            fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:
            return None
        if not _private(os.fstat(fd), stat.S_IFDIR):
            os.close(fd)
            return None
        return fd

    def lookup(self, key: str) -> dict[str, Any] | None:
        """The entry for ``key`` if there is a trusted, well-formed one; never raises."""
        try:
            folder = self._open_folder(create=False)
        except OSError:
            return None
        if folder is None:
            return None
        try:
            fd = os.open(f"{key}.json", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=folder)
        except OSError:
            return None
        finally:
            os.close(folder)
        try:
            info = os.fstat(fd)
            if not _private(info, stat.S_IFREG) or info.st_size > MAX_BYTES:
                return None
            with os.fdopen(os.dup(fd), "rb") as handle:
                entry = json.loads(handle.read())
            _used_now(fd)
        except (OSError, ValueError):
            return None
        finally:
            os.close(fd)
        return entry if _well_formed(entry, key) else None

    def store(self, key: str, entry: dict[str, Any]) -> bool:
        """Write ``entry`` for ``key`` (private temporary file, then a rename); keep the
        :data:`KEEP` entries used last. False when the folder is not private."""
        folder = self._open_folder(create=True)
        if folder is None:
            return False
        temporary = f".{key}.{os.getpid()}.tmp"
        try:
            data = json.dumps(entry, ensure_ascii=True).encode("ascii")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary, dir_fd=folder)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
            with os.fdopen(os.open(temporary, flags, 0o600, dir_fd=folder), "wb") as handle:
                handle.write(data)
                handle.flush()
                _used_now(handle.fileno())
            os.replace(temporary, f"{key}.json", src_dir_fd=folder, dst_dir_fd=folder)
            _keep_recent(folder)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary, dir_fd=folder)
            os.close(folder)
        return True


def _used_now(fd: int) -> None:
    """Mark an entry used (its modification time: now, to the nanosecond; the file
    system's own clock may be a tick behind, which would make ties)."""
    now = time.time_ns()
    os.utime(fd, ns=(now, now))


def _keep_recent(folder: int) -> None:
    """Remove all but the :data:`KEEP` most recently used files of the folder."""
    files = []
    for name in os.listdir(folder):
        info = os.stat(name, dir_fd=folder, follow_symlinks=False)
        if stat.S_ISREG(info.st_mode):
            files.append((info.st_mtime_ns, name))
    for _, name in sorted(files, reverse=True)[KEEP:]:
        os.unlink(name, dir_fd=folder)


class _Tee:
    """A text stream that also keeps, in order, what is written to it."""

    def __init__(self, stream: Any, name: str, written: list[list[str]]) -> None:
        self._stream = stream
        self._name = name
        self._written = written
        self.bypassed = False

    def write(self, text: str) -> int:
        done = self._stream.write(text)
        self._written.append([self._name, text])
        return int(done)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    @property
    def buffer(self) -> Any:  # bytes written there are not seen here
        self.bypassed = True
        return self._stream.buffer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _recorded(run: Callable[[], int]) -> tuple[int, dict[str, Any] | None]:
    """Run ``run`` (a cold lint) recording its output and inputs; the record is None when
    it cannot be reused (see the module docstring)."""
    written: list[list[str]] = []
    before = set(sys.modules)
    out, err = sys.stdout, sys.stderr
    tees = _Tee(out, "out", written), _Tee(err, "err", written)
    with recording() as recorder:
        sys.stdout, sys.stderr = tees  # type: ignore[assignment]
        try:
            code = run()
        finally:
            sys.stdout, sys.stderr = out, err
    rendered_by_rich = {"rich", "typer"} & {m.split(".")[0] for m in set(sys.modules) - before}
    if code not in (0, 1) or rendered_by_rich or any(t.bypassed for t in tees):
        return code, None
    try:
        inputs = recorder.inputs(_ours_or_plugins(list(recorder.opened)))
    except Exception:  # Unsure, or any other doubt (metadata unreadable): keep nothing
        return code, None
    return code, {"exit": code, "output": written, "inputs": inputs}


def _ours_or_plugins(read: list[str]) -> Callable[[str], bool]:
    """Whether a top-level package is clampdown's or a plug-in's: it provides an entry
    point of a ``clampdown.*`` group in one of the ``entry_points.txt`` files the lint
    ``read`` (the action registry read them all). Their modules are checked by hash on a
    replay, the others by status."""
    packages: set[str] = set()
    for path in read:
        if os.path.basename(path) != "entry_points.txt":
            continue
        try:
            with open(path, encoding="utf-8") as handle:
                lines = handle.read().splitlines()
        except (OSError, ValueError):  # looked for and absent (recorded as such), unreadable
            continue
        group = ""
        for line in map(str.strip, lines):
            if line.startswith("["):
                group = line.strip("[]").strip()
            elif group.startswith("clampdown") and "=" in line:
                value = line.partition("=")[2].strip()
                packages.add(value.partition(":")[0].partition(".")[0].strip())
    return lambda package: package.startswith("clampdown") or package in packages


def replay(raw_args: list[str], environ: Mapping[str, str] | None = None) -> int | None:
    """Print the output of an identical earlier lint whose inputs are all unchanged, and
    answer its exit code; None when there is none (or the cache is off): lint must run.
    ``raw_args``: the command line after ``lint``."""
    env = os.environ if environ is None else environ
    if not wanted(raw_args, env) or not as_is():
        return None
    try:
        key = invocation_key(raw_args, env)
    except OSError:  # no working folder (removed): lint says what it says about that
        return None
    entry = VerdictCache(cache_folder(env)).lookup(key)
    if entry is None or not unchanged(entry["inputs"]):
        return None
    for stream, text in entry["output"]:
        (sys.stdout if stream == "out" else sys.stderr).write(text)
    return int(entry["exit"])


def run_and_keep(
    raw_args: list[str],
    args: LintArgs,
    run: Callable[[LintArgs], int],
    environ: Mapping[str, str] | None = None,
) -> int:
    """``run(args)`` (a cold lint), its output and inputs kept for :func:`replay` when the
    cache is on and they can be (see the module docstring); the exit code."""
    env = os.environ if environ is None else environ
    try:
        keep = args.cache and wanted(raw_args, env) and as_is()
        key = invocation_key(raw_args, env) if keep else ""  # before the lint: it sets some
    except OSError:
        keep = False
    if not keep:
        return run(args)
    code, record = _recorded(lambda: run(args))
    if record is not None:
        with contextlib.suppress(OSError):  # a cache not written changes nothing of the lint
            VerdictCache(cache_folder(env)).store(key, {"format": FORMAT, "key": key, **record})
    return code


def lint_with_cache(
    raw_args: list[str],
    args: LintArgs,
    run: Callable[[LintArgs], int],
    environ: Mapping[str, str] | None = None,
) -> int:
    """:func:`replay`, else :func:`run_and_keep`: a lint with its verdict cache."""
    code = replay(raw_args, environ) if args.cache else None
    return run_and_keep(raw_args, args, run, environ) if code is None else code
