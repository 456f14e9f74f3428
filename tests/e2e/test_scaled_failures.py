"""The scaled mode when the Prefect server fails (issue 11), every part a real process.

One module-scoped stack: a throwaway PostgreSQL cluster, `prefect server start` on it
(restartable on the same database and port; the session's, shared with the other scaled
files: tests/scaled_stack.py), the `respond` deployment from the repository's prefect.yaml
on a work pool of this file's own (``scaled-failures``), one `clampdown worker` on that
pool with a CLAMPDOWN_HOME of its own, and
`clampdown serve` with CLAMPDOWN_EXECUTION=deployment, each with a CLAMPDOWN_HOME of its
own (they share no disk): dedup state and the run store (ledgers, approval requests,
decisions: CLAMPDOWN_RUN_STORE=postgresql) on PostgreSQL. Alerts are signed generic alerts
posted to serve over HTTP; the AWS calls go to moto server; the approver decides with
`clampdown approve`, signed with an SSH key, and rollback is run, on serve's machine.

One outage of the Prefect server (killed, down until both waiting runs found it gone, or
longer: OUTAGE, then started again on the same database and port) while two runs wait for
approval:

* a decision sent during the outage is kept ("not counted yet") and counted once Prefect
  answers again; a decision sent after the restart counts at once; each gate records
  that the API went away and came back (``approval.api_unreachable`` /
  ``approval.api_reachable``) and its run goes on as the same flow run;
* an alert that arrives during the outage is answered 503 with Retry-After, and the
  sender's retry (the same delivery) after the restart starts a run that contains.

In each: the run finishes with containment done, its ledger verifies, the same alert sent
again is deduplicated to that run (not swallowed by a dead one), and rollback puts the
user back as before the run.

Nothing is timed; waits are bounded only to fail instead of hanging.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from clampdown.core.ledger import read
from clampdown.core.ledger_signing import generate_local_key, load_local_key, verify_ledger
from tests.approver_keys import ApproverKeys
from tests.e2e.test_scaled_mode import (
    CONTAIN,
    CONTAINED,
    GATED,
    _contained,
    _flow_run,
    _iam_user,
)
from tests.pg import postgres_url  # noqa: F401 - the session's throwaway PostgreSQL cluster
from tests.scaled_stack import (
    PrefectServer,
    SharedPrefect,
    clampdown_worker,
    cli_here,
    create_databases,
    deployment,
    free_port,
    process,
    scaled_prefect,  # noqa: F401 - the session's Prefect server on PostgreSQL
    scrubbed_env,
    wait_until,
)

CLI = str(Path(sys.executable).parent / "clampdown")
HMAC_SECRET = "scaled-failures-hmac-secret-0123456789"
APPROVER = "U0TERM1"  # the one approver GATED names
POOL = "scaled-failures"  # polled by this file's worker only

# How long the Prefect server stays down in the outage test, at least. The case
# is 90 s: set CLAMPDOWN_TEST_PREFECT_OUTAGE=90 to run it as is (Prefect's client then
# keeps its default 5 retries, 2+4+8+16+32 s = ~62 s before a call gives up). By default
# the worker's client retries are lowered to 1 (~2 s) and the server is started again
# once both waiting runs recorded `approval.api_unreachable`: what is tested is that the
# outage outlasts the client's retries, so that the gate itself sees the calls fail and
# must wait the outage out (its next try, a second later, and those after it are refused
# until the server started again answers), and that holds at either length. A retry more
# or less changes only how long the gate takes to give up on a call, not what it does
# then. An outage longer than Prefect's worker's own poll loop bears (it gives up after
# 4 rounds of 3 failed polls) is clampdown.app.deployment.keep_polling's
# (tests/unit/test_worker_keeps_polling.py).
OUTAGE = float(os.environ.get("CLAMPDOWN_TEST_PREFECT_OUTAGE", "0"))
CLIENT_RETRIES = "5" if OUTAGE >= 90 else "1"
# How the server is stopped: SIGKILL (a crash, an OOM kill) by default; SIGTERM (a deploy,
# `systemctl restart`) with CLAMPDOWN_TEST_PREFECT_STOP=SIGTERM. Seen from clampdown both
# are the same (connections refused until the server is back); both passed when written.
STOP_SIGNAL = signal.Signals[os.environ.get("CLAMPDOWN_TEST_PREFECT_STOP", "SIGKILL")]

TRIGGERS = """apiVersion: clampdown/v1
kind: TriggerSet
description: scaled-mode failure tests
triggers:
  - name: gated
    match: "alert.source == 'generic' and alert.type == 'gated' and alert.principal"
    runbook: scaled-gated
    inputs:
      principal_arn: "{{ alert.principal }}"
    dedup_key: "generic:{{ alert.id }}"
    correlate_by: "{{ alert.principal }}"
    dedup_window: 10m
  - name: contain
    match: "alert.source == 'generic' and alert.type == 'contain' and alert.principal"
    runbook: scaled-contain
    inputs:
      principal_arn: "{{ alert.principal }}"
    dedup_key: "generic:{{ alert.id }}"
    correlate_by: "{{ alert.principal }}"
    dedup_window: 10m
