"""The ``clampdown`` command line.

``lint``, ``plan``, ``schema`` and ``actions`` run in editors and pre-commit
hooks, so they never import Prefect: the executor (``flows``) is imported inside
``run`` only. Errors a user can fix are printed as one message with its place
and a hint, and exit non-zero; they never show a traceback.
"""

from __future__ import annotations

import gc
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from clampdown.app.cli_errors import err, user_errors
from clampdown.app.cli_options import (
    Format,
    FormatOpt,
    LibraryOpt,
    library_folder,
    load_named_runbook,
    out,
    print_table,
)
from clampdown.core.diagnostics import ClampdownError

app = typer.Typer(
    name="clampdown",
    help="Incident-response runbooks for suspected AI model theft.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def main() -> None:
    """Console-script entry point.

    Whatever a command left alive is frozen before the process exits (Typer exits through
    ``SystemExit``): the interpreter's last collection then skips it instead of walking
    every object of the imports once more (~0.3 CPU-s of a one-step ``clampdown run``,
    docs/benchmarks.md).
    """
    try:
        app()
    finally:
        gc.freeze()


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

    Invalid runbook files and inputs exit 2 (bad input); other user errors exit 1
    (:mod:`clampdown.app.cli_errors`); so does a Prefect API that does not answer
    (:mod:`clampdown.app.api_unreachable`).
    """
    from clampdown.app.api_unreachable import prefect_unreachable

    return app.command()(user_errors()(prefect_unreachable()(fn)))


def lint(
    paths: Annotated[
        list[Path] | None, typer.Argument(help="files or folders (default: the library)")
    ] = None,
    format: FormatOpt = Format.text,
    strict: Annotated[bool, typer.Option(help="treat warnings as errors")] = False,
    library: LibraryOpt = None,
    cache: Annotated[
        bool, typer.Option(help="replay an unchanged lint's verdict (--no-cache: lint afresh)")
    ] = True,
) -> None:
    """Check runbooks: schema, DAG, actions, with fields, expressions, approval gates."""
    # the console script runs lint without Typer (clampdown.app.entry), and only it keeps
    # verdicts (clampdown.app.lint_cache); this route always lints afresh; both print this way
    from clampdown.app.cli_lint import LintArgs, run_lint

    raise typer.Exit(run_lint(LintArgs(paths or [], format.value, strict, library, cache)))


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
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(
            f"[bold]{row['name']}[/]\n{row['summary']}",
            "\n".join(row["inputs"]) or "—",
            ", ".join(row["outputs"]) or "—",
            "\n".join(row["iam"]) or "—",
            "yes" if row["destructive"] else "no",
        )
    print_table(table)


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
    """Serve /slack/events (the /clampdown command), alerts and /healthz.

    Runs start in this process (CLAMPDOWN_EXECUTION=local, the default),
    or on the work pool's workers (CLAMPDOWN_EXECUTION=deployment).
    Without Slack settings it still starts; /slack/events answers 503.
    A trigger file with errors (or a CLAMPDOWN_TRIGGERS naming no file) is refused:
    nothing starts, exit 2. Without the library's triggers.yaml, alerts answer 503.
    """
    from clampdown.app.serve import serve as serve_app

    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
    serve_app(host, port, socket_mode)


def iam_policy(
    runbooks: Annotated[list[str], typer.Argument(help="runbook files or names in the library")],
    library: LibraryOpt = None,
    read_only: Annotated[
        bool,
        typer.Option(
            "--read-only",
            help="the read-only policy `clampdown plan --live` needs (no writes, no data reads)",
        ),
    ] = False,
) -> None:
    """Print the least-privilege IAM policy (JSON) the engine needs to run these runbooks.

    Resources are narrowed by the inputs' literal values, enums and anchored patterns;
    where a call can only be granted on "*", a note on stderr says which step and why.
    """
    from clampdown.core.actions import registry
    from clampdown.core.iam_policy import build
    from clampdown.core.settings import settings

    conf = settings()
    folder = library_folder(library, conf)
    models = [load_named_runbook(name, folder)[1] for name in runbooks]
    result = build(
        models,
        registry(),
        conf.evidence_bucket,
        read_only=read_only,
        ledger_key=conf.ledger_kms_key_id,
    )
    sys.stdout.write(json.dumps(result.document, indent=2) + "\n")
    for note in result.notes:
        err.print(f"note: {note}", markup=False)


def _type_name(prop: dict[str, Any]) -> str:
    """A short type for a JSON Schema property: 'string', 'integer|null', 'duration'."""
    from clampdown.core.durations import SCHEMA_PATTERN

    options = prop.get("anyOf", [prop])
    if any(o.get("pattern") == SCHEMA_PATTERN for o in options):
        return "duration"
    return "|".join(o.get("type", "any") for o in options)


def _register_commands() -> None:
    """Every command, in the order ``clampdown --help`` lists them.

    ``plan`` and the commands about runs live in modules of their own (registered
    here, with the user-error handling of :func:`command`); the groups ``triggers``,
    ``drill`` and the operations commands add themselves with their ``register()``.
    """
    from clampdown.app import (
        cli_api,
        cli_drill,
        cli_ops,
        cli_plan,
        cli_report,
        cli_runs,
        cli_triggers,
    )

    for fn in (
        lint,
        cli_plan.plan,
        cli_runs.run,
        schema,
        actions,
        cli_runs.runs,
        cli_runs.approve,
        cli_runs.resume,
        serve,
        iam_policy,
        cli_runs.rollback,
        cli_runs.verify,
    ):
        command(fn)
    for module in (cli_triggers, cli_drill, cli_ops, cli_report, cli_api):
        module.register(app)


_register_commands()


if __name__ == "__main__":
    main()
