"""The fast subset: no Prefect server, no moto server, no network — seconds, not minutes.

Two guards keep it that way: asking for a server fixture fails the test, and any
socket connection to another process (TCP or UDP; a Unix socket too) raises, so a
unit test that reaches out by accident fails loudly instead of slowly.

Typer's test runner builds the whole Click command tree of the app it is given on every
``invoke`` (~25 ms for clampdown's app, ~100 invocations here); in the unit tests it is
built once per app (:func:`_command_once`) and reused: the same tree, since the tree is
made from what the app registered, and Click keeps an invocation's state in its Context.

Every test gets a CLAMPDOWN_HOME of its own (tests/conftest.py's ``clampdown_home``); here
a test that asks for no ``tmp_path`` gets it without one (:func:`clampdown_home`): a
folder made per test costs a mkdir and a symlink swap, ~1.5 ms CPU and more on a loaded
disk, for the ~70% of these tests (967 of 1,344) that ask for none.
"""

from __future__ import annotations

import gc
import itertools
import socket
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.main
import typer.testing

from tests.paths import REPO

SERVER_FIXTURES = ("prefect_server", "moto_server", "aws_endpoint", "oncall_slack", "postgres_url")


class NetworkInUnitTest(RuntimeError):
    """A unit test tried to connect somewhere: it belongs in tests/integration."""


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: socket.socket, address: object) -> None:
        raise NetworkInUnitTest(f"unit tests make no connection (tried {address!r})")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


_home_numbers = itertools.count()


@pytest.fixture(scope="session")
def _homes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder for the homes of the tests that have no tmp_path."""
    return tmp_path_factory.mktemp("homes")


@pytest.fixture(autouse=True)
def clampdown_home(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, _homes: Path
) -> Path:
    """tests/conftest.py's ``clampdown_home`` (same variables, same place for a test that
    uses ``tmp_path``); for the others a new, not yet made, home in the session's temporary
    folder instead of a ``tmp_path`` made only to hold it."""
    if "tmp_path" in request.fixturenames:
        home = request.getfixturevalue("tmp_path") / "clampdown-home"
    else:
        home = _homes / f"clampdown-home-{next(_home_numbers)}"
    monkeypatch.setenv("CLAMPDOWN_HOME", str(home))
    monkeypatch.setenv("CLAMPDOWN_LIBRARY", str(REPO / "runbooks"))
    return home


# the Click tree (typer's own vendored Click) built for each app, with the app's shape then
_commands: weakref.WeakKeyDictionary[typer.Typer, tuple[tuple[int, int], Any]] = (
    weakref.WeakKeyDictionary()
)


def _command_once(app: typer.Typer) -> Any:
    """``typer.main.get_command(app)``, built again only when the app registered another
    command or group since (tests that build a small app of their own add to it)."""
    shape = (len(app.registered_commands), len(app.registered_groups))
    built = _commands.get(app)
    if built is None or built[0] != shape:
        built = _commands[app] = (shape, typer.main.get_command(app))
    return built[1]


@pytest.fixture(autouse=True)
def _typer_command_built_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(typer.testing, "_get_command", _command_once)


@pytest.fixture
def collector() -> Iterator[None]:
    """Python's cyclic collector as this test session has it, before and after the test:
    nothing frozen, and on or off as it was (for tests that turn it off or freeze)."""
    gc.unfreeze()
    enabled = gc.isenabled()
    yield
    gc.unfreeze()
    if enabled:
        gc.enable()
    else:
        gc.disable()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # pytest calls this hook with the whole session's items, wherever the conftest is
    here = Path(__file__).parent
    offenders = [
        f"{item.nodeid} ({', '.join(n for n in SERVER_FIXTURES if n in item.fixturenames)})"
        for item in items
        if item.path.is_relative_to(here)
        and any(n in getattr(item, "fixturenames", ()) for n in SERVER_FIXTURES)
    ]
    if offenders:
        raise pytest.UsageError(
            "unit tests start no server; move these to tests/integration: " + "; ".join(offenders)
        )
