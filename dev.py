#!/usr/bin/env python3
"""One-command tasks for a fresh clone; needs only Python 3.11+.

    python3 dev.py demo    set up .venv, then run the model-theft drill end to end (simulated AWS)
    python3 dev.py test    set up .venv, then run ruff, lint-imports and the whole test suite
    python3 dev.py unit    set up .venv, then run tests/unit only (no server, no network; seconds)
    python3 dev.py setup   only create/refresh .venv

Setup installs the package with its test extra, pinned by constraints.txt, so a
fresh machine gets the versions the suite was last run with.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".clampdown-installed"


def _fingerprint() -> str:
    data = b"".join((ROOT / name).read_bytes() for name in ("pyproject.toml", "constraints.txt"))
    return hashlib.sha256(data).hexdigest()


def setup() -> None:
    """Create .venv and install; skipped when pyproject and constraints have not changed."""
    if sys.version_info < (3, 11):  # noqa: UP036 - dev.py runs on whatever python3 is
        sys.exit(f"clampdown needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    if STAMP.exists() and STAMP.read_text() == _fingerprint():
        return
    if not (BIN / "python").exists():
        print("creating .venv", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    pip = [str(BIN / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    print("installing clampdown and its test tools (pinned by constraints.txt)", flush=True)
    subprocess.run([*pip, "-c", "constraints.txt", "-e", ".[test]"], cwd=ROOT, check=True)
    STAMP.write_text(_fingerprint())


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # telemetry fails offline
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def run(*argv: str) -> int:
    return subprocess.run(list(argv), cwd=ROOT, env=environment()).returncode


def main(task: str) -> int:
    setup()
    if task == "setup":
        return 0
    if task == "demo":
        return run(str(BIN / "clampdown"), "drill", *sys.argv[2:])
    if task == "test":
        lint = run(str(BIN / "ruff"), "check", ".")
        layers = run(str(BIN / "lint-imports"))
        tests = run(str(BIN / "python"), "-m", "pytest", "-q", *sys.argv[2:])
        return lint or layers or tests
    if task == "unit":
        return run(str(BIN / "python"), "-m", "pytest", "-q", "tests/unit", *sys.argv[2:])
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "help"))
