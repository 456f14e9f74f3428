"""The resident local Prefect API from the command line: ``clampdown prefect-api status|stop``.

``clampdown run``, ``resume`` and ``rollback`` run their flows against this Prefect home's
resident local API (:mod:`clampdown_flows.resident_api`): the first one starts it and it
stays up for the next, so later commands skip the server's start-up. ``clampdown drill``
does the same with the drills' own Prefect home (``$CLAMPDOWN_HOME/drills/prefect``,
:func:`clampdown.app.drill.world.drill_prefect`). These commands show both and stop both;
each also stops by itself after an hour without a request.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from clampdown.app.cli_errors import err, user_errors
from clampdown.app.cli_options import out
from clampdown_flows.frozen_imports import imports_frozen

if TYPE_CHECKING:
    from clampdown_flows.resident_api import EarlyServer


started_early: contextvars.ContextVar[EarlyServer | None] = contextvars.ContextVar(
    "started_early", default=None
)
"""The server the console script started for ``clampdown run`` before Typer was imported
(:mod:`clampdown.app.entry`, which sets this around the command and closes it after)."""


@contextlib.contextmanager
def early_prefect() -> Iterator[EarlyServer | None]:
    """A resident local API's server process started now, before this command imports
    Prefect or checks its input, when this home probably has none running
    (:class:`~clampdown_flows.resident_api.EarlyServer`); pass it to :func:`resident_prefect`.

    It touches nothing until :func:`resident_prefect` tells it the command needs an API; a
    command that fails first stops it at the end of this block. The console script may
    have started it already (:data:`started_early`; then the script closes it).
    """
    from clampdown_flows.resident_api import EarlyServer

    started = started_early.get()
    if started is not None:
        yield started
        return
    early = EarlyServer.start()
    try:
        yield early
    finally:
        if early is not None:
            early.close()


@contextlib.contextmanager
def resident_prefect(*flow_modules: str, early: EarlyServer | None = None) -> Iterator[None]:
    """Run a command's flows against the resident local API (or ``PREFECT_API_URL``).

    ``flow_modules`` are imported while a new server starts, so the two overlap; so are
    Prefect's own when ``early`` (:func:`early_prefect`) started the server before. Says so
    when this command started the server, and how to stop it.

    Python's cyclic collector is off while Prefect and the flows are imported, and what
    they built is then frozen out of its reach (:func:`imports_frozen`).
    """

    def import_flows() -> None:
        for name in flow_modules:
            importlib.import_module(name)

    from clampdown_flows.resident_api import EarlyServer

    with contextlib.ExitStack() as stack:
        if early is None:
            early = EarlyServer.start()  # overlaps at least Prefect's import here
            if early is not None:
                stack.callback(early.close)
        if early is not None:
            early.go()
        with imports_frozen():
            from clampdown_flows.prefect_api import resident_api

            api = stack.enter_context(resident_api(while_starting=import_flows, early=early))
        if api is not None and api.started:
            err.print(
                f"started a local Prefect API at {api.url} (pid {api.pid}); it stays up for "
                "the next command (an hour without use stops it; so does "
                "`clampdown prefect-api stop`)",
                markup=False,
            )
        yield


def status() -> None:
    """Say whether this Prefect home's local API and the drills' API of CLAMPDOWN_HOME are
    running, and where."""
    from clampdown.app.drill.world import find_drills_api
    from clampdown_flows.prefect_api import find_resident_api

    api = find_resident_api()
    if api is None:
        out.print("no local Prefect API is running for this Prefect home")
    else:
        out.print(f"local Prefect API running at {api.url} (pid {api.pid})", markup=False)
    drills = find_drills_api(_drills_dir())
    if drills is not None:
        out.print(f"drills' Prefect API running at {drills.url} (pid {drills.pid})", markup=False)


def stop() -> None:
    """Stop this Prefect home's local API and the drills' API of CLAMPDOWN_HOME (runs that
    use them lose their Prefect API)."""
    from clampdown.app.drill.world import stop_drills_api
    from clampdown_flows.prefect_api import stop_resident_api

    api = stop_resident_api()
    if api is None:
        out.print("no local Prefect API was running for this Prefect home")
    else:
        out.print(f"stopped the local Prefect API at {api.url} (pid {api.pid})", markup=False)
    drills = stop_drills_api(_drills_dir())
    if drills is not None:
        said = f"stopped the drills' Prefect API at {drills.url} (pid {drills.pid})"
        out.print(said, markup=False)


def _drills_dir() -> Path:
    """``$CLAMPDOWN_HOME/drills``: where the drills' Prefect home is."""
    from clampdown.core.home import Home
    from clampdown.core.settings import settings

    return Home(settings().home).drills_dir


def register(app: typer.Typer) -> None:
    """Add the ``prefect-api`` group (``status``, ``stop``) to the ``clampdown`` command."""
    group = typer.Typer(
        help="The local Prefect APIs that `clampdown run` and `clampdown drill` leave running: "
        "status, stop.",
        no_args_is_help=True,
    )
    group.command("status")(user_errors()(status))
    group.command("stop")(user_errors()(stop))
    app.add_typer(group, name="prefect-api")
