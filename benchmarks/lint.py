#!/usr/bin/env python3
"""What ``clampdown lint runbooks/`` costs as a fresh process, next to its floor.

Prints figures, never asserts them. Each figure is the median (and the fastest) of
``--runs`` fresh processes, the commands taking turns so that load from anything else
on the machine falls on all of them alike; wall time, and CPU time (user + system of
the child), which load on a shared machine disturbs less:

* ``python -c pass``: the interpreter's start-up (with this venv's site-packages);
* ``python -c "import yaml, pydantic, jinja2"``: the libraries lint cannot do without;
* ``clampdown lint runbooks/ (cold)``: the console script, as an editor or a pre-commit
  hook runs it (lint's own start-up: no Typer, no Rich), each time with an empty verdict
  cache (a new ``XDG_CACHE_HOME``: it lints and writes its entry);
* ``clampdown lint runbooks/ (cache hit)``: the same, the files unchanged since the last
  lint: the verdict replayed from the cache (``clampdown.app.lint_cache``) after checking
  every input again (the script checks that it is a replay: the entry is read, not
  written again);
* ``clampdown lint --no-cache runbooks/``: the lint without its cache (neither read nor
  written: what a cold lint costs without recording its inputs);
* ``python -m clampdown.app.cli lint runbooks/``: the same lint through the Typer app
  (what every other command pays to start), for comparison;
* with ``--before DIR`` (an earlier tree, e.g. from ``git archive <commit> | tar -x -C
  DIR``): that tree's console script on the same library, its packages put first on
  the path, each time with an empty verdict cache (a cold lint, to compare with the
  cold figure; before session 25 it read the user's own cache, so it was a cache hit).

Every command runs once before timing, with bytecode writing on, so no figure includes
compiling a module (PYTHONDONTWRITEBYTECODE is dropped from the children's environment).
The script also checks that the console script (cold and from the cache) and the Typer
app print the same output and exit with the same code. Figures are also given as
multiples of the floor's median. The load average is printed before and after. With
``--instructions`` it also counts the instructions each command executes, once each
under ``valgrind --tool=callgrind``: a figure that load from other work on the machine
does not change.

    python benchmarks/lint.py [--runs 21] [--before DIR] [--library runbooks/] [--instructions]

Target on the 2-core reference machine (docs/benchmarks.md): lint < 250 ms wall.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("typer", "rich", "click", "boto3", "botocore", "slack_sdk", "prefect")
# what a lint through the console script's entry point leaves imported
IMPORTED = """
import sys
wanted = set(sys.argv[2:])
sys.argv = ["clampdown", "lint", sys.argv[1]]
from clampdown.app.entry import main
try:
    main()
except SystemExit:
    pass
heavy = {m.split(".")[0] for m in sys.modules} & wanted
sys.stderr.write(",".join(sorted(heavy)) or "none")
"""


def child_env(extra_path: list[Path] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if extra_path:
        env["PYTHONPATH"] = os.pathsep.join(str(p) for p in extra_path)
    return env


def console_script(tree: Path) -> tuple[str, str]:
    """(module, function) of the ``clampdown`` console script declared by ``tree``."""
    scripts = tomllib.loads((tree / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, function = scripts["clampdown"].partition(":")
    return module, function


def measure(
    argv: list[str], env: dict[str, str]
) -> tuple[float, float, subprocess.CompletedProcess[str]]:
    """(wall s, child CPU s, result) of one fresh process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done


def replays(argv: list[str], env: dict[str, str]) -> str:
    """Whether ``argv`` (a console-script lint) replays its cache entry: it is there after a
    lint, and the next lint leaves the same file (a miss writes a new one and renames it)."""
    folder = Path(env["XDG_CACHE_HOME"]) / "clampdown" / "lint"
    measure(argv, env)  # the entry (written by the warm-up, or by this lint)
    before = {p.name: p.stat().st_ino for p in folder.glob("*.json")}
    measure(argv, env)
    after = {p.name: p.stat().st_ino for p in folder.glob("*.json")}
    return "yes" if before and before == after else f"NO ({len(before)} entries before)"


