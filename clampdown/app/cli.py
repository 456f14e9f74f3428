"""The ``clampdown`` command line.

``lint``, ``plan``, ``schema`` and ``actions`` run in editors and pre-commit
hooks, so they never import Prefect: the executor (``flows``) is imported inside
``run`` only. Errors a user can fix are printed as one message with its place
and a hint, and exit non-zero; they never show a traceback.
"""

from __future__ import annotations

import functools
import getpass
import json
import os
import sys
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from clampdown.core.diagnostics import ClampdownError, Diagnostic, InvalidFileError

app = typer.Typer(
    name="clampdown",
    help="Incident-response runbooks for suspected AI model theft.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(highlight=False, soft_wrap=True, emoji=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)


class Format(StrEnum):
    text = "text"
    json = "json"


InputOpt = Annotated[
    list[str], typer.Option("--input", "-i", help="an input as name=value (repeatable)")
]
InputsFileOpt = Annotated[
    Path | None, typer.Option("--inputs-file", "-f", help="YAML or JSON mapping of inputs")
]
LibraryOpt = Annotated[
    Path | None,
    typer.Option(
        "--library",
        "-L",
        help="runbook folder (default: $CLAMPDOWN_LIBRARY, else ./runbooks, else the shipped one)",
    ),
]
FormatOpt = Annotated[Format, typer.Option("--format", help="output format")]


def main() -> None:
    """Console-script entry point."""
    app()


def _print_version(value: bool) -> None:
    if value:
        from clampdown import __version__

        out.print(f"clampdown {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="print the version and exit"
        ),
    ] = False,
) -> None:
    """Incident-response runbooks for suspected AI model theft."""


