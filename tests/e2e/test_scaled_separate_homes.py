"""The scaled mode without a shared filesystem, every part a real process.

A throwaway PostgreSQL cluster holds Prefect's database and clampdown's (dedup state and
the run store: ``CLAMPDOWN_RUN_STORE=postgresql``). `prefect server start` on it (the
session's, shared with the other scaled files: tests/scaled_stack.py), the `respond`
deployment from the repository's prefect.yaml on a work pool of this file's own
(``separate-homes``), `clampdown serve` in deployment mode and two `clampdown worker`s on
that pool: each of the three with a ``CLAMPDOWN_HOME`` of its own
(separate temp folders, as separate machines' disks), and a fourth home that never ran
anything for the commands a responder types elsewhere.

An alert starts a run gated by two approvals; the worker holding it is killed (-9) while
it waits (the other worker is paused meanwhile, SIGSTOP, so that what happens while no
process holds the run is deterministic): the first approver's ``clampdown approve`` from
serve's home is kept in the store's inbox ("not counted yet") and the same alert re-sent
is recorded in the run (not swallowed by a dead run). The other worker, resumed, finds the
run in the run store (no ``run.end``, its lock released by PostgreSQL with the dead
connection), continues it and counts the kept decision; the alert re-sent again is
recorded while it runs there; the second approver's decision from serve's home is counted
through Prefect; the run contains the user on moto server. ``clampdown runs``, ``verify``
and ``rollback`` from the fourth home succeed and rollback puts the user back. The workers
look for stopped runs to continue every RESUME_EVERY seconds (the command's default is
30 s): the tests wait for the look, not for the clock. The worker the mid-step test kills
(worker-3, reaching AWS through a proxy that holds the revoke's answer) is started with
the stack on standby (it imports, then waits to be told to go on: tests/scaled_stack.py). Waits are bounded only to fail
instead of hanging; nothing is timed.
"""

from __future__ import annotations

import contextlib
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

from tests.approver_keys import ApproverKeys
from tests.e2e.test_scaled_mode import (
    CONTAINED,
    _contained,
    _flow_run,
    _iam_user,
)
from tests.e2e.test_serve_restart import HoldingProxy
from tests.pg import postgres_url  # noqa: F401 - the session's throwaway PostgreSQL cluster
from tests.scaled_stack import (
    SharedPrefect,
    clampdown_worker,
    cli_here,
    create_databases,
    deployment,
    free_port,
    go,
    process,
    scaled_prefect,  # noqa: F401 - the session's Prefect server on PostgreSQL
    scrubbed_env,
    wait_until,
)

CLI = str(Path(sys.executable).parent / "clampdown")
HMAC_SECRET = "separate-homes-hmac-secret-0123456789"
APPROVERS = ("U0TERM1", "U0TERM2")
POOL = "separate-homes"  # polled by this file's workers only
RESUME_EVERY = 1.0  # seconds between a worker's looks for stopped runs to continue
WORKER = clampdown_worker(POOL, resume_every=RESUME_EVERY)
# Five minutes to decide: the paused run asks Prefect every ~1.7 s whether it was resumed
# (1/180 of the time left), so a decision sent through Prefect counts within that (every
# 5 s with 30 m); the tests decide well within the five minutes.
GATED = """apiVersion: clampdown/v1
kind: Runbook
metadata: {name: scaled-gated, title: Gated by two approvals, severity: critical}
inputs:
  principal_arn: {type: string, required: true}
steps:
  - id: approve
    uses: approval.request
    with: {summary: "Revoke?", approvers: {users: [U0TERM1, U0TERM2]}, min_approvals: 2,
           timeout: 5m}
  - id: revoke
    uses: aws.iam.revoke_credentials
    needs: [approve]
    with: {principal_arn: "{{ inputs.principal_arn }}"}
"""
TRIGGERS = """apiVersion: clampdown/v1
kind: TriggerSet
description: scaled mode without a shared filesystem
triggers:
  - name: gated
    match: "alert.source == 'generic' and alert.principal"
    runbook: scaled-gated
    inputs:
      principal_arn: "{{ alert.principal }}"
    dedup_key: "generic:{{ alert.id }}"
    dedup_window: 10m
"""


