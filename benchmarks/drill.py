#!/usr/bin/env python3
"""What ``clampdown drill`` costs, and where: the drill's wall and CPU time next to
baselines measured in the same run, rounds interleaved so machine load hits all alike.

Prints figures, never asserts them. Each round measures, in fresh processes:

* **API alone**: a process that starts a Prefect API on the warm drills database and
  exits (what a drill pays before its alert when no drills' API is up);
* **drill, no API up**: ``clampdown drill NAME`` as a user runs it when no drills' API
  runs: it starts the drills' home's resident API and leaves it up (its CPU is the API's
  own process, detached: not in the drill's figure; printed apart, for the round);
* **drill, resident API up**: the same command again, using the API the first left;
* **drill, standing API**: the same command while a standing drills' API of the same
  ``CLAMPDOWN_HOME`` is up (``clampdown.app.drill.world.standing_drill_prefect``, as the
  test session runs its drills);
* **story**: from the ledgers of each drill run, the first ``run.start`` to the last
  ``run.end``: the part a drill must wait for whatever the harness does (scripted
  approvals after N seconds, injects, the runbook's own steps); and the rest of each
  drill's wall time around it: its process's start to the first ``run.start`` (imports,
  the simulated world, serve, the alert), and the last ``run.end`` to its exit (the flow's
  last uploads, scoring, the report, the stop).

Once, before the rounds, the first drill of an empty ``CLAMPDOWN_HOME`` (a new drills
database, migrated) is timed.

With ``--tree OLD_CHECKOUT`` (``git archive <commit> | tar -x -C /tmp/old``; repeat it for
several) each round also runs the drills from that checkout (its packages first on
``PYTHONPATH``, its ``runbooks/``), right after this tree's: a before/after on the same
machine load. ``--only-standing`` measures only the drills with a standing API (no API
start in the round: shorter rounds, so more of them fit a quiet spell of the machine). A
tree from before the resident drills' API starts an API of its own for every drill without
a standing one (its "no API up" figure includes that server's CPU); it has no "resident
API up" figure (a tree whose drill leaves a resident API has one, measured right after).
A drill that runs to its end but misses an objective (exit 1: on a loaded machine, a
scripted time limit can be missed) is timed all the same and listed at the end; any other
failure stops the benchmark. The standing-API drills run in this tree's order (this tree,
then each ``--tree``) in odd rounds and in the reverse order in even ones, so that no tree
is always the first drill of its round.

    python benchmarks/drill.py [--runs 3] [--drill model-theft] [--tree OLD_CHECKOUT]...
                               [--only-standing]

Each tree's own packages are compiled to bytecode first (``compileall``): with
``PYTHONDONTWRITEBYTECODE`` set (as in this project's sessions) a fresh checkout, or a module
edited since its ``.pyc`` was written, would be compiled again by every drill, which a user's
second drill does not do (it cost a drill up to a few CPU-s here).

CPU is user+sys of the process and everything it waited for (an API server it started
and stopped too, the simulated AWS's process; not a resident API it leaves, nor the
standing API, which is this script's), less noisy than wall time on a shared machine;
the drill's own process's part is printed apart (on one GIL, it bounds the drill's wall
time from below, where the simulated AWS's process runs on another core).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

API_ALONE = """
import sys
from pathlib import Path
from clampdown.app.drill.world import _drills_settings, drill_prefect_home
from clampdown_flows.prefect_api import local_api
home = drill_prefect_home(Path(sys.argv[1]) / "drills" / "api-alone").resolve()
with _drills_settings(home), local_api(timeout=240):
    pass
"""


# `clampdown drill` as its console script runs it, printing at its very end the CPU of the
# drill's own process apart from its children's (the simulated AWS runs in one of its own)
DRILL = """
import atexit, resource, sys
def own():
    r = resource.getrusage(resource.RUSAGE_SELF)
    print(f"BENCH-OWN-CPU {r.ru_utime + r.ru_stime:.3f}", file=sys.stderr, flush=True)