def command(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Register a command whose user errors become a message and an exit code, not a traceback.

    Invalid runbook files and inputs exit 2 (bad input); other user errors exit 1.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except InvalidFileError as exc:
            _print_diagnostics(exc.diagnostics)
            raise typer.Exit(2) from None
        except ClampdownError as exc:
            err.print(f"[red]error:[/] {escape(exc.message)}")
            if exc.hint:
                err.print(f"  hint: {exc.hint}", markup=False)
            raise typer.Exit(exc.exit_code) from None

    return app.command()(wrapper)


def _print_diagnostics(diagnostics: list[Diagnostic]) -> None:
    for d in diagnostics:
        color = "red" if d.severity == "error" else "yellow"
        err.print(f"[{color}]{escape(str(d))}[/]")


def _library(library: Path | None) -> Path:
    from clampdown.core.settings import settings

    return library or settings().library


@command
def lint(
    paths: Annotated[
        list[Path] | None, typer.Argument(help="files or folders (default: the library)")
    ] = None,
    format: FormatOpt = Format.text,
    strict: Annotated[bool, typer.Option(help="treat warnings as errors")] = False,
    library: LibraryOpt = None,
) -> None:
    """Check runbooks: schema, DAG, actions, with fields, expressions, approval gates."""
    from clampdown.core.lint import lint_paths

    targets = paths or [_library(library)]
    found = lint_paths(targets, strict=strict)
    errors = sum(d.severity == "error" for d in found)
    warnings = len(found) - errors
    if format is Format.json:
        out.print_json(
            json.dumps(
                {
                    "errors": errors,
                    "warnings": warnings,
                    "diagnostics": [d.to_dict() for d in found],
                }
            )
        )
    else:
        for d in found:
            color = "red" if d.severity == "error" else "yellow"
            out.print(f"[{color}]{escape(str(d))}[/]")
        verdict = "[green]clean[/]" if not found else f"{errors} error(s), {warnings} warning(s)"
        out.print(f"lint: {verdict} ({', '.join(map(str, targets))})")
    raise typer.Exit(1 if errors else 0)


def _load(runbook: str, library: Path | None) -> Any:
    from clampdown.core.lint import load_runbook
    from clampdown.core.loader import resolve

    path = resolve(runbook, _library(library))
    loaded, warnings = load_runbook(path)
    _print_diagnostics(warnings)
    return path, loaded.model


@command
def plan(
    runbook: Annotated[str, typer.Argument(help="a runbook file, or a name in the library")],
    input: InputOpt = [],  # noqa: B006 - typer reads the default, never mutates it
    inputs_file: InputsFileOpt = None,
    library: LibraryOpt = None,
    format: FormatOpt = Format.text,
    live: Annotated[
        bool,
        typer.Option(
            "--live", help="ask each action what it would change now (read-only AWS calls)"
        ),
    ] = False,
) -> None:
    """Show what a run would do, stage by stage, without changing anything."""
    from clampdown.core import plan as planner
    from clampdown.core.actions import registry
    from clampdown.core.inputs import parse_pairs

    _, model = _load(runbook, library)
    result = planner.build(model, parse_pairs(input, inputs_file), registry())
    if live:
        planner.preview(result, model, registry())
    if format is Format.json:
        out.print_json(json.dumps(result.to_dict(), default=str))
        return
    _print_plan(result)


def _print_plan(result: Any) -> None:
    out.print(f"[bold]{escape(result.title)}[/] ({result.runbook}, severity {result.severity})")
    if result.inputs:
        shown = ", ".join(f"{k}={v!r}" for k, v in result.inputs.items())
        out.print(f"inputs: {shown}", markup=False)
    if result.missing_inputs:
        out.print(
            f"[yellow]not given (required at run time): {', '.join(result.missing_inputs)}[/]"
        )
    for number, stage in enumerate(result.stages, start=1):
        parallel = f" — {len(stage)} steps in parallel" if len(stage) > 1 else ""
        out.print(f"\n[bold]Stage {number}[/]{parallel}")
        for step in stage:
            marks = []
            if step.destructive:
                marks.append("[red]DESTRUCTIVE[/]")
            if step.approval_gate:
                marks.append("[cyan]APPROVAL GATE[/]")
            if step.preapproved:
                marks.append(f"[yellow]PRE-APPROVED: {escape(step.preapproved)}[/]")
            title = f" — {step.name}" if step.name else ""
            out.print(f"  [bold]{step.id}[/]{title} uses {step.uses} {' '.join(marks)}")
            if step.needs:
                out.print(f"      needs: {', '.join(step.needs)}")
            if step.condition:
                out.print(f"      if: {step.condition}", markup=False)
            for key, value in step.with_.items():
                out.print(f"      with.{key} = {json.dumps(value, default=str)}", markup=False)
            out.print(
                f"      retries {step.retries}, timeout {step.timeout:g}s, "
                f"on_failure {step.on_failure}"
            )
            if step.iam_actions:
                out.print(f"      IAM: {', '.join(step.iam_actions)}")
            if step.changes is not None:
                out.print("      would change:" + ("" if step.changes else " nothing"))
                for line in step.changes:
                    out.print(f"        - {line}", markup=False)
            elif step.preview_note:
                out.print(f"      preview: {step.preview_note}", markup=False)
    if result.iam_actions:
        out.print(f"\nIAM actions for the whole run: {', '.join(result.iam_actions)}")


@command
def run(
    runbook: Annotated[str, typer.Argument(help="a runbook file, or a name in the library")],
    input: InputOpt = [],  # noqa: B006
    inputs_file: InputsFileOpt = None,
    library: LibraryOpt = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="show Prefect's own logs")
    ] = False,
    as_: Annotated[
        str | None,
        typer.Option(
            "--as",
            help="who starts the run (Slack user id): the two-person rule keeps them from "
            "approving it (default: the login name)",
        ),
    ] = None,
) -> None:
    """Execute a runbook now, with live progress.

    Exit 0 succeeded, 1 failed, 2 bad input, 3 an approval was denied or timed out.
    """
    from clampdown.app.progress import RunProgress
    from clampdown.core import inputs as inputs_mod
    from clampdown.core.ledger import new_run_id, read
    from clampdown.core.settings import settings

    path, model = _load(runbook, library)
    values = inputs_mod.validate(model.inputs, inputs_mod.parse_pairs(input, inputs_file))
    run_id = new_run_id()
    ledger = settings().ledger_path(run_id)
    if not verbose:  # keep Prefect's console chatter off the progress view; API logs stay on
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
    from clampdown_flows.respond import run_in_process

    err.print(f"run [bold]{run_id}[/] of {model.metadata.name} — starting Prefect")
    try:
        with RunProgress(ledger, model, out):
            state = run_in_process(
                str(path),
                inputs_mod.protect(model.inputs, values),
                run_id=run_id,
                library=str(_library(library)),
                trigger={"type": "manual", "user": as_ or getpass.getuser()},
            )
    except KeyboardInterrupt:
        err.print(f"[yellow]interrupted: run {run_id} stopped where it was[/]")
        err.print(f"ledger so far: {ledger} (no run.end record: steps may be half-done)")
        raise typer.Exit(130) from None
    end = (
        next((r for r in reversed(read(ledger)) if r["type"] == "run.end"), None)
        if ledger.exists()
        else None
    )
    status = end["status"] if end else "failed"
    if end and end.get("outputs"):
        out.print("outputs:")
        for key, value in end["outputs"].items():
            out.print(f"  {key} = {json.dumps(value, default=str)}", markup=False)
    if end and end.get("output_errors"):
        for key, message in end["output_errors"].items():
            err.print(f"[yellow]output {key} could not be rendered: {escape(message)}[/]")
    color = {"succeeded": "green", "denied": "yellow"}.get(status, "red")
    out.print(f"run {run_id}: [{color}]{status}[/]")
    out.print(f"ledger: {ledger}")
    if end and end.get("evidence"):
        out.print(f"evidence: {end['evidence']}", markup=False)
    summary = state.result(raise_on_failure=False) if state.is_completed() else None
    if isinstance(summary, dict) and summary.get("evidence_error"):
        err.print(f"[red]{escape(summary['evidence_error'])}[/]")
    raise typer.Exit({"succeeded": 0, "denied": 3}.get(status, 1))


