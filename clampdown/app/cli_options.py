"""What the ``clampdown`` commands share: the output console, the common options, and
finding and loading a runbook of the library."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from clampdown.app.cli_errors import print_diagnostics

if TYPE_CHECKING:
    from clampdown.core.settings import Settings

out = Console(highlight=False, soft_wrap=True, emoji=False)


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
