"""Evidence in S3: streamed, hashed, locked, and listed in a manifest.

Every object goes under ``s3://<bucket>/incidents/<run-id>/``. Uploads stream
(multipart above one part) and hash as they go, so memory stays flat however
large the evidence. When the bucket has Object Lock, each object gets a
retention (``CLAMPDOWN_EVIDENCE_LOCK_MODE``, default COMPLIANCE — GOVERNANCE in
drills — for ``CLAMPDOWN_EVIDENCE_RETENTION_DAYS``, default 365): nobody, including
this engine and rollback, can delete it before then (in GOVERNANCE mode a principal
with ``s3:BypassGovernanceRetention`` can).

During the run each signed ledger head is copied to ``heads/<seq>.json``
(:meth:`EvidenceStore.put_head`); ``clampdown verify RUN_ID`` compares them, and the
ledger object, with the local ledger (:func:`read_copy`).

Steps write evidence concurrently, so each object's manifest entry is its own
small object under ``manifest.d/``; :func:`write_manifest` joins them into
``manifest.json`` when the steps are done (reading from S3 only the entries this process
does not know by their listed ETag: :class:`KnownEntries`). The manifest's version id and
SHA-256 are recorded in the ledger's ``run.end`` (signed), and ``clampdown verify
s3://…/manifest.json`` checks that pinned version, not the latest one, and re-hashes
every object it lists (:func:`verify_manifest`). The ledger itself is stored after
``run.end`` (``ledger.jsonl``) and checked by its chain and signatures.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

PART_SIZE = 8 * 1024 * 1024
PREFIX = "incidents"
HEADS = "heads"
READ_AT_ONCE = 8
"""Manifest entries read back from S3 at a time: one GET each, on a run's critical path."""


class KnownEntries:
    """Manifest entries this process wrote or read, by bucket, key, ETag and size (bounded).

    Why: every evidence step and the run's end write the manifest, and each write listed
    and read back every entry of the run (57 GETs twice on the default drill's critical
    path, after the scope step and before ``run.end``). An entry whose listed ETag and size
    are those of a write or read of this process has the bytes kept here (S3 gives a new
    ETag to an object rewritten with other bytes), so only the entries this process does
    not know (another process's, or rewritten since) are read; the manifest's content is
    the same. Bytes are kept, not parsed entries: no caller shares a mutable dict.
    """

    def __init__(self, limit: int = 4096) -> None:
        self._limit = limit
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[str, str, str, int], bytes] = OrderedDict()

    def get(self, bucket: str, key: str, etag: str | None, size: int | None) -> bytes | None:
        if not etag or size is None:
            return None
        with self._lock:
            body = self._entries.get((bucket, key, etag, size))
            if body is not None:
                self._entries.move_to_end((bucket, key, etag, size))
            return body

    def keep(self, bucket: str, key: str, etag: str | None, body: bytes) -> None:
        if not etag:
            return
        with self._lock:
            self._entries[(bucket, key, etag, len(body))] = body
            self._entries.move_to_end((bucket, key, etag, len(body)))
            while len(self._entries) > self._limit:
                self._entries.popitem(last=False)


KNOWN_ENTRIES = KnownEntries()
"""This process's manifest entries (see :class:`KnownEntries`): stores share it by default."""


@dataclass(frozen=True)
class EvidenceObject:
    key: str
    sha256: str
    size: int
    version_id: str | None
    locked_until: str | None
    lock_mode: str | None = None


