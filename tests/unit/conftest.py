"""The fast subset: no Prefect server, no moto server, no network — seconds, not minutes.

Two guards keep it that way: asking for a server fixture fails the test, and any
socket connection to another process (TCP or UDP; a Unix socket too) raises, so a
unit test that reaches out by accident fails loudly instead of slowly.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

SERVER_FIXTURES = ("prefect_server", "moto_server", "aws_endpoint", "oncall_slack", "postgres_url")


class NetworkInUnitTest(RuntimeError):
    """A unit test tried to connect somewhere: it belongs in tests/integration."""


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: socket.socket, address: object) -> None:
        raise NetworkInUnitTest(f"unit tests make no connection (tried {address!r})")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


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
