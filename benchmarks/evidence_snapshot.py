#!/usr/bin/env python3
"""What a log-group snapshot costs: ``aws.evidence.snapshot_log_group`` against a plain boto3 loop.

Prints figures, never asserts them. AWS is moto's server (``python -m moto.server``, the
same server as ``ThreadedMotoServer``) in its own process on loopback, so requests go
over HTTP as they would to AWS and the server's memory is not counted as the client's.

For each size (default 50,000 and 200,000 events, put in batches of 10,000 over four
streams within the last 23 hours) it measures, each in a fresh Python process:

* **ours**: ``SnapshotLogGroup().run(...)``: FilterLogEvents pages -> JSON lines -> gzip
  chunks -> EvidenceStore (hash, Object Lock, multipart) -> manifest.
* **plain**: the loop one would write by hand: paginate ``filter_log_events``,
  ``json.dumps`` each event into a list, ``gzip.compress`` the joined text (level 6, as
  ours), one ``put_object``.

Figures per measurement: events per second (wall, median of ``--runs``), the client's
CPU seconds (user + system: what the code costs, without moto's share of the wall time),
and the peak memory growth: ``ru_maxrss`` of the measuring process after the run less
its value after imports and a warm-up client creation (a fresh process per measurement,
so peaks cannot hide one another; this counts C buffers that tracemalloc would miss).

    python benchmarks/evidence_snapshot.py [--sizes 50000 200000] [--runs 3]

Targets (docs/benchmarks.md): ours / plain events per second >= 0.8; ours' peak memory
growth < 150 MB and flat between 50k and 200k events.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from moto_server import start_moto

ROOT = Path(__file__).resolve().parent.parent
REGION = "us-east-1"
BUCKET = "evidence"
BATCH = 10_000
STREAMS = 4
LOOKBACK_HOURS = 24


def _aws_env(endpoint: str) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ENDPOINT_URL": endpoint,
    }


def seed(logs: object, group: str, events: int) -> float:
    """``events`` events over STREAMS streams in the last 23 h; returns seconds taken."""
    start = time.perf_counter()
    logs.create_log_group(logGroupName=group)  # type: ignore[attr-defined]
    now = int(time.time() * 1000)
    first = now - 23 * 3600 * 1000
    per_stream = events // STREAMS
    step = (23 * 3600 * 1000) // per_stream
    for s in range(STREAMS):
        stream = f"inference-{s}"
        logs.create_log_stream(logGroupName=group, logStreamName=stream)  # type: ignore[attr-defined]
        for offset in range(0, per_stream, BATCH):
            batch = [
                {
                    "timestamp": first + i * step,
                    "message": f"GET s3://models/llm-7b/shard-{i % 512:04d}.safetensors "
                    f"200 {1000 + i % 9000} ua=aws-cli/2.15 n={i}",
                }
                for i in range(offset, min(offset + BATCH, per_stream))
            ]
            logs.put_log_events(  # type: ignore[attr-defined]
                logGroupName=group, logStreamName=stream, logEvents=batch
            )
    return time.perf_counter() - start


# --- one measurement, in a fresh process ------------------------------------------------------


def child(which: str, group: str, run_id: str) -> None:
    import resource

    import boto3

    from clampdown.core.actions import ActionContext
    from clampdown.core.settings import settings
    from clampdown_aws.evidence_log_group import SnapshotLogGroup

    for service in ("logs", "s3", "sts"):  # warm-up: imports and service models
        boto3.client(service)
    before = resource.getrusage(resource.RUSAGE_SELF)
    wall = time.perf_counter()
    if which == "ours":
        ctx = ActionContext(
            run_id=run_id,
            step_id="bench",
            runbook="bench",
            home=settings().paths,
            region=REGION,
        )
        out = SnapshotLogGroup().run(
            SnapshotLogGroup.Input(log_group=group, lookback_hours=LOOKBACK_HOURS, bucket=BUCKET),
            ctx,
        )
        events, size = out.events, out.object.size
    else:
        events, size = plain(group, run_id)
    wall = time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    print(
        json.dumps(
            {
                "events": events,
                "seconds": wall,
                "cpu": cpu,
                "rss_growth_mb": (after.ru_maxrss - before.ru_maxrss) / 1024,  # Linux: KiB
                "rss_peak_mb": after.ru_maxrss / 1024,
                "object_mb": size / 1e6,
            }
        )
    )


def plain(group: str, run_id: str) -> tuple[int, int]:
    """The hand-written loop: everything in a list, one gzip, one put_object."""
    import gzip

    import boto3

    logs, s3 = boto3.client("logs"), boto3.client("s3")
    end = int(time.time() * 1000)
    lines = []
    for page in logs.get_paginator("filter_log_events").paginate(
        logGroupName=group, startTime=end - LOOKBACK_HOURS * 3600 * 1000, endTime=end
    ):
        for event in page["events"]:
            lines.append(json.dumps(event))
    body = gzip.compress(("\n".join(lines) + "\n").encode(), compresslevel=6)
    s3.put_object(Bucket=BUCKET, Key=f"plain/{run_id}.jsonl.gz", Body=body)
    return len(lines), len(body)


def measure(endpoint: str, which: str, group: str, run_id: str) -> dict[str, float]:
    env = {**os.environ, **_aws_env(endpoint), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, __file__, "--child", which, group, run_id],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[50_000, 200_000])
    parser.add_argument("--runs", type=int, default=3, help="measurements per figure (median)")
    parser.add_argument(
        "--child", nargs=3, metavar=("WHICH", "GROUP", "RUN_ID"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return

    import boto3

    server, endpoint = start_moto()
    try:
        os.environ.update(_aws_env(endpoint))
        s3, logs = boto3.client("s3"), boto3.client("logs")
        s3.create_bucket(Bucket=BUCKET, ObjectLockEnabledForBucket=True)
        print(f"moto server (separate process) at {endpoint}; evidence bucket with Object Lock")
        results: dict[tuple[int, str], list[dict[str, float]]] = {}
        for size in args.sizes:
            group = f"/bench/inference-{size}"
            took = seed(logs, group, size)
            print(f"seeded {size:,} events in {took:.1f} s ({size / took:,.0f} events/s)")
            for run in range(args.runs):
                for which in ("ours", "plain"):  # alternate, so drift hits both alike
                    figures = measure(endpoint, which, group, f"bench-{size}-{run}-{which}")
                    if figures["events"] != size:
                        print(f"  warning: {which} read {figures['events']:,} of {size:,} events")
                    results.setdefault((size, which), []).append(figures)
        report(results, args.sizes, args.runs)
    finally:
        server.terminate()
        server.wait(timeout=10)


def report(
    results: dict[tuple[int, str], list[dict[str, float]]], sizes: list[int], runs: int
) -> None:
    med = {
        key: {name: statistics.median(r[name] for r in rows) for name in rows[0]}
        for key, rows in results.items()
    }
    print(f"\nmedians of {runs} runs (each measurement in a fresh process)")
    print(
        f"{'events':>8}  {'method':<6} {'events/s':>9} {'wall s':>7} {'client CPU s':>12} "
        f"{'peak RSS growth':>15} {'peak RSS':>9} {'object':>8}"
    )
    for size in sizes:
        for which in ("ours", "plain"):
            m = med[(size, which)]
            print(
                f"{size:>8,}  {which:<6} {size / m['seconds']:>9,.0f} {m['seconds']:>7.2f} "
                f"{m['cpu']:>12.2f} {m['rss_growth_mb']:>12.1f} MB {m['rss_peak_mb']:>6.0f} MB "
                f"{m['object_mb']:>5.1f} MB"
            )
    print()
    for size in sizes:
        ours, base = med[(size, "ours")], med[(size, "plain")]
        print(
            f"{size:>8,} events: ours / plain events per second = "
            f"{base['seconds'] / ours['seconds']:.2f} (target >= 0.8); client CPU ours / plain = "
            f"{ours['cpu'] / base['cpu']:.2f}"
        )
    if len(sizes) > 1:
        small, large = med[(sizes[0], "ours")], med[(sizes[-1], "ours")]
        plain_small, plain_large = med[(sizes[0], "plain")], med[(sizes[-1], "plain")]
        print(
            f"peak RSS growth from {sizes[0]:,} to {sizes[-1]:,} events: ours "
            f"{small['rss_growth_mb']:.1f} -> {large['rss_growth_mb']:.1f} MB "
            f"(target < 150 MB and flat); plain {plain_small['rss_growth_mb']:.1f} -> "
            f"{plain_large['rss_growth_mb']:.1f} MB"
        )


if __name__ == "__main__":
    main()
