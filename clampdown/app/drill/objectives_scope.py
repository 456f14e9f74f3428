"""``scoped_exactly``: the run's scope of the theft names exactly what the story's thief took.

The truth is the seeded trail itself (``Seeded.trail_records``, the CloudTrail records the
seed delivered), not the drill's YAML and not the scoping code: every successful S3 object
read (``GetObject`` data event, no ``errorCode``) by the named seed user or role, per
bucket, key and version, with the sum of its ``bytesTransferredOut``. The run's scoping
step (``aws.forensics.scope_exfiltration``) must list exactly those objects with exactly
those bytes: a missed object, an extra one or wrong bytes each fail it, named.
"""

from __future__ import annotations

from typing import Any

from clampdown.app.drill.facts import DrillFacts, ObjectiveCheck
from clampdown.core.drill_model import ScopedExactly

SCOPE_ACTION = "aws.forensics.scope_exfiltration"
ObjectId = tuple[str | None, str, str | None]  # bucket, key, version


def scoped_exactly(o: ScopedExactly, f: DrillFacts) -> ObjectiveCheck:
    steps = [s for s in f.steps if (s.id == o.step if o.step else s.uses == SCOPE_ACTION)]
    if not steps:
        what = f"step {o.step}" if o.step else f"step using {SCOPE_ACTION}"
        return False, "not scoped", f"the run has no {what}"
    step = next((s for s in steps if s.status != "skipped"), steps[0])  # the one that ran
    if step.status != "succeeded":
        why = f": {step.note}" if step.note else ""
        return False, "not scoped", f"scoping step {step.id} {step.status}{why}"
    outputs = f.outputs(step.id)
    if outputs.get("objects_truncated"):
        total = outputs.get("objects_total")
        return (
            False,
            "truncated",
            f"{step.id} listed only part of {total} objects: raise max_objects",
        )
    found = _reported(outputs.get("objects") or [])
    taken = stolen(f.seeded.trail_records, o.principal)
    problems = _differences(taken, found)
    measured = f"{len(found)} object(s), {sum(found.values())} bytes"
    if problems:
        return False, measured, "; ".join(problems)
    if not taken:
        return True, measured, f"{o.principal} read nothing, and the scope says so"
    return True, measured, f"exactly the {len(taken)} object(s) {o.principal} read, bytes right"


def stolen(records: list[dict[str, Any]], principal: str) -> dict[ObjectId, int]:
    """Bytes read per object (bucket, key, version) by ``principal`` in the seeded trail."""
    taken: dict[ObjectId, int] = {}
    for record in records:
        if (
            record.get("eventCategory") != "Data"
            or record.get("eventName") != "GetObject"
            or record.get("errorCode")
            or _who(record.get("userIdentity") or {}) != principal
        ):
            continue
        request = record.get("requestParameters") or {}
        ident = (request.get("bucketName"), str(request.get("key")), request.get("versionId"))
        extra = record.get("additionalEventData") or {}
        taken[ident] = taken.get(ident, 0) + int(float(extra.get("bytesTransferredOut") or 0))
    return taken


def _who(identity: dict[str, Any]) -> str | None:
    """The seed user's or role's name behind a record's identity."""
    if identity.get("type") == "IAMUser":
        return identity.get("userName")
    issuer = (identity.get("sessionContext") or {}).get("sessionIssuer") or {}
    return issuer.get("userName")


def _reported(objects: list[dict[str, Any]]) -> dict[ObjectId, int]:
    found: dict[ObjectId, int] = {}
    for obj in objects:
        ident = (obj.get("bucket"), str(obj.get("key")), obj.get("version_id"))
        found[ident] = found.get(ident, 0) + int(obj.get("bytes_out") or 0)
    return found


def _differences(taken: dict[ObjectId, int], found: dict[ObjectId, int]) -> list[str]:
    missed = [f"{_name(i)} ({taken[i]} bytes)" for i in taken if i not in found]
    extra = [f"{_name(i)} ({found[i]} bytes)" for i in found if i not in taken]
    wrong = [
        f"{_name(i)}: reported {found[i]} bytes, {taken[i]} were read"
        for i in taken
        if i in found and found[i] != taken[i]
    ]
    out = []
    if missed:
        out.append("missed " + ", ".join(sorted(missed)))
    if extra:
        out.append("not taken but reported " + ", ".join(sorted(extra)))
    if wrong:
        out.append("wrong bytes for " + ", ".join(sorted(wrong)))
    return out


def _name(ident: ObjectId) -> str:
    bucket, key, version = ident
    return f"s3://{bucket}/{key}" + (f" version {version}" if version else "")
