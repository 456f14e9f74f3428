#!/usr/bin/env python3
"""Throughput of one local serve: N incidents alerted at once, next to N boto3 threads.

Issue 15 asks that one ``clampdown serve`` contain N=32 incidents within 2.5x of the floor,
and answer each alert's 202 with a p95 under 0.5 s during the burst. This script builds
the process ``clampdown serve`` runs in local mode, in this process: a local Prefect API
(:func:`clampdown_flows.prefect_api.local_api`, a uvicorn subprocess on SQLite), one
:class:`~clampdown.app.local_runs.InProcessStarter` and serve's real app
(:func:`clampdown.app.serve.create_app`: the alert router and triage) under uvicorn on a
loopback port. In-process rather than ``clampdown serve`` as a subprocess so that the
profile (``--profile``) sees the runs' threads; what differs from the command is its
logging setup and the watcher that resumes stopped runs (one scan every 30 s).
Slack is not configured (no Slack observer, no channel notices).

Each repetition, interleaved so both meet the same machine load:

* **floor** — N threads, each with its own boto3 session (one shared botocore loader, as
  the actions do) and IAM client, making the runbook's eight calls for its own user
  (GetUser, GetUserPolicy, PutUserPolicy, ListAccessKeys, UpdateAccessKey x2,
  GetLoginProfile, DeleteLoginProfile), all released at once by a barrier; wall time
  from the release to the last call answered.
* **serve** — N users (two access keys and a password each, made before the clock starts),
  N signed ``POST /alerts/generic`` (one per user, distinct incidents) sent at once from a
  subprocess (the alert senders must not share this process's GIL), each on its own
  connection; runbook ``benchmarks/runbooks/bench-contain-user.yaml`` (one
  ``aws.iam.revoke_credentials`` step: the same eight calls). Wall time from the first
  POST sent to the last containment ``step.end`` in the ledgers (same machine, same
  clock); the 202 answers' latency; CPU seconds of this process and of the Prefect server
  subprocess (``/proc/<pid>/stat``) per run, until the last ``run.end`` and, for the
  server, also until it is idle again (its recorder finishing the burst's task runs).

Moto server runs in its own process. One warm-up alert runs before the first repetition
(first imports, first clients: a serve that has been up). Every user is checked contained.

    python benchmarks/serve_throughput.py [-n 32] [--reps 3] [--profile]
                                          [--keepalive 16] [--no-run-name] [--lean-server]
                                          [--state-sync-normal] [--pace K] [--tree DIR]

Also printed: each run's ledger marks (sent, answered, run.start, step.start, step.end,
run.end) as medians and p95 per repetition, and the state store's commits per alert in the
burst (writes waiting for the lock share one: :mod:`clampdown.core.state_store`).

``--profile`` (it costs CPU itself: take timings from runs without it), for the last
burst: CPU seconds per run of this process's threads by kind (``/proc/self/task``); the
functions most often on each kind's stack (inclusive) and at the top, from a thread that
samples every thread (``sys._current_frames``, every 5 ms); the same for the Prefect
server's busy threads (a ``sitecustomize`` put on the server's ``PYTHONPATH`` only); and
the Prefect API requests this process made, per run and route, with their mean latency.

What-ifs (changes tried from here, not shipped; said in the output): ``--keepalive``
connections kept alive by the Prefect clients (stock 8 of 16); ``--no-run-name`` (respond
without ``flow_run_name``: one PATCH less per run); ``--lean-server`` (the local Prefect
server without services local runs do not use); ``--state-sync-normal`` (the state store's SQLite
commits without an fsync each: how much of the 202 answer is those commits); ``--pace K``
(runs launched in the order their alerts were answered, at most K at a time in Prefect's
flow-run set-up before their ``run.start``; measured before serve's triage launched runs that
way itself, ``Launcher`` in :mod:`clampdown_flows.triage`: on today's tree it paces twice).

``--answer-path`` measures instead what answering one alert costs in this process, with
nothing else running: N alerts one after another through what ``POST /alerts/generic`` does
after authentication (the state store's ``first_seen`` of the delivery, then serve's
triage with a real ``InProcessStarter`` whose runs are never launched), ``--reps`` rounds:
wall and CPU (this thread) milliseconds per alert and the state store's commits per
alert. It runs the same on an older tree (``PYTHONPATH`` at a ``git archive`` copy), so
before/after compare the answer path's cost without the burst's load.

``--tree DIR`` (repeatable; ``git archive <rev> | tar -x -C DIR``) compares trees on the
same load: each repetition runs this script once per tree (``--reps 1``, the tree's
packages first on ``PYTHONPATH``, the what-if options passed on), in an order that rotates
each repetition; then each tree's table, with the Prefect API requests serve made per run
by route. Both trees are compiled to bytecode first. ``--trees-only``: only the trees given
(two commits, say, without the working tree's uncommitted edits).

    python benchmarks/serve_throughput.py -n 32 --reps 3 --tree /tmp/before

Targets (issue 15, docs/benchmarks.md): wall time within 2.5x of the floor; 202 p95 < 0.5 s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from harness import (
    API_START_TIMEOUT,
    AWS_ENV,
    cpu_seconds,
    generic_alert,
    ledger,
    ledger_ts,
    moto,
    pct,
    serve_app,
    subprocess_of,
    wait_until,
)

ROOT = Path(__file__).resolve().parent.parent
LIBRARY = ROOT / "benchmarks" / "runbooks"
STEP = "revoke"  # the containment step of bench-contain-user.yaml
HMAC_SECRET = "bench-throughput-hmac-secret-0123456789"
TITLE = "Access keys used from an unknown network"
TRIGGERS = """\
apiVersion: clampdown/v1
kind: TriggerSet
description: benchmark - every generic alert contains its principal (one incident per alert)
triggers:
  - name: bench-contain-user
    match: "alert.source == 'generic' and alert.principal"
    runbook: bench-contain-user
    inputs:
      principal_arn: "{{ alert.principal }}"
    dedup_key: "generic:{{ alert.id }}"
    dedup_window: 10m
    max_concurrent_runs: 1000
