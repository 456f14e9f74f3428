"""The drills' Prefect API is resident, as ``clampdown run``'s is: the first drill of a
``CLAMPDOWN_HOME`` starts it on the drills' own Prefect home and leaves it running, the next
drill uses it, and ``clampdown prefect-api status|stop`` show and stop it.

A real server process (on a Prefect database of this test's own), found and stopped by
the commands run as real processes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from clampdown.app.drill.world import (
    drill_prefect,
    drill_prefect_home,
    find_drills_api,
    stop_drills_api,
)

CLAMPDOWN = [sys.executable, "-m", "clampdown.app.entry"]


def _clampdown(home: Path, prefect_home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLAMPDOWN_", "PREFECT_API"))}
    env.update(
        {
            "CLAMPDOWN_HOME": str(home),
            "PREFECT_HOME": str(prefect_home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }
    )
    return subprocess.run(
        [*CLAMPDOWN, *args], env=env, capture_output=True, text=True, timeout=300, check=False
    )


def test_the_first_drill_leaves_the_drills_api_up_for_the_next_and_stop_stops_it(
    tmp_path: Path,
) -> None:
    home = tmp_path / "clampdown-home"
    drills = home / "drills"
    started: list[tuple[str, int]] = []
    try:
        with drill_prefect(drills / "first", on_started=lambda *a: started.append(a)) as url:
            first = url
        assert len(started) == 1 and started[0][0] == first
        running = find_drills_api(drills)
        assert running is not None and running.url == first and running.pid == started[0][1]

        with drill_prefect(drills / "second", on_started=lambda *a: started.append(a)) as url:
            assert url == first  # the same server: not started again
        assert len(started) == 1
        assert (drill_prefect_home(drills / "x") / "prefect.db").is_file()

        other_prefect_home = tmp_path / "prefect-home"  # `run`'s home: no API runs there
        status = _clampdown(home, other_prefect_home, "prefect-api", "status")
        assert status.returncode == 0, status.stderr
        assert "no local Prefect API is running for this Prefect home" in status.stdout
        assert f"drills' Prefect API running at {first} (pid {started[0][1]})" in status.stdout

        stopped = _clampdown(home, other_prefect_home, "prefect-api", "stop")
        assert stopped.returncode == 0, stopped.stderr
        assert "no local Prefect API was running for this Prefect home" in stopped.stdout
        assert f"stopped the drills' Prefect API at {first}" in stopped.stdout
        assert find_drills_api(drills) is None  # what `status` reads (it found it above)
    finally:
        stop_drills_api(drills)  # a failed assertion must not leave the server for an hour
