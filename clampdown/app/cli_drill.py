"""``clampdown drill``: the command line of tabletop drills (see :mod:`clampdown.app.drill.runner`).

Registered on the main app with :func:`register`, so the CLI module stays small and
the drill machinery (moto, the Slack stand-in, uvicorn) loads only when a drill runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from clampdown.app.cli_errors import user_errors
from clampdown.app.cli_options import Format, out, print_table, quiet_prefect
from clampdown.core.diagnostics import InvalidFileError


def register(app: typer.Typer) -> None:
    """Add the ``drill`` command to ``app``."""

    @app.command("drill")
    def drill(
        name: Annotated[
            str | None,
            typer.Argument(
                help="drill name in runbooks/drills/ or a drill file (default: model-theft)"
            ),
        ] = None,
        interactive: Annotated[
            bool,
            typer.Option(
                "--interactive",
                help="ask at the terminal at each approval (no short flag: -i is --input "
                "in run and plan)",
            ),
        ] = False,
        report_dir: Annotated[
            Path | None,
            typer.Option(
                "--report-dir",
                help="where report.md and report.html go "
                "(default $CLAMPDOWN_HOME/drills/<run-id>/)",
            ),
        ] = None,
        list_: Annotated[bool, typer.Option("--list", help="list the drills and exit")] = False,
        format: Annotated[
            Format, typer.Option("--format", help="output format of --list")
        ] = Format.text,
    ) -> None:
        """Run a tabletop drill on simulated AWS and write a scored after-action report.

        Exit 0 when every objective is met, 1 otherwise, 2 for a drill that does not load.
        """
        console = Console(stderr=True)
        if list_:
            with user_errors():
                _list(format)
            return
        if format is not Format.text:
            console.print("[red]error:[/] --format applies to --list; a drill prints its report")
            raise typer.Exit(2)
        quiet_prefect()  # the drill's own progress, not Prefect's INFO lines
        from clampdown.app.drill.runner import run_drill

        with user_errors():
            result = run_drill(
                name,
                interactive=interactive,
                report_dir=report_dir,
                console=console,
                freeze_start=True,  # this process runs this drill alone
            )
        report = result.report
        style = "green" if report.all_met else "red"
        console.print(f"[bold {style}]{escape(report.verdict)}[/]", highlight=False)
        for o in report.objectives:
            mark = "[green]✔ met   [/]" if o.met else "[red]✘ missed[/]"
            console.print(f"{mark} {escape(o.title)} — {escape(o.measured)}", highlight=False)
        if report.expected_missed:
            expected = "as the drill expects" if report.as_expected else "NOT as the drill expects"
            console.print(f"({expected}: {', '.join(report.expected_missed)} missed)")
        console.print(
            f"report: {result.html}\n        {result.markdown}", highlight=False, soft_wrap=True
        )
        leave_heap_to_exit()
        raise typer.Exit(result.exit_code)


def leave_heap_to_exit() -> None:
    """The drill is done and the command about to exit: keep what it built (moto's simulated
    account, boto3's and Prefect's models, serve) out of the garbage collections that
    Python's exit runs over the whole heap. They took 4.3 s after the report was printed at
    load 10 (0.3 s frozen); nothing the exit needs is skipped: atexit handlers (Prefect's
    queues sent to its API), flushes and module teardown run as before."""
    import gc

    gc.freeze()


def drill_rows() -> list[dict[str, Any]]:
    """Every drill of the library: name, default or not, family, runbook, title, lint errors."""
    from clampdown.core.drill_library import DEFAULT_DRILL, drill_files, load_drill
    from clampdown.core.drill_lint import lint_drills
    from clampdown.core.settings import settings

    library = settings().library
    rows = []
    for name, path in drill_files(library).items():
        problems = [d for d in lint_drills([path], library) if d.severity == "error"]
        try:
            drill, _ = load_drill(path)
            family, runbook, title = drill.metadata.family, drill.runbook, drill.metadata.title
        except InvalidFileError:
            family = runbook = title = None
        rows.append(
            {
                "name": name,
                "default": name == DEFAULT_DRILL,
                "family": family,
                "runbook": runbook,
                "title": title,
                "path": str(path),
                "lint_errors": len(problems),
            }
        )
    return rows


def _list(format: Format) -> None:
    from clampdown.core.settings import settings

    rows = drill_rows()
    if format is Format.json:
        out.print_json(json.dumps(rows))
        return
    table = Table(title=f"drills in {settings().library}/drills", title_justify="left")
    for column in ("drill", "family", "runbook", "title", "lint"):
        table.add_column(column, overflow="fold")
    for row in rows:
        label = f"{row['name']} (default)" if row["default"] else row["name"]
        errors = row["lint_errors"]
        lint = "[green]ok[/]" if not errors else f"[red]{errors} error(s)[/]"
        table.add_row(
            escape(label),
            escape(row["family"] or "—"),
            escape(row["runbook"] or "—"),
            escape(row["title"] or "—"),
            lint,
        )
    print_table(table)
