#!/usr/bin/env python3
"""How fast clampdown starts, and how complete Prefect's record of a run is (issue 15).

Prints figures, never asserts them; each next to a baseline measured in the same run,
interleaved with it (one of each, then the next pair), so both meet the same machine:

* import of the ``respond`` flow (``import clampdown_flows.respond`` in a fresh
  process) next to ``import prefect``;
* ``clampdown run`` of a one-step runbook, end to end as a fresh process, on a warm
  Prefect home: with the home's resident local API already up (every run after the
  first), and with none (``clampdown prefect-api stop`` before each run: a server
  start), next to a stock one-task Prefect flow in a fresh process (Prefect starts its
  own temporary server on its own warm home);
* the first start of the local API on an empty Prefect home with no template in the
  user's cache (Prefect's migrations), once; then ``clampdown run`` of the one-step
  runbook on new, empty Prefect homes (each starts its resident API on a copy of the
  template that first start kept: :mod:`clampdown_flows.prefect_template`);
* Prefect's record: a ``--record-steps``-step chain run by ``clampdown run``, then the
  flow run's task runs read from the API: how many are there, in their final state.

    python benchmarks/startup.py [--runs 5] [--record-steps 100] [--tree OLD_CHECKOUT]
    python benchmarks/startup.py --before OLD_CHECKOUT [--runs 5]

``--tree`` runs clampdown from another checkout (``git archive <commit> | tar -x -C
/tmp/old``) instead of this one; a tree without the resident API gets no "server started"
figure (every run starts one). ``--before`` runs both, interleaved (one process of the
old tree, one of this, for each figure and sample), so before and after meet the same
machine; each gets Prefect homes of its own, and both share one template cache.
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
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
# the console script's own entry point (`clampdown`), as a user runs it
CLAMPDOWN = [PYTHON, "-m", "clampdown.app.entry"]

STOCK_FLOW = """
from prefect import flow, task

@task
def one() -> int:
    return 1

@flow
def stock() -> int:
    return one()

stock()
"""

# A local API started and stopped on an empty home: Prefect's migrations, without the
# 60 s limit a command gives a server start (a loaded machine can take longer).
WARM_UP = """
from clampdown_flows.prefect_api import local_api

with local_api(timeout=900):
    pass
"""

READ_RECORD = """
import json
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterName
from clampdown_flows.prefect_api import local_api

with local_api(timeout=900):
    with get_client(sync_client=True) as client:
        (flow_run,) = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(like_=__import__("sys").argv[1]))
        )
        tasks, page = [], None
        while page is None or len(page) == 200:
            page = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id])),
                limit=200,
                offset=len(tasks),
            )
            tasks.extend(page)
print(json.dumps([t.state_type.value for t in tasks]))
"""


ROOT_PATHS: list[str] = []  # --tree: the checkout's packages first on sys.path


def tree_paths(root: Path) -> list[str]:
    """A checkout's packages, first on ``sys.path`` (``PYTHONPATH``)."""
    return [str(root / p) for p in ("", "flows", "integrations")]


