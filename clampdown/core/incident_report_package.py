"""The evidence package of a run: one ``.tar.gz`` for counsel, and how to check it.

``clampdown export RUN_ID`` builds it (here) and stores it under Object Lock
(:mod:`clampdown_aws.evidence_package`). Members, in this order::

    ledger.jsonl               the run's hash-chained ledger, byte for byte
    evidence-manifest.json     the run's evidence manifest from S3 (when it could be read)
    report.md, report.html     the incident report (clampdown.core.incident_report)
    report.json                the same report as data
    scoping/<step>.json        each scoping step's outputs
    chain-of-custody.json      who ran what when; each evidence object's hash, version
                               id and retention; the ledger's hash and chain verdict
    package-manifest.json      SHA-256 and size of every member above (last member)

:func:`verify_package` checks a package without extracting it to disk: every member
is listed in ``package-manifest.json`` with the right SHA-256 and size, nothing is
missing or extra, the ledger's hash chain inside holds, and the chain of custody names
the ledger's hash; and it judges the ledger inside as ``clampdown verify RUN_ID`` judges
a run's (the caller's ``judge``: signatures with the verifier's configured key, the S3
copy). Member checks alone prove little: whoever rewrites the ledger can recompute the
package's manifest too, but cannot sign. The signatures travel in the ledger itself
(every record's ``sig``); the key to check them is the verifier's, never one shipped in
the package. The export-time verdict is written into ``package-manifest.json`` and
``chain-of-custody.json`` (so a package of a forged ledger says so), but verifying never
trusts it. The archive is deterministic for given inputs (sorted, fixed mtime, no owner
names), so building twice gives the same bytes.

Pure: bytes in, bytes out.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from clampdown.core.incident_report import IncidentReport
from clampdown.core.incident_report_render import to_html, to_json, to_markdown
from clampdown.core.ledger import verify_lines
from clampdown.core.ledger_verdict import RunVerdict, judge_run

FORMAT = "clampdown-evidence-package/1"
PACKAGE_MANIFEST = "package-manifest.json"
LEDGER = "ledger.jsonl"
CUSTODY = "chain-of-custody.json"
SUFFIX = ".tar.gz"
MAX_MEMBER_BYTES = 4 * 1024**3  # a member larger than this is refused, not read


def package_name(run_id: str) -> str:
    return f"clampdown-{run_id}-evidence{SUFFIX}"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def custody_events(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Who did what when, from the ledger: the start (and by whom or what), every step's
    start and end, every decision, alerts that joined, the end."""
    events: list[dict[str, Any]] = []
    for r in records:
        kind, ts = r.get("type"), r.get("ts")
        if kind == "run.start":
            run = r.get("run") or {}
            trigger = run.get("trigger") or {}
            who = trigger.get("user") or trigger.get("source") or trigger.get("type")
            events.append({"ts": ts, "who": who, "what": f"started {run.get('runbook')}"})
        elif kind in ("step.start", "step.end"):
            what = f"{kind.split('.')[1]} step {r.get('step')}"
            if r.get("uses"):
                what += f" ({r.get('uses')})"
            if r.get("status"):
                what += f": {r.get('status')}"
            events.append({"ts": ts, "who": "clampdown", "what": what})
        elif kind == "approval.decision":
            counted = "" if r.get("accepted", True) else " (not counted)"
            events.append(
                {
                    "ts": ts,
                    "who": r.get("approver"),
                    "what": f"{r.get('decision')} {r.get('step')} via {r.get('source')}{counted}",
                }
            )
        elif kind == "alert.joined":
            alert = r.get("alert") or {}
            events.append(
                {"ts": ts, "who": alert.get("source"), "what": f"alert {alert.get('id')} joined"}
            )
        elif kind == "run.end":
            events.append({"ts": ts, "who": "clampdown", "what": f"ended: {r.get('status')}"})
    return events


