"""What the ``clampdown`` commands share: the output console, the common options, and
finding and loading a runbook of the library."""

from __future__ import annotations

import json
import os
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from clampdown.app.cli_errors import print_diagnostics

if TYPE_CHECKING:
    from clampdown.core.settings import Settings

out = Console(highlight=False, soft_wrap=True, emoji=False)
# Wide enough for any row: a table printed to a file or a pipe is never cut or wrapped.
UNLIMITED_WIDTH = 100_000


def print_table(table: Table, console: Console = out) -> None:
    """Print a listing's table; when not on a terminal, at its natural width.

    Rich fits a table to the console (80 columns when stdout is not a terminal), which
    cuts ids and names with ``…`` or wraps them: exactly what a user copies from
    ``runs`` or ``drill --list`` into the next command. Off a terminal nothing is fitted.
    """
    if console.is_terminal:
        console.print(table)
        return
    wide = Console(
        file=console.file,
        width=UNLIMITED_WIDTH,
        highlight=False,
        emoji=False,
        color_system=None,
    )
    wide.print(table)


class Format(StrEnum):
    """``--format`` of every listing: Typer refuses any other value with a clear message."""

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


def quiet_prefect(level: str = "CRITICAL") -> None:
    """Keep Prefect's own console logs (INFO: "Beginning flow run …") off a command's output.

    Prefect reads the level when it is first imported, so a command calls this before it
    imports anything of Prefect; a level the user set is kept. The logs still reach the
    Prefect API. ``run -v`` skips it to show them.
    """
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", level)


def gated_lines(gated: dict[str, Any]) -> list[str]:
    """What an approval decides, one line per gated step with its exact parameters.

    The words ``clampdown approve`` prints before it sends a decision, and the
    interactive drill's prompt shows: a person approves parameters, not a step name.
    """
    lines = []
    for gated_id, step in gated.items():
        if step.get("will_run") is False:
            lines.append(f"  {gated_id} ({step.get('uses')}): will not run")
            continue
        params = json.dumps(step.get("params"), sort_keys=True, default=str)
        reversible = "reversible" if step.get("reversible") else "NOT reversible"
        lines.append(f"  {gated_id} ({step.get('uses')}, {reversible}): {params}")
    return lines


def library_folder(library: Path | None, conf: Settings | None = None) -> Path:
    """``--library``, else the configured library (``conf``: the command's settings)."""
    if library:
        return library
    if conf is None:
        from clampdown.core.settings import settings

        conf = settings()
    return conf.library


def load_named_runbook(runbook: str, library: Path | None) -> Any:
    """(path, model) of a runbook file or library name; lint warnings go to stderr."""
    from clampdown.core.lint import load_runbook
    from clampdown.core.loader import resolve

    path = resolve(runbook, library_folder(library))
    loaded, warnings = load_runbook(path)
    print_diagnostics(warnings)
    return path, loaded.model
