#!/usr/bin/env python3
"""What signing every ledger record costs: per-record append time, unsigned vs signed.

Every record a run writes is signed as it is written (clampdown.core.ledger_signing), so
the cost of one signature is paid per record, inside the ledger's lock. This prints the
median and p95 time of one ``Ledger.append`` (a typical step.end record, fsync'd) for:

* **unsigned** — the baseline, measured in the same run: chain + fsync, no signature;
* **ed25519** — the local key of drills and development;
* **kms (moto, in-process)** — ``kms:Sign`` ECC_NIST_P256 through boto3 against moto's
  in-process mock: the client-side cost of a KMS call without a network;
* **kms (moto server)** — the same over HTTP to moto server on loopback: the round trip
  a real KMS call adds on top (AWS KMS in-region adds its own latency, typically a few ms);
* **verify** — checking one record's signature (Ed25519; KMS: local ECDSA check with the
  public key fetched once).

Anchoring (the newest signed head to S3) runs on a background thread and is not in
these figures.

    python benchmarks/ledger_signing.py [--records 300]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

UNDO = [{"description": "reactivate access key AKIA… of user/mallory", "op": "key", "id": "x"}]


def appends(folder: Path, name: str, signer: Any, records: int) -> list[float]:
    from clampdown.core.ledger_signing import open_ledger

    ledger = open_ledger(folder / f"{name}.jsonl", "bench", signer)
    ledger.append("run.start", run={"id": "bench"})
    took = []
    for n in range(records):
        start = time.perf_counter()
        ledger.append("step.end", step=f"s{n}", status="succeeded", outputs={"n": n}, undo=UNDO)
        took.append(time.perf_counter() - start)
    ledger.close()
    return took


def verifies(path: Path, signer: Any) -> float:
    from clampdown.core.ledger_signing import verify_ledger

    lines = path.read_bytes().splitlines()
    start = time.perf_counter()
    verdict = verify_ledger(lines, signer)
    assert verdict.status in ("intact", "truncated"), verdict.message
    return (time.perf_counter() - start) / len(lines)


def row(label: str, took: list[float], base: float | None) -> str:
    median = statistics.median(took) * 1000
    p95 = statistics.quantiles(took, n=20)[-1] * 1000
    extra = f"  ({median - base:+.3f} ms per record)" if base is not None else ""
    return f"{label:<28} median {median:7.3f} ms   p95 {p95:7.3f} ms{extra}"


def kms_signer(endpoint: str | None) -> Any:
    import boto3

    from clampdown_aws.ledger_signer import KmsSigner

    kms = boto3.client("kms", endpoint_url=endpoint)
    key = kms.create_key(KeyUsage="SIGN_VERIFY", KeySpec="ECC_NIST_P256")["KeyMetadata"]
    return KmsSigner(kms, key["KeyId"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=300)
    args = parser.parse_args()
    import logging

    from moto import mock_aws
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto server's request log

    from clampdown.core.ledger_signing import generate_local_key, load_local_key

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        local = load_local_key(generate_local_key(folder / "keys" / "k.pem"), folder / "home")
        base = appends(folder, "unsigned", None, args.records)
        baseline = statistics.median(base) * 1000
        print(f"ledger append, {args.records} step.end records each (fsync'd)")
        print(row("unsigned (baseline)", base, None))
        print(row("ed25519", appends(folder, "ed25519", local, args.records), baseline))
        with mock_aws():
            signer = kms_signer(None)
            print(
                row(
                    "kms (moto, in-process)", appends(folder, "kms", signer, args.records), baseline
                )
            )
            per_verify_kms = verifies(folder / "kms.jsonl", signer)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            remote = kms_signer(f"http://{host}:{port}")
            print(
                row(
                    "kms (moto server, HTTP)",
                    appends(folder, "kms-http", remote, args.records),
                    baseline,
                )
            )
        finally:
            server.stop()
        per_verify = verifies(folder / "ed25519.jsonl", local)
        print(f"{'verify, ed25519':<28} {per_verify * 1000:7.3f} ms per record")
        print(f"{'verify, kms (public key)':<28} {per_verify_kms * 1000:7.3f} ms per record")


if __name__ == "__main__":
    main()
