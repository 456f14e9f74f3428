"""Object Lock legal holds on a model's artifacts (``aws.s3.lock_model_artifacts``).

Every version under the prefix is held, in chunks of ``HOLD_CHUNK`` versions; each chunk's
undo record lists exactly the (key, version id) pairs this run turned ON, keys relative to
the prefix, so rollback never releases a hold that someone else placed (see
:mod:`clampdown_aws.s3`).

Each chunk's undo is declared before its holds are set: the intent lists the versions of
the chunk that had no hold when the run looked, just before setting them, and the
confirmation the ones it set. A run killed in between leaves the intent unconfirmed, and
rollback turns OFF the holds it lists (a version never held, or deleted since, is left as
it is). The one thing it cannot tell apart: a hold that someone else placed on one of
those versions after the run stopped and before the rollback is released too;
``clampdown rollback --plan`` lists the versions, marked "may have been applied".
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from clampdown.core.actions import ActionContext
from clampdown_aws.base import AwsActionError

HOLD_CHUNK = 500  # versions per undo record
HOLD_WORKERS = 8  # concurrent legal-hold calls
LIST_PAGE_SIZE = 1000  # versions per ListObjectVersions page


class ObjectLockNotEnabled(AwsActionError):
    """legal_hold was asked for on a bucket without S3 Object Lock."""


def _object_lock_enabled(s3: Any, bucket: str) -> bool:
    try:
        conf = s3.get_object_lock_configuration(Bucket=bucket)
    except s3.exceptions.ClientError as exc:
        if exc.response["Error"]["Code"] == "ObjectLockConfigurationNotFoundError":
            return False
        raise
    return conf.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled"


def check_object_lock(s3: Any, bucket: str, legal_hold: bool) -> None:
    """legal_hold needs Object Lock: checked before anything changes."""
    if legal_hold and not _object_lock_enabled(s3, bucket):
        raise ObjectLockNotEnabled(
            f"bucket {bucket} has no S3 Object Lock, so legal holds cannot be set; "
            "nothing was changed. Run with legal_hold: false, or enable Object Lock on the "
            "bucket first (PutObjectLockConfiguration, needs versioning)"
        )


def _held(s3: Any, bucket: str, key: str, version_id: str) -> bool:
    """Whether this version's legal hold is ON."""
    try:
        status = (
            s3.get_object_legal_hold(Bucket=bucket, Key=key, VersionId=version_id)
            .get("LegalHold", {})
            .get("Status")
        )
    except s3.exceptions.ClientError as exc:
        if exc.response["Error"]["Code"] != "NoSuchObjectLockConfiguration":
            raise
        status = None
    return status == "ON"


def _hold_one(s3: Any, bucket: str, key: str, version_id: str) -> None:
    s3.put_object_legal_hold(
        Bucket=bucket, Key=key, VersionId=version_id, LegalHold={"Status": "ON"}
    )


def _version_pages(s3: Any, bucket: str, prefix: str) -> Iterator[list[tuple[str, str]]]:
    """(key, version id) of every object version under the prefix, page by page."""
    paginator = s3.get_paginator("list_object_versions")
    for page in paginator.paginate(
        Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": LIST_PAGE_SIZE}
    ):
        yield [(v["Key"], v["VersionId"]) for v in page.get("Versions", [])]


def count_unheld(s3: Any, bucket: str, prefix: str) -> tuple[int, int]:
    """(versions without a legal hold, all versions) under the prefix: read calls only."""
    todo = total = 0
    with ThreadPoolExecutor(HOLD_WORKERS) as pool:
        for versions in _version_pages(s3, bucket, prefix):
            held = pool.map(lambda kv: _held(s3, bucket, *kv), versions)
            total += len(versions)
            todo += sum(not h for h in held)
    return todo, total


def set_legal_holds(s3: Any, bucket: str, prefix: str, ctx: ActionContext) -> int:
    total = 0
    with ThreadPoolExecutor(HOLD_WORKERS) as pool:
        for versions in _version_pages(s3, bucket, prefix):
            for start in range(0, len(versions), HOLD_CHUNK):
                chunk = versions[start : start + HOLD_CHUNK]
                held = pool.map(lambda kv: _held(s3, bucket, *kv), chunk)
                todo = [kv for kv, on in zip(chunk, held, strict=True) if not on]
                if todo:  # a version held already is not ours: never recorded
                    total += _hold_chunk(pool, s3, bucket, prefix, todo, ctx)
    if total:
        ctx.logger.info("legal hold ON for %d version(s) under s3://%s/%s", total, bucket, prefix)
    return total


def _hold_chunk(
    pool: ThreadPoolExecutor,
    s3: Any,
    bucket: str,
    prefix: str,
    todo: list[tuple[str, str]],
    ctx: ActionContext,
) -> int:
    """Turn ON the holds of ``todo`` (versions without one), their undo declared first."""

    def undo(versions: list[list[str]]) -> tuple[str, dict[str, Any]]:
        return (
            f"release {len(versions)} legal hold(s) set on s3://{bucket}/{prefix}",
            {"op": "release_legal_holds", "bucket": bucket, "prefix": prefix, "versions": versions},
        )

    description, how = undo([[key[len(prefix) :], version_id] for key, version_id in todo])
    with ctx.changing(description, **how) as intent:
        futures = [pool.submit(_hold_one, s3, bucket, k, v) for k, v in todo]
        done, failure = [], None
        for (key, version_id), future in zip(todo, futures, strict=True):
            try:
                future.result()
                done.append([key[len(prefix) :], version_id])
            except Exception as exc:  # record what was set before failing
                failure = failure or exc
        if done:
            description, how = undo(done)
            intent.confirm(description, **how)
        if failure is not None:
            raise failure  # none set: the intent stays unconfirmed (some may have gone through)
    return len(done)


def release_legal_holds(s3: Any, how: dict[str, Any]) -> None:
    """Undo one chunk: turn OFF the holds it lists (a version deleted since is skipped)."""
    for relative, version_id in how["versions"]:
        try:
            s3.put_object_legal_hold(
                Bucket=how["bucket"],
                Key=how["prefix"] + relative,
                VersionId=version_id,
                LegalHold={"Status": "OFF"},
            )
        except s3.exceptions.ClientError as exc:
            if exc.response["Error"]["Code"] not in ("NoSuchKey", "NoSuchVersion"):
                raise
