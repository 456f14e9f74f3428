"""serve's log after runs have started (issue 11): Prefect's logging setup, which the first
flow run triggers, must not silence serve's own loggers nor uvicorn's.

A fresh Python process (logging is process-wide, and this test session has configured
Prefect's long ago) runs serve's real ``_run`` with ``uvicorn.run`` replaced by what it
does first (apply uvicorn's logging configuration), then what a first run does (import
the respond flow: Prefect configures logging; then again, as later runs may), then a
refused alert through the real app (no socket: Starlette's test client).

Its Prefect API is the test session's, as ``clampdown serve`` gives ``_run`` a local API
of its own (``serve()`` wraps it in ``local_api()``): without one, the starter's run
thread would start Prefect's stock ephemeral server on the Prefect home (~20 CPU-s,
a database migration on a fresh home) that nothing here uses."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.paths import REPO

SCRIPT = textwrap.dedent(
    """
    import logging

    import uvicorn


    def after_a_run_started(app, host, port, **options):
        from fastapi.testclient import TestClient
        from uvicorn.config import Config

        Config(app, host=host, port=port, **options).configure_logging()  # uvicorn.run's
        import clampdown_flows.respond  # noqa: F401  a first run: Prefect sets up logging
        from prefect.logging.configuration import setup_logging

        setup_logging()  # and again, as a later run may
        logging.getLogger("uvicorn.error").info("uvicorn still logs")
        with TestClient(app) as client:
            answer = client.post(
                "/alerts/generic",
                content=b'{"id": "a-1"}',
                headers={"X-Clampdown-Timestamp": "1", "X-Clampdown-Signature": "forged"},
            )
        print("answered", answer.status_code, flush=True)


    uvicorn.run = after_a_run_started

    from clampdown.app import serve
    from clampdown.core.settings import settings
    from clampdown_slack.app import SlackAppSettings

    serve._run("127.0.0.1", 8080, SlackAppSettings(), False, settings())
    """
)


def test_refusals_and_uvicorn_lines_are_logged_after_prefect_configures_logging(
    tmp_path: Path, clampdown_home: Path, prefect_server: str
) -> None:
    from prefect.settings import PREFECT_API_AUTH_STRING

    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CLAMPDOWN_SLACK", "PREFECT_LOGGING", "PREFECT_API"))
    }
    env |= {
        "PREFECT_API_URL": prefect_server,
        "PREFECT_API_AUTH_STRING": str(PREFECT_API_AUTH_STRING.value() or ""),
        "CLAMPDOWN_HOME": str(clampdown_home),
        "CLAMPDOWN_ALERT_HMAC_SECRET": "generic-hmac-secret",
        # what `clampdown serve` sets: Prefect's own console lines off
        "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "CRITICAL",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PYTHONPATH": str(REPO),
    }
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "answered 401" in proc.stdout, proc.stderr[-3000:]
    assert "clampdown.alerts: alert /generic from testclient refused (401)" in proc.stderr, (
        proc.stderr[-3000:]
    )
    assert "uvicorn still logs" in proc.stderr, proc.stderr[-3000:]
