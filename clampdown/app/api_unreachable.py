"""A Prefect API that does not answer, said as a user error instead of an httpx traceback.

``clampdown approve`` talks to the Prefect API the paused run is on (its own local one
for ``clampdown run`` and local ``serve``); when that process has stopped, or the Prefect
server of deployment mode is down, Prefect's client raises httpx's transport errors
(``ConnectError``, a timeout) straight through. What the person needs is which API did
not answer and what to do, so every command registered through
:func:`clampdown.app.cli.command` turns them into a
:class:`~clampdown.core.diagnostics.ClampdownError` (exit 1) here. The address is shown
without credentials, path or query (an API URL may carry a key).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from clampdown.core.diagnostics import ClampdownError

HINT = (
    "the process that serves it has stopped or cannot be reached: for a run of "
    "`clampdown serve` or `clampdown run`, that process is gone (check `clampdown runs`; a "
    "restarted serve continues its runs); in deployment mode check PREFECT_API_URL and the "
    "Prefect server"
)


def _where(exc: Exception) -> str:
    """scheme://host:port of the request that failed (no user, password, path or query)."""
    try:
        url = exc.request.url  # type: ignore[attr-defined]
    except (AttributeError, RuntimeError):  # httpx raises RuntimeError when none is set
        return "the Prefect API"
    port = f":{url.port}" if url.port else ""
    return f"the Prefect API at {url.scheme}://{url.host}{port}"


@contextlib.contextmanager
def prefect_unreachable() -> Iterator[None]:
    """Inside, httpx's transport errors become a :class:`ClampdownError` naming the API.

    Usable as ``with prefect_unreachable(): …`` or as a decorator (keeps the signature).
    httpx is not imported for it: a command that never loaded httpx cannot raise its errors
    (``lint`` does not pay for the import)."""
    try:
        yield
    except Exception as exc:
        if not _transport_error(exc):
            raise
        reason = str(exc) or type(exc).__name__
        raise ClampdownError(f"cannot reach {_where(exc)}: {reason}", HINT) from None


def _transport_error(exc: Exception) -> bool:
    if "httpx" not in sys.modules:
        return False
    import httpx

    return isinstance(exc, httpx.TransportError)