def instructions(argv: list[str], env: dict[str, str]) -> int | None:
    """Instructions one fresh process of ``argv`` executes (callgrind), None without valgrind."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        return None
    counted = subprocess.run(
        [valgrind, "--tool=callgrind", "--callgrind-out-file=/dev/null", *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    found = re.search(r"Collected : (\d+)", counted.stderr)
    return int(found.group(1)) if found else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=21, help="fresh processes per command")
    parser.add_argument("--library", default="runbooks/", help="what lint checks")
    parser.add_argument("--before", type=Path, help="an earlier clampdown tree to compare")
    parser.add_argument(
        "--instructions", action="store_true", help="also count instructions (callgrind)"
    )
    args = parser.parse_args()

    python = sys.executable
    script = str(Path(python).with_name("clampdown"))
    caches = tempfile.TemporaryDirectory(prefix="lint-bench-")
    env = {**child_env(), "XDG_CACHE_HOME": str(Path(caches.name) / "kept")}
    env.pop("CLAMPDOWN_LINT_CACHE", None)

    def empty_cache() -> dict[str, str]:
        return {**env, "XDG_CACHE_HOME": tempfile.mkdtemp(dir=caches.name)}

    def same(value: dict[str, str]) -> Callable[[], dict[str, str]]:
        return lambda: value

    floor = 'python -c "import yaml, pydantic, jinja2"'
    cold = f"clampdown lint {args.library} (cold)"
    hit = f"clampdown lint {args.library} (cache hit)"
    commands: dict[str, tuple[list[str], Callable[[], dict[str, str]]]] = {
        "python -c pass": ([python, "-c", "pass"], same(env)),
        floor: ([python, "-c", "import yaml, pydantic, jinja2"], same(env)),
        cold: ([script, "lint", args.library], empty_cache),
        hit: ([script, "lint", args.library], same(env)),
        f"clampdown lint --no-cache {args.library}": (
            [script, "lint", "--no-cache", args.library],
            same(env),
        ),
        f"python -m clampdown.app.cli lint {args.library} (Typer)": (
            [python, "-m", "clampdown.app.cli", "lint", args.library],
            same(env),
        ),
    }
    if args.before:
        tree = args.before.resolve()
        module, function = console_script(tree)
        code = f"import sys; sys.argv[0] = 'clampdown'; from {module} import {function}; "
        code += f"{function}()"
        before_env = child_env([tree, tree / "integrations", tree / "flows"])
        before_env.pop("CLAMPDOWN_LINT_CACHE", None)

        def before_cold() -> dict[str, str]:  # an empty verdict cache, as for "cold"
            return {**before_env, "XDG_CACHE_HOME": tempfile.mkdtemp(dir=caches.name)}

        commands[f"clampdown lint {args.library} (--before {args.before}, cold)"] = (
            [python, "-P", "-c", code, "lint", args.library],
            before_cold,
        )

    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
    outputs: dict[str, tuple[int, str]] = {}
    for name, (argv, child) in commands.items():  # warm-up: bytecode written, caches warm
        _, _, done = measure(argv, child())
        outputs[name] = (done.returncode, done.stdout)
    replayed = replays(commands[hit][0], env)
    for _ in range(args.runs):
        for name, (argv, child) in commands.items():
            wall, cpu, _ = measure(argv, child())
            results[name].append((wall, cpu))

    print(f"{args.runs} fresh processes each, taking turns; milliseconds")
    print(
        f"{'command':<62} {'wall median':>11} {'wall min':>9} {'CPU median':>11} "
        f"{'x floor wall':>12} {'x floor CPU':>11}"
    )
    medians = {
        name: (
            statistics.median(w * 1000 for w, _ in samples),
            statistics.median(c * 1000 for _, c in samples),
        )
        for name, samples in results.items()
    }
    for name, samples in results.items():
        wall, cpu = medians[name]
        print(
            f"{name:<62} {wall:>11.1f} {min(w for w, _ in samples) * 1000:>9.1f} {cpu:>11.1f} "
            f"{wall / medians[floor][0]:>12.2f} {cpu / medians[floor][1]:>11.2f}"
        )
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.instructions:
        counts = {name: instructions(argv, child()) for name, (argv, child) in commands.items()}
        print("instructions executed, one process each (valgrind --tool=callgrind):")
        for name, count in counts.items():
            if count is None:
                print(f"{name:<62} (valgrind not found)")
                continue
            base = counts[floor]
            ratio = f"{count / base:5.2f}x the yaml/pydantic/jinja2 floor" if base else ""
            print(f"{name:<62} {count / 1e6:9.0f} M  {ratio}")
    heavy = measure([python, "-c", IMPORTED, args.library, *HEAVY], empty_cache())[2].stderr
    print(f"imported by a cold lint through the console script, of {', '.join(HEAVY)}: {heavy}")
    print(f"the cache hit replayed its entry (read, not written again): {replayed}")
    typer = outputs[f"python -m clampdown.app.cli lint {args.library} (Typer)"]
    agree = "yes" if outputs[cold] == typer == outputs[hit] else "NO"
    print(f"cold, cache hit and Typer app: same output and exit code ({typer[0]}): {agree}")
    print("target: clampdown lint < 250 ms wall on the 2-core reference machine")
    caches.cleanup()


if __name__ == "__main__":
    main()
