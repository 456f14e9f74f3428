#!/usr/bin/env python3
"""What exfiltration scoping costs: ``aws.forensics.scope_exfiltration`` against two baselines.

Prints figures, never asserts them. AWS is moto's server (``python -m moto.server``, the
server ``ThreadedMotoServer`` runs) in its own process on loopback, so every trail file
is fetched over HTTP as from S3, and the server's memory is not counted as the client's.

For each size (default 1, 5 and 20 million CloudTrail records; ``--sizes`` for a quick
run) it delivers the records as CloudTrail does — gzip JSON ``{"Records": [...]}`` files
of ``--per-file`` records (default 2,000) in ``AWSLogs/<account>/CloudTrail/<region>/
YYYY/MM/DD/`` over one day, spread over the day's five-minute slots — on a multi-region trail
that logs S3 data events. The traffic is a serving role reading model shards
(:class:`clampdown_aws.testing.trail_files.Traffic`); one file per hour also holds a
thief's reads (``THEFT_PER_HOUR`` GetObject calls by an IAM user). To generate 20 million
records in minutes, files are made from 32 templates (distinct records) whose event
hour is rewritten per file, so event ids repeat across files; nothing measured depends on
them.

Then, each in a fresh Python process (peak memory = ``ru_maxrss`` after the run less after
imports and a warm-up):

* **floor** — fetch every file (8 at once) and decompress it with ``zlib``, nothing else:
  no scoping can be cheaper than getting the bytes and inflating them;
* **plain** — the loop one would write by hand: fetch, ``gzip.decompress``,
  ``json.loads``, filter the thief's successful object reads in the window, sum per object;
* **ours** — ``ScopeExfiltration().run(...)``: DescribeTrails, GetTrailStatus,
  GetEventSelectors, the listing, batches fetched and scanned by DuckDB, roll-up, blind
  spots, the result JSON written to the run's folder.

With ``--before DIR`` (a source tree of an earlier commit, e.g. ``git archive <commit> |
tar -x -C DIR``) that tree's action is measured too, on the same files, as the row
``before``: a change's effect next to the same run's baselines.

Printed per size: records/s, MB/s compressed and uncompressed, seconds, peak memory growth,
the ratio to the floor, and whether plain and ours found the same objects and bytes.

    python benchmarks/scoping.py [--sizes 1000000 5000000 20000000] [--per-file 2000]
                                 [--before DIR] [--skip-plain] [--endpoint URL]
                                 [--principal thief|serving-role]

Generating 20 million records takes minutes; ``--endpoint URL`` (one size) uses a moto
server already running there (``python -m moto.server -p 5077``) instead of starting one,
and seeds it only when its trail bucket holds no files yet — the next run with the same
``--endpoint`` measures the same files again without generating them.

Target (docs/benchmarks.md): ours within 2x of the floor; peak memory flat as input grows.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from moto_server import start_moto

ROOT = Path(__file__).resolve().parent.parent
REGION = "us-east-1"
TRAIL_BUCKET = "trail-logs"
ACCOUNT = "123456789012"
DAY = datetime(2026, 11, 30, tzinfo=UTC)
TEMPLATES = 32
THEFT_PER_HOUR = 20
THIEF = f"arn:aws:iam::{ACCOUNT}:user/mallory"
THIEF_KEY = "AKIAMALLORY000000001"
SERVING_ROLE = f"arn:aws:iam::{ACCOUNT}:role/serving"  # every file's traffic: the worst case
PRINCIPAL_ENV = "CLAMPDOWN_BENCH_PRINCIPAL"
MB = 1_000_000


def _aws_env(endpoint: str) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ENDPOINT_URL": endpoint,
    }


# --- the trail ---------------------------------------------------------------------------------


def _templates(per_file: int) -> list[bytes]:
    """JSON bodies (uncompressed) of serving traffic whose events are in hour 00 of DAY."""
    from clampdown_aws.testing.trail_files import Traffic

    start = DAY.replace(tzinfo=None)
    return [
        json.dumps(
            {
                "Records": list(
                    Traffic(start, objects=2000, every=3599 / per_file, seed=s).records(per_file)
                )
            }
        ).encode()
        for s in range(TEMPLATES)
    ]


def _theft(hour: int) -> list[dict]:
    from clampdown_aws.testing.trail_files import s3_read, user

    thief = user("mallory", THIEF_KEY)
    at = DAY.replace(tzinfo=None) + timedelta(hours=hour)
    return [
        s3_read(
            thief,
            at + timedelta(seconds=10 * i),
            "models",
            f"llm-v3/shard-{hour * 100 + i:05d}.safetensors",
            size=(i + 1) * 1048576,
            ip="203.0.113.9",
            seq=f"{hour}-{i}",
        )
        for i in range(THEFT_PER_HOUR)
    ]


def _upload_range(
    endpoint: str, per_file: int, first: int, last: int, files: int
) -> tuple[int, int]:
    """Files ``first..last-1`` (gzip) into the trail bucket; returns (compressed, raw) bytes."""
    import gzip

    import boto3

    from clampdown_aws.testing.trail_files import trail_key

    os.environ.update(_aws_env(endpoint))
    s3 = boto3.client("s3", region_name=REGION)
    templates = _templates(per_file)
    packed = raw = 0
    slots = 24 * 12
    for i in range(first, last):
        slot = i * slots // files
        hour = slot // 12
        delivered = DAY + timedelta(minutes=5 * slot + 5)
        body = templates[i % TEMPLATES].replace(
            b'"2026-11-30T00:', f'"2026-11-30T{hour:02d}:'.encode()
        )
        if i == 0 or hour != (i - 1) * slots // files // 12:  # an hour's first file: theft
            records = json.loads(body)["Records"]
            records[:THEFT_PER_HOUR] = _theft(hour)
            body = json.dumps({"Records": records}).encode()
        data = gzip.compress(body, 6, mtime=0)
        key = trail_key(ACCOUNT, REGION, delivered.replace(tzinfo=None), f"{i:016X}")
        s3.put_object(Bucket=TRAIL_BUCKET, Key=key, Body=data)
        packed += len(data)
        raw += len(body)
    return packed, raw


def seeded(endpoint: str) -> dict[str, float] | None:
    """The world a server already holds (an earlier run's ``--endpoint``), or None. Its JSON
    size is not known until the floor inflates the files (``report`` takes it from there)."""
    import boto3
    from botocore.exceptions import ClientError

    os.environ.update(_aws_env(endpoint))
    s3 = boto3.client("s3", region_name=REGION)
    try:
        sizes = [
            item["Size"]
            for page in s3.get_paginator("list_objects_v2").paginate(
                Bucket=TRAIL_BUCKET, Prefix="AWSLogs/"
            )
            for item in page.get("Contents", [])
        ]
    except ClientError:
        return None
    if not sizes:
        return None
    return {"files": len(sizes), "compressed": sum(sizes), "raw": 0, "seed_s": 0.0}


def seed(endpoint: str, records: int, per_file: int) -> dict[str, float]:
    """The trail and its files (two processes generate); returns sizes and seconds."""
    from concurrent.futures import ProcessPoolExecutor

    import boto3

    os.environ.update(_aws_env(endpoint))
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=TRAIL_BUCKET)
    s3.create_bucket(Bucket="models")  # the model bucket: GetBucketLogging finds no access logs
    cloudtrail = boto3.client("cloudtrail", region_name=REGION)
    cloudtrail.create_trail(Name="bench", S3BucketName=TRAIL_BUCKET, IsMultiRegionTrail=True)
    cloudtrail.start_logging(Name="bench")
    cloudtrail.put_event_selectors(
        TrailName="bench",
        AdvancedEventSelectors=[
            {
                "Name": "mgmt",
                "FieldSelectors": [{"Field": "eventCategory", "Equals": ["Management"]}],
            },
            {
                "Name": "model reads",
                "FieldSelectors": [
                    {"Field": "eventCategory", "Equals": ["Data"]},
                    {"Field": "resources.type", "Equals": ["AWS::S3::Object"]},
                    {"Field": "resources.ARN", "StartsWith": ["arn:aws:s3:::models/"]},
                ],
            },
        ],
    )
    files = max(1, records // per_file)
    started = time.perf_counter()
    half = files // 2
    with ProcessPoolExecutor(max_workers=2) as pool:
        parts = list(
            pool.map(
                _upload_range, [endpoint] * 2, [per_file] * 2, [0, half], [half, files], [files] * 2
            )
        )
    return {
        "files": files,
        "records": files * per_file,
        "compressed": sum(p[0] for p in parts),
        "raw": sum(p[1] for p in parts),
        "seed_s": time.perf_counter() - started,
    }


# --- one measurement, in a fresh process -------------------------------------------------------


def _keys(s3: object) -> list[str]:
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=TRAIL_BUCKET, Prefix="AWSLogs/"
    ):  # type: ignore[attr-defined]
        keys += [item["Key"] for item in page.get("Contents", [])]
    return keys


def floor(s3: object) -> dict[str, int]:
    import zlib
    from concurrent.futures import ThreadPoolExecutor

    def one(key: str) -> tuple[int, int]:
        body = s3.get_object(Bucket=TRAIL_BUCKET, Key=key)["Body"].read()  # type: ignore[attr-defined]
        return len(body), len(zlib.decompress(body, 47))

    with ThreadPoolExecutor(max_workers=8) as pool:
        sizes = list(pool.map(one, _keys(s3)))
    return {"compressed": sum(s[0] for s in sizes), "raw": sum(s[1] for s in sizes)}


def _suspect() -> Callable[[dict], bool]:
    """Whether a record's ``userIdentity`` is the principal scoped (as the action matches it)."""
    if os.environ.get(PRINCIPAL_ENV) == SERVING_ROLE:
        return lambda ident: (
            (ident.get("sessionContext") or {}).get("sessionIssuer", {}).get("arn") == SERVING_ROLE
        )
    return lambda ident: ident.get("arn") == THIEF or ident.get("accessKeyId") == THIEF_KEY


def plain(s3: object) -> dict[str, int]:
    import gzip

    suspect = _suspect()

    start, end = (
        DAY.strftime("%Y-%m-%dT%H:%M:%SZ"),
        (DAY + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    reads = {"GetObject", "HeadObject", "SelectObjectContent", "RestoreObject", "CopyObject"}
    taken: dict[tuple[str, str, str | None], int] = {}
    seen: set[str] = set()
    records = 0
    for key in _keys(s3):
        body = s3.get_object(Bucket=TRAIL_BUCKET, Key=key)["Body"].read()  # type: ignore[attr-defined]
        for r in json.loads(gzip.decompress(body))["Records"]:
            records += 1
            if not suspect(r.get("userIdentity") or {}):
                continue
            if (
                r.get("eventName") not in reads
                or r.get("errorCode")
                or not start <= r["eventTime"] < end
            ):
                continue
            if r["eventID"] in seen:  # CloudTrail may deliver an event twice
                continue
            seen.add(r["eventID"])
            p = r.get("requestParameters") or {}
            k = (p.get("bucketName"), p.get("key"), p.get("versionId"))
            size = (r.get("additionalEventData") or {}).get("bytesTransferredOut") or 0
            taken[k] = taken.get(k, 0) + int(size)
    return {"records": records, "objects": len(taken), "bytes_out": sum(taken.values())}


def ours() -> dict[str, int]:
    from clampdown.core.actions import ActionContext
    from clampdown.core.home import Home
    from clampdown_aws.forensics import ScopeExfiltration

    home = Path(tempfile.mkdtemp(prefix="clampdown-bench-"))
    ctx = ActionContext(
        run_id="bench", step_id="scope", runbook="bench", home=Home(home), region=REGION
    )
    params = ScopeExfiltration.Input(
        principal=os.environ.get(PRINCIPAL_ENV, THIEF),
        start=DAY,
        end=DAY + timedelta(days=1),
        models=[{"name": "llm-v3", "bucket": "models", "prefix": "llm-v3/"}],
    )
    out = ScopeExfiltration().run(params, ctx)
    return {
        "records": out.records_scanned,
        "files": out.files_scanned,
        "objects": out.totals.objects,
        "bytes_out": out.totals.bytes_out,
        "blind_spots": [s.kind for s in out.blind_spots],
    }


def child(which: str) -> None:
    import resource

    import boto3

    os.environ.pop("CLAMPDOWN_EVIDENCE_BUCKET", None)
    s3 = boto3.client("s3", region_name=REGION)
    s3.list_buckets()  # warm-up: imports, service model, connection
    boto3.client("cloudtrail", region_name=REGION)
    if which == "ours":
        import duckdb  # noqa: F401 - imported before the baseline, like boto3

        from clampdown_aws.forensics import ScopeExfiltration  # noqa: F401
    before = resource.getrusage(resource.RUSAGE_SELF)
    wall = time.perf_counter()
    result = {"floor": lambda: floor(s3), "plain": lambda: plain(s3), "ours": ours}[which]()
    wall = time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    peak_mb = (after.ru_maxrss - before.ru_maxrss) / 1024
    print(json.dumps({"seconds": wall, "cpu": cpu, "peak_mb": peak_mb, **result}))


def measure(which: str, endpoint: str, tree: Path = ROOT) -> dict:
    """One measurement in a fresh process, with the code of ``tree`` (this checkout, or the
    ``--before`` one: its packages first on the path, this script's measurement)."""
    path = os.pathsep.join([str(tree), str(tree / "integrations"), str(tree / "flows")])
    env = {**os.environ, **_aws_env(endpoint), "PYTHONPATH": path}
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", which],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"{which} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(world: dict, results: dict[str, dict]) -> None:
    floor_s, floor_cpu = results["floor"]["seconds"], results["floor"]["cpu"]
    print(
        f"\n{world['records']:,} records in {world['files']:,} files: "
        f"{world['compressed'] / MB:,.0f} MB gzip, {world['raw'] / MB:,.0f} MB JSON "
        f"(seeded in {world['seed_s']:.0f} s); load average {os.getloadavg()[0]:.2f}"
    )
    header = ("seconds", "records/s", "MB/s gz", "MB/s json", "peak MB", "x floor", "cpu s")
    print(f"{'':7}" + "".join(f"{h:>11}" for h in header) + f"{'cpu x floor':>13}")
    for name in [n for n in ("floor", "plain", "before", "ours") if n in results]:
        r = results[name]
        s = r["seconds"]
        cells = (
            f"{s:.1f}",
            f"{world['records'] / s:,.0f}",
            f"{world['compressed'] / MB / s:.1f}",
            f"{world['raw'] / MB / s:.1f}",
            f"{r['peak_mb']:.0f}",
            f"{s / floor_s:.2f}",
            f"{r['cpu']:.1f}",
        )
        print(f"{name:7}" + "".join(f"{c:>11}" for c in cells) + f"{r['cpu'] / floor_cpu:13.2f}")
    o = results["ours"]
    if "plain" in results:
        p = results["plain"]
        agree = (p["objects"], p["bytes_out"]) == (o["objects"], o["bytes_out"])
        plain = f"plain {p['objects']} objects / {p['bytes_out']:,} bytes; "
        verdict = "agree" if agree else "DIFFER"
    else:
        plain, verdict = "plain not run; ", "not compared"
    print(
        f"answers: {plain}"
        f"ours {o['objects']} / {o['bytes_out']:,} ({verdict}); "
        f"ours scanned {o['records']:,} records in {o['files']:,} files; "
        f"blind spots: {', '.join(o['blind_spots']) or 'none'}"
    )
    if "before" in results:
        b = results["before"]
        same = (b["objects"], b["bytes_out"]) == (o["objects"], o["bytes_out"])
        print(f"before: {b['objects']} / {b['bytes_out']:,} ({'agree' if same else 'DIFFER'})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 5_000_000, 20_000_000])
    parser.add_argument("--per-file", type=int, default=2000)
    parser.add_argument(
        "--before",
        type=Path,
        help="another source tree (e.g. `git archive <commit>` unpacked) whose action is "
        "measured too, on the same files, as the row 'before'",
    )
    parser.add_argument(
        "--skip-plain",
        action="store_true",
        help="measure the floor but not the plain loop (its run is the longest)",
    )
    parser.add_argument(
        "--endpoint",
        help="a moto server already running (one size only): seeded if its trail bucket is "
        "empty, else its files are measured as they are (no generating)",
    )
    parser.add_argument(
        "--principal",
        choices=["thief", "serving-role"],
        default="thief",
        help="whom to scope: the thief (calls in one file an hour; default) or the serving "
        "role, whose calls are in every file (the case where no file can be passed over)",
    )
    parser.add_argument("--child", choices=["floor", "plain", "ours"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.principal == "serving-role":
        os.environ[PRINCIPAL_ENV] = SERVING_ROLE
    if args.child:
        child(args.child)
        return
    print(
        f"cores: {os.cpu_count()}; duckdb threads: up to 4 (min of cores); "
        "batches of 32 files (16 MB compressed at most)"
    )
    if args.endpoint and len(args.sizes) != 1:
        parser.error("--endpoint holds one trail: give one size (--sizes N)")
    for size in args.sizes:
        server, endpoint = (None, args.endpoint) if args.endpoint else start_moto()
        try:
            world = (seeded(endpoint) if args.endpoint else None) or seed(
                endpoint, size, args.per_file
            )
            world["records"] = world["files"] * args.per_file
            baselines = ("floor",) if args.skip_plain else ("floor", "plain")
            results = {name: measure(name, endpoint) for name in baselines}
            if args.before:
                results["before"] = measure("ours", endpoint, args.before.resolve())
            results["ours"] = measure("ours", endpoint)
            world["raw"] = world["raw"] or results["floor"]["raw"]
            report(world, results)
        finally:
            if server is not None:
                server.terminate()
                server.wait()


if __name__ == "__main__":
    main()