def chain_of_custody(
    report: IncidentReport,
    records: Sequence[Mapping[str, Any]],
    ledger: bytes,
    *,
    exported_by: str,
    exported_at: datetime,
    rollbacks: Sequence[Sequence[Mapping[str, Any]]] = (),
    warnings: Sequence[str] = (),
) -> dict[str, Any]:
    """The chain of custody: the ledger's identity, who did what, and every evidence object."""
    check = verify_lines(ledger.splitlines())
    verdict = report.verdict
    events = custody_events(records)
    for ledger_records in rollbacks:
        if ledger_records:
            first = ledger_records[0]
            trigger = (first.get("run") or {}).get("trigger") or {}
            who = trigger.get("user") or trigger.get("by_run") or "clampdown rollback"
            rb_id = (first.get("run") or {}).get("id")
            end = next((r for r in ledger_records if r.get("type") == "run.end"), {})
            events.append(
                {
                    "ts": first.get("ts"),
                    "who": who,
                    "what": f"rollback {rb_id} started; ended: {end.get('status', 'not ended')}",
                }
            )
    events.sort(key=lambda e: str(e.get("ts") or ""))
    return {
        "format": FORMAT,
        "run_id": report.run_id,
        "runbook": report.runbook,
        "exported_by": exported_by,
        "exported_at": exported_at.isoformat(),
        "ledger": {
            "sha256": sha256(ledger),
            "records": check.records,
            "chain_ok": check.ok,
            "complete": check.complete,
            "verdict": verdict.ledger.message if verdict else check.message,
            "result": verdict.result if verdict else "NOT CHECKED",
            "trusted": bool(verdict and verdict.ok),
            "signed_by": verdict.ledger.key_id if verdict else None,
            "copy": verdict.copy.message if verdict and verdict.copy else None,
            "head": records[-1].get("hash") if records else None,
        },
        "events": events,
        "evidence": [
            {
                "key": e.key,
                "sha256": e.sha256,
                "size": e.size,
                "version_id": e.version_id,
                "lock_mode": e.lock_mode,
                "retain_until": e.retain_until,
                "step": e.step,
            }
            for e in report.evidence
        ],
        "manifest_uri": report.manifest_uri,
        "warnings": list(warnings),
    }


def build_package(
    report: IncidentReport,
    ledger: bytes,
    *,
    custody: Mapping[str, Any],
    evidence_manifest: bytes | None = None,
    created_at: datetime | None = None,
) -> bytes:
    """The package's bytes: every member, then ``package-manifest.json`` hashing them."""
    members: list[tuple[str, bytes]] = [(LEDGER, ledger)]
    if evidence_manifest is not None:
        members.append(("evidence-manifest.json", evidence_manifest))
    members += [
        ("report.md", to_markdown(report).encode()),
        ("report.html", to_html(report).encode()),
        ("report.json", to_json(report).encode()),
    ]
    for result in report.scoping:
        body = json.dumps(dict(result.outputs), indent=2, sort_keys=True, default=str)
        members.append((f"scoping/{result.step}.json", body.encode()))
    members.append((CUSTODY, json.dumps(custody, indent=2, sort_keys=True).encode()))
    created = created_at or datetime.now(UTC)
    listing = {
        "format": FORMAT,
        "run_id": report.run_id,
        "created_at": created.isoformat(),
        "algorithm": "sha256",
        "members": [{"name": n, "sha256": sha256(b), "size": len(b)} for n, b in members],
        "ledger_verdict_at_export": report.verdict.to_dict() if report.verdict else None,
    }
    members.append((PACKAGE_MANIFEST, json.dumps(listing, indent=2, sort_keys=True).encode()))
    buffer = io.BytesIO()
    mtime = int(created.timestamp())
    # The gzip header carries a time of its own (tarfile's "w:gz" stamps the clock),
    # so the stream is opened here with the package's time: same inputs, same bytes.
    with (
        gzip.GzipFile(fileobj=buffer, mode="wb", mtime=mtime) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for name, body in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(body), mtime, 0o444
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(body))
    return buffer.getvalue()