def environment(
    prefect_home: Path, clampdown_home: Path, paths: list[str] | None = None
) -> dict[str, str]:
    """The children's environment. Bytecode writing is on (PYTHONDONTWRITEBYTECODE
    dropped): with it off, every process of a ``--tree`` checkout, or of a tree whose
    modules nothing compiled, compiles each module it imports, and that is timed.
    ``paths``: the packages of the tree to run (else ``--tree``'s, else the installed)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PREFECT_API_") and k != "PYTHONDONTWRITEBYTECODE"
    }
    paths = ROOT_PATHS if paths is None else paths
    if paths:
        env["PYTHONPATH"] = os.pathsep.join(paths)
    env.update(
        PREFECT_HOME=str(prefect_home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL="CRITICAL",
        CLAMPDOWN_HOME=str(clampdown_home),
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="900",  # the stock flow's server
        XDG_CACHE_HOME=str(prefect_home.parent / "cache"),  # the template: empty at first
    )
    return env


def wall(argv: list[str], env: dict[str, str], cwd: Path | None = None) -> tuple[float, float]:
    """Wall time and CPU time (user + system, the process and the children it waited for)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd or ROOT, env=env, capture_output=True, text=True)
    took = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{proc.stdout}\n{proc.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return took, cpu


def resident_cpu(env: dict[str, str]) -> float:
    """CPU seconds the home's resident local API has used so far (0 when none runs)."""
    try:
        state = json.loads((Path(env["PREFECT_HOME"]) / "clampdown-api.json").read_text())
        fields = Path(f"/proc/{state['pid']}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, ValueError, KeyError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed_run(argv: list[str], env: dict[str, str], cwd: Path | None = None) -> tuple[float, float]:
    """A ``clampdown`` command's wall time, and CPU including the resident server's share."""
    before = resident_cpu(env)
    took, cpu = wall(argv, env, cwd)
    return took, cpu + max(resident_cpu(env) - before, 0.0)


def chain(name: str, steps: int) -> str:
    lines = ["apiVersion: clampdown/v1", "kind: Runbook"]
    lines.append(f"metadata: {{name: {name}, title: Bench {name}, severity: low}}")
    lines.append("steps:")
    for i in range(steps):
        needs = f", needs: [s{i - 1}]" if i else ""
        lines.append(f"  - {{id: s{i}, uses: core.set_output{needs}, with: {{value: {i}}}}}")
    return "\n".join(lines) + "\n"


def pairs(runs: int, first: Any, second: Any) -> tuple[list[tuple[float, float]], ...]:
    """``runs`` (wall, CPU) figures of each of two zero-argument callables, alternately."""
    a, b = [], []
    for _ in range(runs):
        a.append(first())
        b.append(second())
    return a, b


def median(figures: list[tuple[float, float]]) -> tuple[float, float]:
    return (
        statistics.median(f[0] for f in figures),
        statistics.median(f[1] for f in figures),
    )


def line(label: str, ours: list, base_label: str, base: list) -> None:
    (took, cpu), (base_took, base_cpu) = median(ours), median(base)
    print(
        f"  {label:<42} {took:6.2f} s (CPU {cpu:5.2f} s)   {base_label}: {base_took:6.2f} s "
        f"(CPU {base_cpu:5.2f} s)   wall ratio {took / base_took:4.2f}x"
    )


def startup_figures(
    runs: int, ours: dict, stock: dict, one: Path, stop: list[str], scratch: Path
) -> None:
    """Import and 1-step run figures, each next to its baseline."""
    for warm_up in ("import clampdown_flows.respond", "import prefect"):  # bytecode written
        wall([PYTHON, "-c", warm_up], ours)
    imports = pairs(
        runs,
        lambda: wall([PYTHON, "-c", "import clampdown_flows.respond"], ours),
        lambda: wall([PYTHON, "-c", "import prefect"], ours),
    )
    print(f"import (medians of {runs} fresh processes each; CPU = user + system):")
    line("import clampdown_flows.respond", imports[0], "import prefect", imports[1])

    run_one = [*CLAMPDOWN, "run", str(one)]
    first = wall([PYTHON, "-c", WARM_UP], ours)  # empty home: migrations, no time limit
    wall([PYTHON, "-c", STOCK_FLOW], stock)  # the stock flow's home warmed too
    print(f"1-step run, end to end (medians of {runs} fresh processes; CPU includes")
    print("the Prefect server's, the resident one's share measured from /proc):")
    warm = pairs(
        runs,
        lambda: timed_run(run_one, ours),
        lambda: wall([PYTHON, "-c", STOCK_FLOW], stock),
    )
    line("clampdown run, warm home (resident API up)", warm[0], "stock 1-task flow", warm[1])
    resident = subprocess.run(stop, cwd=ROOT, env=ours, capture_output=True).returncode == 0
    cold = []
    for _ in range(runs if resident else 0):
        wall(stop, ours)
        cold.append(timed_run(run_one, ours))
    if cold:
        line("clampdown run, server started (warm home)", cold, "stock 1-task flow", warm[1])
    else:
        print("  (no resident local API in this tree: each run above started its own server)")
    new_homes = []
    for i in range(runs):  # each on an empty home: the resident API starts on the template
        fresh = environment(scratch / f"prefect-new-{i}", scratch / f"home-new-{i}")
        new_homes.append(timed_run(run_one, fresh))
        subprocess.run(stop, cwd=ROOT, env=fresh, capture_output=True)
    line("clampdown run, first on a new empty home", new_homes, "stock 1-task flow", warm[1])
    print(
        f"  first start of the local API, empty home, no template  {first[0]:6.2f} s "
        f"(CPU {first[1]:5.2f} s, once)"
    )


def compare_trees(
    runs: int, old: Path, one: Path, scratch: Path, imports_only: bool = False
) -> None:
    """``--before``: each figure for the old tree and this one, interleaved sample by sample
    (the old tree's process, then this tree's, alternating which goes first); with
    ``--imports-only`` only the two imports, and respond's as a multiple of Prefect's."""
    trees = {"before": (old, tree_paths(old)), "after": (ROOT, tree_paths(ROOT))}

    def env(name: str, what: str) -> dict[str, str]:
        return environment(
            scratch / f"prefect-{name}-{what}", scratch / f"home-{name}-{what}", trees[name][1]
        )

    def both(sample: Any) -> dict[str, list[tuple[float, float]]]:
        figures: dict[str, list[tuple[float, float]]] = {"before": [], "after": []}
        for i in range(runs):
            for name in ("before", "after") if i % 2 == 0 else ("after", "before"):
                figures[name].append(sample(name, i))
        return figures

    def show(label: str, figures: dict[str, list[tuple[float, float]]]) -> None:
        (b, bc), (a, ac) = median(figures["before"]), median(figures["after"])
        print(
            f"  {label:<42} before {b:6.2f} s (CPU {bc:5.2f})   after {a:6.2f} s "
            f"(CPU {ac:5.2f})   after/before {a / b:4.2f}x"
        )

    stop = [*CLAMPDOWN, "prefect-api", "stop"]
    run_one = [*CLAMPDOWN, "run", str(one)]
    for name, (root, _) in trees.items():  # bytecode written; each tree's template kept
        warm_up(root, env(name, "warm"), imports_only)
    print(f"before: {old}; after: {ROOT} (medians of {runs}, interleaved; CPU = user + system,")
    print("the resident server's share included):")
    figures = {
        module: both(
            lambda name, i, module=module: wall(
                [PYTHON, "-c", f"import {module}"], env(name, "warm"), trees[name][0]
            )
        )
        for module in ("clampdown_flows.respond", "prefect")
    }
    for module, sampled in figures.items():
        show(f"import {module}", sampled)
    ratios(figures["clampdown_flows.respond"], figures["prefect"])
    if imports_only:
        return
    show(
        "clampdown run, warm home (resident API up)",
        both(lambda name, i: timed_run(run_one, env(name, "warm"), trees[name][0])),
    )

    def started(name: str, i: int) -> tuple[float, float]:
        wall(stop, env(name, "warm"), trees[name][0])
        return timed_run(run_one, env(name, "warm"), trees[name][0])

    show("clampdown run, server started (warm home)", both(started))

    def new_home(name: str, i: int) -> tuple[float, float]:
        fresh = env(name, f"new-{i}")
        figure = timed_run(run_one, fresh, trees[name][0])
        subprocess.run(stop, cwd=trees[name][0], env=fresh, capture_output=True)
        return figure

    show("clampdown run, first on a new empty home", both(new_home))
    for name, (root, _) in trees.items():
        subprocess.run(stop, cwd=root, env=env(name, "warm"), capture_output=True)


def warm_up(root: Path, env: dict[str, str], imports_only: bool) -> None:
    """Bytecode written for both imports; unless only they are measured, Prefect's home
    (template) made by a first run."""
    for module in ("clampdown_flows.respond", "prefect"):
        wall([PYTHON, "-c", f"import {module}"], env, root)
    if not imports_only:
        wall([PYTHON, "-c", WARM_UP], env, root)


def ratios(respond: dict[str, list], prefect: dict[str, list]) -> None:
    """respond's import as a multiple of Prefect's, per tree (machine speed cancels)."""
    for name in ("before", "after"):
        (rw, rc), (pw, pc) = median(respond[name]), median(prefect[name])
        print(f"  respond / prefect, {name:<6}: wall {rw / pw:4.2f}x, CPU {rc / pc:4.2f}x")


def record_figure(steps: int, ours: dict, scratch: Path) -> None:
    """How many task runs Prefect holds after `clampdown run` of a ``steps``-step chain."""
    record = scratch / "record.yaml"
    record.write_text(chain("record", steps))
    took, _ = wall([*CLAMPDOWN, "run", str(record)], ours)
    read = subprocess.run(
        [PYTHON, "-c", READ_RECORD, "record-"], cwd=ROOT, env=ours, capture_output=True, text=True
    )
    if read.returncode != 0:
        raise SystemExit(f"reading the record failed:\n{read.stderr}")
    states = json.loads(read.stdout.strip().splitlines()[-1])
    completed = sum(s == "COMPLETED" for s in states)
    print(f"Prefect's record after `clampdown run` of a {steps}-step chain ({took:.1f} s):")
    print(f"  task runs recorded {len(states)} / {steps} steps, {completed} Completed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="fresh processes per figure")
    parser.add_argument("--record-steps", type=int, default=100, help="steps of the chain")
    parser.add_argument("--tree", type=Path, help="run clampdown from this checkout instead")
    parser.add_argument("--record-only", action="store_true", help="only Prefect's record")
    parser.add_argument(
        "--before", type=Path, help="an older checkout: both trees' figures, interleaved"
    )
    parser.add_argument(
        "--imports-only", action="store_true", help="with --before: only the two imports"
    )
    args = parser.parse_args()
    if args.before:
        scratch = Path(tempfile.mkdtemp(prefix="clampdown-bench-startup-"))
        one = scratch / "one.yaml"
        one.write_text(chain("one", 1))
        print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the start")
        compare_trees(args.runs, args.before.resolve(), one, scratch, args.imports_only)
        return
    global ROOT
    if args.tree:
        ROOT = args.tree.resolve()
        ROOT_PATHS.extend(str(ROOT / p) for p in ("", "flows", "integrations"))
        print(f"clampdown from {ROOT}")
    scratch = Path(tempfile.mkdtemp(prefix="clampdown-bench-startup-"))
    ours = environment(scratch / "prefect", scratch / "home")
    stock = environment(scratch / "prefect-stock", scratch / "home-stock")
    one = scratch / "one.yaml"
    one.write_text(chain("one", 1))
    stop = [*CLAMPDOWN, "prefect-api", "stop"]
    try:
        load = os.getloadavg()[0]
        print(f"machine: {os.cpu_count()} CPUs, load average {load:.1f} at the start")

        if not args.record_only:
            startup_figures(args.runs, ours, stock, one, stop, scratch)
        else:
            wall([PYTHON, "-c", WARM_UP], ours)
        record_figure(args.record_steps, ours, scratch)
    finally:
        subprocess.run(stop, cwd=ROOT, env=ours, capture_output=True)


if __name__ == "__main__":
    main()
