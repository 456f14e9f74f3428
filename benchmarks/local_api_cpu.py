#!/usr/bin/env python3
"""The local Prefect API's CPU per flow run, trees in turns (issue 15, serve throughput).

``serve_throughput.py`` measures the whole of ``clampdown serve`` (moto, the alert path,
the runs, the floor) and on a loaded machine its wall ratios swing more than a change to
the Prefect server moves them. This script measures only what the local API's server
process spends per flow run: a local API started with
:func:`clampdown_flows.prefect_api.local_api` (the server ``serve`` starts), a warm-up,
then ``--reps`` bursts of N concurrent async flow runs through one shared client
(:func:`~clampdown_flows.prefect_api.shared_clients`, as serve's runs), each with one task
that logs a line and one markdown artifact (what a one-step respond run sends: flow run
created and read, its states, three task-run events, an artifact, logs). The server's CPU
seconds (``/proc/<pid>/stat``) from the burst's start until it is idle again (its recorder
and event persister done: under 0.02 CPU-s in a second), per run, and this process's CPU per
run (the same client work in every tree: how fast the machine was meanwhile).

    python benchmarks/local_api_cpu.py -n 32 --reps 2 --rounds 4 \
        --tree /tmp/before --tree /tmp/after

``--tree DIR`` (repeatable; ``git archive <rev> | tar -x -C DIR``): each round runs one
child per tree, the tree's packages first on ``PYTHONPATH``, in an order that rotates each
round; without ``--tree`` this checkout alone. Each child uses a new ``PREFECT_HOME``.
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


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_idle(pid: int) -> float:
    last = cpu_seconds(pid)
    while True:
        time.sleep(1.0)
        now = cpu_seconds(pid)
        if now - last < 0.02:
            return now
        last = now


def child(n: int, reps: int) -> None:
    """One tree: a local API, a warm-up, ``reps`` bursts; one RESULT line per burst."""
    os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="clampdown-bench-api-cpu-")
    from prefect import flow, task
    from prefect.artifacts import acreate_markdown_artifact
    from prefect.logging import get_run_logger

    from clampdown_flows.prefect_api import local_api, shared_clients

    @task
    async def step(i: int) -> int:
        get_run_logger().info("step %s", i)
        return i

    @flow
    async def one(i: int) -> int:
        result = await step(i)
        await acreate_markdown_artifact(markdown=f"# run {i}", key=f"run-{i}")
        return result

    async def burst(count: int) -> None:
        async with shared_clients():
            await asyncio.gather(*(one(i) for i in range(count)))

    with local_api(timeout=600):
        found = subprocess.check_output(["pgrep", "-P", str(os.getpid()), "-f", "uvicorn"])
        pid = int(found.split()[0])
        asyncio.run(burst(2))
        wait_idle(pid)
        for _ in range(reps):
            server, client = cpu_seconds(pid), time.process_time()
            asyncio.run(burst(n))
            client = time.process_time() - client
            server = wait_idle(pid) - server
            print(f"RESULT {server / n:.4f} {client / n:.4f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=32, help="flow runs at once (default 32)")
    parser.add_argument("--reps", type=int, default=2, help="bursts per child (default 2)")
    parser.add_argument("--rounds", type=int, default=3, help="children per tree (default 3)")
    parser.add_argument("--tree", action="append", default=[], help="a tree (git archive)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.n, args.reps)
        return
    trees: list[Path | None] = [Path(t).resolve() for t in args.tree] or [None]
    results: dict[str, list[tuple[float, float]]] = {str(t or "this checkout"): [] for t in trees}
    for round_ in range(args.rounds):
        for tree in trees[round_ % len(trees) :] + trees[: round_ % len(trees)]:
            env = dict(os.environ)
            if tree is not None:
                env["PYTHONPATH"] = os.pathsep.join(
                    str(tree / p) for p in ("", "flows", "integrations")
                )
                subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree)], check=False)
            argv = [
                sys.executable,
                __file__,
                "--child",
                "-n",
                str(args.n),
                "--reps",
                str(args.reps),
            ]
            done = subprocess.run(argv, env=env, capture_output=True, text=True)
            load = os.getloadavg()[0]
            for line in done.stdout.splitlines():
                if line.startswith("RESULT "):
                    server, client = (float(x) for x in line.split()[1:])
                    results[str(tree or "this checkout")].append((server, client))
                    where = tree or "this checkout"
                    print(f"round {round_ + 1} {where}: server {server:.4f} CPU-s/run, "
                          f"client {client:.4f} (load {load:.1f})", flush=True)  # fmt: skip
    print(f"\nN={args.n}: Prefect server CPU-s per flow run until idle (median, range; client's)")
    for label, rows in results.items():
        if not rows:
            print(f"  {label}: no result")
            continue
        servers = [s for s, _ in rows]
        clients = [c for _, c in rows]
        print(f"  {label}: {statistics.median(servers):.4f} ({min(servers):.4f}-"
              f"{max(servers):.4f}), client {statistics.median(clients):.4f}, "
              f"{len(rows)} bursts")  # fmt: skip


if __name__ == "__main__":
    main()
