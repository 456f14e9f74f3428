"""The local Prefect API that clampdown starts answers only with Prefect's own auth string.

An attacker on the machine can reach the loopback port; without the secret (a 0600 file
beside the Prefect home) every API call is refused with 401, while clampdown's own clients
(this process, its threads, and ``clampdown approve`` in another process) send it.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import httpx

from clampdown_flows.prefect_api import auth_file, client_auth, local_auth_string

ATTACK = """\
import httpx, sys
url = sys.argv[1]
r = httpx.post(url + "/flow_runs/filter", json={})
print(r.status_code)
r = httpx.post(url + "/flow_runs/00000000-0000-0000-0000-000000000000/resume",
               json={"run_input": {"decision": "approve", "approver": "U0LEAD"}})
print(r.status_code)
"""


def test_the_local_api_refuses_requests_without_the_auth_string(prefect_server: str) -> None:
    assert httpx.get(f"{prefect_server}/health").status_code == 200  # probes stay open
    anonymous = httpx.post(f"{prefect_server}/flow_runs/filter", json={})
    assert anonymous.status_code == 401
    wrong = httpx.post(f"{prefect_server}/flow_runs/filter", json={}, auth=("clampdown", "guess"))
    assert wrong.status_code == 401
    secret = local_auth_string()
    assert secret is not None and secret.startswith("clampdown:") and len(secret) > 40
    user, _, password = secret.partition(":")
    allowed = httpx.post(f"{prefect_server}/flow_runs/filter", json={}, auth=(user, password))
    assert allowed.status_code == 200
    assert stat.S_IMODE(auth_file().stat().st_mode) == 0o600


def test_another_local_user_without_the_secret_gets_401(
    prefect_server: str, tmp_path: Path
) -> None:
    """A process with another HOME and PREFECT_HOME (no access to the secret) posts to the
    API, a resume included, as the attack on issue 12 did."""
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path / "attacker"),
        "PREFECT_HOME": str(tmp_path / "attacker" / ".prefect"),
    }
    done = subprocess.run(
        [sys.executable, "-c", ATTACK, prefect_server],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.split() == ["401", "401"], done.stderr


def test_clampdown_s_own_clients_authenticate_in_every_thread(prefect_server: str) -> None:
    from prefect.client.orchestration import get_client

    seen: dict[str, object] = {}

    def in_a_thread() -> None:  # a fresh thread: no context variables of the test's
        with get_client(sync_client=True) as client:
            seen["runs"] = client.read_flow_runs(limit=1)

    thread = threading.Thread(target=in_a_thread)
    thread.start()
    thread.join(30)
    assert isinstance(seen.get("runs"), list)
    assert client_auth(prefect_server) == local_auth_string()
