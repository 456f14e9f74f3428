"""The ``clampdown`` console script: ``lint`` starts light, everything else goes to Typer.

``clampdown lint`` runs in editors and pre-commit hooks on every save and commit;
importing Typer, Rich and every command's module cost it more than the lint itself.
So this entry point imports nothing but the standard library until it knows the
command: ``clampdown lint …`` with options lint takes (:func:`clampdown.app.cli_lint.parse_args`)
runs there, with the output and exit codes of the Typer command; any other command
line — another command, ``--help``, ``--version``, a usage error, shell completion —
goes to the Typer app (:func:`clampdown.app.cli.main`) unchanged. A lint of files that
have not changed since the same lint last ran replays that lint's output
(:mod:`clampdown.app.lint_cache`). ``clampdown run`` starts its local Prefect API's server
first, before Typer is imported (:func:`_early_local_api`).
"""

from __future__ import annotations

import atexit
import errno
import gc
import os
import sys
from collections.abc import Callable

TYPE_CHECKING = False  # typing's own, without importing typing (a lint replay's ~1 ms)
if TYPE_CHECKING:
    from typing import Any


def main() -> None:
    """Console-script entry point."""
    args = sys.argv[1:]
    completing = any(k.startswith("_") and k.endswith("_COMPLETE") for k in os.environ)
    if args[:1] == ["lint"] and not completing:
        # A lint is short and bounded by the library it reads; what it allocates is freed
        # at exit. Python's cyclic collector ran some 120 passes over the objects its
        # imports and pydantic's model builds create: about a tenth of its CPU time, for
        # 1 MB less peak memory on this repository's library.
        gc.disable()
        # At exit the interpreter still runs one full collection over every object left,
        # collector off or not (~70 M instructions after a cold lint of runbooks/, 4 % of
        # it); objects frozen into the permanent generation are not traversed, and the
        # memory goes back to the system with the process either way. Registered at exit,
        # so a caller that runs main() in its own process (tests) is not touched before.
        atexit.register(gc.freeze)
        from clampdown.app.lint_cache import replay, run_and_keep

        replayed = _guarded(lambda: replay(args[1:]))  # an unchanged lint's, if kept
        if replayed is not None:
            sys.exit(replayed)
        from clampdown.app.cli_lint import fast_lint, parse_args

        parsed = parse_args(args[1:])
        if parsed is not None:
            sys.exit(_guarded(lambda: run_and_keep(args[1:], parsed, fast_lint)))
        gc.enable()  # Typer's to answer: a command like any other
    early = _early_local_api() if args[:1] == ["run"] and not completing else None
    from clampdown.app.cli import main as typer_main

    if early is None:
        typer_main()
        return
    from clampdown.app.cli_api import started_early

    token = started_early.set(early)  # the command uses it (clampdown.app.cli_api)
    try:
        typer_main()
    finally:
        started_early.reset(token)
        early.close()  # stopped if the command never needed it


def _early_local_api() -> Any:
    """``clampdown run``: the Prefect home's resident API's server started before Typer and
    Prefect are imported, when the home probably has none
    (:class:`clampdown_flows.resident_api.EarlyServer`); the command tells it ``go``."""
    from clampdown_flows.resident_api import EarlyServer

    return EarlyServer.start()


def _guarded(run: Callable[[], int | None]) -> int | None:
    """Exit as Typer's ``main`` does when output is cut (``| head``: 1, silently) or on
    Ctrl-C (130); anything else propagates with its traceback, as there."""
    try:
        return run()
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        if exc.errno != errno.EPIPE:
            raise
        _silence_flush()
        return 1


def _silence_flush() -> None:
    """The interpreter flushes stdout at exit; into a closed pipe that flush would
    print an error, so point stdout at nothing (as Click's PacifyFlushWrapper does)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    main()