class EvidenceStore:
    """Writes one run's evidence to one bucket."""

    def __init__(
        self,
        s3: Any,
        bucket: str,
        run_id: str,
        *,
        retention_days: int = 365,
        lock_mode: str = "COMPLIANCE",
        known: KnownEntries | None = None,
        locked: bool | None = None,
    ) -> None:
        """``locked``: True when the caller already knows the bucket has Object Lock (it
        cannot be turned off once on, so the answer holds); None: asked at the first write."""
        self.s3 = s3
        self.known = KNOWN_ENTRIES if known is None else known
        self.bucket = bucket
        self.prefix = f"{PREFIX}/{run_id}"
        self.retention_days = retention_days
        self.lock_mode = lock_mode
        self._locked: bool | None = True if locked else None

    def uri(self, name: str = "") -> str:
        return f"s3://{self.bucket}/{self.prefix}/{name}"

    def bucket_has_object_lock(self) -> bool:
        if self._locked is None:
            try:
                conf = self.s3.get_object_lock_configuration(Bucket=self.bucket)
                self._locked = conf["ObjectLockConfiguration"].get("ObjectLockEnabled") == "Enabled"
            except self.s3.exceptions.ClientError as exc:
                if exc.response["Error"]["Code"] != "ObjectLockConfigurationNotFoundError":
                    raise
                self._locked = False
        return self._locked

    def _lock_args(self) -> dict[str, Any]:
        if not self.bucket_has_object_lock():
            return {}
        until = datetime.now(UTC) + timedelta(days=self.retention_days)
        return {"ObjectLockMode": self.lock_mode, "ObjectLockRetainUntilDate": until}

    def put(
        self, name: str, chunks: Iterable[bytes], content_type: str = "application/octet-stream"
    ) -> EvidenceObject:
        """Stream ``chunks`` to ``<prefix>/<name>``; hash and size come from the bytes sent."""
        key = f"{self.prefix}/{name}"
        digest, size = hashlib.sha256(), 0
        lock = self._lock_args()
        buffer = bytearray()
        upload_id: str | None = None
        parts: list[dict[str, Any]] = []
        try:
            for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
                buffer += chunk
                if len(buffer) >= PART_SIZE:
                    if upload_id is None:
                        upload_id = self.s3.create_multipart_upload(
                            Bucket=self.bucket, Key=key, ContentType=content_type, **lock
                        )["UploadId"]
                    parts.append(self._part(key, upload_id, len(parts) + 1, bytes(buffer)))
                    buffer.clear()
            if upload_id is None:
                response = self.s3.put_object(
                    Bucket=self.bucket,
                    Key=key,
                    Body=bytes(buffer),
                    ContentType=content_type,
                    **lock,
                )
            else:
                if buffer:
                    parts.append(self._part(key, upload_id, len(parts) + 1, bytes(buffer)))
                response = self.s3.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                )
                if lock:  # state the retention on the object itself, not only on the upload
                    self.s3.put_object_retention(
                        Bucket=self.bucket,
                        Key=key,
                        VersionId=response.get("VersionId"),
                        Retention={
                            "Mode": lock["ObjectLockMode"],
                            "RetainUntilDate": lock["ObjectLockRetainUntilDate"],
                        },
                    )
        except BaseException:
            if upload_id is not None:
                self.s3.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            raise
        until = lock.get("ObjectLockRetainUntilDate")
        obj = EvidenceObject(
            key,
            digest.hexdigest(),
            size,
            response.get("VersionId"),
            until.isoformat() if until else None,
            lock.get("ObjectLockMode"),
        )
        self._record(name, obj)
        return obj

    def _part(self, key: str, upload_id: str, number: int, body: bytes) -> dict[str, Any]:
        etag = self.s3.upload_part(
            Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body
        )["ETag"]
        return {"PartNumber": number, "ETag": etag}

    def _record(self, name: str, obj: EvidenceObject) -> None:
        entry = json.dumps(asdict(obj), sort_keys=True).encode()
        safe = name.replace("/", "__")
        key = f"{self.prefix}/manifest.d/{safe}.json"
        response = self.s3.put_object(
            Bucket=self.bucket,
            Key=key,
            Body=entry,
            ContentType="application/json",
            **self._lock_args(),
        )
        self.known.keep(self.bucket, key, response.get("ETag"), entry)

    def put_head(self, covers: int, line: bytes) -> None:
        """Copy one signed ledger head (its record's line) under Object Lock."""
        self.put_plain(f"{HEADS}/{covers:08d}.json", line, "application/json")

    def put_plain(self, name: str, body: bytes, content_type: str) -> str | None:
        """A small locked object outside the manifest (signed heads, the ledger's last copy)."""
        response = self.s3.put_object(
            Bucket=self.bucket,
            Key=f"{self.prefix}/{name}",
            Body=body,
            ContentType=content_type,
            **self._lock_args(),
        )
        version = response.get("VersionId")
        return str(version) if version else None

    def write_manifest(self) -> EvidenceObject:
        """Join every manifest entry of the run into ``manifest.json`` (itself locked)."""
        paginator = self.s3.get_paginator("list_objects_v2")
        listed = [
            item
            for page in paginator.paginate(Bucket=self.bucket, Prefix=f"{self.prefix}/manifest.d/")
            for item in page.get("Contents", [])
        ]

        def entry(item: dict[str, Any]) -> Any:
            key = item["Key"]
            body = self.known.get(self.bucket, key, item.get("ETag"), item.get("Size"))
            if body is None:
                response = self.s3.get_object(Bucket=self.bucket, Key=key)
                body = response["Body"].read()
                self.known.keep(self.bucket, key, response.get("ETag"), body)
            return json.loads(body)

        # Entries may come from other processes of the run: those this process does not
        # know by their listed ETag (KnownEntries) are read, a few at a time (boto3
        # clients allow it).
        with ThreadPoolExecutor(READ_AT_ONCE, thread_name_prefix="clampdown-manifest") as pool:
            entries = list(pool.map(entry, listed))
        entries.sort(key=lambda e: e["key"])
        manifest = {"run_prefix": self.uri(), "algorithm": "sha256", "objects": entries}
        body = json.dumps(manifest, indent=2, sort_keys=True).encode()
        key = f"{self.prefix}/manifest.json"
        response = self.s3.put_object(
            Bucket=self.bucket,
            Key=key,
            Body=body,
            ContentType="application/json",
            **self._lock_args(),
        )
        return EvidenceObject(
            key, hashlib.sha256(body).hexdigest(), len(body), response.get("VersionId"), None
        )


