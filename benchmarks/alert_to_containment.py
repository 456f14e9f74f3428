#!/usr/bin/env python3
"""Alert to containment: how long from an alert's arrival to the last containment call done.

Prints p50/p95 for each execution mode next to the floor measured in the same run:

* **floor** — the same eight boto3 calls made by a plain script (a new IAM client, then
  GetUser, GetUserPolicy, PutUserPolicy, ListAccessKeys, UpdateAccessKey x2,
  GetLoginProfile, DeleteLoginProfile), in a warm process;
* **local** — ``InProcessStarter`` (what ``clampdown serve`` uses by default): the flow runs
  in this process against the local Prefect API on SQLite;
* **deployment** — ``DeploymentStarter``: ``run_deployment`` on ``prefect server`` backed by
  a throwaway PostgreSQL cluster, the ``respond`` deployment made from ``prefect.yaml``,
  executed by a worker process on the ``clampdown`` pool: ``clampdown worker`` (runs
  execute inside the worker; polls every 0.5 s) and, for comparison, Prefect's stock
  ``prefect worker start`` (a new Python process per run) polling every second
  (``--stock-poll 10`` for Prefect's default).

The runbook is ``benchmarks/runbooks/bench-contain-user.yaml`` (one
``aws.iam.revoke_credentials`` step, no human gate) against moto server in its own
process; each measurement contains a fresh user with two access keys and a password.
Each run starts with a signed ``POST /alerts/generic``, served by the alert router and
triage that ``clampdown serve`` mounts (uvicorn in this process, dedup state in SQLite),
in front of the mode's starter. The clock starts before the POST is sent and stops at the
ledger's ``step.end`` of the containment step (the ledger is written by whichever
process ran the step; same machine, same clock).
For deployment mode the time is also split by the flow run's states: created ->
claimed by a worker (Pending) -> flow engine running -> first step started -> done.

    python benchmarks/alert_to_containment.py [--runs 10] [--poll 0.5] [--stock-runs 3]
                                              [--stock-poll 1] [--skip-deployment]

Targets (docs/benchmarks.md): local p50 within 0.5 s of the floor; deployment p50 < 3 s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

from harness import (
    API_START_TIMEOUT,
    AWS_ENV,
    free_port,
    generic_alert,
    ledger_ts,
    logged_process,
    moto,
    pct,
    serve_app,
    wait_until,
)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # `tests.pg`: the same throwaway PostgreSQL cluster as the tests
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="clampdown-bench-prefect-"))
os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
HOME = Path(tempfile.mkdtemp(prefix="clampdown-bench-home-"))
os.environ["CLAMPDOWN_HOME"] = str(HOME)
LIBRARY = ROOT / "benchmarks" / "runbooks"
os.environ["CLAMPDOWN_LIBRARY"] = str(LIBRARY)
RUNBOOK = LIBRARY / "bench-contain-user.yaml"
STEP = "revoke"  # the last (only) containment step of RUNBOOK
# --- the AWS side -----------------------------------------------------------------------------


def iam_client(endpoint: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "iam",
        endpoint_url=endpoint,
        region_name="us-east-1",
        config=Config(retries={"mode": "standard", "total_max_attempts": 8}),
    )


def new_user(iam: Any, n: int) -> tuple[str, str]:
    """A user to contain: two active access keys and a console password (setup, not timed)."""
    name = f"bench-{os.getpid()}-{n}-{time.monotonic_ns()}"
    iam.create_user(UserName=name)
    for _ in range(2):
        iam.create_access_key(UserName=name)
    iam.create_login_profile(UserName=name, Password="Bench-Passw0rd!")
    return name, iam.get_user(UserName=name)["User"]["Arn"]


def contain_plainly(endpoint: str, user: str) -> None:
    """The floor: the runbook's eight calls, as a plain script makes them."""
    iam = iam_client(endpoint)
    iam.get_user(UserName=user)
    with contextlib.suppress(iam.exceptions.NoSuchEntityException):
        iam.get_user_policy(UserName=user, PolicyName="clampdown-quarantine")
    deny_all = {"Sid": "ClampdownQuarantine", "Effect": "Deny", "Action": "*", "Resource": "*"}
    document = {"Version": "2012-10-17", "Statement": [deny_all]}
    iam.put_user_policy(
        UserName=user, PolicyName="clampdown-quarantine", PolicyDocument=json.dumps(document)
    )
    for key in iam.list_access_keys(UserName=user)["AccessKeyMetadata"]:
        if key["Status"] == "Active":
            iam.update_access_key(UserName=user, AccessKeyId=key["AccessKeyId"], Status="Inactive")
    iam.get_login_profile(UserName=user)
    iam.delete_login_profile(UserName=user)


