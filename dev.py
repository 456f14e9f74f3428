#!/usr/bin/env python3
"""One-command tasks for a fresh clone; needs only Python 3.11+.

    python3 dev.py demo    set up .venv, then run the model-theft drill end to end (simulated AWS)
    python3 dev.py test    set up .venv, then run ruff, lint-imports and the whole test suite
                           (on two pytest-xdist workers; pytest arguments may follow)
    python3 dev.py unit    set up .venv, then run tests/unit only (no server, no network; seconds)
    python3 dev.py setup   only create/refresh .venv

Setup installs the package pinned by constraints.txt, so a fresh machine gets the
versions the suite was last run with: demo its drill extra (moto), test and unit the test
extra (which has the drill's too). The installer is uv (a static binary wheel from PyPI,
pinned in constraints.txt: 4-10x faster than pip here) put into .venv by python3's
own pip; pip does it all when uv cannot be had, or with DEV_INSTALLER=pip.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
import venv
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".clampdown-installed"


EXTRAS = {"demo": "drill", "test": "test", "unit": "test", "setup": "test"}
# The whole suite on two pytest-xdist workers: much of its time is spent waiting on
# subprocesses and servers, which two workers overlap (docs/benchmarks.md has the figures).
# tests/conftest.py keeps each test file, and every drill, on one worker. `python3 dev.py
# test -n 0` runs it in one process (a later -n wins). The unit subset stays in one
# process: there, two workers cost more CPU (a second collection) than they save.
PARALLEL = ["-n", "2", "--dist", "loadfile", "--no-loadscope-reorder"]
QUIET = ["-q", "--disable-pip-version-check"]
# The project's own Python, which no installer compiles (an editable install runs it from here).
SOURCES = ("clampdown", "flows", "integrations", "slack", "runbooks", "tests", "benchmarks")


def _fingerprint() -> str:
    data = b"".join((ROOT / name).read_bytes() for name in ("pyproject.toml", "constraints.txt"))
    return hashlib.sha256(data).hexdigest()


def _installed() -> set[str]:
    """The extras the stamp says were installed for this pyproject and constraints."""
    fingerprint, *extras = STAMP.read_text().split() if STAMP.exists() else [""]
    return set(extras) if fingerprint == _fingerprint() else set()


def setup(extra: str = "test") -> None:
    """Create .venv and install clampdown with ``extra``; skipped when the stamp says it is
    there for this pyproject and constraints (a test after a demo adds the test extra)."""
    if sys.version_info < (3, 11):  # noqa: UP036 - dev.py runs on whatever python3 is
        sys.exit(f"clampdown needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    installed = _installed()
    if extra in installed:
        return
    if not (BIN / "python").exists():
        print("creating .venv", flush=True)
        venv.EnvBuilder(with_pip=False).create(VENV)  # ensurepip costs 10 s; pip comes below
    started = time.monotonic()
    pip = _pip()
    uv = None if os.environ.get("DEV_INSTALLER") == "pip" else _uv(pip)
    print(f"installing clampdown[{extra}] with {'uv' if uv else 'pip'} "
          "(pinned by constraints.txt)", flush=True)  # fmt: skip
    if uv:
        python = ["--python", str(BIN / "python")]
        install = [uv, "pip", "install", "-q", *python, "--build-constraint", "constraints.txt"]
        if sys.dont_write_bytecode:
            # PYTHONDONTWRITEBYTECODE: imports write no .pyc, so every process would compile
            # what it imports (a drill's: 9.5 CPU-s against 5.2); compile now, as pip does
            install.append("--compile-bytecode")
    else:
        install = [*pip, "install", *QUIET]
    subprocess.run([*install, "-c", "constraints.txt", "-e", f".[{extra}]"], cwd=ROOT, check=True)
    STAMP.write_text(" ".join([_fingerprint(), *sorted(installed | {extra})]))
    print(f"installed in {time.monotonic() - started:.1f} s", flush=True)


def _pip() -> list[str]:
    """A pip that installs into .venv: python3's own, pointed at it (pip 22.3 or newer), or
    one that ensurepip puts into .venv when python3 has none."""
    try:
        version = tuple(int(part) for part in metadata.version("pip").split(".")[:2])
    except (metadata.PackageNotFoundError, ValueError):
        version = ()
    if version >= (22, 3):  # --python: install into another environment
        return [sys.executable, "-m", "pip", "--python", str(BIN / "python")]
    subprocess.run([str(BIN / "python"), "-m", "ensurepip", "-q"], check=True)
    return [str(BIN / "python"), "-m", "pip"]


def _uv(pip: list[str]) -> str | None:
    """uv in .venv (installed by ``pip`` at the version constraints.txt pins, again when
    the pin moved), or None when it cannot be installed here: then pip installs everything."""
    uv = BIN / "uv"
    if not _uv_is_pinned(uv):
        done = subprocess.run([*pip, "install", *QUIET, "-c", "constraints.txt", "uv"], cwd=ROOT)
        if done.returncode != 0:
            print("uv could not be installed; installing with pip instead", flush=True)
    return str(uv) if uv.exists() else None


def _uv_is_pinned(uv: Path) -> bool:
    """``uv --version`` says the version constraints.txt pins (``uv 0.13.9 (…)``)."""
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    pinned = next((line.split("==", 1)[1].strip() for line in lines if line.startswith("uv==")), "")
    if not pinned or not uv.exists():
        return False
    said = subprocess.run([str(uv), "--version"], capture_output=True, text=True).stdout.split()
    return said[1:2] == [pinned]


def compile_sources() -> None:
    """Write the project's bytecode when PYTHONDONTWRITEBYTECODE keeps Python from doing it.

    Then no process writes .pyc files, so every process a drill or the suite starts would
    compile again each module of the project it imports: ~6 % of the instructions of
    importing the respond flow (callgrind: 6.16 G uncompiled, 5.80 G compiled), some 80 ms
    of CPU per ``clampdown`` process, hundreds of times in a suite run. ``compileall``
    writes regardless of the variable, as setup does for .venv's packages (uv
    ``--compile-bytecode``); files already compiled are only compared by time stamp. The
    .pyc files go where Python's own would (``__pycache__``, ignored by git)."""
    if sys.dont_write_bytecode:
        python = str(BIN / "python")
        subprocess.run([python, "-m", "compileall", "-q", "-j", "0", *SOURCES], cwd=ROOT)


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # telemetry fails offline
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def run(*argv: str) -> int:
    return subprocess.run(list(argv), cwd=ROOT, env=environment()).returncode


def main(task: str) -> int:
    setup(EXTRAS.get(task, "test"))
    if task == "setup":
        return 0
    compile_sources()
    if task == "demo":
        return run(str(BIN / "clampdown"), "drill", *sys.argv[2:])
    if task == "test":
        lint = run(str(BIN / "ruff"), "check", ".")
        layers = run(str(BIN / "lint-imports"))
        tests = run(str(BIN / "python"), "-m", "pytest", "-q", *PARALLEL, *sys.argv[2:])
        return lint or layers or tests
    if task == "unit":
        return run(str(BIN / "python"), "-m", "pytest", "-q", "tests/unit", *sys.argv[2:])
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "help"))
