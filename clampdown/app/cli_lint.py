"""``clampdown lint``: its options, its run and its output, without Typer or Rich.

Editors and pre-commit hooks run lint on every save and commit, where start-up is
most of its cost, so the console script (:mod:`clampdown.app.entry`) runs lint
through :func:`fast_lint` and imports neither Typer nor Rich nor any other command.
The Typer command (:func:`clampdown.app.cli.lint`) calls the same :func:`run_lint`,
so both print the same bytes and exit with the same codes:

* :func:`parse_args` takes lint's command line the way Typer would, and answers
  None for anything it does not take as surely as Typer does (``--help``, an
  unknown option, a value Typer refuses, an option given twice): the entry point
  then hands the whole command line to Typer, which prints what it always did.
* :func:`print_styled`, :func:`print_markup` and :func:`print_json` print what Rich
  would. Off a
  terminal Rich prints the text as it is, so they write it directly; on a terminal
  (colours), or for text Rich would change (control characters, markup in a path),
  they let Rich print it.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clampdown.app.plain_output import as_is

if TYPE_CHECKING:  # a replayed lint (clampdown.app.lint_cache) imports no more than it needs
    from clampdown.core.diagnostics import Diagnostic

FORMATS = ("text", "json")


@dataclass(frozen=True)
class LintArgs:
    """Lint's command line, as Typer would hand it to the command."""

    paths: list[Path] = field(default_factory=list)
    format: str = "text"
    strict: bool = False
    library: Path | None = None
    cache: bool = True  # --cache/--no-cache: the console script's verdict cache


def parse_args(args: list[str]) -> LintArgs | None:
    """The arguments after ``lint``, or None when Typer must parse them.

    Takes paths, ``--format text|json`` (also ``--format=json``), ``--strict``,
    ``--no-strict``, ``--cache``, ``--no-cache``, ``--library PATH``/``--library=PATH``/
    ``-L PATH`` and ``--``, in any order, each option at most once. Everything else
    (``--help``, unknown or repeated options, a missing or odd value) is Typer's to
    answer, with its usage message and exit code 2.
    """
    paths: list[str] = []
    options: dict[str, str] = {}
    rest = iter(args)
    for arg in rest:
        if arg == "--":
            paths.extend(rest)
            break
        if arg == "-" or not arg.startswith("-"):
            paths.append(arg)
            continue
        name, eq, value = arg.partition("=")
        if name in ("--strict", "--no-strict") and not eq:
            key, value = "strict", name
        elif name in ("--cache", "--no-cache") and not eq:
            key, value = "cache", name
        elif name in ("--format", "--library") or (name == "-L" and not eq):
            key = name.lstrip("-").replace("L", "library")
            value = value if eq else next(rest, "")
            if not value or value.startswith("-"):
                return None
        else:
            return None
        if key in options:
            return None
        options[key] = value
    if options.get("format", "text") not in FORMATS:
        return None
    library = options.get("library")
    return LintArgs(
        paths=[Path(p) for p in paths],
        format=options.get("format", "text"),
        strict=options.get("strict") == "--strict",
        library=Path(library) if library is not None else None,
        cache=options.get("cache") != "--no-cache",
    )


def run_lint(args: LintArgs) -> int:
    """Lint what ``args`` names and print the result; the exit code (1: any error).

    Without paths, the library: ``--library``, else the configured one (settings are
    read only then).
    """
    from clampdown.core.lint import lint_paths

    if args.paths:
        targets = list(args.paths)
    elif args.library:
        targets = [args.library]
    else:
        from clampdown.core.settings import settings

        targets = [settings().library]
    found = lint_paths(targets, strict=args.strict)
    return report(found, targets, args.format)


def report(found: list[Diagnostic], targets: list[Path], format: str) -> int:
    """Print the diagnostics and the verdict (or the JSON document); the exit code."""
    errors = sum(d.severity == "error" for d in found)
    warnings = len(found) - errors
    if format == "json":
        document = {
            "errors": errors,
            "warnings": warnings,
            "diagnostics": [d.to_dict() for d in found],
        }
        print_json(json.dumps(document))
    else:
        for d in found:
            print_styled(str(d), "red" if d.severity == "error" else "yellow")
        where = ", ".join(map(str, targets))
        verdict = "[green]clean[/]" if not found else f"{errors} error(s), {warnings} warning(s)"
        plain = "clean" if not found else verdict
        # the targets go to Rich unescaped: a '[' in a path is Rich's to read
        print_markup(
            f"lint: {verdict} ({where})", f"lint: {plain} ({where})" if "[" not in where else None
        )
    return 1 if errors else 0


_as_is = as_is  # the name tests/unit/test_lint_entry.py knows


def _unchanged_by_rich(text: str) -> bool:
    """Rich expands tabs and drops some control characters; printable text it keeps."""
    return all(line.isprintable() for line in text.split("\n"))


def print_styled(text: str, style: str) -> None:
    """Print ``text`` as ``out.print(f"[{style}]{escape(text)}[/]")`` does."""
    if as_is() and _unchanged_by_rich(text):
        sys.stdout.write(text + "\n")
        return
    from rich.markup import escape

    from clampdown.app.cli_options import out

    out.print(f"[{style}]{escape(text)}[/]")


def print_markup(markup: str, plain: str | None) -> None:
    """Print Rich ``markup`` as ``out.print`` does; ``plain`` is the text it renders to
    (None: only Rich can tell)."""
    if plain is not None and as_is() and _unchanged_by_rich(plain):
        sys.stdout.write(plain + "\n")
        return
    from clampdown.app.cli_options import out

    out.print(markup)


def print_json(text: str) -> None:
    """Print a JSON document as Rich's ``print_json`` does: indented by two, non-ASCII kept."""
    data: Any = json.loads(text)
    pretty = json.dumps(data, indent=2, ensure_ascii=False)
    if as_is() and _unchanged_by_rich(pretty):
        sys.stdout.write(pretty + "\n")
        return
    from clampdown.app.cli_options import out

    out.print_json(text)


def _read_entry_points_once() -> None:
    """Read the installed packages' entry points once, for the actions and for pydantic.

    pydantic looks for plug-ins (entry-point group ``pydantic``) when it builds its first
    validator, and the action registry reads ``clampdown.actions``: each reading opens
    the metadata of every installed distribution (~10 ms here). When one reading finds
    no pydantic plug-in, ``PYDANTIC_DISABLE_PLUGINS`` tells pydantic not to look again:
    what it would have found, nothing, is what it uses. A variable the user set is
    left as it is, and so is a registry already built.
    """
    from clampdown.core.installed import installed_entry_points

    installed = installed_entry_points()  # the process's one reading, shared with the registry
    if not installed.select(group="pydantic"):
        os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    from clampdown.core.actions import ENTRY_POINT_GROUP, registry_from

    registry_from(installed.select(group=ENTRY_POINT_GROUP))


def fast_lint(args: LintArgs) -> int:
    """``clampdown lint`` from the console script: :func:`run_lint` with the exit codes
    and messages the Typer command has (a user error: its message, exit 1 or 2)."""
    from clampdown.core.diagnostics import ClampdownError

    _read_entry_points_once()
    try:
        return run_lint(args)
    except ClampdownError as exc:  # bad settings, say: reported as every command does
        import typer

        from clampdown.app.cli_errors import exit_for

        try:
            exit_for(exc)
        except typer.Exit as done:
            return done.exit_code
        raise
