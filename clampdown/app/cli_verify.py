"""``clampdown verify RUN_ID|ledger|s3://…/manifest.json``: can this record be trusted?

For a run (its id or its ledger file) it checks, in order: the hash chain, every
record's signature with the configured key, truncation (no run.end after the last
signed record), and the copy in the evidence bucket — the signed heads anchored as the
run went and the ledger object stored when it ended. For a manifest it reads the
version the run's signed ``run.end`` pins (not the latest), checks its SHA-256, reports
a newer version as untrusted, and re-hashes every object it lists.

One outcome line ends the report (docs/verify.md shows each):

* ``OK: intact, signed, anchored`` (exit 0; ``intact, signed`` when no evidence bucket
  is configured);
* ``UNSIGNED``, ``UNVERIFIED`` (signed, no key to check), ``TAMPERED``, ``NOT SIGNED``,
  ``TRUNCATED``, ``S3 COPY DIFFERS``, ``S3 COPY MISSING`` (exit 1).

The CLI is where providers meet: the S3 reads are :mod:`clampdown_aws.evidence_store`'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from clampdown.app.cli_options import out
from clampdown.core.diagnostics import ClampdownError
from clampdown.core.ledger_signing import CopyCheck, LedgerSigner, LedgerVerdict, verify_ledger
from clampdown.core.settings import Settings

LABELS = {
    "intact": "SIGNED",
    "unsigned": "UNSIGNED",
    "unverified": "UNVERIFIED",
    "tampered": "TAMPERED",
    "not-signed": "NOT SIGNED",
    "truncated": "TRUNCATED",
}
COPY_LABELS = {
    "matches": "ANCHORED",
    "differs": "S3 COPY DIFFERS",
    "missing": "S3 COPY MISSING",
    "truncated": "TRUNCATED",
}


def verify_run(target: str, conf: Settings) -> None:
    """Verify a run's ledger (a file, or a run id under CLAMPDOWN_HOME) and its S3 copy."""
    from clampdown.core.extensions import ledger_signer

    path = Path(target)
    if not path.is_file():
        path = conf.existing_ledger(target)
    signer = ledger_signer(conf)
    local = path.read_bytes()
    verdict = verify_ledger(local.splitlines(), signer)
    out.print(f"file     {escape(str(path))}")
    _print_verdict(verdict, signer)
    copy = _copy_check(conf, local, verdict, signer)
    problems = [] if verdict.trusted else [LABELS[verdict.status]]
    if copy is not None and not copy.ok and COPY_LABELS[copy.status] not in problems:
        problems.append(COPY_LABELS[copy.status])
    if problems:
        out.print(f"[red]result   {escape(', '.join(problems))}[/]")
        raise typer.Exit(1)
    anchored = ", anchored" if copy is not None else " (no evidence bucket configured)"
    out.print(f"[green]result   OK: intact, signed{anchored}[/]")


def _print_verdict(verdict: LedgerVerdict, signer: LedgerSigner | None) -> None:
    color = "green" if verdict.trusted else ("yellow" if verdict.status == "unsigned" else "red")
    key = signer.key_id if signer is not None else "none configured"
    out.print(f"key      {escape(key)}")
    out.print(f"[{color}]ledger   {escape(verdict.message)}[/]")
    for note in verdict.notes:
        out.print(f"note     {escape(note)}")


def _copy_check(
    conf: Settings, local: bytes, verdict: LedgerVerdict, signer: LedgerSigner | None
) -> CopyCheck | None:
    """The S3 comparison (None: no evidence bucket configured, or no run id to look up)."""
    if not conf.evidence_bucket or not verdict.run_id:
        return None
    from clampdown.core.ledger_signing import compare_copy
    from clampdown_aws.evidence_store import read_copy

    s3 = _s3()
    try:
        copy, heads = read_copy(s3, conf.evidence_bucket, verdict.run_id)
    except Exception as exc:
        raise ClampdownError(
            f"cannot read the copy of run {verdict.run_id} in s3://{conf.evidence_bucket}: {exc}",
            "check CLAMPDOWN_EVIDENCE_BUCKET and your AWS credentials",
        ) from None
    check = compare_copy(local, verdict, copy, heads, signer)
    where = f"s3://{conf.evidence_bucket}/incidents/{verdict.run_id}/"
    color = "green" if check.ok else "red"
    out.print(f"s3       {escape(where)}")
    out.print(f"[{color}]copy     {escape(check.message)}[/]")
    for note in check.notes:
        out.print(f"note     {escape(note)}")
    return check


