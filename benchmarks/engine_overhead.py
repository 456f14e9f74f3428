#!/usr/bin/env python3
"""What the engine costs: lint wall time, and per-step / per-run cost of executing runbooks.

Prints figures, never asserts them. Every figure comes with a baseline measured in
the same run on the same machine:

* ``clampdown lint runbooks/`` wall time, next to the bare interpreter start-up
  (``python -c pass``).
* Runbooks of 50 ``core.set_output`` steps, chained (each needs the previous)
  and fanned out (all independent), plus a one-step runbook, executed by the
  ``respond`` flow on a real Prefect API with run tracking on (every flow run,
  task run, log and artifact recorded), next to the same 50 actions called as
  plain Python. Cost per step is the slope between the one-step and 50-step
  runs; cost per run is the intercept (the one-step run less one step).

    python benchmarks/engine_overhead.py [--runs 5] [--stock]
    python benchmarks/engine_overhead.py --sizes 10 100 1000 [--runs 3] [--no-prefect]

``--sizes`` measures how the cost per step grows with the runbook: chained and
fanned-out runbooks of each size, run by the ``respond`` flow and, with no Prefect
at all, by the core scheduler over a trivial in-process runner (each attempt called
once, as the unit tests' fake runner does), so the scheduler's own cost shows apart
from Prefect's. Cost per step = (T(n) - T(1)) / (n - 1) less the plain-Python cost
per step measured in the same run; it should not grow with n.

Targets on the 2-core reference machine (docs/benchmarks.md): lint < 0.5 s wall;
engine cost < 10 ms per step and < 150 ms per run beyond the plain-Python baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="clampdown-bench-prefect-"))
os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
os.environ.setdefault("CLAMPDOWN_HOME", tempfile.mkdtemp(prefix="clampdown-bench-home-"))

ROOT = Path(__file__).resolve().parent.parent
STEPS = 50
HEADER = """apiVersion: clampdown/v1
kind: Runbook
metadata: {{name: bench-{name}, title: Benchmark {name}, severity: low}}
steps:
"""


def runbook(name: str, steps: int, chained: bool) -> str:
    lines = [HEADER.format(name=name)]
    for i in range(steps):
        needs = f", needs: [s{i - 1}]" if chained and i else ""
        lines.append(f"  - {{id: s{i}, uses: core.set_output{needs}, with: {{value: {i}}}}}\n")
    return "".join(lines)


def median_wall(argv: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, cwd=ROOT, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def plain_python(steps: int) -> float:
    """The same work without the engine: validate inputs, run the action, dump outputs."""
    from clampdown.core.actions import ActionContext
    from clampdown.core.builtin_actions import SetOutput
    from clampdown.core.settings import settings

    ctx = ActionContext(run_id="bench", step_id="s", runbook="bench", home=settings().paths)
    start = time.perf_counter()
    for i in range(steps):
        params = SetOutput.Input.model_validate({"value": i})
        SetOutput().run(params, ctx).model_dump(mode="json")
    return time.perf_counter() - start


async def once(path: Path) -> float:
    """Wall time of one execution of ``path`` by the respond flow."""
    from clampdown_flows.respond import respond

    start = time.perf_counter()
    result = await respond(str(path), {})
    took = time.perf_counter() - start
    assert result["status"] == "succeeded", result
    return took


async def measure(files: dict[str, Path], runs: int, shared: bool = True) -> dict[str, list[float]]:
    """Wall times of ``runs`` executions of each runbook, each block after one warm-up run.

    Each runbook is measured in a block of its own, so a figure shows that
    runbook's steady state: right after a 50-step run the server is still
    recording its task runs, and the next run shares the machine with that work
    (docs/benchmarks.md has figures for interleaved runs too).
    ``shared`` reuses the API clients across runs, as a long-lived process does.
    """
    from clampdown_flows.prefect_api import shared_clients

    times: dict[str, list[float]] = {name: [] for name in files}
    async with shared_clients() if shared else contextlib.AsyncExitStack():
        for name, path in files.items():
            await once(path)
            times[name] = [await once(path) for _ in range(runs)]
    return times


@contextlib.contextmanager
def stock_api() -> Iterator[str]:
    """Prefect's own temporary server, unpatched, for the before/after comparison."""
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from clampdown_flows.prefect_api import flush_to_api

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = SubprocessASGIServer(port=port)
    server.start(timeout=60)
    try:
        with temporary_settings({PREFECT_API_URL: server.api_url}):
            yield server.api_url
    finally:
        flush_to_api()
        server.stop()


