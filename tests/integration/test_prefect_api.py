"""The local Prefect API: serialized SQLite writes on the server, shared clients in the runner."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from clampdown_flows.prefect_api import serialize_sqlite_writes, shared_clients


def test_server_transactions_begin_immediate():
    from prefect.server.database import configurations

    assert serialize_sqlite_writes() is True
    seen: list[str | None] = []

    class Session:
        @asynccontextmanager
        async def begin(self) -> Any:
            seen.append(configurations.SQLITE_BEGIN_MODE.get())
            yield self

    async def open_one() -> None:
        config = configurations.AioSqliteConfiguration
        async with config.begin_transaction(None, Session(), with_for_update=False):
            pass

    asyncio.run(open_one())
    assert seen == ["IMMEDIATE"], "a read-then-write transaction must take the write lock first"


@pytest.mark.usefixtures("prefect_server")
def test_back_to_back_runs_never_meet_a_busy_database(write_runbook, monkeypatch):
    """Stock Prefect answers 503 (SQLite busy) to some of these calls and the client sleeps 2 s."""
    from clampdown_flows.respond import respond

    statuses: list[tuple[str, int]] = []
    original = httpx.AsyncClient.send

    async def recording_send(self: httpx.AsyncClient, request: httpx.Request, **kw: Any) -> Any:
        response = await original(self, request, **kw)
        statuses.append((request.url.path, response.status_code))
        return response

    monkeypatch.setattr(httpx.AsyncClient, "send", recording_send)
    steps = "\n".join(
        f"  - {{id: s{i}, uses: core.set_output, with: {{v: {i}}}}}" for i in range(20)
    )
    path = write_runbook(f"""apiVersion: clampdown/v1
kind: Runbook
metadata: {{name: burst, title: Burst}}
steps:
{steps}
""")

    async def burst() -> list[str]:
        async with shared_clients():
            return [(await respond(str(path), {}))["status"] for _ in range(6)]

    assert asyncio.run(burst()) == ["succeeded"] * 6
    assert any(path.endswith("/flow_runs/") for path, _ in statuses), "requests were recorded"
    assert [s for s in statuses if s[1] == 503] == []