atexit.register(own)
sys.argv = ["clampdown", *sys.argv[1:]]
from clampdown.app.entry import main
main()
"""
OWN: dict[str, list[float]] = {}  # label -> the drill process's own CPU, per run
MISSED: list[str] = []  # drills that ran to their end with an objective missed (exit 1)
SPAN: dict[str, float] = {}  # the last process timed: its start and end (epoch seconds)


def timed(
    argv: list[str], env: dict[str, str], cwd: Path = ROOT, label: str = ""
) -> tuple[float, float]:
    """Wall and CPU (user+sys, children included) seconds of one process; it must succeed.
    A drill's own process's CPU (see DRILL) goes to OWN[label]."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    SPAN["start"] = time.time()
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    SPAN["end"] = time.time()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode == 1 and label:  # a drill that ran to its end and missed an objective
        MISSED.append(f"{label}: {_missed(done.stderr)}")
    elif done.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    for line in done.stderr.splitlines():
        if line.startswith("BENCH-OWN-CPU "):
            OWN.setdefault(label, []).append(float(line.split()[1]))
    return wall, cpu


def _missed(stderr: str) -> str:
    """The objectives a drill's output says it missed."""
    lines = [line.strip() for line in stderr.splitlines() if line.lstrip().startswith("✘")]
    return "; ".join(lines) or "an objective"


def compiled(tree: Path) -> None:
    """Write fresh bytecode for a tree's own packages (see the module docstring)."""
    import compileall

    for package in ("clampdown", "flows", "integrations"):
        compileall.compile_dir(tree / package, quiet=1)


def tree_path(tree: Path) -> str:
    """``PYTHONPATH`` of a tree's drills: its own packages first (the root, flows/,
    integrations/), so a copy of a checkout (``git archive``) runs its own code, not the
    installed checkout's."""
    return os.pathsep.join(str(tree / p) for p in ("", "flows", "integrations"))


def before_trees(trees: list[Path], env: dict[str, str]) -> list[tuple[str, dict[str, str], Path]]:
    """Each ``--tree``: its label, its environment (its packages first), its folder; every
    tree's packages (this one's too) compiled first."""
    compiled(ROOT)
    befores = []
    for tree in (t.resolve() for t in trees):
        compiled(tree)
        befores.append((f", before ({tree.name})", {**env, "PYTHONPATH": tree_path(tree)}, tree))
    return befores


def story_seconds(home: Path, seen: set[Path]) -> float:
    """First run.start to last run.end of the drill that just ran (the new workspace); its
    process's start to that first run.start, and that last run.end to its exit, go to
    SPAN["head"] and SPAN["tail"]."""
    from clampdown.core.ledger import read

    workspaces = {p for p in (home / "drills").iterdir() if (p / "runs").is_dir()} - seen
    (workspace,) = workspaces
    seen.add(workspace)
    starts, ends = [], []
    for ledger in (workspace / "runs").glob("*/ledger.jsonl"):
        records = read(ledger)
        starts.append(_epoch(records[0]["ts"]))
        ends += [_epoch(r["ts"]) for r in records if r["type"] == "run.end"]
    SPAN["head"] = min(starts) - SPAN["start"]
    SPAN["tail"] = SPAN["end"] - max(ends)
    return max(ends) - min(starts)


