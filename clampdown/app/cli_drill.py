"""``clampdown drill``: the command line of tabletop drills (see :mod:`clampdown.app.drill.runner`).

Registered on the main app with :func:`register`, so the CLI module stays small and
the drill machinery (moto, the Slack stand-in, uvicorn) loads only when a drill runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from clampdown.app.cli_errors import user_errors
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
            bool, typer.Option("--interactive", "-i", help="ask at the terminal at each approval")
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
    ) -> None:
        """Run a tabletop drill on simulated AWS and write a scored after-action report.

        Exit 0 when every objective is met, 1 otherwise, 2 for a drill that does not load.
        """
        console = Console(stderr=True)
        if list_:
            _list(Console())
            return
        from clampdown.app.drill.runner import run_drill

        with user_errors():
            result = run_drill(
                name, interactive=interactive, report_dir=report_dir, console=console
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
        raise typer.Exit(result.exit_code)


def _list(console: Console) -> None:
    from clampdown.core.drill_library import DEFAULT_DRILL, drill_files, load_drill
    from clampdown.core.drill_lint import lint_drills
    from clampdown.core.settings import settings

    library = settings().library
    table = Table(title=f"drills in {library}/drills", title_justify="left")
    for column in ("drill", "family", "runbook", "title", "lint"):
        table.add_column(column)
    for name, path in drill_files(library).items():
        problems = [d for d in lint_drills([path], library) if d.severity == "error"]
        try:
            drill, _ = load_drill(path)
            family, runbook, title = drill.metadata.family, drill.runbook, drill.metadata.title
        except InvalidFileError:
            family = runbook = title = "—"
        label = f"{name} (default)" if name == DEFAULT_DRILL else name
        lint = "[green]ok[/]" if not problems else f"[red]{len(problems)} error(s)[/]"
        table.add_row(escape(label), family, runbook, escape(title), lint)
    console.print(table)
