"""The command line's one path from a user error to a message and an exit code.

Every command runs inside :func:`user_errors` (``clampdown``'s own commands through
:func:`clampdown.app.cli.command`; ``triggers``, ``drill``, ``deploy`` and ``worker``
directly). A user error never shows a traceback:

* an invalid file (:class:`~clampdown.core.diagnostics.InvalidFileError`): each
  diagnostic with its place, exit 2;
* any other :class:`~clampdown.core.diagnostics.ClampdownError`: ``error: <message>``
  and its ``hint:``, exit with the error's ``exit_code`` (1; 2 for invalid inputs).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from clampdown.core.diagnostics import ClampdownError, Diagnostic, InvalidFileError

err = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)


def print_diagnostics(diagnostics: Iterable[Diagnostic]) -> None:
    for d in diagnostics:
        color = "red" if d.severity == "error" else "yellow"
        err.print(f"[{color}]{escape(str(d))}[/]")


def exit_for(exc: ClampdownError) -> NoReturn:
    """Print ``exc`` for the user and exit with its code."""
    if isinstance(exc, InvalidFileError):
        print_diagnostics(exc.diagnostics)
        raise typer.Exit(2) from None
    err.print(f"[red]error:[/] {escape(exc.message)}")
    if exc.hint:
        err.print(f"  hint: {exc.hint}", markup=False)
    raise typer.Exit(exc.exit_code) from None


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """User errors inside become a message and an exit code (see above).

    ``with user_errors(): …`` around a part of a command, or ``@user_errors()`` on a
    whole command (it keeps the command's signature for Typer).
    """
    try:
        yield
    except ClampdownError as exc:
        exit_for(exc)