def read_copy(s3: Any, bucket: str, run_id: str) -> tuple[bytes | None, list[bytes]]:
    """A run's ledger object (latest version; None: not there) and its anchored heads."""
    prefix = f"{PREFIX}/{run_id}"
    try:
        ledger = s3.get_object(Bucket=bucket, Key=f"{prefix}/ledger.jsonl")["Body"].read()
    except s3.exceptions.NoSuchKey:
        ledger = None
    heads = []
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=f"{prefix}/{HEADS}/"):
        for item in page.get("Contents", []):
            heads.append(s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read())
    return ledger, heads


def verify_manifest(s3: Any, uri: str, pin: dict[str, Any] | None = None) -> tuple[bool, list[str]]:
    """Re-hash every object a manifest lists; return (ok, one line per object).

    With ``pin`` (the ledger's ``evidence.manifest`` record: version id and SHA-256),
    that version of the manifest is read and its hash checked, and a newer version
    (someone wrote a new manifest over it) is reported, not trusted.
    """
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    lines, ok = [], True
    args = {"Bucket": bucket, "Key": key}
    if pin and pin.get("version_id"):
        args["VersionId"] = str(pin["version_id"])
    body = s3.get_object(**args)["Body"].read()
    if pin:
        ok, pinned = _pinned(s3, bucket, key, body, pin)
        lines.extend(pinned)
    manifest = json.loads(body)
    for entry in manifest["objects"]:
        sha256, size = entry_digest(s3, bucket, entry)
        good = sha256 == entry["sha256"] and size == entry["size"]
        ok &= good
        lines.append(f"{'ok      ' if good else 'CHANGED '} {entry['key']} ({size} bytes)")
    return ok, lines


def entry_digest(s3: Any, bucket: str, entry: dict[str, Any]) -> tuple[str, int]:
    """The SHA-256 (hex) and size of the object a manifest entry names (its version, when
    the entry has one), read back from S3 in 1 MiB chunks."""
    read = read_entry(s3, bucket, entry)
    return read.sha256, read.size


@dataclass(frozen=True)
class EntryRead:
    """One manifest entry's object as one GetObject gave it: the hash and size of its
    bytes, and its Object Lock retention (None, None: it has none)."""

    sha256: str
    size: int
    lock_mode: str | None
    retain_until: str | None


def read_entry(s3: Any, bucket: str, entry: dict[str, Any]) -> EntryRead:
    """The object a manifest entry names (its version, when the entry has one), read back
    once: hashed in 1 MiB chunks, with its retention from the same answer.

    Why one call: S3 returns ``x-amz-object-lock-mode`` and ``-retain-until-date`` on
    GetObject as on HeadObject (to a caller allowed ``s3:GetObjectRetention``), so a
    reader that checks the hash and lists the retention (the drill's report: 56 objects
    after the story) needs no HeadObject per object. The retention is given as
    :func:`clampdown_aws.evidence_package.retention` gives it."""
    args = {"Bucket": bucket, "Key": entry["key"]}
    if entry.get("version_id"):
        args["VersionId"] = entry["version_id"]
    response = s3.get_object(**args)
    digest, size = hashlib.sha256(), 0
    for chunk in response["Body"].iter_chunks(1024 * 1024):
        digest.update(chunk)
        size += len(chunk)
    return EntryRead(digest.hexdigest(), size, *object_lock(response))


def object_lock(answer: dict[str, Any]) -> tuple[str | None, str | None]:
    """(mode, retain-until as ISO text) of an object from a GetObject or HeadObject answer;
    (None, None) when it has none (or the caller may not read its retention)."""
    until = answer.get("ObjectLockRetainUntilDate")
    return answer.get("ObjectLockMode"), until.isoformat() if hasattr(until, "isoformat") else until


def _pinned(
    s3: Any, bucket: str, key: str, body: bytes, pin: dict[str, Any]
) -> tuple[bool, list[str]]:
    """The pinned manifest version is the one read, unchanged, and still the latest."""
    lines, ok = [], True
    digest = hashlib.sha256(body).hexdigest()
    version = pin.get("version_id")
    if digest != pin.get("sha256"):
        ok = False
        lines.append(
            f"CHANGED  {key} version {version}: sha256 {digest[:16]}…, the ledger pinned "
            f"{str(pin.get('sha256'))[:16]}…"
        )
    else:
        lines.append(f"pinned   {key} version {version} (sha256 {digest[:16]}…, as in the ledger)")
    latest = s3.head_object(Bucket=bucket, Key=key)
    if version and latest.get("VersionId") != version:
        ok = False
        lines.append(
            f"NEWER    {key} version {latest.get('VersionId')} (written "
            f"{latest.get('LastModified')}) is not the version the ledger pins: not trusted"
        )
    return ok, lines
