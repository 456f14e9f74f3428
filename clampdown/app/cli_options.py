"""What the ``clampdown`` commands share: the output console, the common options, and
finding and loading a runbook of the library."""

from __future__ import annotations

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
