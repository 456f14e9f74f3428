"""The Prefect API requests of a flow run's set-up in serve (and every local run): the
flow's id asked once per shared client, each flow run named when it is created
(:mod:`clampdown_flows.run_client`), with Prefect's record unchanged."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from typing import Any

import httpx
import pytest

from clampdown_flows.prefect_api import shared_clients

pytestmark = pytest.mark.usefixtures("prefect_server")

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
RUNBOOK = """apiVersion: clampdown/v1
kind: Runbook
metadata: {name: named-runs, title: Named runs}
inputs:
  who: {type: string, required: true}
steps:
  - {id: one, uses: core.set_output, with: {v: "{{ inputs.who }}"}}
"""


@pytest.fixture
def requests(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Every request this process's Prefect clients send, by method and route."""
    counted: Counter[str] = Counter()
    original = httpx.AsyncClient.send

    async def send(self: httpx.AsyncClient, request: httpx.Request, **kw: Any) -> Any:
        path = UUID.sub("{id}", request.url.path.split("/api", 1)[-1])
        counted[f"{request.method} {path}"] += 1
        return await original(self, request, **kw)

    monkeypatch.setattr(httpx.AsyncClient, "send", send)
    return counted


def _read_flow_runs(ids: list[str]) -> dict[str, Any]:
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async def read() -> dict[str, Any]:
        async with get_client() as client:
            found = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids))
            )
        return {str(run.id): run for run in found}

    return asyncio.run(read())


def test_flow_asked_once_and_runs_named_at_creation(write_runbook, requests):
    """Three runs at once through one shared client: one POST /flows/ in all, no rename
    PATCH, and each flow run has its name, parameters, tags and final state."""
    from prefect import tags

    from clampdown_flows.respond import respond

    path = write_runbook(RUNBOOK, name="named-runs.yaml")
    run_ids = [f"run-{k}" for k in range(3)]

    async def three() -> list[Any]:
        async with shared_clients():
            with tags("burst-test"):
                return await asyncio.gather(
                    *(
                        respond(str(path), {"who": rid}, run_id=rid, return_state=True)
                        for rid in run_ids
                    )
                )

    states = asyncio.run(three())
    assert [s.type.value for s in states] == ["COMPLETED"] * 3
    assert requests["POST /flows/"] == 1, requests
    assert requests["POST /flow_runs/"] == 3, requests
    assert requests["PATCH /flow_runs/{id}"] == 0, requests
    flow_run_ids = [str(s.state_details.flow_run_id) for s in states]
    record = _read_flow_runs(flow_run_ids)
    for rid, fid in zip(run_ids, flow_run_ids, strict=True):
        run = record[fid]
        assert run.name == f"named-runs-{rid}"
        given = {"runbook": str(path), "inputs": {"who": rid}, "run_id": rid, "drill": False}
        assert {key: run.parameters.get(key) for key in given} == given
        assert "burst-test" in run.tags
        assert run.state is not None and run.state.is_completed()


def test_a_different_rename_is_sent_and_a_deleted_flow_is_asked_again(write_runbook, requests):
    """The client skips only the rename to the name it created the run with; a flow
    deleted from the API meanwhile is created again, not a failed run."""
    from prefect import flow

    from clampdown_flows.run_client import RunClient, RunName

    @flow(name="clampdown-test-named", flow_run_name=RunName(lambda p: f"named-{p['x']}"))
    def named(x: str) -> str:
        return x

    async def scenario() -> tuple[str, str, str]:
        async with shared_clients():
            from prefect import get_client

            client = get_client()
            assert isinstance(client, RunClient)
            first = await client.create_flow_run(named, parameters={"x": "a"})
            await client.set_flow_run_name(first.id, "someone-else")
            renamed = await client.read_flow_run(first.id)
            await client.delete_flow(first.flow_id)
            second = await client.create_flow_run(named, parameters={"x": "b"})
            again = await client.read_flow_run(second.id)
            assert second.flow_id != first.flow_id
            return first.name, renamed.name, again.name

    assert asyncio.run(scenario()) == ("named-a", "someone-else", "named-b")
    assert requests["PATCH /flow_runs/{id}"] == 1
    assert requests["POST /flows/"] == 2


def test_a_name_that_cannot_be_known_at_creation_is_left_to_prefect(write_runbook, requests):
    """A callable ``flow_run_name`` that is not a :class:`RunName`: created without a name
    and renamed by Prefect's engine as before."""
    from prefect import flow

    @flow(name="clampdown-test-plain-name", flow_run_name=lambda: "plain-name")
    async def plain() -> int:
        return 1

    async def once() -> Any:
        async with shared_clients():
            return await plain(return_state=True)

    state = asyncio.run(once())
    assert requests["PATCH /flow_runs/{id}"] == 1
    run = _read_flow_runs([str(state.state_details.flow_run_id)])
    assert [r.name for r in run.values()] == ["plain-name"]


def test_the_name_from_parameters_is_prefects_name_inside_the_run():
    """``RunName`` called as Prefect's engine calls it (no argument, in the run) reads the
    run's parameters: the same name as at creation."""
    from clampdown_flows.respond import _flow_run_name
    from clampdown_flows.run_client import RunName, name_at_creation

    class Flowish:
        flow_run_name = RunName(_flow_run_name)

    assert name_at_creation(Flowish(), {"runbook": "/x/contain.yaml", "run_id": "r1"}) == (
        "contain-r1"
    )
    assert name_at_creation(Flowish(), {"runbook": "contain"}) == "contain-run"

    class Template:
        flow_run_name = "rollback-{run_id}"

    assert name_at_creation(Template(), {"run_id": "r2"}) == "rollback-r2"
    assert name_at_creation(Template(), {}) is None  # Prefect's engine says what is wrong
