"""A run's evidence package in S3: read the run's manifest and each object's retention,
upload the package under Object Lock, and verify it after upload.

The package itself is built and checked by the core
(:mod:`clampdown.core.incident_report_package`); this module is the S3 side. The
package goes next to the run's evidence, ``incidents/<run-id>/exports/<name>``, through
the same :class:`~clampdown_aws.evidence_store.EvidenceStore` the run's evidence used
(streamed, hashed, Object Lock retention when the bucket has it), with a
``<name>.sha256`` beside it so a copy can be checked against what was uploaded.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from clampdown_aws.evidence_store import EvidenceStore, object_lock

EXPORTS = "exports"


def split_uri(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not bucket or not key:
        raise ValueError(f"{uri!r} is not an s3://bucket/key URI")
    return bucket, key


def read_manifest(s3: Any, uri: str, version_id: str | None = None) -> bytes:
    """The bytes of a run's evidence manifest (``s3://…/manifest.json``), the version the
    ledger pinned when it names one."""
    bucket, key = split_uri(uri)
    args = {"Bucket": bucket, "Key": key}
    if version_id:
        args["VersionId"] = version_id
    return bytes(s3.get_object(**args)["Body"].read())


def retention(
    s3: Any, bucket: str, key: str, version_id: str | None
) -> tuple[str | None, str | None]:
    """(mode, retain-until) of one object version, as HeadObject reports them (it needs
    s3:GetObjectRetention to include them); (None, None) when it has none."""
    args = {"Bucket": bucket, "Key": key}
    if version_id:
        args["VersionId"] = version_id
    try:
        head = s3.head_object(**args)
    except s3.exceptions.ClientError:
        return None, None
    return object_lock(head)


def with_retention(s3: Any, bucket: str, entries: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Manifest entries with ``lock_mode`` and ``retain_until`` read from S3 for each."""
    return [
        with_lock(entry, *retention(s3, bucket, str(entry.get("key")), entry.get("version_id")))
        for entry in entries
    ]


def with_lock(entry: dict[str, Any], mode: str | None, until: str | None) -> dict[str, Any]:
    """A manifest entry with the ``lock_mode`` and ``retain_until`` S3 gave for its object
    (the entry's own ``locked_until`` when S3 gave no date)."""
    return {**entry, "lock_mode": mode, "retain_until": until or entry.get("locked_until")}


@dataclass(frozen=True)
class Uploaded:
    """Where the package is and how it is kept."""

    uri: str
    sha256: str
    size: int
    version_id: str | None
    lock_mode: str | None
    retain_until: str | None


class PackageUploadFailed(Exception):
    """The package in S3 is not the package built (or cannot be read back)."""


def upload_package(
    s3: Any,
    bucket: str,
    run_id: str,
    name: str,
    data: bytes,
    *,
    retention_days: int,
    lock_mode: str,
) -> Uploaded:
    """Put the package (and its ``.sha256``) under the run's prefix, then read it back:
    its hash must be the one built, and its retention is what S3 reports."""
    store = EvidenceStore(s3, bucket, run_id, retention_days=retention_days, lock_mode=lock_mode)
    obj = store.put(f"{EXPORTS}/{name}", [data], "application/gzip")
    digest = hashlib.sha256(data).hexdigest()
    store.put(f"{EXPORTS}/{name}.sha256", [f"{digest}  {name}\n".encode()], "text/plain")
    args = {"Bucket": bucket, "Key": obj.key}
    if obj.version_id:
        args["VersionId"] = obj.version_id
    back = hashlib.sha256(s3.get_object(**args)["Body"].read()).hexdigest()
    if back != digest or obj.sha256 != digest:
        raise PackageUploadFailed(
            f"s3://{bucket}/{obj.key} reads back with SHA-256 {back}, not {digest}"
        )
    mode, until = retention(s3, bucket, obj.key, obj.version_id)
    return Uploaded(f"s3://{bucket}/{obj.key}", digest, obj.size, obj.version_id, mode, until)


@dataclass(frozen=True)
class Downloaded:
    """A package read from S3, with what S3 says about it."""

    data: bytes
    version_id: str | None
    lock_mode: str | None
    retain_until: str | None
    recorded_sha256: str | None  # from the ``.sha256`` beside it (None: there is none)


def download_package(s3: Any, uri: str) -> Downloaded:
    """The package's bytes, its retention, and the hash recorded beside it at upload."""
    bucket, key = split_uri(uri)
    got = s3.get_object(Bucket=bucket, Key=key)
    data = bytes(got["Body"].read())
    version = got.get("VersionId")
    mode, until = retention(s3, bucket, key, version)
    try:
        side = s3.get_object(Bucket=bucket, Key=f"{key}.sha256")["Body"].read().decode()
        recorded: str | None = side.split()[0] if side.strip() else None
    except s3.exceptions.ClientError:
        recorded = None
    return Downloaded(data, version, mode, until, recorded)


def manifest_entries(body: bytes) -> list[dict[str, Any]]:
    """The ``objects`` of an evidence manifest's JSON."""
    return list(json.loads(body).get("objects", []))
