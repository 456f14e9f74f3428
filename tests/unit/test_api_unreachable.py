"""httpx's transport errors from a Prefect API that does not answer become a user error
naming the API (without credentials, path or query), not a traceback."""

from __future__ import annotations

import httpx
import pytest

from clampdown.app.api_unreachable import HINT, prefect_unreachable
from clampdown.core.diagnostics import ClampdownError


def test_a_connect_error_names_the_api_and_says_what_to_do() -> None:
    request = httpx.Request("POST", "http://user:pw@127.0.0.1:4200/api/flow_runs/x?key=secret")
    with pytest.raises(ClampdownError) as err, prefect_unreachable():
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
    assert err.value.message.startswith("cannot reach the Prefect API at http://127.0.0.1:4200:")
    assert "pw" not in str(err.value) and "secret" not in str(err.value)
    assert err.value.hint == HINT


def test_other_errors_pass_through() -> None:
    with pytest.raises(ValueError), prefect_unreachable():
        raise ValueError("not a transport error")
