"""The local Prefect API's auth string (:mod:`clampdown_flows.prefect_api`): made once, 0600,
beside the Prefect home; sent to a loopback API, never to another server unless configured."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from clampdown_flows.prefect_api import auth_file, client_auth, local_auth_string


@pytest.fixture
def prefect_home(tmp_path: Path) -> Iterator[Path]:
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_HOME, temporary_settings

    with temporary_settings(
        {PREFECT_HOME: str(tmp_path)}, restore_defaults={PREFECT_API_AUTH_STRING}
    ):
        yield tmp_path


def test_the_secret_is_made_once_private_and_kept(prefect_home: Path) -> None:
    assert local_auth_string() is None  # no local API was ever started here
    made = local_auth_string(create=True)
    assert made is not None and made.startswith("clampdown:") and len(made) > 40
    assert auth_file() == prefect_home / "clampdown-api-auth"
    assert stat.S_IMODE(auth_file().stat().st_mode) == 0o600
    assert local_auth_string(create=True) == made == local_auth_string()


def test_clients_send_it_to_a_loopback_api_only(prefect_home: Path) -> None:
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    made = local_auth_string(create=True)
    assert client_auth("http://127.0.0.1:51234/api") == made
    assert client_auth("http://localhost:51234/api") == made
    assert client_auth("https://prefect.internal/api") is None  # never leaked elsewhere
    configured = {
        PREFECT_API_AUTH_STRING: "ops:configured",
        PREFECT_API_URL: "https://prefect.internal/api",
    }
    with temporary_settings(configured):
        assert client_auth("https://prefect.internal/api") == "ops:configured"
        assert client_auth("https://PREFECT.internal/api/") == "ops:configured"
        assert client_auth(None) == "ops:configured"