"""
QUARANTINE = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "ClampdownQuarantine", "Effect": "Deny", "Action": "*", "Resource": "*"}
        ],
    }
)


# --- helpers -------------------------------------------------------------------------------------


def state_commits(store: Any) -> list[int]:
    """A list that grows by one at each commit of serve's state store (every write is a
    commit of its own, or shares one with the writes of its batch)."""
    import sqlalchemy as sa

    counted: list[int] = []
    sa.event.listen(store.engine, "commit", lambda _conn: counted.append(1))
    return counted


def wait_idle(pid: int, quiet: float = 0.05, window: float = 0.5, timeout: float = 60) -> float:
    """Wait until ``pid`` uses under ``quiet`` CPU-s/s over ``window`` s; seconds waited."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        before = cpu_seconds(pid)
        time.sleep(window)
        if (cpu_seconds(pid) - before) / window < quiet:
            break
    return time.monotonic() - start


# --- the AWS side --------------------------------------------------------------------------------


def iam_client(endpoint: str, loader: Any = None) -> Any:
    """An IAM client on a session of its own (boto3's default session is not thread-safe)."""
    import boto3
    from botocore.config import Config

    session = boto3.session.Session(region_name="us-east-1")
    if loader is not None:
        session._session.register_component("data_loader", loader)
    config = Config(retries={"mode": "standard", "total_max_attempts": 8})
    return session.client("iam", endpoint_url=endpoint, config=config)


def new_users(iam: Any, count: int, tag: str) -> list[tuple[str, str]]:
    """``count`` users to contain, each with two active keys and a password (not timed)."""
    users = []
    for n in range(count):
        name = f"bench-{tag}-{n}"
        iam.create_user(UserName=name)
        for _ in range(2):
            iam.create_access_key(UserName=name)
        iam.create_login_profile(UserName=name, Password="Bench-Passw0rd!")
        users.append((name, iam.get_user(UserName=name)["User"]["Arn"]))
    return users


def contain_plainly(iam: Any, user: str) -> None:
    """The floor: the runbook's eight calls, as a plain script makes them."""
    iam.get_user(UserName=user)
    with contextlib.suppress(iam.exceptions.NoSuchEntityException):
        iam.get_user_policy(UserName=user, PolicyName="clampdown-quarantine")
    iam.put_user_policy(UserName=user, PolicyName="clampdown-quarantine", PolicyDocument=QUARANTINE)
    for key in iam.list_access_keys(UserName=user)["AccessKeyMetadata"]:
        if key["Status"] == "Active":
            iam.update_access_key(UserName=user, AccessKeyId=key["AccessKeyId"], Status="Inactive")
    iam.get_login_profile(UserName=user)
    iam.delete_login_profile(UserName=user)


def assert_contained(iam: Any, users: list[tuple[str, str]]) -> None:
    for user, _ in users:
        keys = iam.list_access_keys(UserName=user)["AccessKeyMetadata"]
        if any(k["Status"] != "Inactive" for k in keys):
            raise SystemExit(f"user {user} still has an active key: it was not contained")


def floor(
    endpoint: str, users: list[tuple[str, str]], loader: Any, moto_pid: int
) -> dict[str, float]:
    """N threads, one user each, released together: wall time, CPU of this process and moto."""
    barrier = threading.Barrier(len(users) + 1)
    ends: list[float] = []
    errors: list[BaseException] = []

    def one(user: str) -> None:
        barrier.wait()
        try:
            contain_plainly(iam_client(endpoint, loader), user)
        except BaseException as exc:  # reported below, not swallowed
            errors.append(exc)
        ends.append(time.perf_counter())

    threads = [threading.Thread(target=one, args=(u,)) for u, _ in users]
    for thread in threads:
        thread.start()
    cpu, moto = cpu_seconds(), cpu_seconds(moto_pid)
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    cpu, moto = cpu_seconds() - cpu, cpu_seconds(moto_pid) - moto
    if errors:
        raise SystemExit(f"the floor failed: {errors[0]!r}")
    return {
        "wall": max(ends) - start,
        "cpu_per_run": cpu / len(users),
        "moto_per_run": moto / len(users),
    }


# --- the alert sender (a subprocess) -------------------------------------------------------------


def role_sender(url: str, arns_file: str) -> None:
    """Wait for ``go`` on stdin, then POST one alert per ARN at once, each on a connection
    of its own; print each one's send time, answer time, status and run id (JSON)."""
    arns = json.loads(Path(arns_file).read_text())
    barrier = threading.Barrier(len(arns))
    results: list[dict[str, Any]] = [{} for _ in arns]

    def send(index: int, arn: str) -> None:
        alert_id = f"burst-{time.time_ns()}-{index}"
        body, headers = generic_alert(HMAC_SECRET, alert_id, arn, TITLE)
        request = urllib.request.Request(
            f"{url}/alerts/generic", data=body, method="POST", headers=headers
        )
        barrier.wait()
        sent = time.time()
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                answer = json.loads(response.read())
                status = response.status
        except Exception as exc:
            answer, status = {"error": repr(exc)}, 0
        alerts = answer.get("alerts") or [{}]
        results[index] = {
            "sent": sent,
            "answered": time.time(),
            "status": status,
            "run_id": alerts[0].get("run_id"),
            "answer": answer if status != 202 else None,
        }

    threads = [threading.Thread(target=send, args=(i, a)) for i, a in enumerate(arns)]
    print("ready", flush=True)
    sys.stdin.readline()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(json.dumps(results), flush=True)