@dataclass
class Stack:
    serve_url: str
    state_url: str  # clampdown's database: dedup state and the run store
    api_url: str
    homes: dict[str, Path]  # serve, worker-1, worker-2, elsewhere
    env: dict[str, str]  # what every clampdown process shares (not CLAMPDOWN_HOME)
    workers: dict[str, Any]  # name -> Popen
    keys: dict[str, Path]  # the approvers' SSH keys
    logs: Path
    db: Any  # one psycopg connection (autocommit) to state_url for the tests' reads
    doomed: Any  # worker-3 (Popen), on standby: it reaches AWS through ``proxy``
    proxy: Any  # HoldingProxy in front of moto server
    signed_at: int = 0  # the time stamp (whole seconds) of the last alert sent to serve

    def cli(self, home: str, *args: str) -> Any:
        """A command typed on the machine of ``home`` (in this process: :func:`cli_here`)."""
        return cli_here(
            self.env | {"CLAMPDOWN_HOME": str(self.homes[home]), "COLUMNS": "250"}, *args
        )

    def stored(self, run_id: str) -> list[dict[str, Any]]:
        """The run's ledger as the run store holds it (read with SQL, not through clampdown;
        on one connection: the waits read it every 0.1 s, a connection each cost ~5 ms of
        CPU here and a PostgreSQL backend's start)."""
        rows = self.db.execute(
            "SELECT line FROM clampdown_run_ledgers WHERE run_id = %s ORDER BY seq", (run_id,)
        ).fetchall()
        return [json.loads(row[0]) for row in rows]

    def request(self, run_id: str) -> dict[str, Any] | None:
        row = self.db.execute(
            "SELECT data FROM clampdown_run_files WHERE run_id = %s AND name = %s",
            (run_id, "approvals/approve.json"),
        ).fetchone()
        return None if row is None else json.loads(bytes(row[0]))

    def approve(self, run_id: str, approver: str) -> Any:
        """``clampdown approve`` on serve's machine (its home never ran the run)."""
        key = str(self.keys[approver])
        return self.cli("serve", "approve", run_id, "--as", approver, "--key", key)

    def held(self, run_id: str) -> bool:
        from clampdown.core.run_store_pg import PostgresRunStore

        store = PostgresRunStore(self.state_url)
        try:
            return store.is_held(run_id)
        finally:
            store.close()

    def wait_for(self, run_id: str, record: str, timeout: float = 120) -> list[dict[str, Any]]:
        return wait_until(
            lambda: (r := self.stored(run_id)) and record in [x["type"] for x in r] and r,
            timeout,
            f"{record} in the stored ledger of run {run_id}",
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

    from clampdown.core.ledger_signing import generate_local_key

    root = tmp_path_factory.mktemp("separate-homes")
    logs, library = root / "logs", root / "library"
    homes = {n: root / f"{n}-home" for n in ("serve", "worker-1", "worker-2", "elsewhere")}
    for folder in (logs, library, *homes.values()):
        folder.mkdir()
    (library / "scaled-gated.yaml").write_text(GATED)
    (library / "triggers.yaml").write_text(TRIGGERS)
    keys = ApproverKeys(root / "keys", root / "allowed_signers")
    keys.folder.mkdir()
    keys.allowed_signers.touch(mode=0o644)
    approver_keys = {approver: keys.add(approver) for approver in APPROVERS}
    ledger_key = generate_local_key(root / "ledger-signing.pem")  # every machine's signer

    state_url = create_databases(postgres_url, ("clampdown_separate",))["clampdown_separate"]
    base = scrubbed_env()
    with contextlib.ExitStack() as running:
        server = running.enter_context(scaled_prefect.serving(request.node))
        api_url = server.api_url
        env = base | {
            "PREFECT_API_URL": api_url,
            "PREFECT_HOME": str(root / "prefect-clients"),
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "AWS_ENDPOINT_URL": moto_server,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "CLAMPDOWN_LIBRARY": str(library),
            "CLAMPDOWN_INPUTS_KEY": Fernet.generate_key().decode(),
            "CLAMPDOWN_STATE_URL": state_url,
            "CLAMPDOWN_RUN_STORE": "postgresql",
            "CLAMPDOWN_ALLOWED_SIGNERS": str(keys.allowed_signers),
            "CLAMPDOWN_LEDGER_KEY": str(ledger_key),
            "CLAMPDOWN_DEPLOYMENT": deployment(POOL),
            "CLAMPDOWN_WORK_POOL": POOL,
        }
        serve_env = env | {
            "CLAMPDOWN_HOME": str(homes["serve"]),
            "CLAMPDOWN_EXECUTION": "deployment",
            "CLAMPDOWN_ALERT_HMAC_SECRET": HMAC_SECRET,
        }
        serve_port = free_port()
        workers = {}
        for name in ("worker-1", "worker-2"):
            (logs / f"{name}-cwd").mkdir()
            workers[name] = running.enter_context(
                process(
                    WORKER,
                    logs / f"{name}.log",
                    env=env | {"CLAMPDOWN_HOME": str(homes[name])},
                    cwd=logs / f"{name}-cwd",
                )
            )
        serve_log = logs / "serve.log"
        serve = running.enter_context(
            process([CLI, "serve", "--port", str(serve_port)], serve_log, env=serve_env)
        )
        for name, proc in workers.items():
            log = logs / f"{name}.log"
            wait_until(lambda log=log: "started" in log.read_text(), 60, name, proc, log)
        serve_url = f"http://127.0.0.1:{serve_port}"
        wait_until(
            lambda: httpx.get(f"{serve_url}/healthz", timeout=2).status_code == 200,
            60,
            "serve to answer /healthz",
            serve,
            serve_log,
        )
        scaled_prefect.deployed()
        # worker-3, the one that dies mid-step, on standby until its test (it imports while
        # the first test waits, not while the others start): it reaches AWS through a
        # proxy that holds the revoke's answer
        proxy = HoldingProxy(moto_server, b"Action=UpdateAccessKey")
        running.callback(proxy.close)
        homes["worker-3"] = root / "worker-3-home"
        homes["worker-3"].mkdir()
        (logs / "worker-3-cwd").mkdir()
        doomed = running.enter_context(
            process(
                clampdown_worker(POOL, resume_every=RESUME_EVERY, standby=True),
                logs / "worker-3.log",
                env=env | {"CLAMPDOWN_HOME": str(homes["worker-3"]), "AWS_ENDPOINT_URL": proxy.url},
                cwd=logs / "worker-3-cwd",
                stdin=subprocess.PIPE,
            )
        )
        import psycopg

        db = running.enter_context(psycopg.connect(state_url, autocommit=True))
        yield Stack(
            serve_url,
            state_url,
            api_url,
            homes,
            env,
            workers,
            approver_keys,
            logs,
            db,
            doomed,
            proxy,
        )


def _post(stack: Stack, alert_id: str, arn: str) -> httpx.Response:
    """A generic alert as its sender signs it (each call: a new delivery). A delivery is its
    body and time stamp (whole seconds): the same alert sent again in the same second is a
    replay, so each call signs at a later second than the one before."""
    body = json.dumps(
        {"id": alert_id, "title": f"keys of {arn} used from Tor", "severity": "critical"}
        | {"principal": arn}
    ).encode()
    wait_until(lambda: int(time.time()) > stack.signed_at, 5, "the next second")
    stack.signed_at = int(time.time())
    stamp = str(stack.signed_at)
    mac = hmac.new(HMAC_SECRET.encode(), b"v1:" + stamp.encode() + b":" + body, hashlib.sha256)
    headers = {
        "Content-Type": "application/json",
        "X-Clampdown-Timestamp": stamp,
        "X-Clampdown-Signature": f"v1={mac.hexdigest()}",
    }
    return httpx.post(
        f"{stack.serve_url}/alerts/generic", content=body, headers=headers, timeout=60
    )


def _holder(stack: Stack, run_id: str) -> str:
    """The worker running the run: the one whose home has its ledger (a run's folder is
    written only where it runs or is read; serve's home is separate)."""
    found = [
        name
        for name in stack.workers
        if (stack.homes[name] / "runs" / run_id / "ledger.jsonl").is_file()
    ]
    assert len(found) == 1, found
    return found[0]


@pytest.mark.scaled
def test_a_run_outlives_its_worker_and_is_handled_from_any_home(
    stack: Stack, moto_server: str
) -> None:
    iam, arn = _iam_user(moto_server, "stolen-keys-separate")
    answer = _post(stack, "separate-1", arn)
    assert answer.status_code == 202, answer.text
    [alert] = answer.json()["alerts"]
    assert alert["status"] == "started", alert
    run_id = str(alert["run_id"])

    # the run waits for approval on one worker; its request is in the run store
    wait_until(
        lambda: (stack.request(run_id) or {}).get("status") == "pending", 120, "the approval wait"
    )
    first_flow_run = stack.request(run_id)["flow_run_id"]  # type: ignore[index]
    holder = _holder(stack, run_id)
    other = next(name for name in stack.workers if name != holder)
    assert not (stack.homes["serve"] / "runs" / run_id / "ledger.jsonl").exists()
    os.killpg(stack.workers[other].pid, signal.SIGSTOP)  # nobody may take the run yet
    try:
        os.killpg(stack.workers[holder].pid, signal.SIGKILL)
        stack.workers[holder].wait(30)
        wait_until(lambda: not stack.held(run_id), 30, "PostgreSQL to release the lock")

        # while no process holds it: the decision is kept, the re-sent alert recorded
        sent = stack.approve(run_id, "U0TERM1")
        assert sent.returncode == 3 and "not counted yet" in sent.stderr, sent.stdout + sent.stderr
        again = _post(stack, "separate-1", arn)
        assert again.status_code == 200, again.text
        [repeat] = again.json()["alerts"]
        assert (repeat["status"], repeat["run_id"]) == ("deduplicated", run_id), repeat
    finally:
        os.killpg(stack.workers[other].pid, signal.SIGCONT)

    # the other worker finds it in the store and continues it: the same request re-entered,
    # the kept decision counted
    records = stack.wait_for(run_id, "approval.resumed", timeout=120)
    assert "run.resumed" in [r["type"] for r in records]
    wait_until(
        lambda: (
            (r := stack.request(run_id) or {}).get("status") == "pending"
            and r.get("flow_run_id") != first_flow_run
        ),
        60,
        "the continued run to wait again",
    )
    first = stack.wait_for(run_id, "approval.decision", timeout=60)
    [decision] = [r for r in first if r["type"] == "approval.decision"]
    assert decision["accepted"] and decision["approver"] == "U0TERM1", decision
    assert (stack.homes[other] / "runs" / run_id / "ledger.jsonl").is_file()

    # the same alert re-sent while the run runs on the other machine: recorded in it
    again = _post(stack, "separate-1", arn)
    assert again.status_code == 200, again.text
    assert [r["type"] for r in stack.stored(run_id)].count("alert.joined") == 2
    assert _contained(iam, "stolen-keys-separate")["key_statuses"] == ["Active", "Active"]

    # the second approver decides from serve's machine: delivered through Prefect, counted
    sent = stack.approve(run_id, "U0TERM2")
    assert sent.returncode == 0 and "counted" in sent.stdout, sent.stdout + sent.stderr
    records = stack.wait_for(run_id, "run.end")
    end = next(r for r in records if r["type"] == "run.end")
    assert end["status"] == "succeeded", end
    decisions = [r for r in records if r["type"] == "approval.decision"]
    assert [(d["approver"], d["accepted"]) for d in decisions] == [
        ("U0TERM1", True),
        ("U0TERM2", True),
    ]
    assert _contained(iam, "stolen-keys-separate") == CONTAINED
    old = _flow_run(stack.api_url, first_flow_run)
    assert old["state"]["type"] == "CRASHED"  # not Running for ever

    # a home that never ran it: runs, verify and rollback
    listed = stack.cli("elsewhere", "runs", "--format", "json")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    [summary] = [r for r in json.loads(listed.stdout) if r["run_id"] == run_id]
    assert summary["status"] == "succeeded", summary
    verified = stack.cli("elsewhere", "verify", run_id)
    assert verified.returncode == 0 and "OK: intact, signed" in verified.stdout, (
        verified.stdout + verified.stderr
    )
    undone = stack.cli("elsewhere", "rollback", run_id, "--yes")
    assert undone.returncode == 0, undone.stdout + undone.stderr
    assert _contained(iam, "stolen-keys-separate") == {
        "key_statuses": ["Active", "Active"],
        "policies": [],
        "login_profile": True,
    }
    listed = stack.cli(
        "worker-1" if other == "worker-2" else "worker-2", "runs", "--format", "json"
    )
    [summary] = [r for r in json.loads(listed.stdout) if r["run_id"] == run_id]
    assert summary["rolled_back_by"], summary  # the mark is in the store, seen from any home


@pytest.mark.scaled
def test_a_worker_killed_between_a_containment_call_and_its_answer_leaves_nothing_unrecorded(
    stack: Stack, moto_server: str
) -> None:
    """Deployment mode, mid-step: a worker dies after AWS deactivated a key and before the
    answer reached it. The undo intent was stored first; another worker (another home)
    continues the run from the store and runs the step again; rollback from a third home
    puts back what both attempts changed, the unconfirmed change included."""
    user = "stolen-keys-mid-step"
    iam, arn = _iam_user(moto_server, user)
    proxy, doomed, home = stack.proxy, stack.doomed, stack.homes["worker-3"]
    survivors = [proc for proc in stack.workers.values() if proc.poll() is None]
    with contextlib.ExitStack() as running:
        # the new worker reaches AWS through the proxy; the others wait (SIGSTOP) so that
        # the new one takes the run and is the one that dies in the middle of the step
        for proc in survivors:
            os.killpg(proc.pid, signal.SIGSTOP)
            running.callback(os.killpg, proc.pid, signal.SIGCONT)
        log = stack.logs / "worker-3.log"
        go(doomed)  # on standby since the module's start: it starts polling now
        wait_until(lambda: "started" in log.read_text(), 60, "worker-3", doomed, log)
        answer = _post(stack, "separate-mid-step", arn)
        assert answer.status_code == 202, answer.text
        [alert] = answer.json()["alerts"]
        run_id = str(alert["run_id"])
        wait_until(
            lambda: (stack.request(run_id) or {}).get("status") == "pending", 120, "the wait"
        )
        assert (home / "runs" / run_id / "ledger.jsonl").is_file()  # worker-3 runs it
        for approver in APPROVERS:
            sent = stack.approve(run_id, approver)
            assert sent.returncode == 0, sent.stdout + sent.stderr
        assert proxy.made.wait(120), "the revoke never reached AWS"
        os.killpg(doomed.pid, signal.SIGKILL)
        doomed.wait(30)
        # AWS made the change; the worker never heard back; the intent is in the store
        assert "Inactive" in _contained(iam, user)["key_statuses"]
        records = stack.stored(run_id)
        assert "step.end" not in [r["type"] for r in records if r.get("step") == "revoke"]
        intents = [r for r in records if r["type"] == "undo.intent"]
        assert {i["how"]["op"] for i in intents} >= {"activate_access_key"}, intents
        proxy.release.set()
    # the survivors, running again, find the run in the store and finish it
    records = stack.wait_for(run_id, "run.end", timeout=180)
    [resumed] = [r for r in records if r["type"] == "run.resumed"]
    assert resumed["rerun"] == ["revoke"], resumed
    end = records[-1]
    assert (end["type"], end["status"]) == ("run.end", "succeeded"), end
    assert _contained(iam, user) == CONTAINED

    plan = stack.cli("elsewhere", "rollback", run_id, "--plan")
    assert "may have been applied" in plan.stdout, plan.stdout + plan.stderr
    undone = stack.cli("elsewhere", "rollback", run_id, "--yes")
    assert undone.returncode == 0, undone.stdout + undone.stderr
    assert _contained(iam, user) == {
        "key_statuses": ["Active", "Active"],
        "policies": [],
        "login_profile": True,
    }
