"""The seed writes a drill's trail files a few at a time, each file as before.

One PUT per CloudTrail file (50 for the default drill's day of trail): they overlap
(``clampdown_aws.testing.trail.PUTS_AT_ONCE``), and the seeded facts list every file in
delivery order, as the bucket holds them.
"""

from __future__ import annotations

import gzip
import json
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest

from clampdown.core.drill_library import load_drill, resolve_drill
from clampdown_aws.testing.seed import seed

LIBRARY = Path(__file__).resolve().parents[2] / "runbooks"


@pytest.fixture
def clients(mocked_aws: None) -> dict[str, Any]:
    session = boto3.session.Session(region_name="us-east-1")
    return {
        name: session.client(name)
        for name in ("s3", "iam", "sts", "sagemaker", "cloudtrail", "logs")
    }


def test_trail_files_are_all_written_in_delivery_order(clients: dict[str, Any]) -> None:
    drill, _ = load_drill(resolve_drill("model-theft", LIBRARY))
    seeded = seed(drill.seed, datetime.now(UTC), clients.__getitem__)
    assert drill.seed.trail is not None
    s3, bucket = clients["s3"], drill.seed.trail.bucket
    stored = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="AWSLogs/")["Contents"]]
    assert len(seeded.trail_objects) == len(stored) >= 50
    assert sorted(seeded.trail_objects) == sorted(stored)
    assert seeded.trail_objects == sorted(seeded.trail_objects)  # delivery time is in the key
    records = [
        r
        for key in seeded.trail_objects
        for r in json.loads(gzip.decompress(s3.get_object(Bucket=bucket, Key=key)["Body"].read()))[
            "Records"
        ]
    ]
    assert records == seeded.trail_records


def test_trail_puts_overlap(clients: dict[str, Any]) -> None:
    """The first two trail PUTs wait for each other: one at a time never gets past."""
    drill, _ = load_drill(resolve_drill("model-theft", LIBRARY))
    meet = threading.Barrier(2, timeout=20)
    seen = {"n": 0}
    lock = threading.Lock()

    def first_two_meet(params: dict[str, Any], **_: Any) -> None:
        if "/AWSLogs/" not in params["url_path"]:
            return
        with lock:
            seen["n"] += 1
            first = seen["n"] <= 2
        if first:
            meet.wait()

    clients["s3"].meta.events.register("before-call.s3.PutObject", first_two_meet)
    seeded = seed(drill.seed, datetime.now(UTC), clients.__getitem__)
    assert len(seeded.trail_objects) >= 50
