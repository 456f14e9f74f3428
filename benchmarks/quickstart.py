#!/usr/bin/env python3
"""The README's quick start from a fresh clone: ``python3 dev.py demo``, split into the
install and the drill, for each installer, measured in the same run.

Prints figures, never asserts them. Each round makes a fresh ``git clone`` of this
repository's committed HEAD per variant and times ``python3 dev.py demo`` in it, the
variants taking turns so machine load meets each alike:

* **uv** — dev.py as committed (uv from PyPI into ``.venv``, then ``uv pip install``);
* **pip** — the same dev.py with ``DEV_INSTALLER=pip`` (its fallback when uv cannot be had);
* **before** (with ``--before REF``) — a clone checked out at ``REF``: that commit's dev.py.

Nothing is cached between variants: uv gets an empty ``UV_CACHE_DIR`` and pip runs with
``PIP_NO_CACHE_DIR=1``, so every install downloads what it needs, as on a new machine.
The drill runs on an empty ``CLAMPDOWN_HOME`` (a new machine: its drills' Prefect
database is created and migrated) unless ``--home DIR`` names one to share (warm).

The install is timed from dev.py's start to its ``installed in`` line (venv, installer,
packages); the drill is the rest (``clampdown drill``: start-up, seeding, the drills'
Prefect API, the story, the report, exit). Also printed: the versions each variant
installed, compared (the constraints must give the same set whatever installs them).

    python3 benchmarks/quickstart.py [--rounds 1] [--before REF] [--home DIR] [--variants uv pip]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def clone(dest: Path, ref: str | None) -> None:
    subprocess.run(["git", "clone", "-q", str(ROOT), str(dest)], check=True)
    if ref:
        subprocess.run(["git", "-C", str(dest), "checkout", "-q", ref], check=True)


def demo(checkout: Path, env: dict[str, str]) -> tuple[float, float, str, int]:
    """Wall seconds of the install and of the drill, the last lines of the output, and
    dev.py's exit code.

    Timed to dev.py's exit, as a shell's prompt would come back: not to the end of its
    output, which a child still stopping (the drills' Prefect server) may hold open."""
    started = time.perf_counter()
    installed_at: list[float] = []
    lines: list[str] = []
    proc = subprocess.Popen(
        [sys.executable, "dev.py", "demo"],
        cwd=checkout,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "WARNING: Location" in line:  # pip on this machine: a missing local index
                continue
            lines.append(line.rstrip())
            # the older dev.py prints no "installed in" line: then the drill's first line
            if not installed_at and line.startswith(("installed in", "Drill ")):
                installed_at.append(time.perf_counter())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    code = proc.wait()
    total = time.perf_counter() - started
    reader.join(30)
    install = (installed_at or [started])[0] - started
    return install, total - install, "\n".join(lines[-3 if code == 0 else -12 :]), code


def versions(checkout: Path) -> set[str]:
    """name==version of every distribution in the checkout's .venv (clampdown left out)."""
    code = (
        "import importlib.metadata as m;"
        "print('\\n'.join(sorted({(d.metadata['Name'] or '').lower().replace('_', '-') + '=='"
        " + d.version for d in m.distributions()})))"
    )
    out = subprocess.run(
        [str(checkout / ".venv" / "bin" / "python"), "-c", code],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {line for line in out.split() if not line.startswith("clampdown==")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--before", metavar="REF", help="also time dev.py as it was at REF")
    parser.add_argument("--home", type=Path, help="a CLAMPDOWN_HOME to share (default: empty)")
    parser.add_argument("--variants", nargs="+", default=["uv", "pip"], choices=["uv", "pip"])
    parser.add_argument("--keep", action="store_true", help="keep the clones (printed)")
    args = parser.parse_args()

    variants: list[tuple[str, str | None, dict[str, str]]] = [
        (name, None, {"DEV_INSTALLER": name}) for name in args.variants
    ]
    if args.before:
        variants.append((f"before ({args.before})", args.before, {}))
    work = Path(tempfile.mkdtemp(prefix="clampdown-bench-quickstart-"))
    results: dict[str, list[tuple[float, float]]] = {name: [] for name, _, _ in variants}
    installed: dict[str, set[str]] = {}
    for round_ in range(1, args.rounds + 1):
        for name, ref, extra in variants:
            slug = name.split()[0]
            checkout = work / f"{slug}-{round_}"
            clone(checkout, ref)
            env = {
                k: v
                for k, v in os.environ.items()
                if not k.startswith(("CLAMPDOWN_", "VIRTUAL_ENV"))
            }
            env.update(extra)
            env["UV_CACHE_DIR"] = str(work / f"uv-cache-{slug}-{round_}")
            env["PIP_NO_CACHE_DIR"] = "1"
            env["CLAMPDOWN_HOME"] = str(args.home or work / f"home-{slug}-{round_}")
            env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
            load = os.getloadavg()[0]
            install, drill, tail, code = demo(checkout, env)
            installed[name] = versions(checkout)
            # the demo's drill leaves the drills' Prefect API up for the next drill: not here
            subprocess.run(
                [str(checkout / ".venv" / "bin" / "clampdown"), "prefect-api", "stop"],
                env=env,
                capture_output=True,
                check=False,
            )
            failed = f"; dev.py demo FAILED (exit {code}): not counted" if code else ""
            if not code:
                results[name].append((install, drill))
            print(
                f"round {round_} {name}: install {install:.1f} s, drill {drill:.1f} s, "
                f"total {install + drill:.1f} s (1-min load {load:.1f} before){failed}",
                flush=True,
            )
            print("  " + tail.replace("\n", "\n  "), flush=True)
            if not args.keep:
                shutil.rmtree(checkout, ignore_errors=True)
                shutil.rmtree(env["UV_CACHE_DIR"], ignore_errors=True)
    print(f"\nmedians of {args.rounds} round(s), 1-min load at the end {os.getloadavg()[0]:.1f}:")
    for name, values in results.items():
        if not values:
            print(f"  {name:<22} no successful run")
            continue
        install = statistics.median(v[0] for v in values)
        drill = statistics.median(v[1] for v in values)
        total = install + drill
        print(f"  {name:<22} install {install:6.1f} s  drill {drill:6.1f} s  total {total:6.1f} s")
    names = list(installed)
    for other in names[1:]:
        extra_pkgs = sorted(installed[other] - installed[names[0]])
        missing = sorted(installed[names[0]] - installed[other])
        same = "the same versions" if not extra_pkgs and not missing else "DIFFERENT sets"
        print(f"  {other} vs {names[0]}: {same}; only in {other}: {extra_pkgs or '-'}; "
              f"only in {names[0]}: {missing or '-'}")  # fmt: skip
    if args.keep:
        print(f"clones in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