@dataclass
class PackageCheck:
    """What checking a package found; ``lines`` say it member by member.

    ``as_built``: the package is what its own manifest lists, its ledger's hash chain holds
    and the chain of custody names that ledger (nobody changed the package after it was
    built, or whoever did recomputed it all). That alone is not to be trusted, hence the
    name: ``verdict`` is ``clampdown verify``'s on the ledger inside (signatures, S3 copy);
    :attr:`trusted` needs both.
    """

    as_built: bool
    message: str
    lines: list[str] = field(default_factory=list)
    run_id: str | None = None
    verdict: RunVerdict | None = None  # None: no ledger to judge

    @property
    def trusted(self) -> bool:
        return self.as_built and self.verdict is not None and self.verdict.ok

    @property
    def result(self) -> str:
        """The outcome word: ``OK``, ``TAMPERED`` (the package), or the ledger's labels."""
        if not self.as_built or self.verdict is None:
            return "TAMPERED"
        return "OK" if self.verdict.ok else self.verdict.result


def _members(data: bytes) -> dict[str, bytes]:
    """Every regular member's bytes (nothing is written to disk); raises ValueError on an
    archive that is not one, a link or device member, a duplicate, or an oversized member."""
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            for info in tar:
                if not info.isfile():
                    raise ValueError(f"member {info.name!r} is not a regular file")
                if info.size > MAX_MEMBER_BYTES:
                    raise ValueError(f"member {info.name!r} is larger than {MAX_MEMBER_BYTES}")
                if info.name in found:
                    raise ValueError(f"member {info.name!r} appears twice")
                handle = tar.extractfile(info)
                found[info.name] = handle.read() if handle else b""
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ValueError(f"not a readable .tar.gz: {exc}") from None
    return found


def verify_package(
    data: bytes, judge: Callable[[bytes], RunVerdict] = lambda ledger: judge_run(ledger, None)
) -> PackageCheck:
    """Check every member against ``package-manifest.json`` and the ledger chain inside, and
    ``judge`` the ledger as ``clampdown verify RUN_ID`` would (the default has no key, so a
    signed ledger is UNVERIFIED, never OK: the CLI passes the configured key)."""
    try:
        members = _members(data)
    except ValueError as exc:
        return PackageCheck(False, str(exc))
    if PACKAGE_MANIFEST not in members:
        return PackageCheck(False, f"no {PACKAGE_MANIFEST} in the package")
    try:
        listing = json.loads(members.pop(PACKAGE_MANIFEST))
        listed = {m["name"]: m for m in listing["members"]}
    except (ValueError, KeyError, TypeError) as exc:
        return PackageCheck(False, f"{PACKAGE_MANIFEST} is unreadable: {exc}")
    lines, ok = [], True
    for name, entry in listed.items():
        body = members.get(name)
        if body is None:
            lines.append(f"MISSING  {name}")
            ok = False
            continue
        good = sha256(body) == entry.get("sha256") and len(body) == entry.get("size")
        ok &= good
        lines.append(f"{'ok      ' if good else 'CHANGED '} {name} ({len(body)} bytes)")
    for name in sorted(set(members) - set(listed)):
        lines.append(f"EXTRA    {name} (not in {PACKAGE_MANIFEST})")
        ok = False
    ledger = members.get(LEDGER)
    if ledger is None:
        return PackageCheck(False, f"no {LEDGER} in the package", lines, listing.get("run_id"))
    chain = verify_lines(ledger.splitlines())
    lines.append(f"{'ok      ' if chain.ok else 'BROKEN  '} ledger chain: {chain.message}")
    ok &= chain.ok
    try:
        custody = json.loads(members.get(CUSTODY, b"{}"))
    except ValueError:
        custody = {}
    named = (custody.get("ledger") or {}).get("sha256")
    if named != sha256(ledger):
        lines.append(f"CHANGED  {CUSTODY} names a different ledger hash ({named})")
        ok = False
    message = (
        f"{len(listed)} member(s) match {PACKAGE_MANIFEST}; ledger chain intact"
        if ok
        else "the package does not match its own manifest or its ledger chain is broken"
    )
    return PackageCheck(ok, message, lines, listing.get("run_id"), judge(ledger))
