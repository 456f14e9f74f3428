"""A local Prefect API does not outlive the process it belongs to: a `kill -9` of serve (or
of `clampdown run`) used to leave its server running on the database, one more per
restart."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.prefect_homes import seed_prefect_home

CHILD = """
import sys, time
from clampdown_flows.prefect_api import local_api
with local_api(timeout=120) as url:
    print(url, flush=True)
    time.sleep(600)
"""


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_local_api_stops_when_its_process_is_killed(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    home = seed_prefect_home(tmp_path / "prefect")  # a migrated database: no first migration
    env |= {"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    owner = subprocess.Popen(
        [sys.executable, "-c", CHILD], env=env, stdout=subprocess.PIPE, start_new_session=True
    )
    server: list[int] = []
    try:
        assert owner.stdout is not None
        assert owner.stdout.readline().startswith(b"http://127.0.0.1:")
        server = children(owner.pid)
        assert server, "the local API runs as a child process"
        os.kill(owner.pid, signal.SIGKILL)  # the owner only, not its process group
        owner.wait(10)
        deadline = time.monotonic() + 60  # bounded: a regression fails instead of hanging
        while any(alive(pid) for pid in server) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(alive(pid) for pid in server), "the local API outlived its process"
    finally:
        for pid in server:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        owner.kill()
