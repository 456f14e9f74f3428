"""The evidence manifest reads back only the entries this process does not know.

Every evidence step and the run's end join the run's manifest; the default drill's
critical path did it twice with one GET per entry. An entry this process wrote or read
is known by its listed ETag and size (``clampdown_aws.evidence_store.KnownEntries``), so
it is not read again; another process's entry, or one rewritten with other bytes, is.
The manifest's content is the same either way.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import boto3
import pytest

from clampdown_aws.evidence_store import EvidenceStore, KnownEntries


@pytest.fixture
def s3(mocked_aws: None) -> Any:
    client = boto3.client("s3", region_name="us-east-1")
    client.create_bucket(Bucket="evidence", ObjectLockEnabledForBucket=True)
    return client


def _gets(s3: Any) -> list[str]:
    """The keys of every GetObject the client sends from now on."""
    keys: list[str] = []
    s3.meta.events.register(
        "before-call.s3.GetObject", lambda params, **_: keys.append(params["url_path"])
    )
    return keys


def _manifest(s3: Any, key: str) -> dict[str, Any]:
    return json.loads(s3.get_object(Bucket="evidence", Key=key)["Body"].read())


def test_entries_this_process_wrote_are_not_read_back(s3: Any) -> None:
    store = EvidenceStore(s3, "evidence", "run1", known=KnownEntries())
    written = {store.put(f"o/{i}.txt", [str(i).encode()]).key: i for i in range(12)}
    gets = _gets(s3)
    manifest = store.write_manifest()
    assert gets == []
    objects = _manifest(s3, manifest.key)["objects"]
    assert [o["key"] for o in objects] == sorted(written)
    assert all(
        o["sha256"] == hashlib.sha256(str(written[o["key"]]).encode()).hexdigest() for o in objects
    )


def test_another_process_entries_are_read_once(s3: Any) -> None:
    """A store with other known entries stands for another process of the run."""
    ours = KnownEntries()
    other = EvidenceStore(s3, "evidence", "run2", known=KnownEntries())
    theirs = [other.put(f"theirs/{i}.txt", [b"x" * i]).key for i in range(5)]
    store = EvidenceStore(s3, "evidence", "run2", known=ours)
    mine = store.put("mine.txt", [b"mine"]).key
    gets = _gets(s3)
    first = store.write_manifest()
    assert len(gets) == 5 and all("manifest.d/theirs__" in g for g in gets)
    assert [o["key"] for o in _manifest(s3, first.key)["objects"]] == sorted([*theirs, mine])
    gets.clear()
    store.write_manifest()  # the entries read the first time are known now
    assert gets == []


def test_an_entry_rewritten_with_other_bytes_is_read_again(s3: Any) -> None:
    store = EvidenceStore(s3, "evidence", "run3", known=KnownEntries())
    obj = store.put("a.txt", [b"first"])
    entry_key = "incidents/run3/manifest.d/a.txt.json"
    forged = {"key": obj.key, "sha256": "0" * 64, "size": 5, "version_id": None}
    s3.put_object(Bucket="evidence", Key=entry_key, Body=json.dumps(forged).encode())
    gets = _gets(s3)
    manifest = store.write_manifest()
    assert len(gets) == 1 and gets[0].endswith("/manifest.d/a.txt.json")
    assert _manifest(s3, manifest.key)["objects"] == [forged]


def test_known_entries_are_bounded_and_keyed_by_etag_and_size() -> None:
    known = KnownEntries(limit=2)
    known.keep("b", "k1", '"e1"', b"one")
    known.keep("b", "k2", '"e2"', b"two")
    assert known.get("b", "k1", '"e1"', 3) == b"one"  # k1 is now the most recently used
    known.keep("b", "k3", '"e3"', b"three")
    assert known.get("b", "k2", '"e2"', 3) is None  # the least recently used went
    assert known.get("b", "k1", '"e1"', 3) == b"one"
    assert known.get("b", "k1", '"other"', 3) is None
    assert known.get("b", "k1", '"e1"', 4) is None
    assert known.get("b", "k1", None, 3) is None
