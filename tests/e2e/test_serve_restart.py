"""A run outlives the `clampdown serve` process that runs it (issue 11), with real processes.

`clampdown serve` runs in its own process group with its own local Prefect API, the AWS
calls go to moto server, the approver decides with `clampdown approve` (signed with an
SSH key). A signed generic alert starts `contain-iam-user`, which waits for approval
before it revokes the user's credentials. Then serve is stopped the way machines stop:

* ``kill -9`` of the whole process group while the run waits: `clampdown runs` says the
  run stopped, a decision sent meanwhile is kept ("not counted yet"), a new serve
  continues the run on its own, re-enters the same approval request (same nonce) and
  counts that decision; that serve killed again between AWS's change and its answer (an
  HTTP proxy holds the answer): the undo intent is on record, the next serve runs the
  step again and the containment happens; rollback then puts the user back as before;
* SIGTERM (a deploy): serve exits promptly, its Prefect API process with it, the run is
  suspended (``run.suspended``, no ``run.end``); the next serve continues it and a normal
  decision completes it.

`clampdown runs`, `rollback` and the decisions, on the session's Prefect API, run in this
process (typer's CliRunner, with the same environment): their process is not what is tested.
Only the SIGTERM test's first serve starts a Prefect API of its own (it must stop with serve);
every other serve uses the session's.
Nothing here is timed: waits are bounded only to fail instead of hanging.
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from clampdown.core.ledger import read
from tests.approver_keys import approver_keys
from tests.pg import free_port
from tests.prefect_homes import seed_prefect_home

ACCOUNT = "123456789012"
SECRET = "restart-generic-hmac-secret"
CLI = str(Path(sys.executable).parent / "clampdown")
# The gate's timeout: long enough for the slowest restart seen (serve and its own Prefect
# API started twice: ~90 s at load 7), short enough that the paused run asks Prefect every
# 1-2 s whether a `clampdown approve` from another process resumed it (every 5 s for 30 m:
# clampdown_flows.approval_gate.poll_seconds).
RUNBOOK = """\
apiVersion: clampdown/v1
kind: Runbook
metadata: {name: contain-iam-user, title: Contain an IAM user, severity: critical}
inputs:
  principal_arn: {type: string, required: true}
steps:
  - id: approve
    uses: approval.request
    with:
      summary: "Revoke {{ inputs.principal_arn }}?"
      approvers: {users: [U0TERM1]}
      timeout: 5m
  - id: revoke
    uses: aws.iam.revoke_credentials
    needs: [approve]
    with: {principal_arn: "{{ inputs.principal_arn }}"}
"""
TRIGGERS = """\
apiVersion: clampdown/v1
kind: TriggerSet
triggers:
  - name: suspect-user
    match: alert.principal and ':user/' in alert.principal
    runbook: contain-iam-user
    inputs:
      principal_arn: "{{ alert.principal }}"
    correlate_by: "suspect:{{ alert.principal }}"
    dedup_window: 15m