"""


@dataclass
class Stack:
    prefect: PrefectServer
    serve_url: str
    worker_home: Path
    worker_env: dict[str, str]
    serve_env: dict[str, str]  # what a responder types on serve's machine: approve, rollback
    key: Path  # the approver's SSH key
    ledger_key: Path  # the worker's ledger signing key
    logs: Path

    def ledger(self, run_id: str) -> list[dict[str, Any]]:
        path = self.worker_home / "runs" / run_id / "ledger.jsonl"
        return read(path) if path.is_file() else []

    def types(self, run_id: str) -> list[str]:
        return [r["type"] for r in self.ledger(run_id)]

    def wait_for(self, run_id: str, record: str, timeout: float = 120) -> list[dict[str, Any]]:
        return wait_until(
            lambda: record in self.types(run_id) and self.ledger(run_id),
            timeout,
            f"{record} in the ledger of run {run_id}",
            log=self.logs / "worker.log",
        )

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """A command typed on serve's machine (in this process: :func:`cli_here`)."""
        return cli_here(self.serve_env | {"COLUMNS": "250"}, *args)

    def approve(self, run_id: str) -> subprocess.CompletedProcess[str]:
        return self.cli("approve", run_id, "--as", APPROVER, "--key", str(self.key))

    def waiting(self, run_id: str) -> dict[str, Any]:
        path = self.worker_home / "runs" / run_id / "approvals" / "approve.json"
        return wait_until(
            lambda: (r := json.loads(path.read_text())).get("status") == "pending" and r,
            120,
            f"run {run_id} to wait for approval",
            log=self.logs / "worker.log",
        )


@pytest.fixture(scope="module")
def stack(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    moto_server: str,
    postgres_url: str,  # noqa: F811 - the fixture imported above
    scaled_prefect: SharedPrefect,  # noqa: F811 - the fixture imported above
) -> Iterator[Stack]:
    from cryptography.fernet import Fernet

    root = tmp_path_factory.mktemp("scaled-failures")
    logs, library = root / "logs", root / "library"
    worker_home, serve_home = root / "worker-home", root / "serve-home"
    for folder in (logs, library):
        folder.mkdir()
    (library / "scaled-gated.yaml").write_text(GATED)
    (library / "scaled-contain.yaml").write_text(CONTAIN)
    (library / "triggers.yaml").write_text(TRIGGERS)
    keys = ApproverKeys(root / "keys", root / "allowed_signers")
    keys.folder.mkdir()
    keys.allowed_signers.touch(mode=0o644)
    key = keys.add(APPROVER)
    ledger_key = generate_local_key(root / "ledger-signing.pem")  # signs the worker's ledgers

    state_url = create_databases(postgres_url, ("clampdown_failures",))["clampdown_failures"]
    base = scrubbed_env()
    # restartable on the same database and port: the outage test stops and starts it
    with scaled_prefect.serving(request.node) as prefect:
        inputs_key = Fernet.generate_key().decode()
        common = base | {
            "PREFECT_API_URL": prefect.api_url,
            "PREFECT_HOME": str(root / "prefect-clients"),
            "AWS_ENDPOINT_URL": moto_server,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "CLAMPDOWN_LIBRARY": str(library),
            "CLAMPDOWN_INPUTS_KEY": inputs_key,
            # dedup state and the run store (ledgers, approval requests, decisions) on
            # PostgreSQL: serve and the worker share no disk
            "CLAMPDOWN_STATE_URL": state_url,
            "CLAMPDOWN_RUN_STORE": "postgresql",
            "CLAMPDOWN_ALLOWED_SIGNERS": str(keys.allowed_signers),
            "CLAMPDOWN_LEDGER_KEY": str(ledger_key),
            "CLAMPDOWN_DEPLOYMENT": deployment(POOL),
            "CLAMPDOWN_WORK_POOL": POOL,
        }
        worker_env = common | {
            "CLAMPDOWN_HOME": str(worker_home),
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "PREFECT_CLIENT_MAX_RETRIES": CLIENT_RETRIES,
        }
        serve_env = common | {
            "CLAMPDOWN_HOME": str(serve_home),
            "CLAMPDOWN_EXECUTION": "deployment",
            "CLAMPDOWN_ALERT_HMAC_SECRET": HMAC_SECRET,
        }
        serve_port = free_port()
        worker_log, serve_log = logs / "worker.log", logs / "serve.log"
        (logs / "worker-cwd").mkdir()
        with (
            process(
                clampdown_worker(POOL), worker_log, env=worker_env, cwd=logs / "worker-cwd"
            ) as w,
            process([CLI, "serve", "--port", str(serve_port)], serve_log, env=serve_env) as s,
        ):
            wait_until(lambda: "started" in worker_log.read_text(), 60, "worker", w, worker_log)
            serve_url = f"http://127.0.0.1:{serve_port}"
            wait_until(
                lambda: httpx.get(f"{serve_url}/healthz", timeout=2).status_code == 200,
                60,
                "serve to answer /healthz",
                s,
                serve_log,
            )
            scaled_prefect.deployed()  # made while the worker and serve started
            yield Stack(
                prefect, serve_url, worker_home, worker_env, serve_env, key, ledger_key, logs
            )