def _s3() -> Any:
    import boto3

    return boto3.client("s3")


# --- an evidence manifest --------------------------------------------------------------------


def verify_manifest_uri(uri: str, conf: Settings) -> None:
    """Check the manifest version the run's ledger pins, and every object it lists."""
    from botocore.exceptions import BotoCoreError, ClientError

    from clampdown.core.extensions import ledger_signer
    from clampdown_aws.evidence_store import verify_manifest

    bucket, _, key = uri.removeprefix("s3://").partition("/")
    run_id = _run_of(key)
    signer = ledger_signer(conf)
    s3 = _s3()
    try:
        ledger, source = _pinning_ledger(s3, bucket, run_id, conf)
        verdict = verify_ledger(ledger.splitlines(), signer)
        out.print(f"file     {escape(source)}")
        _print_verdict(verdict, signer)
        pin = _pin(ledger) if verdict.status in ("intact", "unsigned") else None
        ok, lines = verify_manifest(s3, uri, pin)
    except (ClientError, BotoCoreError, KeyError, ValueError) as exc:
        raise ClampdownError(
            f"cannot read the manifest {uri}: {exc}", "check the URI and your AWS credentials"
        ) from None
    for line in lines:
        out.print(line, markup=False)
    problem = _manifest_problem(ok, pin, verdict)
    if problem is not None:
        out.print(f"[red]{escape(problem)}[/] {escape(uri)}")
        raise typer.Exit(1)
    objects = sum(1 for line in lines if line.startswith("ok "))
    out.print(
        f"[green]OK[/] {escape(uri)}: pinned version {escape(str(pin.get('version_id')))}, "
        f"{objects} object(s) match their SHA-256"
    )


def _manifest_problem(ok: bool, pin: dict[str, Any] | None, verdict: LedgerVerdict) -> str | None:
    """Why the manifest cannot be trusted (None: it can)."""
    if not ok:
        return "TAMPERED: an object or the manifest differs from what the ledger pins:"
    if pin is None:
        return "UNPINNED: the ledger pins no manifest version it can vouch for:"
    if not verdict.trusted:
        return f"{LABELS[verdict.status]}: the ledger that pins the manifest is not trusted:"
    return None


def _run_of(key: str) -> str:
    parts = key.split("/")
    if len(parts) != 3 or parts[0] != "incidents" or parts[2] != "manifest.json":
        raise ClampdownError(
            f"s3 key {key} is not a run's manifest",
            "give s3://<bucket>/incidents/<run-id>/manifest.json",
        )
    return parts[1]


def _pinning_ledger(s3: Any, bucket: str, run_id: str, conf: Settings) -> tuple[bytes, str]:
    """The run's ledger: the local one when this machine has it (or the run store, in the
    scaled mode), else the S3 copy."""
    local = conf.paths.run(run_id).materialize().ledger
    if local.is_file():
        return local.read_bytes(), str(local)
    from clampdown_aws.evidence_store import read_copy

    copy, _ = read_copy(s3, bucket, run_id)
    if copy is None:
        raise ClampdownError(
            f"no ledger for run {run_id}: not under CLAMPDOWN_HOME and not in s3://{bucket}",
            "the ledger pins the manifest version; without it the manifest cannot be trusted",
        )
    return copy, f"s3://{bucket}/incidents/{run_id}/ledger.jsonl"


def _pin(ledger: bytes) -> dict[str, Any] | None:
    """The manifest version and hash the ledger's run.end records."""
    import json

    for line in reversed(ledger.splitlines()):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("type") == "run.end":
            pin = record.get("manifest")
            return pin if isinstance(pin, dict) and pin.get("sha256") else None
    return None