def assert_contained(iam: Any, user: str) -> None:
    keys = iam.list_access_keys(UserName=user)["AccessKeyMetadata"]
    if any(k["Status"] != "Inactive" for k in keys):
        raise SystemExit(f"user {user} still has an active key: the run did not contain it")


# --- measuring --------------------------------------------------------------------------------


def ledger_times(run_id: str, timeout: float = 120) -> dict[str, float]:
    """Wall-clock times of the run's ledger records once the run has ended."""
    path = HOME / "runs" / run_id / "ledger.jsonl"

    def ended() -> list[dict[str, Any]] | None:
        records = [json.loads(line) for line in path.read_text().splitlines()]
        return records if records and records[-1]["type"] == "run.end" else None

    records = wait_until(ended, timeout, f"run {run_id} to end")
    if records[-1].get("status") != "succeeded":
        raise SystemExit(f"run {run_id} did not succeed: {records[-1]}")
    times = {"run.start": ledger_ts(records[0])}
    for record in records:
        if record.get("step") == STEP and record["type"] in ("step.start", "step.end"):
            times[record["type"]] = ledger_ts(record)
    return times


def measure(
    runs: int, endpoint: str, start: Callable[[str], str]
) -> list[tuple[str, float, dict[str, float]]]:
    """``runs`` timed containments, each started by ``start(principal_arn) -> run_id``.

    One warm-up run first (first imports, first clients). Returns, per run, its id,
    the wall-clock start and the wall-clock marks: ``returned`` (the alert was
    answered), then the ledger's ``run.start``, ``step.start`` and ``step.end``.
    """
    iam = iam_client(endpoint)
    detail: list[tuple[str, float, dict[str, float]]] = []
    for n in range(runs + 1):
        user, arn = new_user(iam, n)
        time.sleep(0.05)  # let the previous run's background writes settle
        started = time.time()
        run_id = start(arn)
        returned = time.time()
        times = ledger_times(run_id)
        assert_contained(iam, user)
        if n:
            detail.append((run_id, started, {"returned": returned, **times}))
    return detail


def latencies(detail: list[tuple[str, float, dict[str, float]]]) -> list[float]:
    return [times["step.end"] - started for _, started, times in detail]


# --- the alert endpoint in front of a starter -------------------------------------------------

HMAC_SECRET = "bench-hmac-secret-0123456789abcdef"
TRIGGERS = """apiVersion: clampdown/v1
kind: TriggerSet
description: benchmark - every generic alert contains its principal
triggers:
  - name: bench-contain-user
    match: "alert.source == 'generic' and alert.principal"
    runbook: bench-contain-user
    inputs:
      principal_arn: "{{ alert.principal }}"
    dedup_key: "generic:{{ alert.id }}"
    dedup_window: 10m
"""


@contextlib.contextmanager
def alert_endpoint(starter: Any, logs: Path) -> Iterator[Callable[[str], str]]:
    """``POST /alerts/generic`` (the router and triage ``clampdown serve`` mounts) on
    uvicorn in a thread of this process, in front of ``starter``; yields ``post(arn) -> run_id``.
    """
    triggers = logs / f"triggers-{time.monotonic_ns()}.yaml"
    triggers.write_text(TRIGGERS)
    environment = {
        "CLAMPDOWN_TRIGGERS": str(triggers),
        "CLAMPDOWN_LIBRARY": str(LIBRARY),
        "CLAMPDOWN_STATE_URL": f"sqlite:///{logs / f'state-{time.monotonic_ns()}.sqlite3'}",
        "CLAMPDOWN_ALERT_HMAC_SECRET": HMAC_SECRET,
    }
    with contextlib.ExitStack() as stack:
        with mock.patch.dict(os.environ, environment):  # the app `clampdown serve` runs
            base, _app = stack.enter_context(serve_app(starter))
        url = f"{base}/alerts/generic"

        def post(arn: str) -> str:
            title = "Access keys used from an unknown network"
            body, headers = generic_alert(HMAC_SECRET, f"bench-{time.monotonic_ns()}", arn, title)
            request = urllib.request.Request(url, data=body, method="POST", headers=headers)
            with urllib.request.urlopen(request, timeout=30) as response:
                answer = json.loads(response.read())
            run_id = answer["alerts"][0].get("run_id")
            if response.status != 202 or not run_id:
                raise SystemExit(f"the alert did not start a run: {response.status} {answer}")
            return str(run_id)

        yield post


