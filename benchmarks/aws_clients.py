#!/usr/bin/env python3
"""What a run's steps pay for their boto3 clients: made anew at every call site (clampdown
before session 24) next to made once per run and reused (:mod:`clampdown_aws.clients`).

Both variants run in this process, in interleaved rounds (their order alternating), so
machine load meets them alike. A "run" is ``--steps`` steps, step *i* asking ``--calls``
times for the client of service ``SERVICES[i % len]`` (iam, s3, kms, secretsmanager,
sagemaker, logs: what the shipped containment runbooks' steps use), the way an action asks
at each of its call sites. Nothing is sent to AWS: only the making of clients is measured.

* **new** — ``session(None, run_id, region).client(service, config=_config())`` at every
  ask: what ``Aws.client`` did before (a boto3 session and a client each time, the botocore
  loader shared);
* **reused** — ``Aws(ctx).client(service)`` with a run id of its own per run, released at
  the run's end as the respond flow does (``AwsAction.release_run``).

Printed per variant: CPU and wall milliseconds per step (median of the rounds), garbage
collections per 100 steps (generation 0: a proxy for the objects allocated; generation 2:
full collections, the ones that stall serve's event loop), and the ratio new/reused.

    python benchmarks/aws_clients.py [--rounds 5] [--runs 6] [--steps 6] [--calls 2]

Run it with ``env -u PYTHONDONTWRITEBYTECODE`` after ``python -m compileall -q clampdown
integrations`` (see docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SERVICES = ("iam", "s3", "kms", "secretsmanager", "sagemaker", "logs")


def _contexts(home: Path, run_id: str, steps: int) -> list[Any]:
    from clampdown.core.actions import ActionContext
    from clampdown.core.home import Home

    return [
        ActionContext(
            run_id=run_id, step_id=f"s{i}", runbook="bench", home=Home(home), region="us-east-1"
        )
        for i in range(steps)
    ]


def _one_run(variant: str, home: Path, run_id: str, steps: int, calls: int) -> None:
    from clampdown_aws import base

    for i, ctx in enumerate(_contexts(home, run_id, steps)):
        service = SERVICES[i % len(SERVICES)]
        for _ in range(calls):
            if variant == "new":
                base.session(None, run_id, ctx.region).client(service, config=base._config())
            else:
                base.Aws(ctx).client(service)
    if variant == "reused":
        base.AwsAction.release_run(run_id)


def _measure(variant: str, home: Path, runs: int, steps: int, calls: int) -> dict[str, float]:
    before = [s["collections"] for s in gc.get_stats()]
    cpu, wall = time.process_time(), time.perf_counter()
    for n in range(runs):
        _one_run(variant, home, f"bench{variant}{n}{time.monotonic_ns()}", steps, calls)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    after = [s["collections"] for s in gc.get_stats()]
    total = runs * steps
    return {
        "cpu_ms": cpu / total * 1000,
        "wall_ms": wall / total * 1000,
        "gen0": (after[0] - before[0]) / total * 100,
        "gen2": (after[2] - before[2]) / total * 100,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=6, help="runs per variant per round")
    parser.add_argument("--steps", type=int, default=6, help="steps per run")
    parser.add_argument("--calls", type=int, default=2, help="client asks per step")
    args = parser.parse_args()
    for name, value in {
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        os.environ.setdefault(name, value)
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        _one_run("new", home, "warm", len(SERVICES), 1)  # imports, models read once
        _one_run("reused", home, "warm", len(SERVICES), 1)
        figures: dict[str, list[dict[str, float]]] = {"new": [], "reused": []}
        for r in range(args.rounds):
            order = ("new", "reused") if r % 2 == 0 else ("reused", "new")
            for variant in order:
                figures[variant].append(_measure(variant, home, args.runs, args.steps, args.calls))
    print(
        f"{args.rounds} rounds x {args.runs} runs x {args.steps} steps, {args.calls} client "
        f"asks per step (services cycling {', '.join(SERVICES)}); medians of the rounds"
    )
    print(
        f"{'variant':<8} {'CPU ms/step':>12} {'wall ms/step':>13} {'gen0/100':>9} {'gen2/100':>9}"
    )
    med = {
        v: {k: statistics.median(f[k] for f in rows) for k in rows[0]}
        for v, rows in figures.items()
    }
    for variant, m in med.items():
        print(
            f"{variant:<8} {m['cpu_ms']:>12.2f} {m['wall_ms']:>13.2f} "
            f"{m['gen0']:>9.1f} {m['gen2']:>9.2f}"
        )
    ratio = med["new"]["cpu_ms"] / med["reused"]["cpu_ms"] if med["reused"]["cpu_ms"] else 0
    print(f"new / reused, CPU per step: {ratio:.1f}x")


if __name__ == "__main__":
    main()
