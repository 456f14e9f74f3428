"""The Prefect API client a process's flow runs share: two requests of each run's set-up
that repeat what the client already knows are not sent.

Prefect's engine creates a flow run with ``PrefectClient.create_flow_run``, which first
``POST /flows/`` the flow's name (get-or-create: the same answer for every run of the
process), then ``POST /flow_runs/`` without a name, and once the run begins it
``PATCH /flow_runs/{id}`` the name its ``flow_run_name`` gives. In ``serve`` these come
before ``run.start``, to a Prefect server that a burst of alerts keeps busy
(docs/benchmarks.md, serve throughput). :class:`RunClient`:

* asks the flow's id once per flow name and keeps it (asked again if a flow run cannot
  be created with it: the flow was deleted from the API meanwhile);
* creates the flow run with its name, when the flow's ``flow_run_name`` can be computed
  from the run's parameters before the run exists (a :class:`RunName`, or a template
  string such as ``"rollback-{run_id}"``);
* answers the engine's rename of that flow run to the same name without a request (any
  other rename is sent).

Prefect's record is unchanged: the flow, the flow run with its name, parameters, tags,
version and retry policy, its states. :func:`client_context` puts a ``RunClient`` where
Prefect's engine looks for the client to use (``AsyncClientContext``), and
:func:`sync_client_context` a sync client where it looks for that one
(``SyncClientContext``); :func:`clampdown_flows.prefect_api.shared_clients` enters both.
Both clients, and :func:`sync_client`'s, use the process's one TLS context
(:mod:`clampdown_flows.client_tls`) instead of building one each.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any
from uuid import UUID

import httpx
from prefect.client.orchestration import PrefectClient, SyncPrefectClient
from prefect.context import AsyncClientContext, SyncClientContext

from clampdown_flows.client_tls import tls_settings


class RunName:
    """A flow's ``flow_run_name`` that is a function of the run's parameters.

    Prefect calls a callable ``flow_run_name`` with no argument inside the run (it reads
    the parameters from ``prefect.runtime``); :class:`RunClient` calls
    :attr:`from_parameters` with the parameters it creates the run with, so the name is
    set at creation and Prefect's later rename to the same name costs nothing.
    """

    def __init__(self, from_parameters: Callable[[Mapping[str, Any]], str]) -> None:
        self.from_parameters = from_parameters

    def __call__(self) -> str:
        from prefect.runtime import flow_run

        return self.from_parameters(flow_run.parameters)


def name_at_creation(flow: Any, parameters: Mapping[str, Any]) -> str | None:
    """The name ``flow``'s ``flow_run_name`` gives a run with ``parameters``, when it can be
    known before the run exists; None otherwise (Prefect names the run as it always does)."""
    namer = getattr(flow, "flow_run_name", None)
    try:
        if isinstance(namer, RunName):
            return namer.from_parameters(parameters)
        if isinstance(namer, str):
            return namer.format(**parameters)
    except Exception:  # a name Prefect's engine will compute (or fail on) itself
        return None
    return None


class RunClient(PrefectClient):
    """Prefect's async client, with the flow's id kept and flow runs named at creation."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._flow_ids: dict[str, UUID] = {}
        self._flow_lock: asyncio.Lock | None = None
        self._named: dict[UUID, str] = {}  # flow runs created here with a name, not renamed yet

    async def flow_id(self, flow: Any, *, fresh: bool = False) -> UUID:
        """The API's id of ``flow`` (by name), asked once per process (or again: ``fresh``)."""
        if self._flow_lock is None:
            self._flow_lock = asyncio.Lock()
        async with self._flow_lock:  # the first runs of a burst ask once, not each
            if fresh or flow.name not in self._flow_ids:
                self._flow_ids[flow.name] = await self.create_flow(flow)
            return self._flow_ids[flow.name]

    async def create_flow_run(  # type: ignore[override]  # Prefect's signature, same defaults
        self,
        flow: Any,
        name: str | None = None,
        parameters: dict[str, Any] | None = None,
        context: dict[str, Any] | None = None,
        tags: Any = None,
        parent_task_run_id: UUID | None = None,
        state: Any = None,
        work_pool_name: str | None = None,
        work_queue_name: str | None = None,
        job_variables: dict[str, Any] | None = None,
    ) -> Any:
        """``PrefectClient.create_flow_run`` with the flow's id kept and the run's name set
        (the same request body otherwise); runs for a work pool go to Prefect's as they are."""
        if work_pool_name is not None or work_queue_name is not None or job_variables:
            return await super().create_flow_run(
                flow, name, parameters, context, tags, parent_task_run_id, state,
                work_pool_name, work_queue_name, job_variables,
            )  # fmt: skip
        from prefect.client.schemas.actions import FlowRunCreate
        from prefect.client.schemas.objects import FlowRun, FlowRunPolicy
        from prefect.states import Pending, to_state_create

        parameters = parameters or {}
        named = name is None and (name := name_at_creation(flow, parameters)) is not None
        body = {
            "flow_version": flow.version,
            "name": name,
            "parameters": parameters,
            "context": context or {},
            "tags": list(tags or []),
            "parent_task_run_id": parent_task_run_id,
            "state": to_state_create(state if state is not None else Pending()),
            "empirical_policy": FlowRunPolicy(
                retries=flow.retries, retry_delay=int(flow.retry_delay_seconds or 0)
            ),
        }

        async def create(flow_id: UUID) -> httpx.Response:
            create = FlowRunCreate(flow_id=flow_id, **body)
            payload = create.model_dump(mode="json", exclude_unset=True)
            return await self.request("POST", "/flow_runs/", json=payload)

        try:
            response = await create(await self.flow_id(flow))
        except httpx.HTTPStatusError as exc:  # the kept id may be gone (flow deleted)
            if not 400 <= exc.response.status_code < 500:
                raise
            response = await create(await self.flow_id(flow, fresh=True))
        flow_run = FlowRun.model_validate(response.json())
        flow_run.parameters = parameters  # as Prefect's: the caller's objects, not the JSON
        if named and name is not None:
            self._named[flow_run.id] = name
        return flow_run

    async def set_flow_run_name(self, flow_run_id: UUID, name: str) -> httpx.Response:
        """No request when the run was created here with this very name (the engine's
        rename at the run's start); any other rename goes to the API."""
        if self._named.pop(flow_run_id, None) == name:
            return httpx.Response(204)
        return await super().set_flow_run_name(flow_run_id, name)


