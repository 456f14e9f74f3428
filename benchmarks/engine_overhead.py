#!/usr/bin/env python3
"""What the engine costs: lint wall time, and per-step / per-run cost of executing runbooks.

Prints figures, never asserts them. Every figure comes with a baseline measured in
the same run on the same machine:

* ``clampdown lint runbooks/`` wall time, next to the bare interpreter start-up
  (``python -c pass``).
* Runbooks of 50 ``core.set_output`` steps, chained (each needs the previous)
  and fanned out (all independent), plus a one-step runbook, executed by the
  ``respond`` flow on a real Prefect API with run tracking on (every flow and
  task run recorded), next to the same 50 actions called as plain Python.

    python benchmarks/engine_overhead.py [--runs 5]

Targets on the 2-core reference machine (docs/benchmarks.md): lint < 0.5 s wall;
engine cost < 10 ms per step and < 150 ms per run beyond the plain-Python baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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
    from clampdown.actions import ActionContext
    from clampdown.builtin_actions import SetOutput

    ctx = ActionContext(run_id="bench", step_id="s", runbook="bench")
    start = time.perf_counter()
    for i in range(steps):
        params = SetOutput.Input.model_validate({"value": i})
        SetOutput().run(params, ctx).model_dump(mode="json")
    return time.perf_counter() - start


def engine(path: Path, runs: int) -> float:
    from flows.respond import respond

    times = []
    for _ in range(runs):
        start = time.perf_counter()
        result = asyncio.run(respond(str(path), {}))
        times.append(time.perf_counter() - start)
        assert result["status"] == "succeeded", result
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="measured runs per figure (median)")
    args = parser.parse_args()
    clampdown = str(Path(sys.executable).parent / "clampdown")

    python_start = median_wall([sys.executable, "-c", "pass"], args.runs)
    lint = median_wall([clampdown, "lint", "runbooks/"], args.runs)
    print(f"lint of the library      {lint * 1000:8.1f} ms wall   (python -c pass: "
          f"{python_start * 1000:.1f} ms, ratio {lint / python_start:.1f}x)   target < 500 ms")

    from prefect.testing.utilities import prefect_test_harness

    folder = Path(tempfile.mkdtemp(prefix="clampdown-bench-"))
    files = {}
    for name, steps, chained in (("one", 1, False), ("chain", STEPS, True), ("fan", STEPS, False)):
        files[name] = folder / f"bench-{name}.yaml"
        files[name].write_text(runbook(name, steps, chained))

    baseline_one = statistics.median(plain_python(1) for _ in range(args.runs))
    baseline_fifty = statistics.median(plain_python(STEPS) for _ in range(args.runs))
    with prefect_test_harness(server_startup_timeout=60):
        for path in files.values():  # warm-up: imports, first API round trips
            engine(path, 1)
        one = engine(files["one"], args.runs)
        chain = engine(files["chain"], args.runs)
        fan = engine(files["fan"], args.runs)

    per_run = one - baseline_one
    print(f"plain Python, 1 step     {baseline_one * 1000:8.3f} ms")
    print(f"plain Python, {STEPS} steps   {baseline_fifty * 1000:8.3f} ms")
    print(f"engine, 1-step runbook   {one * 1000:8.1f} ms   -> cost per run "
          f"{per_run * 1000:7.1f} ms   target < 150 ms")
    for label, total in (("chained", chain), ("fanned out", fan)):
        per_step = (total - one - (baseline_fifty - baseline_one)) / (STEPS - 1)
        print(f"engine, {STEPS} steps {label:<10} {total * 1000:8.1f} ms   -> cost per step "
              f"{per_step * 1000:7.2f} ms   target < 10 ms   "
              f"(ratio to plain Python: {total / baseline_fifty:,.0f}x)")


if __name__ == "__main__":
    main()
