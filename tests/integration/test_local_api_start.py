"""A local Prefect API whose server process dies while starting is an error at once.

Prefect's own start noticed only exit code 3 (uvicorn's "could not bind": it tries another
port) and otherwise asked ``/health`` until its timeout: in the suite a caller that gave
900 s waited 15 minutes for a server that had exited at once.
"""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from clampdown.core.diagnostics import ClampdownError
from clampdown_flows.loopback import free_port
from clampdown_flows.prefect_api import local_server_class


def exiting_server(*codes: int):
    """A LocalPrefectServer whose server processes exit at once with ``codes`` in turn."""
    started: list[int] = []

    class Exiting(local_server_class()):
        def _run_uvicorn_command(self):
            code = codes[len(started)]
            started.append(self.port)
            return subprocess.Popen([sys.executable, "-c", f"raise SystemExit({code})"])

    return Exiting, started


def test_a_server_process_that_exits_is_an_error_at_once_not_after_the_timeout() -> None:
    server_class, started = exiting_server(1)
    server = server_class(port=free_port())  # a port of its own: not the registered one
    assert not server.running  # never stop a server this test did not start
    try:
        with pytest.raises(ClampdownError) as raised:
            server.start(timeout=600)  # Prefect's own start would ask /health for 10 min
    finally:
        server.stop()
    assert "exited with code 1 before it answered" in raised.value.message
    assert "PREFECT_API_URL" in raised.value.hint
    assert len(started) == 1 and not server.running


def test_a_port_taken_is_tried_again_on_another_port_then_a_death_is_said() -> None:
    server_class, started = exiting_server(3, 2)
    taken = free_port()
    server = server_class(port=taken)  # a port of its own: not the registered one
    assert not server.running  # never stop a server this test did not start
    with socket.socket() as other:  # someone else listens there: uvicorn's 3 is the port
        other.bind(("127.0.0.1", taken))
        other.listen()
        try:
            with pytest.raises(ClampdownError) as raised:
                server.start(timeout=600)
        finally:
            server.stop()
    assert started[0] == taken
    assert len(started) == 2 and started[0] != started[1]  # uvicorn's 3: another port
    assert f"(port {started[1]}) exited with code 2" in raised.value.message


def test_a_failed_start_on_a_free_port_is_an_error_at_once_not_another_port() -> None:
    """uvicorn exits with 3 for every failed start (an app whose start-up raises, such as a
    Prefect database its migrations cannot upgrade), not only for a port taken: starting
    again on port after port would last until the timeout."""
    server_class, started = exiting_server(3, 3, 3)
    server = server_class(port=free_port())  # free: nothing else listens there
    assert not server.running  # never stop a server this test did not start
    try:
        with pytest.raises(ClampdownError) as raised:
            server.start(timeout=600)
    finally:
        server.stop()
    assert len(started) == 1  # not started again on another port
    assert f"(port {started[0]}) exited with code 3 before it answered" in raised.value.message


def test_the_callers_imports_run_while_the_server_process_starts(monkeypatch) -> None:
    """serve imports what its runs need while its local API comes up on the other core."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from clampdown_flows import prefect_api

    processes: list[subprocess.Popen] = []

    def start_server_process(port: int, *args: object) -> subprocess.Popen:
        processes.append(
            subprocess.Popen(
                [sys.executable, "-c", "import sys; sys.stdin.read(); sys.exit(1)"],
                stdin=subprocess.PIPE,
            )
        )
        return processes[-1]

    seen: list[object] = []

    def while_starting() -> None:
        seen.append(processes[0].poll())  # None: the server process is running
        processes[0].stdin.close()  # it exits now, as a server that failed would

    monkeypatch.setattr(prefect_api, "_start_server_process", start_server_process)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with (
        temporary_settings(restore_defaults={PREFECT_API_URL}),  # the suite's API: not here
        pytest.raises(ClampdownError, match="exited with code 1"),
        prefect_api.local_api(timeout=60, while_starting=while_starting),
    ):
        pytest.fail("no API was up")
    assert seen == [None] and len(processes) == 1
    assert processes[0].returncode == 1


def test_with_an_api_configured_the_callers_imports_still_run(monkeypatch) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from clampdown_flows import prefect_api

    calls: list[str] = []
    with (
        temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}),
        prefect_api.local_api(while_starting=lambda: calls.append("imports")) as url,
    ):
        assert url == "http://127.0.0.1:9/api"
    assert calls == ["imports"]
