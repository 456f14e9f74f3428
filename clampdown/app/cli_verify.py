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
from clampdown.core.ledger_signing import LedgerVerdict, verify_ledger
from clampdown.core.ledger_verdict import LABELS, CopyReader, RunVerdict
from clampdown.core.settings import Settings


def check_run(local: bytes, conf: Settings) -> RunVerdict:
    """The verdict on the ledger ``local`` with this configuration: the one judge behind
    ``verify RUN_ID``, ``report``, ``export`` and ``verify <package>`` (the configured
    key; the copy in ``CLAMPDOWN_EVIDENCE_BUCKET`` when one is set)."""
    from clampdown.core.extensions import ledger_signer
    from clampdown.core.ledger_verdict import judge_run

    bucket = conf.evidence_bucket
    return judge_run(
        local,
        ledger_signer(conf),
        _copy_reader(bucket) if bucket else None,
        lambda run_id: f"s3://{bucket}/incidents/{run_id}/",
    )


def verify_run(target: str, conf: Settings) -> None:
    """Verify a run's ledger (a file, or a run id under CLAMPDOWN_HOME) and its S3 copy."""
    path = Path(target)
    if not path.is_file():
        path = conf.existing_ledger(target)
    verdict = check_run(path.read_bytes(), conf)
    out.print(f"file     {escape(str(path))}")
    print_rows(verdict)
    if not verdict.ok:
        out.print(f"[red]result   {escape(verdict.result)}[/]")
        raise typer.Exit(1)
    out.print(f"[green]result   {escape(verdict.result)}[/]")


def print_rows(verdict: RunVerdict) -> None:
    """The lines of ``verdict`` as verify prints them (``key``, ``ledger``, ``copy``…)."""
    for row in verdict.rows():
        text = f"{row.label:<8} {escape(row.text)}"
        out.print(f"[{row.color}]{text}[/]" if row.color else text)


def _copy_reader(bucket: str) -> CopyReader:
    """Reads a run's ledger copy and signed heads from ``bucket``; a failure is an error
    with a hint, never a traceback."""

    def read(run_id: str) -> tuple[bytes | None, list[bytes]]:
        from clampdown_aws.evidence_store import read_copy

        s3 = _s3()  # a client that cannot be made says which setting to fix
        try:
            return read_copy(s3, bucket, run_id)
        except Exception as exc:
            raise ClampdownError(
                f"cannot read the copy of run {run_id} in s3://{bucket}: {exc}",
                "check CLAMPDOWN_EVIDENCE_BUCKET and your AWS credentials",
            ) from None

    return read


def _s3() -> Any:
    from clampdown_aws.command_clients import command_client

    return command_client("s3", "read the evidence bucket")


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
        print_rows(RunVerdict(verdict, signer.key_id if signer else "none configured"))
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
