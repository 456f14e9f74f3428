"""One TLS context per process for clampdown's Prefect API clients, built as Prefect builds it.

Prefect's ``PrefectClient`` and ``SyncPrefectClient`` each build an ``ssl.SSLContext`` when
they are created, unless their ``httpx_settings`` hand them one (``verify``): with the
default settings that loads certifi's CA bundle, about 15-30 ms of CPU on the 2-core
reference machine for every client, and a ``clampdown run`` creates three (the run's
async and sync clients, and the one that reads Prefect's record back at the end). The
context is the same every time for the same settings, and one context serves any number
of connections (httpx shares one across a client's pool), so :func:`tls_settings` hands
every client clampdown creates the same one: built once per process for each
combination of the two settings Prefect reads (``PREFECT_API_TLS_INSECURE_SKIP_VERIFY``,
``PREFECT_API_SSL_CERT_FILE``), with Prefect's own recipe (``prefect.client.orchestration``,
3.9): a context that verifies against the configured CA file (certifi's by default), or,
when the insecure setting is on, one that verifies nothing. A test compares it with the
context Prefect's clients build for themselves, for each setting.

Clients Prefect creates by itself (its log and event workers, in threads of their own)
build theirs as always.
"""

from __future__ import annotations

import ssl
import threading
from typing import Any

_lock = threading.Lock()
_contexts: dict[tuple[bool, str], ssl.SSLContext] = {}


def _settings_key() -> tuple[bool, str]:
    """The settings Prefect's clients build their TLS context from, as they read them."""
    import certifi
    from prefect.settings import PREFECT_API_SSL_CERT_FILE, PREFECT_API_TLS_INSECURE_SKIP_VERIFY

    if PREFECT_API_TLS_INSECURE_SKIP_VERIFY:
        return True, ""
    return False, str(PREFECT_API_SSL_CERT_FILE.value() or certifi.where())


def _build(insecure: bool, cert_file: str) -> ssl.SSLContext:
    """Prefect's recipe (PrefectClient.__init__)."""
    if insecure:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=cert_file)


def tls_context() -> ssl.SSLContext:
    """The process's TLS context for the current Prefect settings (built on first use)."""
    key = _settings_key()
    with _lock:
        context = _contexts.get(key)
        if context is None:
            context = _contexts[key] = _build(*key)
        return context


def tls_settings() -> dict[str, Any]:
    """``httpx_settings`` for a Prefect client: the shared TLS context as its ``verify``."""
    return {"verify": tls_context()}