def this_script(role: str, *args: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--role", role, *args]


# --- sampling profiler ---------------------------------------------------------------------------


def thread_kind(name: str) -> str:
    for prefix, kind in (
        ("clampdown-runs", "runs' event loop"),
        ("clampdown-step", "step threads (executor)"),
        ("AnyIO worker", "triage threads (anyio)"),
        ("uvicorn", "uvicorn (serve's HTTP loop)"),
        ("MainThread", "main (benchmark)"),
    ):
        if name.startswith(prefix):
            return kind
    return "other: " + name.rstrip("0123456789_-")


class Sampler:
    """Every ``every`` s, each thread's stack (but this one's): inclusive and leaf counts of
    ``file:function`` by kind of thread. The sampler needs the GIL to sample, so a thread
    holding it long is seen late; enough to rank where the time goes."""

    def __init__(self, every: float = 0.005) -> None:
        self.every = every
        self.samples: Counter[str] = Counter()
        self.inclusive: dict[str, Counter[str]] = {}
        self.leaf: dict[str, Counter[str]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Sampler:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        me = threading.get_ident()
        while not self._stop.wait(self.every):
            names = {t.ident: t.name for t in threading.enumerate()}
            for ident, frame in sys._current_frames().items():
                if ident == me:
                    continue
                kind = thread_kind(names.get(ident, "?"))
                self.samples[kind] += 1
                seen: set[str] = set()
                leaf = None
                walk: Any = frame
                while walk is not None:
                    code = walk.f_code
                    where = f"{_short(code.co_filename)}:{code.co_name}"
                    leaf = leaf or where
                    seen.add(where)
                    walk = walk.f_back
                self.inclusive.setdefault(kind, Counter()).update(seen)
                self.leaf.setdefault(kind, Counter())[leaf or "?"] += 1

    def report(self, top: int) -> None:
        for kind, total in self.samples.most_common():
            if kind.startswith(("main", "other")) or not total:
                continue
            print(f"\n  {kind}: {total} samples")
            print("    on the stack (inclusive)")
            for where, count in self.inclusive[kind].most_common(top):
                print(f"      {100 * count / total:5.1f} %  {where}")
            print("    at the top (exclusive)")
            for where, count in self.leaf[kind].most_common(top // 2):
                print(f"      {100 * count / total:5.1f} %  {where}")


class ApiCalls:
    """Prefect API requests made by this process (its clients' ``send``), by route: count
    and total seconds until answered. Counts only while ``counting`` is set."""

    def __init__(self) -> None:
        import re

        from prefect.client.base import PrefectHttpxAsyncClient, PrefectHttpxSyncClient

        self.counting = False
        self.calls: Counter[str] = Counter()
        self.seconds: Counter[str] = Counter()
        ids = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
        calls = self

        def route(request: Any) -> str:
            return f"{request.method} {ids.sub('{id}', request.url.path.split('/api', 1)[-1])}"

        async_send, sync_send = PrefectHttpxAsyncClient.send, PrefectHttpxSyncClient.send

        async def counted_async(self: Any, request: Any, *a: Any, **k: Any) -> Any:
            start = time.perf_counter()
            try:
                return await async_send(self, request, *a, **k)
            finally:
                calls.note(route(request), time.perf_counter() - start)

        def counted_sync(self: Any, request: Any, *a: Any, **k: Any) -> Any:
            start = time.perf_counter()
            try:
                return sync_send(self, request, *a, **k)
            finally:
                calls.note(route(request), time.perf_counter() - start)

        PrefectHttpxAsyncClient.send = counted_async  # type: ignore[method-assign]
        PrefectHttpxSyncClient.send = counted_sync  # type: ignore[method-assign]

    def note(self, route: str, took: float) -> None:
        if self.counting:
            self.calls[route] += 1
            self.seconds[route] += took

    def report(self, runs: int) -> None:
        total = sum(self.calls.values())
        print(f"\n  Prefect API requests from this process: {total / runs:.1f} per run")
        for name, count in self.calls.most_common():
            mean = self.seconds[name] / count
            print(f"    {count / runs:5.2f} per run  mean {1000 * mean:6.0f} ms  {name}")


def thread_cpu() -> dict[str, float]:
    """CPU seconds of this process's threads by kind (``/proc/self/task/<tid>/stat``)."""
    kinds = {t.native_id: thread_kind(t.name) for t in threading.enumerate()}
    found: Counter[str] = Counter()
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(OSError):
            found[kinds.get(int(task.name), "other: not a Python thread")] += cpu_seconds(
                f"self/task/{task.name}"
            )
    return dict(found)


@contextlib.contextmanager
def profiling(sampler: Sampler, api: ApiCalls, cpu: dict[str, float]) -> Iterator[None]:
    """Stacks sampled, API requests counted and CPU by thread kind (into ``cpu``) meanwhile.
    Threads that ended meanwhile are not counted (the pools here keep theirs)."""
    api.counting = True
    before = thread_cpu()
    try:
        with sampler:
            yield
    finally:
        api.counting = False
        after = thread_cpu()
        for kind, seconds in after.items():
            cpu[kind] = cpu.get(kind, 0.0) + seconds - before.get(kind, 0.0)


@contextlib.contextmanager
def counting(api: ApiCalls) -> Iterator[None]:
    """Prefect API requests counted meanwhile (no sampling: ``--tree``'s children)."""
    api.counting = True
    try:
        yield
    finally:
        api.counting = False


LEAN_OFF = (
    "triggers",
    "scheduler",
    "late_runs",
    "foreman",
    "cancellation_cleanup",
    "repossessor",
    "cleanup_reconciler",
)


def what_if(args: argparse.Namespace) -> list[str]:
    """Changes tried from this script, not the shipped behaviour (said in the output)."""
    said = []
    if args.keepalive:
        import httpx

        stock = httpx.Limits

        class Limits(stock):  # type: ignore[misc, valid-type]
            def __init__(self, **kwargs: Any) -> None:
                if kwargs.get("max_connections") == 16 and kwargs.get("keepalive_expiry") == 25:
                    kwargs["max_keepalive_connections"] = args.keepalive  # Prefect's client
                super().__init__(**kwargs)

        httpx.Limits = Limits  # type: ignore[misc]
        said.append(
            f"WHAT-IF: the Prefect clients keep {args.keepalive} connections alive (stock: 8 of 16)"
        )
    if args.lean_server:
        off = [f"PREFECT_SERVER_SERVICES_{name.upper()}_ENABLED" for name in LEAN_OFF]
        os.environ.update(dict.fromkeys(off, "false"))
        said.append(
            "WHAT-IF: the local Prefect server without the services local runs do not need: "
            + ", ".join(LEAN_OFF)
        )
    if args.state_sync_normal:
        import sqlalchemy as sa

        import clampdown.core.state_store as state_store

        stock_engine = state_store._sqlite_engine

        def engine(url: Any) -> Any:
            made = stock_engine(url)

            @sa.event.listens_for(made, "connect")
            def _normal(dbapi_connection: Any, _record: Any) -> None:
                dbapi_connection.execute("PRAGMA synchronous=NORMAL")

            return made

        state_store._sqlite_engine = engine
        said.append(
            "WHAT-IF: the state store's SQLite commits are not fsync'd (synchronous=NORMAL in "
            "WAL: safe from a killed process, not from power loss; 2 commits per alert since "
            "the claim records the start)"
        )
    if args.pace:
        pace_launches(args.pace)
        said.append(
            f"WHAT-IF: runs launched in the order their alerts were answered, at most "
            f"{args.pace} at a time before their run.start (Prefect's flow-run set-up), the "
            "next one when one writes run.start (or after 2 s); the 202 does not wait"
        )
    if args.no_run_name:
        import clampdown_flows.respond as respond_module

        respond_module.respond.flow_run_name = None
        said.append(
            "WHAT-IF: respond has no flow_run_name (Prefect's PATCH /flow_runs/{id} per run "
            "dropped; runs keep Prefect's generated names)"
        )
    return said


def pace_launches(at_once: int, cap: float = 2.0) -> None:
    """``--pace``: :meth:`InProcessStarter._launch` through a FIFO that lets ``at_once`` runs
    be in Prefect's set-up (before their ``run.start``) at a time. Why try it: a burst's
    runs launched together share a CPU-bound Prefect server, so the first alert's run
    waits for everyone's round trips; in order, the first alerts' runs contain first."""
    import queue

    from clampdown.app.local_runs import InProcessStarter

    stock = InProcessStarter._launch
    waiting: queue.Queue[tuple[Any, Any]] = queue.Queue()

    def started(starter: Any, prepared: Any) -> bool:
        path = starter.conf.paths.run(prepared.run_id).ledger
        return path.is_file() and path.stat().st_size > 0

    def launcher() -> None:
        in_setup: list[tuple[Any, Any, float]] = []
        while True:
            in_setup = [
                (s, p, t)
                for s, p, t in in_setup
                if not started(s, p) and time.monotonic() - t < cap
            ]
            if len(in_setup) >= at_once:
                time.sleep(0.005)
                continue
            try:
                starter, prepared = waiting.get(timeout=0.005)
            except queue.Empty:
                continue
            stock(starter, prepared)
            in_setup.append((starter, prepared, time.monotonic()))

    threading.Thread(target=launcher, name="bench-pace", daemon=True).start()
    InProcessStarter._launch = lambda self, prepared: waiting.put((self, prepared))  # type: ignore[method-assign]


SERVER_SAMPLER = """\
# Written by benchmarks/serve_throughput.py --profile, for the Prefect server process only:
# every 5 ms each thread's stack; inclusive counts of file:function written to OUT every 1 s.
import json, os, sys, threading, time
from collections import Counter

OUT = os.environ.pop("CLAMPDOWN_BENCH_SERVER_SAMPLES", "")
IDLE = ("selectors.py:select", "threading.py:wait", "aiosqlite/core.py:_connection_worker_thread",
        "threading.py:_wait_for_tstate_lock", "queue.py:get")


def _sample():
    counts, total = Counter(), 0
    me, last = threading.get_ident(), time.monotonic()
    while True:
        time.sleep(0.005)
        for ident, frame in sys._current_frames().items():
            if ident == me:
                continue
            seen, leaf = set(), None
            while frame is not None:
                where = (frame.f_code.co_filename.rsplit("site-packages/", 1)[-1]
                         + ":" + frame.f_code.co_name)
                leaf = leaf or where
                seen.add(where)
                frame = frame.f_back
            if leaf is None or leaf.endswith(IDLE):
                continue  # busy samples only: a thread waiting for work is not counted
            total += 1
            counts.update(seen)
            counts["leaf " + leaf] += 1
        if time.monotonic() - last > 1:
            last = time.monotonic()
            with open(OUT + ".tmp", "w") as out:
                json.dump({"total": total, "counts": counts}, out)
            os.replace(OUT + ".tmp", OUT)


if OUT:
    threading.Thread(target=_sample, name="bench-sampler", daemon=True).start()
"""


class ServerSamples:
    """Stack samples of the Prefect server subprocess (``--profile``): a ``sitecustomize``
    on its ``PYTHONPATH`` samples its threads and writes cumulative counts to a file."""

    def __init__(self, logs: Path) -> None:
        self.folder = logs / "server-sampler"
        self.folder.mkdir()
        (self.folder / "sitecustomize.py").write_text(SERVER_SAMPLER)
        self.out = logs / "server-samples.json"

    @contextlib.contextmanager
    def injected(self) -> Iterator[None]:
        """The environment the server starts with (only it: removed once it started)."""
        saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "CLAMPDOWN_BENCH_SERVER_SAMPLES")}
        path = os.pathsep.join(p for p in (str(self.folder), saved["PYTHONPATH"]) if p)
        os.environ.update({"PYTHONPATH": path, "CLAMPDOWN_BENCH_SERVER_SAMPLES": str(self.out)})
        try:
            yield
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def read(self) -> dict[str, Any]:
        time.sleep(1.2)  # the sampler's next write
        try:
            return json.loads(self.out.read_text())
        except (OSError, ValueError):
            return {"total": 0, "counts": {}}

    @staticmethod
    def report(before: dict[str, Any], after: dict[str, Any], top: int) -> None:
        total = after["total"] - before["total"]
        if total <= 0:
            print("\n  Prefect server: no samples (the sampler did not start)")
            return
        counts = Counter(after["counts"])
        counts.subtract(before["counts"])
        print(f"\n  Prefect server process: {total} busy samples (threads not waiting)")
        for title, leaves in (("on the stack (inclusive)", False), ("at the top", True)):
            print(f"    {title}")
            shown = 0
            for where, count in counts.most_common():
                if where.startswith("leaf ") != leaves or "threading.py" in where:
                    continue
                print(f"      {100 * count / total:5.1f} %  {where.removeprefix('leaf ')}")
                shown += 1
                if shown == (top if not leaves else top // 2):
                    break


def _short(filename: str) -> str:
    for marker in ("site-packages/", "/work/main/", "/lib/python3"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


# --- the serve process ---------------------------------------------------------------------------


def environment(logs: Path, endpoint: str) -> Path:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_HOME", str(logs / "prefect"))
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
    home = logs / "home"
    triggers = logs / "triggers.yaml"
    triggers.write_text(TRIGGERS)
    os.environ.update(
        {
            **AWS_ENV,
            "AWS_ENDPOINT_URL": endpoint,
            "CLAMPDOWN_HOME": str(home),
            "CLAMPDOWN_LIBRARY": str(LIBRARY),
            "CLAMPDOWN_TRIGGERS": str(triggers),
            "CLAMPDOWN_STATE_URL": f"sqlite:///{logs / 'state.sqlite3'}",
            "CLAMPDOWN_ALERT_HMAC_SECRET": HMAC_SECRET,
        }
    )
    for name in list(os.environ):
        if name.startswith("CLAMPDOWN_SLACK_") or name == "PREFECT_API_URL":
            os.environ.pop(name)
    return home


def ended(home: Path, run_id: str) -> bool:
    path = home / "runs" / run_id / "ledger.jsonl"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return False
    return b'"type":"run.end"' in data or b'"type": "run.end"' in data


def all_ended(home: Path, run_ids: list[str]) -> Callable[[], bool]:
    """A check that reads only the ledgers of runs not seen ended yet: the wait runs in the
    serve process, whose CPU is measured (reading all N ledgers every 10 ms cost about
    0.004 CPU-s per run of a 32-alert burst before)."""
    pending = set(run_ids)

    def check() -> bool:
        pending.difference_update([r for r in pending if ended(home, r)])
        return not pending

    return check


def burst(
    url: str, home: Path, arns: list[str], logs: Path, pids: dict[str, int], profile: Any
) -> dict[str, Any]:
    """N alerts at once from a subprocess; waits for every run's ``run.end``."""
    arns_file = logs / f"arns-{time.time_ns()}.json"
    arns_file.write_text(json.dumps(arns))
    argv = this_script("sender", url, str(arns_file))
    with subprocess_of(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE) as sender:
        assert sender.stdin is not None and sender.stdout is not None
        if sender.stdout.readline().strip() != "ready":
            raise SystemExit("the alert sender did not start")
        cpu = {name: cpu_seconds(pid) for name, pid in pids.items()}
        with profile if profile is not None else contextlib.nullcontext():
            sender.stdin.write("go\n")
            sender.stdin.flush()
            results = json.loads(sender.stdout.readline())
            bad = [r for r in results if r.get("status") != 202 or not r.get("run_id")]
            if bad:
                raise SystemExit(f"{len(bad)} alerts did not start a run, e.g. {bad[0]}")
            run_ids = [r["run_id"] for r in results]
            wait_until(all_ended(home, run_ids), 600, "the runs", 0.02)
            cpu_end = {name: cpu_seconds(pid) for name, pid in pids.items()}
    drained = wait_idle(pids["server"])
    cpu_drained = cpu_seconds(pids["server"])
    return {
        "results": results,
        "ledgers": {r: ledger(home, r) for r in run_ids},
        "cpu": {
            **{name: cpu_end[name] - cpu[name] for name in pids},
            "server_drained": cpu_drained - cpu["server"],
            "drain_wait": drained,
        },
    }


def figures(out: dict[str, Any]) -> dict[str, Any]:
    """Wall time, answer latencies and per-run ledger marks of one burst."""
    first = min(r["sent"] for r in out["results"])
    answers = [r["answered"] - r["sent"] for r in out["results"]]
    marks: dict[str, list[float]] = {}
    step_ends = []
    by_run = {r["run_id"]: r for r in out["results"]}
    for run_id, records in out["ledgers"].items():
        if records[-1].get("status") != "succeeded":
            raise SystemExit(f"run {run_id} did not succeed: {records[-1]}")
        times = {"run.start": ledger_ts(records[0]), "run.end": ledger_ts(records[-1])}
        for record in records:
            if record.get("step") == STEP and record["type"] in ("step.start", "step.end"):
                times[record["type"]] = ledger_ts(record)
        step_ends.append(times["step.end"])
        sent = by_run[run_id]["sent"]
        previous = sent
        for name, mark in (
            ("alert sent -> 202 answered", by_run[run_id]["answered"]),
            ("answered -> run.start", times["run.start"]),
            ("run.start -> step.start", times["step.start"]),
            ("step.start -> step.end (8 calls)", times["step.end"]),
            ("step.end -> run.end", times["run.end"]),
        ):
            marks.setdefault(name, []).append(mark - previous)
            previous = mark
        marks.setdefault("alert sent -> step.end", []).append(times["step.end"] - sent)
    count = len(out["results"])
    cpu = out["cpu"]
    starts = [
        ledger_ts(r) for rs in out["ledgers"].values() for r in rs if r["type"] == "step.start"
    ]
    return {
        "wall": max(step_ends) - first,
        "answers": answers,
        "marks": marks,
        "cpu_serve": cpu["serve"] / count,
        "cpu_server": cpu["server"] / count,
        "cpu_server_drained": cpu["server_drained"] / count,
        "cpu_moto": cpu["moto"] / count,
        "drain_wait": cpu["drain_wait"],
        "first_step_start": min(starts) - first,
        "step_starts": sorted(t - first for t in starts),
        "commits": out["commits"] / count,
    }


def run(args: argparse.Namespace) -> None:
    from clampdown.app.local_runs import STEP_THREADS, InProcessStarter
    from clampdown_flows.prefect_api import local_api, local_server_class

    logs = Path(tempfile.mkdtemp(prefix="clampdown-bench-throughput-"))
    with contextlib.ExitStack() as stack:
        endpoint, moto_pid = stack.enter_context(moto(logs / "moto.log"))
        home = environment(logs, endpoint)
        said = what_if(args)  # before the Prefect server starts: it takes this environment
        server_samples = ServerSamples(logs) if args.profile else None
        with server_samples.injected() if server_samples else contextlib.nullcontext():
            stack.enter_context(local_api(timeout=API_START_TIMEOUT))
        server_pid = local_server_class()._instances[None].server_process.pid
        pids = {"serve": os.getpid(), "server": server_pid, "moto": moto_pid}
        starter = InProcessStarter()
        stack.callback(starter.shutdown)
        url, app = stack.enter_context(serve_app(starter))
        commits = state_commits(app.state.store)
        from botocore.loaders import create_loader

        loader = create_loader()
        iam = iam_client(endpoint, loader)
        print(
            f"N={args.n} incidents at once in one local serve vs N boto3 threads; "
            f"{args.reps} repetitions; {os.cpu_count()} CPUs, load average "
            f"{os.getloadavg()[0]:.1f} (shared machine); STEP_THREADS {STEP_THREADS}; "
            f"logs in {logs}",
            flush=True,
        )
        warm = new_users(iam, 1, "warm")
        burst(url, home, [warm[0][1]], logs, pids, None)
        floor(endpoint, new_users(iam, 2, "warmfloor"), loader, moto_pid)
        assert_contained(iam, warm)
        rows = []
        api = ApiCalls() if args.profile or args.json else None
        last, cpu_by_thread = Sampler(), {}
        for rep in range(args.reps):
            users = new_users(iam, args.n, f"floor{rep}")
            base = floor(endpoint, users, loader, moto_pid)
            assert_contained(iam, users)
            users = new_users(iam, args.n, f"serve{rep}")
            wait_idle(server_pid)  # the previous burst's records written
            last, cpu_by_thread = Sampler(), {}
            watch = (
                profiling(last, api, cpu_by_thread)
                if args.profile and api is not None
                else counting(api)
                if api is not None
                else None
            )
            server_before = server_samples.read() if server_samples else None
            committed = len(commits)
            out = burst(url, home, [arn for _, arn in users], logs, pids, watch)
            out["commits"] = len(commits) - committed
            server_after = server_samples.read() if server_samples else None
            assert_contained(iam, users)
            got = figures(out)
            rows.append((base, got))
            print(
                f"  rep {rep + 1}: floor {base['wall']:.2f} s, serve {got['wall']:.2f} s "
                f"({got['wall'] / base['wall']:.1f}x); 202 p95 {pct(got['answers'], 0.95):.2f} s "
                f"(load {os.getloadavg()[0]:.1f})",
                flush=True,
            )
        for line in said:
            print(line)
        report(args.n, rows)
        if args.json:
            per_run = {k: v / (args.n * args.reps) for k, v in api.calls.items()} if api else {}
            Path(args.json).write_text(json.dumps({"rows": rows, "requests": per_run}))
        if api is not None:
            print(f"\nwhere the time goes (the last burst; API requests of all {args.reps}):")
            api.report(args.n * args.reps)
            print("\n  CPU-s per run of this process's threads during the last burst:")
            for kind, seconds in sorted(cpu_by_thread.items(), key=lambda kv: -kv[1]):
                if seconds > 0.0005 * args.n:
                    print(f"    {seconds / args.n:6.3f}  {kind}")
            last.report(args.top)
            if server_samples is not None:
                server_samples.report(server_before, server_after, args.top)


def answer_path(args: argparse.Namespace) -> None:
    """``--answer-path``: the 202's work per alert in this process, alert after alert."""

    from clampdown.app.local_runs import InProcessStarter
    from clampdown.core.alert import Alert
    from clampdown.core.settings import settings
    from clampdown.core.state_store import StateStore, default_url
    from clampdown_flows.prefect_api import local_api
    from clampdown_flows.triage import TriggerTriage

    logs = Path(tempfile.mkdtemp(prefix="clampdown-bench-answer-"))
    environment(logs, "http://127.0.0.1:9")  # no AWS call is made: no run is launched
    conf = settings()
    with local_api(timeout=API_START_TIMEOUT):
        starter = InProcessStarter(conf)
        starter._submit = lambda *_a, **_k: None  # type: ignore[method-assign]  # never run
        store = StateStore(default_url(conf))
        commits = state_commits(store)
        triage = TriggerTriage(
            conf.triggers or conf.library / "triggers.yaml",
            store,
            starter,
            conf.ledger_path,
            library=conf.library,
        )
        print(
            f"answer path: {args.n} alerts one after another, {args.reps} rounds (one warm-up "
            f"alert first); load average {os.getloadavg()[0]:.1f}; logs in {logs}",
            flush=True,
        )
        _answer_round(triage, store, commits, Alert, "warm", 1)
        rounds = [
            _answer_round(triage, store, commits, Alert, f"r{r}", args.n) for r in range(args.reps)
        ]
        print("\n| figure (per alert) | per round |\n|---|---|")
        for name, key, form in (
            ("wall ms, median", "wall_p50", "{:.1f}"),
            ("wall ms, p95", "wall_p95", "{:.1f}"),
            ("CPU ms (this thread), median", "cpu_p50", "{:.1f}"),
            ("state-store commits", "commits", "{:.2f}"),
        ):
            print(f"| {name} | {' / '.join(form.format(r[key]) for r in rounds)} |")
        print(f"load average at the end {os.getloadavg()[0]:.1f}")
        store.close()
        starter.shutdown()


def _answer_round(
    triage: Any, store: Any, commits: list[int], alert_class: Any, tag: str, n: int
) -> dict[str, float]:
    from datetime import UTC, datetime

    walls, cpus = [], []
    del commits[:]
    for k in range(n):
        alert = alert_class(
            source="generic",
            id=f"{tag}-{k}",
            title=TITLE,
            severity="critical",
            principal=f"arn:aws:iam::123456789012:user/answer-{tag}-{k}",
            observed_at=datetime.now(UTC),
        )
        wall, cpu = time.perf_counter(), time.thread_time()
        if not store.first_seen(f"generic:{tag}-{k}", 600):
            raise SystemExit("the delivery was seen before")
        outcome = triage(alert)
        cpus.append((time.thread_time() - cpu) * 1000)
        walls.append((time.perf_counter() - wall) * 1000)
        if outcome.status != "started":
            raise SystemExit(f"alert {alert.id} did not start a run: {outcome}")
    return {
        "wall_p50": statistics.median(walls),
        "wall_p95": pct(walls, 0.95),
        "cpu_p50": statistics.median(cpus),
        "commits": len(commits) / n,
    }


def report(n: int, rows: list[tuple[dict[str, float], dict[str, Any]]]) -> None:
    def cells(values: list[float], form: str = "{:.2f}") -> str:
        return " / ".join(form.format(v) for v in values)

    print(f"\n| figure (N={n}) | per repetition |")
    print("|---|---|")
    table = [
        ("floor: N boto3 threads, wall s", cells([b["wall"] for b, _ in rows])),
        ("serve: first POST -> last step.end, wall s", cells([g["wall"] for _, g in rows])),
        ("ratio serve / floor (target <= 2.5)", cells([g["wall"] / b["wall"] for b, g in rows])),
        ("first POST -> first step.start, s", cells([g["first_step_start"] for _, g in rows])),
        ("first POST -> 4th / 8th / 16th / last step.start, s", " / ".join(
            ",".join(f"{g['step_starts'][k]:.2f}" for k in (3, 7, 15, -1)) if len(
                g["step_starts"]) > 15 else "-" for _, g in rows)),
        ("202 answer p50, s", cells([statistics.median(g["answers"]) for _, g in rows])),
        ("202 answer p95 (target < 0.5), s", cells([pct(g["answers"], 0.95) for _, g in rows])),
        ("202 answer max, s", cells([max(g["answers"]) for _, g in rows])),
        ("state-store commits per alert (burst, to the last run.end)", cells(
            [g["commits"] for _, g in rows])),
        ("CPU-s per run, serve process (to last run.end)", cells(
            [g["cpu_serve"] for _, g in rows], "{:.3f}")),
        ("CPU-s per run, Prefect server (to last run.end)", cells(
            [g["cpu_server"] for _, g in rows], "{:.3f}")),
        ("CPU-s per run, Prefect server (until idle)", cells(
            [g["cpu_server_drained"] for _, g in rows], "{:.3f}")),
        ("  Prefect server busy after the last run.end, s", cells(
            [g["drain_wait"] for _, g in rows], "{:.1f}")),
        ("CPU-s per run, moto server (serve burst)", cells(
            [g["cpu_moto"] for _, g in rows], "{:.3f}")),
        ("CPU-s per run, floor (N threads)", cells([b["cpu_per_run"] for b, _ in rows], "{:.3f}")),
        ("CPU-s per run, moto server (floor)", cells(
            [b["moto_per_run"] for b, _ in rows], "{:.3f}")),
        ("CPU-s per run, all processes: serve / floor", cells(
            [(g["cpu_serve"] + g["cpu_server_drained"] + g["cpu_moto"])
             / (b["cpu_per_run"] + b["moto_per_run"]) for b, g in rows], "{:.1f}x")),
    ]  # fmt: skip
    for name, value in table:
        print(f"| {name} | {value} |")
    print("\nper-run ledger marks, median (p95) over the runs of each repetition, s:")
    for name in rows[0][1]["marks"]:
        values = [
            f"{statistics.median(g['marks'][name]):.2f} ({pct(g['marks'][name], 0.95):.2f})"
            for _, g in rows
        ]
        print(f"  {name:<36} {' / '.join(values)}")


def what_if_flags(args: argparse.Namespace) -> list[str]:
    """The what-if options given, for ``--tree``'s children."""
    flags = []
    if args.keepalive:
        flags += ["--keepalive", str(args.keepalive)]
    if args.pace:
        flags += ["--pace", str(args.pace)]
    for name in ("no_run_name", "lean_server", "state_sync_normal"):
        if getattr(args, name):
            flags.append("--" + name.replace("_", "-"))
    return flags


def compiled(tree: Path) -> None:
    """Fresh bytecode for a tree's own packages (the shells here set
    PYTHONDONTWRITEBYTECODE: an edited module would be compiled again in every child)."""
    import compileall

    for package in ("clampdown", "flows", "integrations"):
        compileall.compile_dir(tree / package, quiet=1)


def compare(args: argparse.Namespace, passed: list[str]) -> None:
    """``--tree DIR``: each repetition is one child invocation per tree (``--reps 1``),
    this tree and each earlier one (``git archive <rev> | tar -x -C DIR``; its packages
    first on ``PYTHONPATH``, this script in both), taking turns in an order that rotates
    each repetition, so every tree meets the same load; then each tree's figures."""
    trees = [] if args.trees_only else [("this tree", None)]
    trees += [(f"{t.name} (--tree)", t.resolve()) for t in args.tree]
    compiled(ROOT)
    for _, tree in trees:
        if tree is not None:
            compiled(tree)
    logs = Path(tempfile.mkdtemp(prefix="clampdown-bench-trees-"))
    results: dict[str, list[dict[str, Any]]] = {label: [] for label, _ in trees}
    print(f"{len(trees)} trees taking turns, {args.reps} repetitions of N={args.n}; "
          f"children's output in {logs}", flush=True)  # fmt: skip
    for rep in range(args.reps):
        for label, tree in trees[rep % len(trees) :] + trees[: rep % len(trees)]:
            env = dict(os.environ)
            if tree is not None:
                env["PYTHONPATH"] = os.pathsep.join(
                    str(tree / p) for p in ("", "flows", "integrations")
                )
            out = logs / f"rep{rep}-{len(results[label])}-{label.split()[0]}.json"
            argv = [sys.executable, str(Path(__file__).resolve()), "-n", str(args.n)]
            argv += ["--reps", "1", "--json", str(out), *passed]
            with (logs / f"{out.stem}.log").open("w") as log:
                done = subprocess.run(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
            if done.returncode != 0:
                raise SystemExit(f"{label} failed: see {logs / (out.stem + '.log')}")
            results[label].append(json.loads(out.read_text()))
            got = results[label][-1]["rows"][0]
            base, serve = got
            print(
                f"  rep {rep + 1}, {label}: floor {base['wall']:.2f} s, serve "
                f"{serve['wall']:.2f} s ({serve['wall'] / base['wall']:.2f}x), CPU-s per run "
                f"serve {serve['cpu_serve']:.3f} + Prefect server {serve['cpu_server']:.3f} "
                f"(load {os.getloadavg()[0]:.1f})",
                flush=True,
            )
    for label, _ in trees:
        print(f"\n### {label}")
        report(args.n, [r["rows"][0] for r in results[label]])
        requests: Counter[str] = Counter()
        for r in results[label]:
            requests.update(r["requests"])
        total = sum(requests.values()) / len(results[label])
        print(f"\n  Prefect API requests from serve per run: {total:.2f}")
        for route, count in requests.most_common():
            print(f"    {count / len(results[label]):5.2f}  {route}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=32, help="incidents at once (default 32)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions (default 3)")
    parser.add_argument("--profile", action="store_true", help="sample stacks during bursts")
    parser.add_argument("--top", type=int, default=30, help="functions shown per thread kind")
    parser.add_argument(
        "--keepalive",
        type=int,
        default=0,
        help="what-if: connections the Prefect clients keep alive (stock 8 of 16)",
    )
    parser.add_argument(
        "--no-run-name",
        action="store_true",
        help="what-if: no flow_run_name on respond (one API round trip less per run)",
    )
    parser.add_argument(
        "--lean-server",
        action="store_true",
        help="what-if: local Prefect server without automations, scheduler and other services",
    )
    parser.add_argument(
        "--state-sync-normal",
        action="store_true",
        help="what-if: the state store's SQLite commits without fsync (synchronous=NORMAL)",
    )
    parser.add_argument(
        "--pace",
        type=int,
        default=0,
        help="what-if: runs launched in order, at most PACE at a time in Prefect's set-up",
    )
    parser.add_argument(
        "--answer-path",
        action="store_true",
        help="measure one alert's answer path alone (alert after alert, no run launched)",
    )
    parser.add_argument(
        "--tree",
        type=Path,
        action="append",
        default=[],
        help="an earlier tree (git archive) to measure in turns with this one (repeatable)",
    )
    parser.add_argument(
        "--trees-only",
        action="store_true",
        help="with --tree: measure only the trees given (e.g. two commits), not this one",
    )
    parser.add_argument("--json", help=argparse.SUPPRESS)  # a --tree child's figures
    parser.add_argument("--role", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.role == "sender":
        role_sender(rest[0], rest[1])
    elif args.tree:
        compare(args, what_if_flags(args))
    elif args.answer_path:
        answer_path(args)
    else:
        run(args)


if __name__ == "__main__":
    main()