@command
def schema(
    output: Annotated[Path | None, typer.Option("--output", "-o", help="write to a file")] = None,
) -> None:
    """Print the JSON Schema of clampdown/v1 runbooks (for editor completion and checks)."""
    from clampdown.core.actions import registry
    from clampdown.core.schema import runbook_schema

    for problem in registry().load_all()[1]:
        err.print(f"[yellow]warning: {escape(str(problem))}[/]")
    text = json.dumps(runbook_schema(registry()), indent=2)
    if output:
        try:
            output.write_text(text + "\n", encoding="utf-8")
        except OSError as exc:
            raise ClampdownError(
                f"cannot write {output}: {exc.strerror}", "check the folder exists"
            ) from None
        err.print(f"wrote {output}")
    else:
        sys.stdout.write(text + "\n")


@command
def actions(format: FormatOpt = Format.text) -> None:
    """List the installed actions with their inputs, outputs and IAM needs."""
    from clampdown.core.actions import registry

    rows = []
    loaded, broken = registry().load_all()
    for problem in broken:
        err.print(f"[yellow]warning: {escape(str(problem))}[/]")
    for action in loaded:
        input_schema = action.Input.model_json_schema()
        required = set(input_schema.get("required", []))
        fields = [
            f"{name}: {_type_name(prop)}{'' if name in required else ' (optional)'}"
            for name, prop in input_schema.get("properties", {}).items()
        ]
        outputs = action.declared_outputs({})
        rows.append(
            {
                "name": action.name,
                "summary": action.summary,
                "inputs": fields,
                "outputs": sorted(outputs)
                if outputs
                else ["(named by with:)"]
                if action.Output.model_config.get("extra") == "allow"
                else [],
                "iam": list(action.iam_actions),
                "destructive": action.destructive,
                "approval_gate": action.approval_gate,
            }
        )
    if format is Format.json:
        out.print_json(json.dumps(rows))
        return
    table = Table(title="clampdown actions", title_justify="left")
    for col in ("action", "inputs (with:)", "outputs", "IAM actions", "destructive"):
        table.add_column(col)
    for row in rows:
        table.add_row(
            f"[bold]{row['name']}[/]\n{row['summary']}",
            "\n".join(row["inputs"]) or "—",
            ", ".join(row["outputs"]) or "—",
            "\n".join(row["iam"]) or "—",
            "yes" if row["destructive"] else "no",
        )
    out.print(table)


