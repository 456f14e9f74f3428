"""Attack: point a waiting run's approval request at your own server and collect the
Prefect API's auth string.

`clampdown approve` and serve's Slack clicks resume the paused flow run at the
``api_url`` its approval request names, a file under ``CLAMPDOWN_HOME`` (or a row of the
run store in the scaled mode) that whoever can write there can edit. The client sent
``PREFECT_API_AUTH_STRING`` to whatever URL that was: the holder of the run store, who
must not hold the Prefect API, got its secret from the first approver. It is now sent
only to the configured ``PREFECT_API_URL``.
"""

from __future__ import annotations

from pathlib import Path

from clampdown_flows.prefect_api import client_auth


def test_the_configured_auth_string_goes_only_to_the_configured_api(tmp_path: Path) -> None:
    from prefect.settings import (
        PREFECT_API_AUTH_STRING,
        PREFECT_API_URL,
        PREFECT_HOME,
        temporary_settings,
    )

    with temporary_settings(
        {
            PREFECT_HOME: str(tmp_path),  # no local API secret here
            PREFECT_API_AUTH_STRING: "ops:s3cret",
            PREFECT_API_URL: "https://prefect.corp.example/api",
        }
    ):
        assert client_auth("https://prefect.corp.example/api") == "ops:s3cret"
        for forged in (
            "https://collector.evil.example/api",
            "https://prefect.corp.example.evil.example/api",
            "http://prefect.corp.example/api",  # not over TLS
            "https://prefect.corp.example:8443/api",
            "https://ops@prefect.corp.example/api",
        ):
            assert client_auth(forged) is None, forged
