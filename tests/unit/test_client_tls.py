"""The process's one TLS context for clampdown's Prefect clients
(:mod:`clampdown_flows.client_tls`): the context Prefect's clients build for themselves, for
each setting that changes it, built once; clampdown's clients built on it. No server: the
clients are built, never connected."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import certifi
import pytest
from prefect.client.orchestration import PrefectClient, SyncPrefectClient
from prefect.context import SyncClientContext
from prefect.settings import (
    PREFECT_API_SSL_CERT_FILE,
    PREFECT_API_TLS_INSECURE_SKIP_VERIFY,
    PREFECT_API_URL,
    temporary_settings,
)

from clampdown_flows import client_tls, run_client

API = "http://127.0.0.1:9/api"  # never connected to


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[dict[str, Any], Any]]]:
    """Every TLS context ssl.create_default_context builds meanwhile, with its arguments;
    the process's contexts forgotten before and after."""
    made: list[tuple[dict[str, Any], Any]] = []
    real = ssl.create_default_context

    def recording(*args: Any, **kwargs: Any) -> Any:
        context = real(*args, **kwargs)
        made.append(({"args": args, **kwargs}, context))
        return context

    monkeypatch.setattr(ssl, "create_default_context", recording)
    client_tls._contexts.clear()
    yield made
    client_tls._contexts.clear()


def _traits(context: ssl.SSLContext) -> dict[str, Any]:
    return {
        "verify_mode": context.verify_mode,
        "check_hostname": context.check_hostname,
        "cert_store": context.cert_store_stats(),
        "minimum_version": context.minimum_version,
        "maximum_version": context.maximum_version,
        "options": context.options,
        "verify_flags": context.verify_flags,
        "protocol": context.protocol,
    }


def _settings(case: str, tmp_path: Path) -> dict[Any, Any]:
    if case == "insecure":
        return {PREFECT_API_TLS_INSECURE_SKIP_VERIFY: True}
    if case == "cert file":
        own = tmp_path / "ca.pem"
        end = "-----END CERTIFICATE-----\n"
        first = Path(certifi.where()).read_text().split(end)[:5]  # 5 CAs, not certifi's 140
        own.write_text(end.join(first) + end)
        return {PREFECT_API_SSL_CERT_FILE: str(own)}
    return {}


@pytest.mark.parametrize("case", ["default", "insecure", "cert file"])
@pytest.mark.parametrize("client_class", [PrefectClient, SyncPrefectClient])
def test_the_context_is_the_one_prefects_clients_build(
    built: list, case: str, client_class: type, tmp_path: Path
) -> None:
    with temporary_settings(_settings(case, tmp_path)):
        client_class(API)
        ((prefects_call, prefects),) = built
        ours = client_tls.tls_context()
    ((our_call, _),) = built[1:]
    assert our_call == prefects_call  # the same recipe: the same CA file, or none
    assert _traits(ours) == _traits(prefects)  # and the same context after it


def test_one_context_per_setting_built_once(built: list, tmp_path: Path) -> None:
    first = client_tls.tls_context()
    assert client_tls.tls_context() is first and len(built) == 1
    with temporary_settings(_settings("insecure", tmp_path)):
        insecure = client_tls.tls_context()
        assert insecure is not first and insecure.verify_mode == ssl.CERT_NONE
    assert client_tls.tls_context() is first and len(built) == 2


def test_clampdowns_clients_build_no_context_of_their_own(built: list) -> None:
    """The run's async and sync clients and the record's reader: one context for the three
    (Prefect's clients would build one each)."""
    with temporary_settings({PREFECT_API_URL: API}):
        shared = client_tls.tls_context()
        async_context = run_client.client_context()
        sync_context = run_client.sync_client_context()
        reader = run_client.sync_client()
    assert len(built) == 1 and built[0][1] is shared
    assert isinstance(async_context.client, run_client.RunClient)
    assert isinstance(sync_context.client, SyncPrefectClient) and isinstance(
        reader, SyncPrefectClient
    )
    assert reader is not sync_context.client  # no context open: a client of its own
    # Prefect's get_client() (no httpx settings) matches these contexts: the engine uses them
    assert async_context._httpx_settings is None and sync_context._httpx_settings is None


def test_the_open_sync_context_s_client_is_the_one_used() -> None:
    with temporary_settings({PREFECT_API_URL: API}):
        context = run_client.sync_client_context()
        token = SyncClientContext.__var__.set(context)  # open, without its version request
        try:
            from prefect.client.orchestration import get_client

            assert run_client.sync_client() is context.client
            assert get_client(sync_client=True) is context.client
        finally:
            SyncClientContext.__var__.reset(token)