@command
def runs(
    limit: Annotated[int, typer.Option("--limit", "-n", help="how many, newest first")] = 20,
    format: FormatOpt = Format.text,
) -> None:
    """List recent runs with their status, from the ledgers under CLAMPDOWN_HOME."""
    from clampdown.core.runs import recent_runs
    from clampdown.core.settings import settings

    found = recent_runs(settings().home.expanduser() / "runs", limit)
    if format is Format.json:
        out.print_json(json.dumps([r.to_dict() for r in found]))
        return
    if not found:
        out.print(f"no runs under {escape(str(settings().home))}/runs")
        return
    table = Table(title="recent runs", title_justify="left")
    for column in ("run id", "runbook", "started", "trigger", "status", "detail"):
        table.add_column(column)
    colors = {
        "succeeded": "green",
        "failed": "red",
        "denied": "yellow",
        "in progress": "yellow",
        "waiting for approval": "bold yellow",
    }
    for run in found:
        color = colors.get(run.status, "white")
        table.add_row(
            run.run_id,
            escape(run.runbook),
            run.started,
            escape(run.trigger),
            f"[{color}]{run.status}[/]",
            escape(run.detail),
        )
    out.print(table)


@command
def approve(
    run_id: Annotated[str, typer.Argument(help="the run waiting for approval")],
    as_: Annotated[
        str, typer.Option("--as", help="your Slack user id (the flow checks it is an approver)")
    ],
    step: Annotated[
        str | None, typer.Option(help="the approval step (default: the only one waiting)")
    ] = None,
    deny: Annotated[bool, typer.Option("--deny", help="deny instead of approve")] = False,
    reason: Annotated[str, typer.Option(help="why (required with --deny)")] = "",
) -> None:
    """Approve (or deny) a paused run; the run itself checks the decision.

    Exit 0 when the decision counted, 1 when it was refused.
    """
    from clampdown_flows.decisions import pending_request, submit_decision

    if deny and not reason.strip():
        raise ClampdownError("a denial needs a reason", "add --reason 'why'")
    req = pending_request(run_id, step)
    out.print(f"run {run_id}, step {req['step']}: {escape(req['summary'])}")
    for gated_id, gated in req.get("gated", {}).items():
        if gated.get("will_run") is False:
            out.print(f"  {gated_id} ({gated.get('uses')}): will not run", markup=False)
            continue
        params = json.dumps(gated.get("params"), sort_keys=True, default=str)
        reversible = "reversible" if gated.get("reversible") else "NOT reversible"
        out.print(f"  {gated_id} ({gated.get('uses')}, {reversible}): {params}", markup=False)
    verdict = submit_decision(
        run_id,
        req["step"],
        as_,
        "deny" if deny else "approve",
        reason,
        "terminal",
        params_hash_seen=req["params_hash"],
    )
    if not verdict.accepted:
        err.print(f"[red]refused:[/] {escape(verdict.reason)}")
        raise typer.Exit(1)
    done = (
        f"; the request is now {verdict.outcome}" if verdict.outcome else "; more approvals needed"
    )
    out.print(f"[green]{'denial' if deny else 'approval'} counted[/]{done}")


@command
def serve(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8080,
    socket_mode: Annotated[
        bool,
        typer.Option(
            "--socket-mode",
            help="take Slack's traffic over a websocket clampdown opens (no public URL; "
            "needs CLAMPDOWN_SLACK_APP_TOKEN); alerts and /healthz stay on HTTP",
        ),
    ] = False,
) -> None:
    """Serve /slack/events (the /clampdown command), alerts and /healthz; runs start in-process."""
    from clampdown.app.serve import serve as serve_app

    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
    serve_app(host, port, socket_mode)


@command
def iam_policy(
    runbooks: Annotated[list[str], typer.Argument(help="runbook files or names in the library")],
    library: LibraryOpt = None,
) -> None:
    """Print the least-privilege IAM policy (JSON) the engine needs to run these runbooks."""
    from clampdown.core.actions import registry
    from clampdown.core.iam_policy import policy
    from clampdown.core.settings import settings

    models = [_load(name, library)[1] for name in runbooks]
    document = policy(models, registry(), settings().evidence_bucket)
    sys.stdout.write(json.dumps(document, indent=2) + "\n")