class RunClientContext(AsyncClientContext):
    """Prefect's ``AsyncClientContext`` holding a :class:`RunClient`: every ``get_client()``
    and every flow or task run engine of this context and its copies uses it."""

    def __init__(self, client: RunClient) -> None:
        # AsyncClientContext.__init__ builds a stock client; this one is given instead
        super(AsyncClientContext, self).__init__(client=client)
        self._httpx_settings = None
        self._context_stack = 0


class GivenSyncClientContext(SyncClientContext):
    """Prefect's ``SyncClientContext`` holding a given client: every ``get_client(
    sync_client=True)`` of this context and its copies uses it."""

    def __init__(self, client: SyncPrefectClient) -> None:
        # SyncClientContext.__init__ builds a stock client; this one is given instead.
        # No httpx settings on record: Prefect's get_client() (none) matches the context.
        super(SyncClientContext, self).__init__(client=client)
        self._httpx_settings = None
        self._context_stack = 0


def client_context() -> AsyncClientContext:
    """A context with a :class:`RunClient` for the configured API; Prefect's own
    (``AsyncClientContext.get_or_create``'s) when no API URL is set (Prefect then starts an
    ephemeral server of its own, which only its ``get_client`` knows how to do)."""
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_KEY, PREFECT_API_URL

    api = PREFECT_API_URL.value()
    if not api:
        return AsyncClientContext()
    return RunClientContext(
        RunClient(
            api,
            auth_string=PREFECT_API_AUTH_STRING.value(),
            api_key=PREFECT_API_KEY.value(),
            httpx_settings=tls_settings(),
        )
    )


def sync_client() -> SyncPrefectClient:
    """The sync client of the open ``SyncClientContext``, else a new one (the process's TLS
    context; an ephemeral server of Prefect's own when no API URL is set, as Prefect's
    ``get_client`` does)."""
    from prefect.client.orchestration import get_client

    current = SyncClientContext.get()
    if current is not None:
        return current.client
    return get_client(sync_client=True, httpx_settings=tls_settings())


def sync_client_context() -> SyncClientContext:
    """A ``SyncClientContext`` with a new :func:`sync_client` (on the process's TLS context)."""
    return GivenSyncClientContext(sync_client())