def _epoch(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def resident_cpu(drills_dir: Path) -> float | None:
    """CPU seconds of the drills' resident API so far (None: none runs), from /proc."""
    from clampdown.app.drill.world import find_drills_api

    api = find_drills_api(drills_dir)
    if api is None:
        return None
    fields = Path(f"/proc/{api.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--drill", default="model-theft")
    parser.add_argument(
        "--tree",
        type=Path,
        action="append",
        default=[],
        help="also run the drills of this checkout",
    )
    parser.add_argument(
        "--only-standing", action="store_true", help="only the drills with a standing API"
    )
    args = parser.parse_args()

    from clampdown.app.drill.world import (
        find_drills_api,
        standing_drill_prefect,
        stop_drills_api,
    )
    from clampdown.core.home import Home

    home = Path(tempfile.mkdtemp(prefix="clampdown-bench-drill-"))
    drills_dir = Home(home).drills_dir
    env = {
        **os.environ,
        "CLAMPDOWN_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PYTHONPATH": tree_path(ROOT),  # this tree's packages, also when it is not the install
    }
    env.pop("PREFECT_API_URL", None)
    drill = [sys.executable, "-c", DRILL, "drill", args.drill]
    befores = before_trees(args.tree, env)
    seen: set[Path] = set()
    results: dict[str, list[tuple[float, float]]] = {}
    stories: dict[str, list[float]] = {}
    resident: list[float] = []

    def measure(label: str, variant_env: dict[str, str], cwd: Path, tree: str = "") -> None:
        results.setdefault(label + tree, []).append(timed(drill, variant_env, cwd, label + tree))
        stories.setdefault("story" + tree, []).append(story_seconds(home, seen))
        stories.setdefault("start to first run.start" + tree, []).append(SPAN["head"])
        stories.setdefault("last run.end to exit" + tree, []).append(SPAN["tail"])

    try:
        if not args.only_standing:
            first = timed(drill, env)
            stories["story"] = [story_seconds(home, seen)]
            print(f"first drill of an empty home: {first[0]:.1f} s wall, {first[1]:.1f} s CPU")
            stop_drills_api(drills_dir)
        for round_ in range(1, args.runs + 1):
            if not args.only_standing:
                results.setdefault("API alone", []).append(
                    timed([sys.executable, "-c", API_ALONE, str(home)], env)
                )
                measure("drill, no API up", env, ROOT)
                measure("drill, resident API up", env, ROOT)
                cpu = resident_cpu(drills_dir)
                if cpu is not None:
                    resident.append(cpu)
                stop_drills_api(drills_dir)
                for label, before_env, tree in befores:
                    measure("drill, no API up", before_env, tree, label)
                    if find_drills_api(drills_dir) is not None:  # it left a resident API
                        measure("drill, resident API up", before_env, tree, label)
                        stop_drills_api(drills_dir)
            with standing_drill_prefect(drills_dir):
                order = [("", env, ROOT), *befores]
                if round_ % 2 == 0:  # every other round the --tree checkouts go first
                    order.reverse()
                for label, variant_env, tree in order:
                    measure("drill, standing API", variant_env, tree, label)
            last = {k: v[-1] for k, v in results.items()}
            print(f"round {round_}: " + json.dumps(last), flush=True)
    finally:
        stop_drills_api(drills_dir)

    summary(args, results, resident, stories)


def summary(
    args: argparse.Namespace,
    results: dict[str, list[tuple[float, float]]],
    resident: list[float],
    stories: dict[str, list[float]],
) -> None:
    """The medians of every figure, and the drills that missed an objective."""
    load = os.getloadavg()[0]
    print(f"\n{args.drill}, {args.runs} round(s), median (1-min load at the end {load:.1f}):")
    for label, values in results.items():
        wall = statistics.median(v[0] for v in values)
        cpu = statistics.median(v[1] for v in values)
        own = OWN.get(label)
        apart = f"  ({statistics.median(own):.1f} s in the drill's own process)" if own else ""
        print(f"  {label:<44} {wall:6.1f} s wall  {cpu:6.1f} s CPU{apart}")
    if resident:
        print(f"  {'the resident API (2 drills, per round)':<44} {'':>13}  "
              f"{statistics.median(resident):6.1f} s CPU")  # fmt: skip
    for label, values in stories.items():
        print(f"  {label + ' (from ledgers)':<44} {statistics.median(values):6.2f} s wall")
    for missed in MISSED:  # timed all the same: the drill ran its whole story
        print(f"  missed an objective (exit 1, timing kept): {missed}")


if __name__ == "__main__":
    main()