def report(times: dict[str, list[float]], baseline_one: float, baseline_fifty: float) -> None:
    """Per-step cost (slope) and per-run cost (intercept) from the medians."""
    took = {name: statistics.median(values) for name, values in times.items()}
    per_step_baseline = baseline_fifty / STEPS
    costs = {}
    for label, key in (("chained", "chain"), ("fanned out", "fan")):
        per_step = (took[key] - took["one"]) / (STEPS - 1) - per_step_baseline
        costs[key] = per_step
        print(
            f"  {STEPS} steps {label:<10} {took[key] * 1000:8.1f} ms   -> cost per step "
            f"{per_step * 1000:6.2f} ms   target < 10 ms   "
            f"(ratio to plain Python: {took[key] / baseline_fifty:,.0f}x)"
        )
    # A run's fixed cost: the one-step run less what its one step costs (linear model).
    per_run = took["one"] - costs["chain"] - baseline_one
    print(
        f"  1-step runbook   {took['one'] * 1000:8.1f} ms   -> cost per run "
        f"{per_run * 1000:6.1f} ms   target < 150 ms"
    )


class InProcessRunner:
    """A trivial :class:`StepRunner`: each action attempt called once, in-process."""

    async def run_action(self, step: Any, attempt: Any, limits: Any) -> Any:
        return await attempt(logging.getLogger("clampdown.bench"))

    async def request_approval(self, step: Any, params: Any) -> dict[str, Any]:
        raise AssertionError("the benchmark runbooks have no approvals")


_run_ids = itertools.count()


def in_process(model: Any) -> float:
    """Wall time of one execution of ``model`` by the core scheduler, no Prefect.

    What is timed is the engine's part of a run: the run state built, every step
    decided, executed by :class:`InProcessRunner` and recorded (fsync'd) in the ledger.
    """
    from clampdown.core.engine.gate_policy import GatePolicy
    from clampdown.core.engine.observing import Observers
    from clampdown.core.engine.scheduler import run_status, schedule
    from clampdown.core.engine.state import new_state
    from clampdown.core.ledger import Ledger
    from clampdown.core.settings import settings

    run_id = f"bench-{os.getpid()}-{next(_run_ids)}"
    files = settings().paths.run(run_id)
    ledger = Ledger(files.ledger)
    info = {"id": run_id, "runbook": model.metadata.name, "trigger": {"type": "manual"}}
    start = time.perf_counter()
    state = new_state(run_id, model, {}, ledger, info, files)
    state.gate = GatePolicy(state, lambda: ([], []))
    state.observers = Observers(state, [])
    asyncio.run(schedule(state, InProcessRunner()))
    took = time.perf_counter() - start
    ledger.close()
    assert run_status(state) == "succeeded", state.aborted_by
    return took