def floor(runs: int, endpoint: str) -> list[float]:
    iam = iam_client(endpoint)
    took = []
    for n in range(runs + 1):
        user, _ = new_user(iam, n)
        start = time.perf_counter()
        contain_plainly(endpoint, user)
        if n:
            took.append(time.perf_counter() - start)
        assert_contained(iam, user)
    return took


def line(label: str, values: list[float], floor_p50: float | None = None) -> str:
    p50, p95 = statistics.median(values), pct(values, 0.95)
    gap = f"   p50 - floor {p50 - floor_p50:+.3f} s" if floor_p50 is not None else ""
    return f"  {label:<34} p50 {p50:6.3f} s   p95 {p95:6.3f} s   (n={len(values)}){gap}"


# --- modes ------------------------------------------------------------------------------------


def local_mode(runs: int, endpoint: str, logs: Path) -> tuple[list[float], dict]:
    from clampdown.app.local_runs import InProcessStarter
    from clampdown_flows.prefect_api import local_api

    with local_api(timeout=API_START_TIMEOUT):
        starter = InProcessStarter()
        try:
            with alert_endpoint(starter, logs) as post:
                detail = measure(runs, endpoint, post)
        finally:
            starter.shutdown()
    parts: dict[str, list[float]] = {}
    for _run_id, started, times in detail:
        marks = [
            ("alert answered (202, run id)", times["returned"]),
            ("flow run created, runbook loaded (run.start)", times["run.start"]),
            ("first step started", times["step.start"]),
            ("containment calls done (step.end)", times["step.end"]),
        ]
        previous = started
        for name, mark in marks:
            parts.setdefault(name, []).append(mark - previous)
            previous = mark
    return latencies(detail), parts


def show(label: str, took: list[float], parts: dict[str, list[float]], floor_p50: float) -> None:
    print(line(label, took, floor_p50))
    for name, values in parts.items():
        print(f"      {name:<44} median {statistics.median(values):6.3f} s")


@contextlib.contextmanager
def scaled_stack(logs: Path, endpoint: str) -> Iterator[tuple[str, str, dict[str, str]]]:
    """PostgreSQL, `prefect server start` on it, `respond` deployed from prefect.yaml."""
    import psycopg
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from clampdown.app.cli_ops import deploy_from_file
    from tests.pg import Cluster, find_bin_dir

    bin_dir = find_bin_dir()
    if bin_dir is None:
        raise SystemExit("deployment mode needs PostgreSQL server binaries (initdb, pg_ctl)")
    cluster = Cluster(bin_dir)
    with contextlib.ExitStack() as stack:
        stack.callback(cluster.stop)
        cluster.start()
        with psycopg.connect(cluster.url, autocommit=True) as admin:
            admin.execute("CREATE DATABASE prefect")
        database = cluster.url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
        port = free_port()
        api_url = f"http://127.0.0.1:{port}/api"
        server_env = {
            **os.environ,
            "PREFECT_API_DATABASE_CONNECTION_URL": f"{database}/prefect",
            "PREFECT_UI_ENABLED": "false",
            "PREFECT_HOME": str(logs / "prefect-server"),
        }
        argv = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1"]
        stack.enter_context(
            logged_process([*argv, "--port", str(port)], logs / "server.log", env=server_env)
        )
        wait_until(
            lambda: urllib.request.urlopen(f"{api_url}/health", timeout=2).status == 200,
            90,
            "prefect server on PostgreSQL",
            log=logs / "server.log",
        )
        stack.enter_context(temporary_settings({PREFECT_API_URL: api_url}))
        deploy_from_file(ROOT / "prefect.yaml", "clampdown")
        worker_env = {
            **os.environ,
            **AWS_ENV,
            "AWS_ENDPOINT_URL": endpoint,
            "PREFECT_API_URL": api_url,
            "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "WARNING",
        }
        yield api_url, database, worker_env


