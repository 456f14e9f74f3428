#!/usr/bin/env python3
"""What the PostgreSQL run store costs a ledger append, next to the file ledger.

In the scaled mode without a shared filesystem (``CLAMPDOWN_RUN_STORE=postgresql``) each
ledger record is stored in PostgreSQL first (one transaction: lock the run's row, check
the chain head, insert the line, move the head), then written to the local file as a
cache. This prints the median and p95 time of one ``Ledger.append`` (a typical step.end
record, unsigned) for:

* **file** — the baseline, measured in the same run: the local ledger, chain + fsync;
* **postgresql** — the run store on a throwaway local cluster (``tests.pg``: loopback TCP,
  ``fsync=off`` as the tests run it, so this is the protocol's cost, not a disk's;
  a production server with ``synchronous_commit=on`` adds its WAL flush);
* **postgresql, joined** — every append follows one by another writer (serve's joined
  alert): the owner's head is stale, its first try conflicts and it chains again;
* **materialize** — bringing a run of that many records into an empty home.

    python benchmarks/run_store.py [--records 300]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `tests.pg`: the same throwaway PostgreSQL cluster as the tests

UNDO = [{"description": "reactivate access key AKIA… of user/mallory", "op": "key", "id": "x"}]


def _figures(name: str, seconds: list[float]) -> str:
    ms = sorted(s * 1000 for s in seconds)
    p95 = ms[min(len(ms) - 1, int(len(ms) * 0.95))]
    return f"{name:<22} median {statistics.median(ms):7.2f} ms   p95 {p95:7.2f} ms   n={len(ms)}"


def main() -> None:
    import psycopg

    from clampdown.core.home import Home
    from clampdown.core.ledger import Ledger, append_to
    from clampdown.core.run_store_pg import PostgresRunStore
    from tests.pg import Cluster, find_bin_dir

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=300)
    args = parser.parse_args()
    bin_dir = find_bin_dir()
    if bin_dir is None:
        raise SystemExit("needs PostgreSQL server binaries (initdb, pg_ctl)")
    cluster = Cluster(bin_dir)
    cluster.start()
    try:
        name = f"bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(cluster.url, autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {name}")
        store = PostgresRunStore(cluster.url.rsplit("/", 1)[0] + f"/{name}")
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            kinds: dict[str, list[float]] = {"file": [], "postgresql": [], "postgresql, joined": []}
            ledgers = {
                "file": Ledger(root / "file" / "ledger.jsonl"),
                "postgresql": Ledger(
                    Home(root / "pg", store=store).run("pg").ledger,
                    primary=store.ledger("pg"),
                ),
                "postgresql, joined": Ledger(
                    Home(root / "joined", store=store).run("joined").ledger,
                    primary=store.ledger("joined"),
                ),
            }
            serve = Home(root / "serve", store=store).run("joined")
            for ledger in ledgers.values():
                ledger.append("run.start", run={"id": "bench"})
            for i in range(args.records):
                append_to(serve.ledger, "alert.joined", primary=serve.ledger_primary, n=i)
                for kind, ledger in ledgers.items():  # interleaved: same machine load
                    started = time.perf_counter()
                    ledger.append("step.end", step=f"s{i}", status="succeeded", undo=UNDO)
                    kinds[kind].append(time.perf_counter() - started)
            for ledger in ledgers.values():
                ledger.close()
            fresh = []
            for i in range(10):
                started = time.perf_counter()
                Home(root / f"reader-{i}", store=store).run("pg").materialize()
                fresh.append(time.perf_counter() - started)
        for kind, seconds in kinds.items():
            print(_figures(kind, seconds))
        print(_figures(f"materialize {args.records + 1} rec", fresh))
        store.close()
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