def sweep(sizes: list[int], runs: int, prefect: bool) -> None:
    """Cost per step at each size, chained and fanned out, in-process and through Prefect."""
    from clampdown.core.lint import load_runbook

    folder = Path(tempfile.mkdtemp(prefix="clampdown-bench-sizes-"))
    files: dict[str, Path] = {}
    for name, steps, chained in [("one", 1, False)] + [
        (f"{kind}{n}", n, kind == "chain") for n in sizes for kind in ("chain", "fan")
    ]:
        files[name] = folder / f"bench-{name}.yaml"
        files[name].write_text(runbook(name, steps, chained))
    plain = {n: statistics.median(plain_python(n) for _ in range(runs)) for n in sizes}
    models = {name: load_runbook(path)[0].model for name, path in files.items()}
    engine: dict[str, float] = {}
    for name, model in models.items():
        in_process(model)  # warm-up
        engine[name] = statistics.median(in_process(model) for _ in range(runs))
    flow: dict[str, float] = {}
    if prefect:
        from clampdown_flows.prefect_api import local_api

        with local_api():
            flow = {k: statistics.median(v) for k, v in asyncio.run(measure(files, runs)).items()}

    print(f"cost per step by size (medians of {runs} runs; plain Python per step subtracted):")
    print(f"  {'steps':>6} {'plain Python':>14} {'engine, in-process':>26}", end="")
    print(f" {'respond flow (Prefect)':>26}" if prefect else "")
    print(f"  {'':>6} {'per step':>14} {'chained':>12} {'fanned out':>13}", end="")
    print(f" {'chained':>12} {'fanned out':>13}" if prefect else "")
    for n in sizes:
        base = plain[n] / n
        row = f"  {n:>6} {base * 1000:11.4f} ms"
        for took in (engine, flow) if prefect else (engine,):
            for kind in ("chain", "fan"):
                per_step = (took[f"{kind}{n}"] - took["one"]) / (n - 1) - base
                row += f" {per_step * 1000:9.3f} ms"
                row += " " if kind == "chain" else ""
        print(row)
    print(f"  1-step run: in-process {engine['one'] * 1000:.1f} ms", end="")
    print(f", respond flow {flow['one'] * 1000:.1f} ms" if prefect else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="measured runs per figure (median)")
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        metavar="N",
        help="instead of the 50-step figures: cost per step at these sizes (each > 1)",
    )
    parser.add_argument(
        "--no-prefect",
        action="store_true",
        help="with --sizes: only the in-process engine and plain Python (no Prefect server)",
    )
    parser.add_argument(
        "--stock",
        action="store_true",
        help="also measure on Prefect's unpatched server, for comparison",
    )
    args = parser.parse_args()
    if args.sizes:
        if min(args.sizes) < 2:
            parser.error("--sizes: every size must be at least 2")
        sweep(args.sizes, args.runs, prefect=not args.no_prefect)
        return
    clampdown = str(Path(sys.executable).parent / "clampdown")

    python_start = median_wall([sys.executable, "-c", "pass"], args.runs)
    lint = median_wall([clampdown, "lint", "runbooks/"], args.runs)
    print(
        f"lint of the library      {lint * 1000:8.1f} ms wall   (python -c pass: "
        f"{python_start * 1000:.1f} ms, ratio {lint / python_start:.1f}x)   target < 500 ms"
    )

    folder = Path(tempfile.mkdtemp(prefix="clampdown-bench-"))
    files = {}
    for name, steps, chained in (("one", 1, False), ("chain", STEPS, True), ("fan", STEPS, False)):
        files[name] = folder / f"bench-{name}.yaml"
        files[name].write_text(runbook(name, steps, chained))

    baseline_one = statistics.median(plain_python(1) for _ in range(args.runs))
    baseline_fifty = statistics.median(plain_python(STEPS) for _ in range(args.runs))
    from clampdown_flows.prefect_api import local_api

    with local_api():  # the local server `clampdown run` uses (or PREFECT_API_URL)
        took = asyncio.run(measure(files, args.runs))

    print(f"plain Python, 1 step     {baseline_one * 1000:8.3f} ms")
    print(f"plain Python, {STEPS} steps   {baseline_fifty * 1000:8.3f} ms")
    print("engine as shipped (flows/clampdown_flows/prefect_api.py: local server, shared clients):")
    report(took, baseline_one, baseline_fifty)
    if args.stock:
        with stock_api():
            stock = asyncio.run(measure(files, args.runs, shared=False))
        print("engine on Prefect's stock temporary server, new clients per run:")
        for name, values in stock.items():
            slow = sum(v > 1.0 for v in values)
            print(
                f"  {name:<6} median {statistics.median(values) * 1000:7.1f} ms   "
                f"mean {statistics.mean(values) * 1000:7.1f} ms   "
                f"{slow}/{len(values)} runs over 1 s (SQLite busy -> 503 -> 2 s client back-off)"
            )
        for name, values in took.items():
            mean = statistics.mean(values) * 1000
            print(
                f"  (as shipped: {name} mean {mean:.1f} ms, "
                f"{sum(v > 1.0 for v in values)}/{len(values)} runs over 1 s)"
            )


if __name__ == "__main__":
    main()