def _delivery(alert_id: str, kind: str, arn: str) -> tuple[bytes, dict[str, str]]:
    """A generic alert as its sender signs it; sent again unchanged, it is the same delivery."""
    body = json.dumps(
        {
            "id": alert_id,
            "type": kind,
            "title": f"model weights read by {arn}",
            "severity": "critical",
            "principal": arn,
        }
    ).encode()
    stamp = str(int(time.time()))
    mac = hmac.new(HMAC_SECRET.encode(), b"v1:" + stamp.encode() + b":" + body, hashlib.sha256)
    return body, {
        "Content-Type": "application/json",
        "X-Clampdown-Timestamp": stamp,
        "X-Clampdown-Signature": f"v1={mac.hexdigest()}",
    }


def _post(stack: Stack, delivery: tuple[bytes, dict[str, str]]) -> httpx.Response:
    body, headers = delivery
    return httpx.post(
        f"{stack.serve_url}/alerts/generic", content=body, headers=headers, timeout=60
    )


def _started(answer: httpx.Response) -> str:
    assert answer.status_code == 202, answer.text
    [alert] = answer.json()["alerts"]
    assert alert["status"] == "started", alert
    return str(alert["run_id"])


def _contained_and_undone(stack: Stack, run_id: str, iam: Any, user: str, alert: Any) -> None:
    """What every case must show once the run ended: containment done, a ledger that
    verifies, the same alert again repeats this run, rollback restores the user."""
    records = stack.ledger(run_id)
    assert records[-1]["type"] == "run.end" and records[-1]["status"] == "succeeded", records[-1]
    assert _contained(iam, user) == CONTAINED
    with (stack.worker_home / "runs" / run_id / "ledger.jsonl").open("rb") as lines:
        verdict = verify_ledger(lines, load_local_key(stack.ledger_key, stack.worker_home))
    assert verdict.status == "intact", verdict
    again = _post(stack, _delivery(alert[0], alert[1], alert[2]))  # a new delivery, same alert
    assert again.status_code == 200, again.text
    [repeat] = again.json()["alerts"]
    assert (repeat["status"], repeat["run_id"]) == ("deduplicated", run_id), repeat
    undone = stack.cli("rollback", run_id, "--yes")
    assert undone.returncode == 0, undone.stdout + undone.stderr
    back = _contained(iam, user)
    assert back == {"key_statuses": ["Active", "Active"], "policies": [], "login_profile": True}


