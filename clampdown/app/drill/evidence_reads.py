"""A run's evidence read back once after the story, for the objective and the report alike.

The evidence objective re-hashes every object the run's manifest lists; the report lists
each object's Object Lock retention. Both used to read the manifest, and then every object
once each (a GetObject to hash it, a HeadObject for its retention: 112 calls on the
default drill's 56 objects, between ``run.end`` and the printed result). S3 answers a
GetObject with the retention headers too (:func:`clampdown_aws.evidence_store.read_entry`),
so :class:`EvidenceReader` reads the manifest and each object once, a few at a time, and
keeps what it read for whichever of the two asks next. Nothing is read before the runs
ended: the objective still judges the bucket as it is after the story.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from clampdown_aws.evidence_store import EntryRead, read_entry

READERS = 8  # evidence objects read and hashed at once


@dataclass(frozen=True)
class ReadBack:
    """A run's manifest as read (its ``objects``), and for each object what its one read
    gave, or the error it raised (in the manifest's order)."""

    bucket: str
    key: str
    entries: list[dict[str, Any]]
    reads: list[EntryRead | Exception]

    def digests(self) -> list[EntryRead]:
        """Every object's read; the first error (in the manifest's order) is raised."""
        for read in self.reads:
            if isinstance(read, Exception):
                raise read
        return [read for read in self.reads if isinstance(read, EntryRead)]

    def with_retention(self) -> list[dict[str, Any]]:
        """The entries with ``lock_mode`` and ``retain_until``, as
        :func:`clampdown_aws.evidence_package.with_retention` gives them: an object S3
        refused to give (a ClientError) has no mode and the entry's own ``locked_until``;
        any other error is raised."""
        from botocore.exceptions import ClientError

        from clampdown_aws.evidence_package import with_lock

        found = []
        for entry, read in zip(self.entries, self.reads, strict=True):
            if isinstance(read, ClientError):
                found.append(with_lock(entry, None, None))
            elif isinstance(read, Exception):
                raise read
            else:
                found.append(with_lock(entry, read.lock_mode, read.retain_until))
        return found


class EvidenceReader:
    """Reads a run's evidence back once (see the module docstring); thread-safe: a caller
    that asks while another reads the same run waits for that read and gets its result,
    an error included."""

    def __init__(self, client: Callable[[str], Any], bucket: str) -> None:
        self._client = client
        self._bucket = bucket
        self._lock = threading.Lock()
        self._runs: dict[str, tuple[threading.Lock, list[ReadBack | Exception]]] = {}

    def read(self, run_id: str) -> ReadBack:
        """The run's manifest (``incidents/<run_id>/manifest.json``, its latest version)
        and its objects; what reading the manifest raised (NoSuchKey: never written) is
        raised to every caller."""
        with self._lock:
            lock, done = self._runs.setdefault(run_id, (threading.Lock(), []))
        with lock:
            if not done:
                try:
                    done.append(self._read(run_id))
                except Exception as exc:
                    done.append(exc)
        if isinstance(done[0], Exception):
            raise done[0]
        return done[0]

    def _read(self, run_id: str) -> ReadBack:
        s3 = self._client("s3")
        key = f"incidents/{run_id}/manifest.json"
        manifest = json.loads(s3.get_object(Bucket=self._bucket, Key=key)["Body"].read())
        entries = list(manifest.get("objects", []))

        def one(entry: dict[str, Any]) -> EntryRead | Exception:
            try:
                return read_entry(s3, self._bucket, entry)
            except Exception as exc:
                return exc

        with ThreadPoolExecutor(READERS, thread_name_prefix="drill-evidence-read") as pool:
            reads = list(pool.map(one, entries))
        return ReadBack(self._bucket, key, entries, reads)
