"""A local API's server process runs without Prefect's triggers service unless the
environment asks for it (clampdown_flows.resident_api.SERVICES_OFF), whichever way it is
started: by serve or a test (prefect_api._start_server_process) or early, before the
command imports Prefect (resident_api.EarlyServer.spawn). No process is started here: the
environment each would get is captured."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from clampdown_flows import prefect_api
from clampdown_flows.resident_api import SERVICES_OFF, EarlyServer

TRIGGERS = "PREFECT_SERVER_SERVICES_TRIGGERS_ENABLED"


@pytest.fixture
def spawned(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, str]]:
    """The environments of the processes Popen was asked to start (none is started)."""
    seen: list[dict[str, str]] = []

    def popen(*args: Any, env: dict[str, str], **kwargs: Any) -> Any:
        seen.append(env)
        raise OSError("not started in a unit test")

    monkeypatch.setattr(subprocess, "Popen", popen)
    monkeypatch.setattr(prefect_api, "local_auth_string", lambda create=False: "clampdown:x")
    return seen


def test_the_triggers_service_is_named_off() -> None:
    assert SERVICES_OFF == {TRIGGERS: "false"}


def test_a_local_api_started_here_runs_without_triggers(
    spawned: list[dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TRIGGERS, raising=False)
    with pytest.raises(OSError):
        prefect_api._start_server_process(4200)
    assert spawned[0][TRIGGERS] == "false"


def test_a_local_api_started_here_keeps_triggers_the_environment_turns_on(
    spawned: list[dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TRIGGERS, "true")
    with pytest.raises(OSError):
        prefect_api._start_server_process(4200)
    assert spawned[0][TRIGGERS] == "true"


def test_an_early_resident_runs_without_triggers_unless_asked(
    spawned: list[dict[str, str]],
) -> None:
    assert EarlyServer.spawn({"PATH": "/usr/bin"}) is None
    assert EarlyServer.spawn({"PATH": "/usr/bin", TRIGGERS: "true"}) is None
    assert [env[TRIGGERS] for env in spawned] == ["false", "true"]