"""


@dataclass
class World:
    root: Path
    home: Path
    env: dict[str, str]
    key: Path  # U0TERM1's SSH key
    user: str
    iam: Any

    def ledger(self, run_id: str) -> list[dict[str, Any]]:
        path = self.home / "runs" / run_id / "ledger.jsonl"
        return read(path) if path.is_file() else []

    def types(self, run_id: str) -> list[str]:
        return [r["type"] for r in self.ledger(run_id)]

    def key_status(self) -> str:
        [key] = self.iam.list_access_keys(UserName=self.user)["AccessKeyMetadata"]
        return str(key["Status"])

    def cli_here(self, *args: str) -> subprocess.CompletedProcess[str]:
        """A `clampdown` command in this process (:func:`cli_in_process`)."""
        return cli_in_process(self.env | {"COLUMNS": "250"}, *args)


def cli_in_process(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """A `clampdown` command in this process (typer's CliRunner), for those whose process
    is not what is tested: listing runs, decisions, rollback. As processes of their own,
    approve and rollback import Prefect each time (~2 CPU-s). ``env`` is the command's
    whole environment while it runs (variables it lacks are unset, and everything is put
    back after), and its Prefect API must be this process's: the test session's."""
    from prefect.settings import PREFECT_API_URL
    from typer.testing import CliRunner

    from clampdown.app.cli import app

    assert env.get("PREFECT_API_URL") == PREFECT_API_URL.value(), "not this process's API"
    whole: dict[str, str | None] = {name: None for name in os.environ if name not in env}
    # quiet_prefect() sets it for the command: put back after, as every name here is
    whole["PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"] = None
    whole |= env
    done = CliRunner().invoke(app, list(args), env=whole)
    if done.exception and not isinstance(done.exception, SystemExit):
        raise done.exception
    return subprocess.CompletedProcess(args, done.exit_code, done.stdout, done.stderr)


@pytest.fixture(scope="module")
def prefect_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One Prefect home for the module, with a copy of the session's migrated database
    (tests/prefect_homes.py): no serve migrates it."""
    return seed_prefect_home(tmp_path_factory.mktemp("prefect-home"))


@pytest.fixture
def world(
    tmp_path: Path, aws_endpoint: str, monkeypatch: pytest.MonkeyPatch, prefect_home: Path
) -> Iterator[World]:
    library = tmp_path / "library"
    library.mkdir()
    (library / "contain-iam-user.yaml").write_text(RUNBOOK)
    (library / "triggers.yaml").write_text(TRIGGERS)
    keys = approver_keys(tmp_path, monkeypatch, "U0TERM1")
    home = tmp_path / "home"
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("CLAMPDOWN_", "PREFECT_API", "PREFECT_HOME", "PREFECT_SERVER"))
    }
    env |= {
        "CLAMPDOWN_HOME": str(home),
        "CLAMPDOWN_LIBRARY": str(library),
        "CLAMPDOWN_ALERT_HMAC_SECRET": SECRET,
        "CLAMPDOWN_ALLOWED_SIGNERS": str(keys.allowed_signers),
        "PREFECT_HOME": str(prefect_home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    iam = boto3.client("iam", endpoint_url=aws_endpoint, region_name="us-east-1")
    iam.create_user(UserName="mallory")
    iam.create_access_key(UserName="mallory")
    yield World(tmp_path, home, env, keys["U0TERM1"], "mallory", iam)


@contextlib.contextmanager
def serve(world: World, name: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`clampdown serve` in a process group of its own; whatever is left is killed at exit."""
    port = free_port()
    log = world.root / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [CLI, "serve", "--port", str(port)],
            env=world.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_for(lambda: httpx.get(f"{url}/healthz", timeout=2).status_code == 200,
                     f"{name} to answer /healthz", proc, log)  # fmt: skip
            yield proc, url
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)


def wait_for(
    check: Callable[[], Any],
    what: str,
    proc: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
    timeout: float = 120,
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-4000:] if log else ""
            raise AssertionError(f"{what}: the process exited ({proc.returncode})\n{tail}")
        with contextlib.suppress(Exception):
            if value := check():
                return value
        time.sleep(0.2)
    tail = log.read_text(errors="replace")[-4000:] if log else ""
    raise AssertionError(f"timed out waiting for {what}\n{tail}")


def send_alert(url: str, world: World, alert_id: str) -> str:
    """A signed generic alert about the user; returns the run it started."""
    body = json.dumps(
        {
            "id": alert_id,
            "title": f"model weights read by {world.user}",
            "severity": "critical",
            "type": "dlp.model_weights_egress",
            "principal": f"arn:aws:iam::{ACCOUNT}:user/{world.user}",
            "account": ACCOUNT,
            "region": "us-east-1",
        }
    ).encode()
    stamp = str(int(time.time()))
    mac = hmac.new(SECRET.encode(), b"v1:" + stamp.encode() + b":" + body, hashlib.sha256)
    headers = {
        "X-Clampdown-Timestamp": stamp,
        "X-Clampdown-Signature": "v1=" + mac.hexdigest(),
        "Content-Type": "application/json",
    }
    answer = httpx.post(f"{url}/alerts/generic", content=body, headers=headers, timeout=30)
    assert answer.status_code == 202, answer.text
    [alert] = answer.json()["alerts"]
    assert alert["status"] == "started", alert
    return str(alert["run_id"])


def use_session_api(world: World, api_url: str) -> None:
    """serve talks to the test session's Prefect API instead of starting its own (what
    PREFECT_API_URL does in production too): each restart then takes seconds, not a
    server start. The SIGTERM test's first serve keeps its own API: it checks that API
    stops too."""
    from prefect.settings import PREFECT_API_AUTH_STRING

    world.env["PREFECT_API_URL"] = api_url
    world.env["PREFECT_API_AUTH_STRING"] = str(PREFECT_API_AUTH_STRING.value() or "")


def waiting_request(world: World, run_id: str) -> dict[str, Any]:
    path = world.home / "runs" / run_id / "approvals" / "approve.json"
    return wait_for(
        lambda: (r := json.loads(path.read_text())).get("status") == "pending" and r,
        f"run {run_id} to wait for approval",
    )


def process_group_members(pgid: int) -> list[int]:
    """Live processes of a process group (read from /proc: no psutil needed)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(stat.parent.name))
    return members


def test_sigterm_suspends_the_run_and_the_next_serve_finishes_it(
    world: World, prefect_server: str
) -> None:
    """serve-1 has its own Prefect API (it must stop with serve); the run continues in
    serve-2 from its ledger, which creates a new flow run on whatever API serve-2 has: the
    session's (:func:`use_session_api`), so no second server start, and the decision is
    a `clampdown approve` of this process (:meth:`World.cli_here`), from another process
    than the one that runs the run, as an approver's is."""
    with serve(world, "serve-1") as (proc, url):
        run_id = send_alert(url, world, "dlp-restart-2")
        waiting_request(world, run_id)
        wait_for(lambda: len(process_group_members(proc.pid)) >= 2, "serve's Prefect API")
        os.kill(proc.pid, signal.SIGTERM)  # serve only, as `systemctl stop` or a deploy does
        proc.wait(60)
        left = process_group_members(proc.pid)
        assert left == [], f"processes left behind by serve: {left}"
    records = world.ledger(run_id)
    types = [r["type"] for r in records]
    assert "run.suspended" in types and "run.end" not in types

    use_session_api(world, prefect_server)
    with serve(world, "serve-2") as (_proc, _url):
        wait_for(lambda: "approval.resumed" in world.types(run_id), "the run to wait again")
        sent = world.cli_here("approve", run_id, "--as", "U0TERM1", "--key", str(world.key))
        assert sent.returncode == 0, sent.stdout + sent.stderr
        wait_for(lambda: "run.end" in world.types(run_id), "the run to end")
    end = world.ledger(run_id)[-1]
    assert end["type"] == "run.end" and end["status"] == "succeeded"
    assert world.key_status() == "Inactive"


class HoldingProxy:
    """An HTTP proxy in front of moto server that lets one kind of AWS call through to
    moto (so the change is made) and then holds its answer: the process that made the
    call is between the change and the answer, where a crash leaves no undo record."""

    def __init__(self, upstream: str, action: bytes) -> None:
        import http.server
        import threading
        import urllib.request

        self.made = threading.Event()  # the held call has reached moto
        self.release = threading.Event()
        self.armed = True
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                request = urllib.request.Request(
                    upstream + self.path, data=body, headers=headers, method="POST"
                )
                try:
                    with urllib.request.urlopen(request, timeout=30) as answer:
                        status, data, kind = answer.status, answer.read(), answer.headers
                except urllib.error.HTTPError as refused:
                    status, data, kind = refused.code, refused.read(), refused.headers
                if proxy.armed and action in body:
                    proxy.armed = False
                    proxy.made.set()
                    proxy.release.wait(120)
                self.send_response(status)
                self.send_header("Content-Type", kind.get("Content-Type", "text/xml"))
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()


def test_kill_9_while_waiting_then_between_a_containment_call_and_its_answer_loses_nothing(
    world: World, aws_endpoint: str, prefect_server: str
) -> None:
    """One run, serve killed twice (``kill -9`` of its process group, as an OOM kill does),
    each time where a crash could lose something:

    1. while the run waits for approval: ``clampdown runs`` says it stopped; a decision sent
       meanwhile is kept, not counted yet; the next serve continues the run on its own,
       re-enters the same approval request (same nonce, params hash, deadline) and counts
       that decision;
    2. after AWS deactivated the key and before its answer reached serve: the undo intent
       was written first; the next serve runs the step again.

    Rollback then lists what it undoes ("may have been applied") and puts the user back.
    (These were two tests of two serves each: serve-2 is the first crash's resume and the
    second crash's victim, one serve start less, about 3 CPU-s.)"""
    use_session_api(world, prefect_server)
    proxy = HoldingProxy(aws_endpoint, b"Action=UpdateAccessKey")
    world.env["AWS_ENDPOINT_URL"] = proxy.url
    try:
        with serve(world, "serve-1") as (proc, url):
            run_id = send_alert(url, world, "dlp-restart-1")
            before = waiting_request(world, run_id)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)

        assert "run.end" not in world.types(run_id)
        listed = world.cli_here("runs", "--format", "json")
        assert listed.returncode == 0, listed.stderr
        [shown] = [r for r in json.loads(listed.stdout) if r["run_id"] == run_id]
        assert shown["status"] == "stopped" and "clampdown resume" in shown["detail"]
        # the approver decides while no process runs the run: kept, not lost, not yet counted
        sent = world.cli_here("approve", run_id, "--as", "U0TERM1", "--key", str(world.key))
        assert sent.returncode == 3, sent.stdout + sent.stderr
        assert "not counted yet" in sent.stderr
        assert world.key_status() == "Active"

        with serve(world, "serve-2") as (proc, _url):
            assert proxy.made.wait(120), "the resumed run's revoke never reached AWS"
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
        # the first crash: the decision sent meanwhile was counted on the same request
        records = world.ledger(run_id)
        [resumed] = [r for r in records if r["type"] == "run.resumed"]
        assert resumed["rerun"] == ["approve"] and resumed["waiting"] == ["approve"]
        [again] = [r for r in records if r["type"] == "approval.resumed"]
        assert again["params_hash"] == before["params_hash"]
        request = world.home / "runs" / run_id / "approvals" / "approve.json"
        after = json.loads(request.read_text())
        assert after["nonce"] == before["nonce"] and after["deadline"] == before["deadline"]
        [decision] = [r for r in records if r["type"] == "approval.decision"]
        assert decision["accepted"] and decision["approver"] == "U0TERM1"
        # the second: AWS made the change, serve never heard, the undo intent is on record
        assert world.key_status() == "Inactive"
        assert "step.end" not in [r["type"] for r in records if r.get("step") == "revoke"]
        intents = [r for r in records if r["type"] == "undo.intent"]
        assert {i["how"]["op"] for i in intents} >= {"activate_access_key"}

        proxy.release.set()
        with serve(world, "serve-3") as (_proc, _url):
            wait_for(lambda: "run.end" in world.types(run_id), "the resumed run to end")
    finally:
        proxy.close()
        world.env["AWS_ENDPOINT_URL"] = aws_endpoint  # rollback talks to moto directly
    records = world.ledger(run_id)
    types = [r["type"] for r in records]
    assert [r["rerun"] for r in records if r["type"] == "run.resumed"] == [["approve"], ["revoke"]]
    assert types.count("approval.request") == 1  # the same request, not a new one
    assert types.count("approval.decision") == 1
    assert records[-1]["type"] == "run.end" and records[-1]["status"] == "succeeded"
    assert world.key_status() == "Inactive"
    assert not list((world.home / "runs" / run_id / "decisions").glob("*.json"))
    # rollback lists what it undoes, as --plan shows it, before it undoes it
    undone = world.cli_here("rollback", run_id, "--yes")
    assert "may have been applied" in undone.stdout, undone.stdout + undone.stderr
    assert undone.returncode == 0, undone.stdout + undone.stderr
    assert world.key_status() == "Active"
    assert world.iam.list_user_policies(UserName=world.user)["PolicyNames"] == []
