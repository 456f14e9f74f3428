"""``clampdown report`` (the incident report of any run) and ``clampdown export`` (its
evidence package under Object Lock); and the package branch of ``clampdown verify``.

Registered on the main CLI by ``register(app)``. The report and the package are built by
the core (:mod:`clampdown.core.incident_report`, :mod:`clampdown.core.incident_report_package`);
S3 is reached through :mod:`clampdown_aws.evidence_package`, imported inside the commands.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from clampdown.app.cli_errors import err, user_errors
from clampdown.app.cli_options import out
from clampdown.core.diagnostics import ClampdownError

if TYPE_CHECKING:
    from clampdown.core.incident_report import IncidentReport
    from clampdown.core.settings import Settings

RUN_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class ReportFormat(StrEnum):
    markdown = "markdown"
    html = "html"
    json = "json"


OutputOpt = Annotated[
    Path | None, typer.Option("--output", "-o", help="write to this file (default: stdout)")
]


def people_names(ids: Iterable[str], conf: Settings) -> dict[str, str]:
    """Names of people by id, from the member directories that can tell (Slack's
    users.info); an id nobody can name is left out (the report shows the id)."""
    from clampdown.core.members import member_directories

    wanted = list(dict.fromkeys(ids))[:100]
    names: dict[str, str] = {}
    try:
        directories = member_directories(conf)
    except Exception:  # a broken plug-in must not stop a report
        return names
    for directory in directories:
        lookup = getattr(directory, "name_of", None)
        if lookup is None:
            continue
        for person in wanted:
            if person in names:
                continue
            try:
                name = lookup(person)
            except Exception:
                name = None
            if name:
                names[person] = str(name)
    return names


def _ledger(run_id: str, conf: Settings) -> Path:
    if not RUN_ID.match(run_id):
        raise ClampdownError(
            f"'{run_id}' is not a run id (letters, digits, - and _)",
            "copy it from `clampdown runs`",
        )
    return conf.paths.existing_ledger(run_id)


def load_report(
    run_id: str, conf: Settings, unchecked: list[str] | None = None
) -> tuple[IncidentReport, bytes, list[Any]]:
    """The run's report (people named where a directory knows them, the ledger judged as
    ``clampdown verify RUN_ID`` judges it), the ledger's bytes it was built from and
    judged on, and its rollbacks' ledgers.

    ``unchecked`` (``report``): when the verdict cannot be had (the evidence bucket or
    ``kms:GetPublicKey`` out of reach: an outage, a responder without those rights), why
    is appended there and the report is built without it, saying the signatures were not
    checked; without it (``export``) that is an error: a package must carry a verdict."""
    from clampdown.core.incident_report import incident_report_of, rollback_ledgers
    from clampdown.core.report_facts import people

    ledger = _ledger(run_id, conf)
    try:
        raw = ledger.read_bytes()
    except OSError as exc:
        raise ClampdownError(f"cannot read {ledger}: {exc.strerror}", "check the path") from None
    records = []
    for line in raw.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a torn or forged line: the verdict names it
        if isinstance(record, dict):
            records.append(record)
    names = people_names(people(records), conf)
    try:
        report = incident_report_of(
            raw,
            conf.paths.runs_dir,
            ledger.parent.name,
            names,
            judge=lambda data: _judged(data, conf, unchecked),
        )
    except ValueError as exc:
        raise ClampdownError(
            f"cannot build the report of run '{run_id}': {exc}",
            f"check the ledger with `clampdown verify {run_id}`",
        ) from None
    return report, raw, rollback_ledgers(conf.paths.runs_dir, report.run_id)


def _judged(data: bytes, conf: Settings, unchecked: list[str] | None) -> Any:
    from clampdown.app.cli_verify import check_run

    try:
        return check_run(data, conf)
    except ClampdownError as exc:
        if unchecked is None:
            raise
        unchecked.append(exc.message)
        return None  # the report says: the hash chain only, signatures NOT checked here


def _untrusted(built: IncidentReport) -> str | None:
    """Why the report's ledger cannot be trusted, in verify's words (None: it can)."""
    verdict = built.verdict
    if verdict is None or verdict.ok:
        return None
    return f"the ledger of run {built.run_id} does not verify: {verdict.result}: " + (
        verdict.ledger.message
        if not verdict.ledger.trusted or verdict.copy is None
        else verdict.copy.message
    )


def _write(text: str | bytes, output: Path | None) -> None:
    if output is None:
        if isinstance(text, bytes):
            raise ClampdownError("the package is binary", "give -o PATH to write it to a file")
        typer.echo(text, nl=False)
        return
    try:
        if isinstance(text, bytes):
            output.write_bytes(text)
        else:
            output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ClampdownError(
            f"cannot write {output}: {exc.strerror}", "check the folder exists and is writable"
        ) from None
    err.print(f"wrote {escape(str(output))}")


def report(
    run_id: Annotated[str, typer.Argument(help="the run (see `clampdown runs`)")],
    format: Annotated[
        ReportFormat, typer.Option("--format", help="markdown, html or json")
    ] = ReportFormat.markdown,
    output: OutputOpt = None,
) -> None:
    """Write the incident report of a run (real or drill) from its ledger.

    Timeline, decisions with names and reasons, changes and their rollback state,
    evidence, scoping results, time to notify / approve / contain (docs/reports.md).
    """
    from clampdown.core.incident_report_render import to_html, to_json, to_markdown
    from clampdown.core.settings import settings

    unchecked: list[str] = []
    built, _, _ = load_report(run_id, settings(), unchecked)
    render = {"markdown": to_markdown, "html": to_html, "json": to_json}[format.value]
    _write(render(built), output)
    for why in unchecked:
        err.print(
            f"[yellow]warning:[/] the ledger's signatures were not checked: {escape(why)} "
            f"(`clampdown verify {run_id}` checks them where the key and the bucket can be read)"
        )
    problem = _untrusted(built)
    if problem is not None:  # the report says it at the top; say it where a person looks too
        err.print(f"[yellow]warning:[/] {escape(problem)} (the report says so at the top)")


def _s3() -> Any:
    from clampdown_aws.command_clients import command_client

    return command_client("s3", "read and write the evidence bucket")


def _with_manifest(
    built: IncidentReport, s3: Any, bucket: str | None
) -> tuple[bytes | None, list[str]]:
    """Read the run's evidence manifest and each object's retention into the report."""
    from botocore.exceptions import BotoCoreError, ClientError

    from clampdown.core.report_facts import merge_evidence
    from clampdown_aws.evidence_package import (
        manifest_entries,
        read_manifest,
        split_uri,
        with_retention,
    )

    uri = built.manifest_uri or (
        f"s3://{bucket}/incidents/{built.run_id}/manifest.json" if bucket else None
    )
    if uri is None:
        return None, ["the run recorded no evidence manifest: the package has none"]
    pin = built.manifest_pin
    try:
        body = read_manifest(s3, uri, pin.get("version_id"))
        entries = with_retention(s3, split_uri(uri)[0], manifest_entries(body))
    except (ClientError, BotoCoreError, ValueError, KeyError) as exc:
        return None, [f"the evidence manifest {uri} could not be read: {exc}"]
    warnings = []
    if pin.get("sha256") and hashlib.sha256(body).hexdigest() != pin["sha256"]:
        warnings.append(
            f"the evidence manifest {uri} is not the one the ledger pinned (SHA-256 "
            f"{pin['sha256']}): it was changed after run.end"
        )
    built.evidence = merge_evidence(built.evidence, entries)
    built.manifest_uri = uri
    return body, warnings


def export(
    run_id: Annotated[str, typer.Argument(help="the run to package")],
    bucket: Annotated[
        str | None,
        typer.Option(help="evidence bucket (default: $CLAMPDOWN_EVIDENCE_BUCKET)"),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="also write the package here")
    ] = None,
) -> None:
    """Package a run's evidence for counsel in the evidence bucket, under Object Lock.

    One .tar.gz: ledger, evidence manifest, report, scoping results, chain of custody.
    Verified after upload; `clampdown verify <package>` checks it again later. A ledger
    that does not verify is still packaged (it is evidence of the attack), with the
    verdict in the package, and the command exits 1.
    """
    from clampdown.core.incident_report_package import (
        build_package,
        chain_of_custody,
        package_name,
    )
    from clampdown.core.settings import settings

    conf = settings()
    target = bucket or conf.evidence_bucket
    if target is None and output is None:
        raise ClampdownError(
            "no evidence bucket to export to",
            "pass --bucket, set CLAMPDOWN_EVIDENCE_BUCKET, or write a local copy with -o PATH",
        )
    built, ledger, rollbacks = load_report(run_id, conf)
    s3 = _s3() if target or built.manifest_uri else None
    manifest, warnings = _with_manifest(built, s3, target) if s3 else (None, [])
    now = datetime.now(UTC)
    custody = chain_of_custody(
        built,
        [json.loads(line) for line in ledger.splitlines() if line.strip()],
        ledger,
        exported_by=getpass.getuser(),
        exported_at=now,
        rollbacks=rollbacks,
        warnings=warnings,
    )
    data = build_package(built, ledger, custody=custody, evidence_manifest=manifest, created_at=now)
    for warning in warnings:
        err.print(f"[yellow]warning:[/] {escape(warning)}")
    name = package_name(built.run_id)
    if output is not None:
        _write(data, output)
    if target is None:
        err.print("[yellow]warning:[/] written locally only: not under Object Lock")
    else:
        _upload_and_check(s3, target, built.run_id, name, data, conf)
    problem, verdict = _untrusted(built), built.verdict
    if problem is not None and verdict is not None:
        raise ClampdownError(
            f"{problem}. The package was written anyway, as evidence: its "
            f"package-manifest.json, chain-of-custody.json and report say {verdict.result}"
            " (never hand it on as a clean package)",
            f"`clampdown verify {built.run_id}` says why; keep the package with the case file",
        )


def _upload_and_check(
    s3: Any, bucket: str, run_id: str, name: str, data: bytes, conf: Settings
) -> None:
    """Store the package, read it back and check it as ``clampdown verify`` would: the bytes
    must be the ones built (an error otherwise); the ledger's verdict is the caller's to act
    on (the same judge gave it)."""
    from botocore.exceptions import BotoCoreError, ClientError

    from clampdown.app.cli_verify import check_run
    from clampdown.core.incident_report_package import verify_package
    from clampdown_aws.evidence_package import PackageUploadFailed, download_package, upload_package

    try:
        put = upload_package(
            s3,
            bucket,
            run_id,
            name,
            data,
            retention_days=conf.evidence_retention_days,
            lock_mode=conf.evidence_lock_mode,
        )
        back = download_package(s3, put.uri).data
    except (ClientError, BotoCoreError) as exc:
        raise ClampdownError(
            f"cannot store the package in s3://{bucket}: {exc}",
            "check the bucket exists, your AWS credentials, and s3:PutObject* on it",
        ) from None
    except PackageUploadFailed as exc:
        raise ClampdownError(str(exc), "export again; if it repeats, check the bucket") from None
    out.print(f"package: {put.uri}", markup=False)
    out.print(f"  sha256 {put.sha256}, {put.size} bytes, version {put.version_id}", markup=False)
    if put.lock_mode:
        out.print(f"  Object Lock {put.lock_mode} until {put.retain_until}", markup=False)
    else:
        err.print(
            f"[yellow]warning:[/] s3://{escape(bucket)} has no Object Lock: the package can "
            "be deleted or overwritten"
        )
    check = verify_package(back, lambda ledger: check_run(ledger, conf))
    if not check.as_built:
        raise ClampdownError(f"the uploaded package does not verify: {check.message}")
    if check.trusted:
        result = check.verdict.result if check.verdict else ""
        out.print(f"[green]verified[/] after upload: {escape(check.message)}; ledger {result}")
    else:
        out.print(
            f"[red]read back as built[/] ({escape(check.message)}), but its ledger is "
            f"{escape(check.result)}"
        )


def _read_package(target: str) -> tuple[bytes, list[str]]:
    """The package's bytes and, for one in S3, problems with what S3 says about it."""
    if not target.startswith("s3://"):
        try:
            return Path(target).read_bytes(), []
        except OSError as exc:
            raise ClampdownError(
                f"cannot read {target}: {exc.strerror}", "check the path"
            ) from None
    from botocore.exceptions import BotoCoreError, ClientError

    from clampdown.core.incident_report_package import sha256
    from clampdown_aws.evidence_package import download_package

    try:
        got = download_package(_s3(), target)
    except (ClientError, BotoCoreError, ValueError) as exc:
        raise ClampdownError(
            f"cannot read the package {target}: {exc}", "check the URI and your AWS credentials"
        ) from None
    problems = []
    if got.recorded_sha256 and got.recorded_sha256 != sha256(got.data):
        problems.append(
            f"CHANGED  the package's SHA-256 is not {got.recorded_sha256}, recorded at upload"
        )
    lock = f"Object Lock {got.lock_mode} until {got.retain_until}" if got.lock_mode else "no lock"
    out.print(f"{target} (version {got.version_id}, {lock})", markup=False)
    return got.data, problems