def deployment_mode(
    label: str, runs: int, endpoint: str, argv: list[str], env: dict[str, str], logs: Path
) -> tuple[list[float], dict[str, list[float]]]:
    from clampdown.app.deployment import DeploymentStarter

    log = logs / f"{label.split()[0]}.log"
    workdir = logs / f"{label.split()[0]}-cwd"
    workdir.mkdir(exist_ok=True)
    with logged_process(argv, log, env=env, cwd=workdir):
        wait_until(lambda: "started" in log.read_text(), 90, f"{label} to start", log=log)
        starter = DeploymentStarter()
        with alert_endpoint(starter, logs) as post:
            detail = measure(runs, endpoint, post)
    return latencies(detail), segments(starter, detail)


def segments(
    starter: Any, detail: list[tuple[str, float, dict[str, float]]]
) -> dict[str, list[float]]:
    """Split each deployment-mode latency by the flow run's state timestamps."""
    from prefect.client.orchestration import get_client

    parts: dict[str, list[float]] = {}
    with get_client(sync_client=True) as client:
        for run_id, started, times in detail:
            states = client.read_flow_run_states(starter.flow_runs[run_id])
            first = {}
            for state in sorted(states, key=lambda s: s.timestamp):
                first.setdefault(state.type.value, state.timestamp.timestamp())
            marks = [
                ("alert answered (202; flow run created)", times["returned"]),
                ("claimed by a worker (Pending)", first.get("PENDING", times["returned"])),
                ("flow engine started (Running)", first.get("RUNNING", times["run.start"])),
                ("runbook loaded, first step started", times["step.start"]),
                ("containment calls done (step.end)", times["step.end"]),
            ]
            previous = started
            for name, mark in marks:
                parts.setdefault(name, []).append(mark - previous)
                previous = mark
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="timed runs per mode (default 10)")
    parser.add_argument(
        "--stock-runs", type=int, default=3, help="timed runs on a stock prefect worker (0: skip)"
    )
    parser.add_argument(
        "--poll", type=float, default=0.5, help="poll interval of `clampdown worker` (0.5)"
    )
    parser.add_argument(
        "--stock-poll",
        type=float,
        default=1.0,
        help="PREFECT_WORKER_QUERY_SECONDS of the stock worker (Prefect's default: 10)",
    )
    parser.add_argument("--skip-deployment", action="store_true", help="floor and local only")
    args = parser.parse_args()

    logs = Path(tempfile.mkdtemp(prefix="clampdown-bench-logs-"))
    os.environ.update(AWS_ENV)
    with moto(logs / "moto.log") as (endpoint, _pid):
        os.environ["AWS_ENDPOINT_URL"] = endpoint
        print(f"alert -> containment, {args.runs} timed runs per mode (logs in {logs})")
        floor_times = floor(args.runs, endpoint)
        floor_p50 = statistics.median(floor_times)
        print(line("floor: 8 boto3 calls, plain script", floor_times), flush=True)
        show("local (in-process, SQLite)", *local_mode(args.runs, endpoint, logs), floor_p50)
        if args.skip_deployment:
            return
        with scaled_stack(logs, endpoint) as (_api, _db, env):
            clampdown_worker = [
                sys.executable,
                "-c",
                "import typer; from clampdown.app.cli_ops import register; "
                "app = typer.Typer(); register(app); app()",
                "worker",
                "--poll",
                str(args.poll),
            ]
            results = [
                (
                    f"deployment: clampdown worker ({args.poll:g} s poll)",
                    *deployment_mode(
                        "clampdown-worker", args.runs, endpoint, clampdown_worker, env, logs
                    ),
                )
            ]
            if args.stock_runs:
                stock = [sys.executable, "-m", "prefect", "worker", "start", "--pool", "clampdown"]
                results.append(
                    (
                        f"deployment: prefect worker ({args.stock_poll:g} s poll)",
                        *deployment_mode(
                            "prefect-worker (stock)",
                            args.stock_runs,
                            endpoint,
                            stock,
                            {**env, "PREFECT_WORKER_QUERY_SECONDS": str(args.stock_poll)},
                            logs,
                        ),
                    )
                )
        for label, took, parts in results:
            show(label, took, parts, floor_p50)


if __name__ == "__main__":
    main()