@command
def rollback(
    run_id: Annotated[str, typer.Argument(help="the run whose changes to undo")],
    plan: Annotated[bool, typer.Option("--plan", help="only show what would be undone")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="do not ask for confirmation")] = False,
    again: Annotated[
        bool,
        typer.Option(
            "--again",
            help="roll back a run that was already rolled back (it may reopen what a newer "
            "containment closed)",
        ),
    ] = False,
) -> None:
    """Undo a run's containment changes, newest first (evidence is never deleted).

    A run already rolled back is refused unless --again; a rollback that stopped half-way
    can simply be run again. With approval: the release-containment runbook.
    """
    from clampdown.core.undo import rollback_target, undo_items

    items = undo_items(rollback_target(run_id, allow_repeat=again or plan))
    out.print(f"run {run_id}: {len(items)} change(s) to undo, newest first", markup=False)
    for number, item in enumerate(items, start=1):
        where = ", ".join(x for x in (item.region, item.account) if x)
        out.print(
            f"  {number}. [{item.step}] {item.uses}: {item.description}"
            + (f" ({where})" if where else ""),
            markup=False,
        )
    if plan or not items:
        return
    if not yes:
        if not sys.stdin.isatty():
            raise ClampdownError(
                "rollback changes production: confirmation needed",
                "run it in a terminal, or pass --yes",
            )
        typer.confirm(f"Undo these {len(items)} change(s)?", abort=True)
    from clampdown_flows.prefect_api import local_api
    from clampdown_flows.respond import RunFailed
    from clampdown_flows.rollback import rollback as rollback_flow

    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
    with local_api():
        state = rollback_flow(run_id, allow_repeat=again, return_state=True)
    if state.is_completed():
        result = state.result()
        out.print(
            f"[green]rolled back[/] {result['undone']} change(s); ledger: "
            f"{escape(result['ledger'])}"
        )
        return
    try:
        state.result()
    except RunFailed as exc:
        raise ClampdownError(
            str(exc), "fix the cause and run the rollback again: undo is idempotent"
        ) from None


def _verify_manifest(uri: str) -> None:
    """Re-hash every object an evidence manifest lists (the CLI is where providers meet)."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    from clampdown_aws.evidence_store import verify_manifest

    try:
        ok, lines = verify_manifest(boto3.client("s3"), uri)
    except (ClientError, BotoCoreError, KeyError, ValueError) as exc:
        raise ClampdownError(
            f"cannot read the manifest {uri}: {exc}", "check the URI and your AWS credentials"
        ) from None
    for line in lines:
        out.print(line, markup=False)
    if not ok:
        out.print(f"[red]TAMPERED[/] {escape(uri)}: an object differs from its manifest entry")
        raise typer.Exit(1)
    out.print(f"[green]OK[/] {escape(uri)}: {len(lines)} object(s) match their SHA-256")


def _type_name(prop: dict[str, Any]) -> str:
    """A short type for a JSON Schema property: 'string', 'integer|null', 'duration'."""
    from clampdown.core.durations import SCHEMA_PATTERN

    options = prop.get("anyOf", [prop])
    if any(o.get("pattern") == SCHEMA_PATTERN for o in options):
        return "duration"
    return "|".join(o.get("type", "any") for o in options)


@command
def verify(
    target: Annotated[str, typer.Argument(help="a ledger file, or a run id")],
) -> None:
    """Check a run ledger's hash chain; name the first altered record."""
    from clampdown.core.ledger import verify_file
    from clampdown.core.settings import settings

    if target.startswith("s3://"):
        _verify_manifest(target)
        return
    path = Path(target)
    if not path.is_file():
        path = settings().existing_ledger(target)
    verdict = verify_file(path)
    if verdict.ok:
        color = "green" if verdict.complete else "yellow"
        out.print(f"[{color}]OK[/] {escape(str(path))}: {escape(verdict.message)}")
        raise typer.Exit(0)
    out.print(f"[red]TAMPERED[/] {escape(str(path))}: {escape(verdict.message)}")
    raise typer.Exit(1)


def _register_command_groups() -> None:
    """Commands that live in modules of their own (each module's register() adds them)."""
    from clampdown.app import cli_drill, cli_ops, cli_triggers

    for module in (cli_triggers, cli_drill, cli_ops):
        module.register(app)


_register_command_groups()


if __name__ == "__main__":
    main()