def verify_package_target(target: str) -> None:
    """``clampdown verify <package>``: a local .tar.gz or an s3:// URI to one. Exit 0 only
    when every member matches the package's manifest and the ledger inside verifies as
    ``clampdown verify RUN_ID`` would verify it (chain, signatures with the configured
    key, the S3 copy when a bucket is configured); else 1, naming the first problem."""
    from clampdown.app.cli_verify import check_run, print_rows
    from clampdown.core.incident_report_package import verify_package
    from clampdown.core.settings import settings

    conf = settings()
    data, problems = _read_package(target)
    check = verify_package(data, lambda ledger: check_run(ledger, conf))
    for line in [*check.lines, *problems]:
        out.print(line, markup=False)
    if check.verdict is not None:
        print_rows(check.verdict)
    if check.trusted and not problems:
        result = check.verdict.result if check.verdict else ""
        out.print(f"[green]OK[/] {escape(target)}: {escape(check.message)}; ledger {result}")
        raise typer.Exit(0)
    if not check.as_built or problems or check.verdict is None:
        message = (
            problems[0].removeprefix("CHANGED  ") if check.as_built and problems else check.message
        )
        out.print(f"[red]TAMPERED[/] {escape(target)}: {escape(message)}")
        raise typer.Exit(1)
    verdict = check.verdict
    why = verdict.ledger.message
    if verdict.ledger.trusted and verdict.copy is not None:
        why = verdict.copy.message
    out.print(
        f"[red]{escape(check.result)}[/] {escape(target)}: the package is as it was built, "
        f"but the ledger inside does not verify: {escape(why)}"
    )
    raise typer.Exit(1)


def is_package(target: str) -> bool:
    """Whether ``clampdown verify`` was given an evidence package (by its name)."""
    from clampdown.core.incident_report_package import SUFFIX

    return target.endswith(SUFFIX)


def register(app: typer.Typer) -> None:
    """Add ``report`` and ``export`` to the ``clampdown`` command."""
    app.command("report")(user_errors()(report))
    app.command("export")(user_errors()(export))