def _final_flow_run(stack: Stack, run_id: str) -> dict[str, Any]:
    flow_run_id = stack.ledger(run_id)[0]["flow_run_id"]
    final = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
    return wait_until(
        lambda: (
            (r := _flow_run(stack.prefect.api_url, flow_run_id))["state"]["type"] in final and r
        ),
        60,
        f"flow run {flow_run_id} to finish",
    )


@pytest.mark.scaled
def test_prefect_server_down_and_restarted_during_a_pause_loses_nothing(
    stack: Stack, moto_server: str
) -> None:
    """One outage, three things caught in it. The Prefect server is stopped (STOP_SIGNAL)
    while two runs wait for approval, stays down until both runs' gates found the API gone
    and at least OUTAGE seconds (see OUTAGE: why that is enough) and is started again on
    the same database and port.

    * run A: its approver decides during the outage; the decision is kept ("not counted
      yet") and counted once Prefect answers again;
    * run B: its approver decides after the restart, the ordinary way (counted at once);
    * alert C arrives during the outage: 503 with Retry-After, nothing of it kept, so the
      sender's retry of the same delivery after the restart starts a run.
    """
    stack.prefect.standby()  # the restart's process, its imports done before the outage
    iam, arn_a = _iam_user(moto_server, "outage-decided-during")
    _, arn_b = _iam_user(moto_server, "outage-decided-after")
    _, arn_c = _iam_user(moto_server, "outage-new-alert")
    alert_a, alert_b = ("outage-a", "gated", arn_a), ("outage-b", "gated", arn_b)
    run_a = _started(_post(stack, _delivery(*alert_a)))
    run_b = _started(_post(stack, _delivery(*alert_b)))
    request_b = stack.waiting(run_b)
    stack.waiting(run_a)

    stack.prefect.stop(STOP_SIGNAL)
    down_at = time.monotonic()
    sent = stack.approve(run_a)
    assert sent.returncode == 3, sent.stdout + sent.stderr
    assert "not counted yet" in sent.stderr and "Prefect API cannot be reached" in sent.stderr
    late = _delivery("outage-c", "contain", arn_c)
    refused = _post(stack, late)
    assert refused.status_code == 503, refused.text
    assert refused.headers["Retry-After"] == "30"
    assert "unreachable" in refused.text
    for run_id in (run_a, run_b):  # each gate saw the calls fail, beyond the client's retries
        stack.wait_for(run_id, "approval.api_unreachable", timeout=OUTAGE + 120)
    if OUTAGE:  # a longer outage asked for (CLAMPDOWN_TEST_PREFECT_OUTAGE): the rest of it
        time.sleep(max(0.0, OUTAGE - (time.monotonic() - down_at)))
    for run_id in (run_a, run_b):  # rode it out: still waiting, not failed
        assert "run.end" not in stack.types(run_id)
    assert _contained(iam, "outage-decided-during")["key_statuses"] == ["Active", "Active"]
    stack.prefect.start()

    stack.wait_for(run_a, "run.end")  # the decision kept during the outage counted
    stack.wait_for(run_b, "approval.api_reachable")
    sent = stack.approve(run_b)
    assert sent.returncode == 0, sent.stdout + sent.stderr
    stack.wait_for(run_b, "run.end")
    for run_id in (run_a, run_b):
        types = stack.types(run_id)
        assert types.index("approval.api_unreachable") < types.index("approval.api_reachable")
        assert types.index("approval.api_reachable") < types.index("approval.decision")
        assert types.count("approval.request") == 1  # the same request throughout
        assert "run.resumed" not in types  # never stopped: the same flow run went on
        [decision] = [r for r in stack.ledger(run_id) if r["type"] == "approval.decision"]
        assert decision["accepted"] and decision["approver"] == APPROVER
        assert _final_flow_run(stack, run_id)["state"]["type"] == "COMPLETED"
    after_b = json.loads(
        (stack.worker_home / "runs" / run_b / "approvals" / "approve.json").read_text()
    )
    assert (after_b["nonce"], after_b["status"]) == (request_b["nonce"], "approved")
    _contained_and_undone(stack, run_a, iam, "outage-decided-during", alert_a)
    _contained_and_undone(stack, run_b, iam, "outage-decided-after", alert_b)

    # the sender retries the refused delivery, unchanged: not a replay, not deduplicated
    run_c = _started(_post(stack, late))
    stack.wait_for(run_c, "run.end")
    _contained_and_undone(stack, run_c, iam, "outage-new-alert", ("outage-c", "contain", arn_c))
