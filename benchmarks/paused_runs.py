#!/usr/bin/env python3
"""Paused runs in one local serve: what they cost, and whether the rest still moves.

Issue 11 asks that runs waiting for people hold no thread, that an ungated alert still
starts at once while many wait, and that Slack clicks are answered within Slack's 3 s
during an alert storm. This script builds the process ``clampdown serve`` runs in local
mode — a local Prefect API (:func:`clampdown_flows.prefect_api.local_api`, a subprocess on
SQLite), one :class:`~clampdown.app.local_runs.InProcessStarter`, and serve's real app
(:func:`clampdown.app.serve.create_app`) under uvicorn on a loopback port — and measures,
next to baselines taken in the same run:

* **threads** of this process (``threading.active_count()`` and the kernel's count in
  ``/proc/self/status``) and **RSS**, before any run, with 0 runs paused and with N
  runs paused at an approval (approvers: one user id; timeout 30m);
* the **Prefect server** subprocess's RSS and CPU seconds per second of wall time over
  ``--window`` seconds (``/proc/<pid>/stat`` utime+stime), idle and while the N wait
  (each paused run asks the API whether it was resumed, every
  ``clampdown_flows.approval_gate.poll_seconds``), and this process's own CPU seconds
  per second over the same windows;
* an **ungated alert** (signed ``POST /alerts/generic`` starting a one-step ``core.log``
  runbook): time to the 202 answer, to the ledger's ``run.start`` and to ``run.end``,
  with 0 and with N runs paused;
* **Slack clicks**: signed ``block_actions`` Approve clicks on ``/slack/events`` (each on
  the card of another paused run, from the approver), one every ``--click-every``
  seconds: latency of the HTTP answer (what Slack's 3 s applies to) and time until the
  run recorded the decision (``approval.decision`` in its ledger), with no storm and
  during a ``--storm``-alert storm (signed generic alerts about 10 principals, 32 at a
  time; each principal's first alert starts a run, the rest join it).

Slack is the stand-in (:mod:`clampdown_slack.testing.standin`); it, the storm and the
clicks run in subprocesses (they stand for Slack and the alert senders, and must not
share this process's threads, memory or GIL). Runs post their cards to the stand-in.

    python benchmarks/paused_runs.py [--paused 100] [--storm 300] [--clicks 20]
                                     [--click-every 0.25] [--ungated 5] [--window 10]
                                     [--poll S]

``--poll`` is a what-if, printed as such: every paused run polls every S seconds
(``--poll 0.5`` is the behaviour before ``poll_seconds``). Click decisions are sent from a
pool of their own, off Bolt's 5 listener threads, in the shipped code since a46b928 (the
``--decide-off-bolt`` what-if this script had before).

Targets (issue 11, docs/benchmarks.md): with 100 runs paused an ungated alert starts
within a second; clicks answered under 3 s during a 300-alert storm.
"""

from __future__ import annotations

import argparse
import concurrent.futures
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
from pathlib import Path
from typing import Any

from harness import (
    API_START_TIMEOUT,
    cpu_seconds,
    free_port,
    generic_alert,
    ledger,
    ledger_ts,
    pct,
    serve_app,
    subprocess_of,
    wait_until,
)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.slack_requests: Slack's signing, as the tests do it

HMAC_SECRET = "bench-paused-hmac-secret-0123456789"
SLACK_SECRET = "bench-paused-slack-signing-secret"
STANDIN_TOKEN = "xoxb-bench-paused"
CHANNEL = "C0INCIDENT"
STARTER_USER = "U0STARTER"  # who started the gated runs (may not approve them)
APPROVER = "U0LEAD"  # the one approver of the gated runbook
GATE = "approve"  # the gated runbook's approval step

GATED = f"""\
apiVersion: clampdown/v1
kind: Runbook
metadata: {{name: bench-gated, title: Benchmark - wait for an approval, severity: high}}
inputs:
  n: {{type: integer, required: true}}
steps:
  - id: {GATE}
    uses: approval.request
    with:
      summary: "Benchmark run {{{{ inputs.n }}}}: go on?"
      approvers: {{users: [{APPROVER}]}}
      min_approvals: 1
      timeout: 30m
      on_timeout: deny
  - id: done
    uses: core.log
    needs: [{GATE}]
    with: {{message: "approved"}}
"""
UNGATED = """\
apiVersion: clampdown/v1
kind: Runbook
metadata: {name: bench-ungated, title: "Benchmark - one log step, no gate", severity: critical}
inputs:
  principal_arn: {type: string, required: true}
steps:
  - id: note
    uses: core.log
    with: {message: "containing {{ inputs.principal_arn }}"}
"""
TRIGGERS = """\
apiVersion: clampdown/v1
kind: TriggerSet
triggers:
  - name: bench-ungated
    match: "alert.source == 'generic' and alert.principal"
    runbook: bench-ungated
    inputs:
      principal_arn: "{{ alert.principal }}"
    correlate_by: "suspect:{{ alert.principal }}"
    dedup_window: 15m
    max_concurrent_runs: 50
"""


# --- /proc --------------------------------------------------------------------------------------


def proc_status(pid: int | str = "self") -> dict[str, int]:
    """Threads and VmRSS (kB) of a process, from /proc/<pid>/status."""
    found: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("Threads", "VmRSS"):
            found[name] = int(value.split()[0])
    return found


def cpu_rates(pids: dict[str, int], window: float) -> dict[str, float]:
    """CPU seconds per second of wall time of each process over ``window`` seconds."""
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    start = time.monotonic()
    time.sleep(window)
    took = time.monotonic() - start
    return {name: (cpu_seconds(pid) - before[name]) / took for name, pid in pids.items()}


def thread_kinds() -> str:
    """This process's Python threads by name (numbers dropped) and the function each
    was started with (its outermost frame outside ``threading``), most first."""
    import re

    frames = sys._current_frames()

    def started_with(ident: int | None) -> str:
        frame, outermost = frames.get(ident or -1), "?"
        while frame is not None:
            if not frame.f_code.co_filename.endswith("threading.py"):
                outermost = f"{Path(frame.f_code.co_filename).stem}.{frame.f_code.co_name}"
            frame = frame.f_back
        return outermost

    def kind(thread: threading.Thread) -> str:  # run ids (12 hex digits), counters dropped
        name = re.sub(r"-[0-9a-f]{12}$|[-_]\d+", "", thread.name)
        return f"{name} [{started_with(thread.ident)}]"

    kinds = Counter(kind(t) for t in threading.enumerate())
    return ", ".join(f"{name} {count}" for name, count in kinds.most_common())


def snapshot(server_pid: int) -> dict[str, float]:
    own, server = proc_status(), proc_status(server_pid)
    return {
        "py_threads": threading.active_count(),
        "os_threads": own["Threads"],
        "rss_mb": own["VmRSS"] / 1024,
        "server_threads": server["Threads"],
        "server_rss_mb": server["VmRSS"] / 1024,
    }


def loop_and_api(starter: Any, flow_run_id: str | None, samples: int = 10) -> dict[str, float]:
    """Median latencies (s): a no-op scheduled on the runs' event loop (is the loop free?);
    ``GET /flow_runs/<id>`` from this thread on a connection of its own (is the Prefect
    server quick?); the same read on the runs' loop through their shared Prefect client
    (what a run's next API call waits: the loop, the client's 16-connection pool, the
    server)."""
    import asyncio

    import httpx
    from prefect import get_client
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL

    async def nothing() -> None:
        return None

    async def read() -> None:
        async with get_client() as client:
            await client.read_flow_run(flow_run_id)  # type: ignore[arg-type]

    def on_runs_loop() -> None:
        """``read()`` as a task of the runs' loop in their context (their shared client)."""
        done: concurrent.futures.Future[None] = concurrent.futures.Future()

        def start() -> None:
            task = starter._loop.create_task(read(), context=starter._context.copy())
            task.add_done_callback(
                lambda t: (
                    done.set_exception(t.exception()) if t.exception() else done.set_result(None)
                )
            )

        starter._loop.call_soon_threadsafe(start)
        done.result(60)

    user, _, password = str(PREFECT_API_AUTH_STRING.value() or ":").partition(":")
    took: dict[str, list[float]] = {"loop": [], "api": [], "client": []}
    with httpx.Client(auth=(user, password) if password else None, timeout=60) as direct:
        for _ in range(samples):
            start = time.perf_counter()
            asyncio.run_coroutine_threadsafe(nothing(), starter._loop).result(60)
            took["loop"].append(time.perf_counter() - start)
            if flow_run_id is None:
                continue
            start = time.perf_counter()
            direct.get(f"{PREFECT_API_URL.value()}/flow_runs/{flow_run_id}").raise_for_status()
            took["api"].append(time.perf_counter() - start)
            start = time.perf_counter()
            on_runs_loop()
            took["client"].append(time.perf_counter() - start)
            time.sleep(0.05)
    return {name: statistics.median(v) if v else float("nan") for name, v in took.items()}


# --- helpers ------------------------------------------------------------------------------------


def summary(values: list[float]) -> str:
    if not values:
        return "(none)"
    return (
        f"p50 {statistics.median(values):6.3f}  p95 {pct(values, 0.95):6.3f}  "
        f"max {max(values):6.3f} s  (n={len(values)})"
    )


def this_script(role: str, *args: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--role", role, *args]


# --- the subprocesses: Slack stand-in, storm sender, click sender -------------------------------


def role_standin(port: int) -> None:
    """Slack's Web API stand-in on ``port`` until killed."""
    from clampdown_slack.testing.standin import SlackStandIn

    with SlackStandIn(token=STANDIN_TOKEN, port=port):
        print("ready", flush=True)
        threading.Event().wait()


def storm_alert(alert_id: str, principal: str) -> tuple[bytes, dict[str, str]]:
    """A signed generic alert about ``principal`` (body and headers)."""
    title = f"DLP proxy saw model weights leave the VPC for {principal}"
    return generic_alert(HMAC_SECRET, alert_id, principal, title)


def role_storm(url: str, count: int, tag: str) -> None:
    """Send ``count`` signed alerts about 10 principals, 32 at a time; print what happened."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    deliveries = [
        storm_alert(f"storm-{tag}-{n}", f"arn:aws:iam::123456789012:user/storm-{tag}-{n % 10}")
        for n in range(count)
    ]
    limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
    with httpx.Client(base_url=url, timeout=120, limits=limits) as client:

        def send(delivery: tuple[bytes, dict[str, str]]) -> tuple[int, str, float]:
            sent = time.perf_counter()
            response = client.post("/alerts/generic", content=delivery[0], headers=delivery[1])
            status = "?"
            with contextlib.suppress(Exception):
                status = response.json()["alerts"][0]["status"]
            return response.status_code, status, time.perf_counter() - sent

        start = time.time()
        with ThreadPoolExecutor(max_workers=32) as pool:
            results = list(pool.map(send, deliveries))
        end = time.time()
    print(
        json.dumps(
            {
                "start": start,
                "end": end,
                "codes": Counter(str(code) for code, _, _ in results),
                "statuses": Counter(status for _, status, _ in results),
                "latencies": [took for _, _, took in results],
            }
        ),
        flush=True,
    )


def role_clicks(url: str, cards: Path, every: float, stop: Path) -> None:
    """Click Approve on each card of ``cards`` (one every ``every`` s, each on its own thread,
    not waiting for the previous answer) until all are clicked or ``stop`` exists."""
    import httpx

    from tests.slack_requests import block_action, signed_headers

    values = json.loads(cards.read_text())
    results: list[dict[str, Any]] = []
    lock = threading.Lock()
    client = httpx.Client(base_url=url, timeout=60)

    def click(value: str) -> None:
        body = block_action(APPROVER, "clampdown_approve", value, channel=CHANNEL)
        headers = signed_headers(body, SLACK_SECRET)
        sent_wall, sent = time.time(), time.perf_counter()
        try:
            status = client.post("/slack/events", content=body, headers=headers).status_code
        except httpx.HTTPError as exc:
            status = f"error: {exc}"
        took = time.perf_counter() - sent
        with lock:
            run_id = json.loads(value)["run_id"]
            results.append({"run_id": run_id, "sent": sent_wall, "took": took, "status": status})

    threads = []
    start = time.monotonic()
    for n, value in enumerate(values):
        if stop.exists():
            break
        time.sleep(max(0.0, start + n * every - time.monotonic()))
        thread = threading.Thread(target=click, args=(value,))
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join()
    client.close()
    print(json.dumps(results), flush=True)


# --- the serve process --------------------------------------------------------------------------


class Bench:
    """serve's app, starter and local Prefect API in this process; Slack in a subprocess."""

    def __init__(self, home: Path, library: Path, app_url: str, server_pid: int) -> None:
        self.home, self.library, self.url, self.server_pid = home, library, app_url, server_pid
        self.alerts = 0
        self.last_flow_run: str | None = None

    def post_alert(self, principal: str) -> str:
        self.alerts += 1
        alert_id = f"ungated-{self.alerts}-{time.time_ns()}"
        body, headers = storm_alert(alert_id, principal)
        request = urllib.request.Request(
            f"{self.url}/alerts/generic", data=body, method="POST", headers=headers
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.loads(response.read())
        run_id = answer["alerts"][0].get("run_id")
        if response.status != 202 or not run_id:
            raise SystemExit(f"the alert did not start a run: {response.status} {answer}")
        return str(run_id)

    def ended(self, run_id: str) -> list[dict[str, Any]] | None:
        records = ledger(self.home, run_id)
        return records if records and records[-1]["type"] == "run.end" else None

    def ungated(self, count: int) -> dict[str, list[float]]:
        """``count`` ungated alerts one after another (after a warm-up one): alert sent ->
        202 answer, -> run.start, -> run.end (ledger clock; same machine)."""
        marks: dict[str, list[float]] = {"answered": [], "run.start": [], "run.end": []}
        for n in range(count + 1):
            sent = time.time()
            run_id = self.post_alert(f"arn:aws:iam::123456789012:user/ungated-{time.time_ns()}")
            answered = time.time()
            records = wait_until(lambda r=run_id: self.ended(r), 120, f"run {run_id}", 0.005)
            if records[-1].get("status") != "succeeded":
                raise SystemExit(f"ungated run {run_id} did not succeed: {records[-1]}")
            self.last_flow_run = records[0].get("flow_run_id")
            if n:
                marks["answered"].append(answered - sent)
                marks["run.start"].append(ledger_ts(records[0]) - sent)
                marks["run.end"].append(ledger_ts(records[-1]) - sent)
        return marks

    def pending(self, run_id: str) -> bool:
        path = self.home / "runs" / run_id / "approvals" / f"{GATE}.json"
        return path.is_file() and json.loads(path.read_text()).get("status") == "pending"

    def card_value(self, run_id: str) -> str:
        """The Approve button's value on the run's card (run, step, parameters hash)."""
        path = self.home / "runs" / run_id / "approvals" / f"{GATE}.json"
        req = json.loads(path.read_text())
        value = {"run_id": run_id, "step": GATE, "params_hash": req["params_hash"]}
        return json.dumps(value, separators=(",", ":"))


def start_gated(starter: Any, library: Path, count: int, first: int) -> list[str]:
    runbook = library / "bench-gated.yaml"
    trigger = {"type": "slack", "user": STARTER_USER}
    return [starter(runbook, {"n": first + n}, trigger) for n in range(count)]


def wait_paused(bench: Bench, run_ids: list[str], timeout: float) -> float:
    start = time.monotonic()
    wait_until(
        lambda: all(bench.pending(r) for r in run_ids), timeout, "the runs to wait", every=0.2
    )
    time.sleep(2)  # each is Paused in Prefect a moment after its request is written
    return time.monotonic() - start


def clicks(
    bench: Bench, run_ids: list[str], every: float, logs: Path, storm: int = 0
) -> tuple[list[dict[str, Any]], dict[str, Any] | None, dict[str, float]]:
    """Clicks on the cards of ``run_ids`` (with a storm of ``storm`` alerts meanwhile):
    the clicks' answers, the storm's outcome, and this process's peak threads and RSS."""
    cards = logs / f"cards-{time.time_ns()}.json"
    cards.write_text(json.dumps([bench.card_value(r) for r in run_ids]))
    stop = logs / f"stop-{time.time_ns()}"
    peak = {"os_threads": 0.0, "py_threads": 0.0, "rss_mb": 0.0}
    storm_out: dict[str, Any] | None = None
    results: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        storm_proc = click_proc = None
        if storm:
            argv = this_script("storm", bench.url, str(storm), str(time.time_ns()))
            storm_proc = stack.enter_context(subprocess_of(argv, stdout=subprocess.PIPE))
            time.sleep(0.5)  # the sender's imports; its clock marks the storm's start
        if run_ids:
            argv = this_script("clicks", bench.url, str(cards), str(every), str(stop))
            click_proc = stack.enter_context(subprocess_of(argv, stdout=subprocess.PIPE))
        procs = [p for p in (storm_proc, click_proc) if p is not None]
        while any(p.poll() is None for p in procs):
            now = snapshot(bench.server_pid)
            for key in peak:
                peak[key] = max(peak[key], now[key])
            if storm_proc is not None and storm_proc.poll() is not None:
                stop.touch()  # the storm is over: no more clicks
            time.sleep(0.1)
        if storm_proc is not None and storm_proc.stdout is not None:
            storm_out = json.loads(storm_proc.stdout.read())
        if click_proc is not None and click_proc.stdout is not None:
            results = json.loads(click_proc.stdout.read())
    for result in results:  # when the run recorded the decision
        records = wait_until(
            lambda r=result["run_id"]: [
                x for x in ledger(bench.home, r) if x["type"] == "approval.decision"
            ],
            90,
            f"run {result['run_id']} to record the click",
            every=0.05,
        )
        result["recorded"] = ledger_ts(records[0]) - result["sent"]
        result["accepted"] = records[0].get("accepted")
    return results, storm_out, peak


# --- printing -----------------------------------------------------------------------------------


def table(rows: list[tuple[str, list[str]]], heads: list[str]) -> None:
    width = max(len(label) for label, _ in rows) + 2
    print(f"  {'':<{width}}" + "".join(f"{h:>20}" for h in heads))
    for label, cells in rows:
        print(f"  {label:<{width}}" + "".join(f"{c:>20}" for c in cells))


def median_cell(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} (max {max(values):.3f})"


def report(
    n: int,
    snaps: dict[str, dict[str, float]],
    rates: dict[str, dict[str, float]],
    ungated: dict[str, dict[str, list[float]]],
    lags: dict[str, dict[str, float]],
) -> None:
    phases = ["before", "idle", "paused"]
    heads = ["before any run", "0 paused", f"{n} paused"]
    rows = [
        ("threads: threading.active_count", [f"{snaps[p]['py_threads']:.0f}" for p in phases]),
        ("threads: /proc (OS)", [f"{snaps[p]['os_threads']:.0f}" for p in phases]),
        ("RSS of this process (MB)", [f"{snaps[p]['rss_mb']:.0f}" for p in phases]),
        ("Prefect server RSS (MB)", [f"{snaps[p]['server_rss_mb']:.0f}" for p in phases]),
        ("Prefect server threads", [f"{snaps[p]['server_threads']:.0f}" for p in phases]),
        (
            "Prefect server CPU s/s",
            ["", f"{rates['idle']['server']:.2f}", f"{rates['paused']['server']:.2f}"],
        ),
        (
            "this process CPU s/s",
            ["", f"{rates['idle']['serve']:.2f}", f"{rates['paused']['serve']:.2f}"],
        ),
    ]
    for key, label in (
        ("loop", "runs' event loop: no-op (ms)"),
        ("api", "GET flow run, own connection (ms)"),
        ("client", "GET flow run, runs' client (ms)"),
    ):
        rows.append((label, ["", *(f"{lags[p][key] * 1000:.1f}" for p in ("idle", "paused"))]))
    for mark, label in (
        ("answered", "ungated alert: 202 answer (s)"),
        ("run.start", "  -> run.start (s)"),
        ("run.end", "  -> run.end (s)"),
    ):
        rows.append(
            (label, ["", median_cell(ungated["idle"][mark]), median_cell(ungated["paused"][mark])])
        )
    table(rows, heads)


def click_report(
    phases: dict[str, tuple[list[dict[str, Any]], dict[str, Any] | None, dict[str, float]]],
) -> None:
    for label, (results, storm, peak) in phases.items():
        took = [r["took"] for r in results]
        recorded = [r["recorded"] for r in results]
        codes = Counter(str(r["status"]) for r in results)
        accepted = sum(bool(r.get("accepted")) for r in results)
        print(f"  {label}:")
        print(f"    click HTTP answer     {summary(took)}   statuses {dict(codes)}")
        print(f"    decision recorded     {summary(recorded)}   accepted {accepted}")
        if storm is not None:
            inside = [r["took"] for r in results if storm["start"] <= r["sent"] <= storm["end"]]
            print(f"    clicks sent during the storm: {summary(inside)}")
            print(
                f"    storm: {sum(storm['codes'].values())} alerts in "
                f"{storm['end'] - storm['start']:.1f} s; HTTP {dict(storm['codes'])}; "
                f"{dict(storm['statuses'])}; alert answer {summary(storm['latencies'])}"
            )
        print(
            f"    peak of this process: {peak['os_threads']:.0f} OS threads "
            f"({peak['py_threads']:.0f} Python), RSS {peak['rss_mb']:.0f} MB"
        )


# --- main ---------------------------------------------------------------------------------------


def environment(logs: Path, slack_url: str) -> tuple[Path, Path]:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_HOME", str(logs / "prefect"))
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
    home, library = logs / "home", logs / "library"
    library.mkdir()
    (library / "bench-gated.yaml").write_text(GATED)
    (library / "bench-ungated.yaml").write_text(UNGATED)
    (library / "triggers.yaml").write_text(TRIGGERS)
    os.environ.update(
        {
            "CLAMPDOWN_HOME": str(home),
            "CLAMPDOWN_LIBRARY": str(library),
            "CLAMPDOWN_STATE_URL": f"sqlite:///{logs / 'state.sqlite3'}",
            "CLAMPDOWN_ALERT_HMAC_SECRET": HMAC_SECRET,
            "CLAMPDOWN_SLACK_SIGNING_SECRET": SLACK_SECRET,
            "CLAMPDOWN_SLACK_BOT_TOKEN": STANDIN_TOKEN,
            "CLAMPDOWN_SLACK_API_URL": slack_url,
            "CLAMPDOWN_SLACK_CHANNEL": CHANNEL,
            "CLAMPDOWN_SLACK_RETRY_INTERVAL": "0",
            "CLAMPDOWN_SLACK_MAX_RETRIES": "1",
        }
    )
    for name in ("CLAMPDOWN_TRIGGERS", "PREFECT_API_URL"):
        os.environ.pop(name, None)
    return home, library


def what_if(args: argparse.Namespace) -> list[str]:
    """Changes tried from this script (not the shipped behaviour): said in the output."""
    said = []
    if args.poll is not None:
        import clampdown_flows.approval_gate as gate

        gate.poll_seconds = lambda wait: args.poll  # type: ignore[assignment]
        said.append(f"WHAT-IF: every paused run polls every {args.poll:g} s")
    return said


def run(args: argparse.Namespace) -> None:
    from clampdown.app.local_runs import STEP_THREADS, InProcessStarter
    from clampdown_flows import approval_gate
    from clampdown_flows.prefect_api import local_api, local_server_class

    logs = Path(tempfile.mkdtemp(prefix="clampdown-bench-paused-"))
    slack_port = free_port()
    with contextlib.ExitStack() as stack:
        standin = stack.enter_context(
            subprocess_of(this_script("standin", str(slack_port)), stdout=subprocess.PIPE)
        )
        if standin.stdout is None or standin.stdout.readline().strip() != "ready":
            raise SystemExit("the Slack stand-in did not start")
        home, library = environment(logs, f"http://127.0.0.1:{slack_port}/api/")
        stack.enter_context(local_api(timeout=API_START_TIMEOUT))
        server_pid = local_server_class()._instances[None].server_process.pid
        starter = InProcessStarter()
        stack.callback(starter.shutdown)
        bench = Bench(home, library, stack.enter_context(serve_app(starter))[0], server_pid)
        for line in what_if(args):
            print(line)
        print(
            f"{args.paused} paused runs in one local serve (2 cores: {os.cpu_count()} CPUs seen; "
            f"load average {os.getloadavg()[0]:.1f}); a paused run (30m approval) polls every "
            f"{approval_gate.poll_seconds(1800):g} s; STEP_THREADS {STEP_THREADS}; logs in {logs}",
            flush=True,
        )
        snaps, rates, ungated = {}, {}, {}
        pids = {"server": server_pid, "serve": os.getpid()}
        snaps["before"] = snapshot(server_pid)
        ungated["idle"] = bench.ungated(args.ungated)
        rates["idle"] = cpu_rates(pids, args.window)
        snaps["idle"] = snapshot(server_pid)
        lags = {"idle": loop_and_api(starter, bench.last_flow_run)}
        alone = clicks(bench, [], args.click_every, logs, storm=args.storm) if args.storm else None

        started = time.monotonic()
        paused = start_gated(starter, library, args.paused, 0)
        took = wait_paused(bench, paused, 60 + 3 * args.paused)
        print(
            f"  {args.paused} runs started and waiting in {time.monotonic() - started:.1f} s "
            f"(all requests pending after {took:.1f} s)",
            flush=True,
        )
        rates["paused"] = cpu_rates(pids, args.window)
        snaps["paused"] = snapshot(server_pid)
        lags["paused"] = loop_and_api(starter, bench.last_flow_run)
        ungated["paused"] = bench.ungated(args.ungated)
        report(args.paused, snaps, rates, ungated, lags)
        print(f"  threads with {args.paused} paused: {thread_kinds()}", flush=True)

        if not args.clicks:
            return
        extra = start_gated(starter, library, 2 * args.clicks, args.paused)
        wait_paused(bench, extra, 60 + 3 * len(extra))
        print(
            f"\nSlack Approve clicks, one every {args.click_every:g} s, each approving one of "
            f"{len(extra)} more runs paused beside the {args.paused}:",
            flush=True,
        )
        phases = {
            "no storm": clicks(bench, extra[: args.clicks], args.click_every, logs),
            f"during a {args.storm}-alert storm": clicks(
                bench, extra[args.clicks :], args.click_every, logs, storm=args.storm
            ),
        }
        click_report(phases)
        if alone is not None and alone[1] is not None:
            storm = alone[1]
            print(
                f"  baseline, the same storm with no run paused (before the runs above): "
                f"{sum(storm['codes'].values())} alerts in {storm['end'] - storm['start']:.1f} s; "
                f"HTTP {dict(storm['codes'])}; {dict(storm['statuses'])}; "
                f"alert answer {summary(storm['latencies'])}; peak {alone[2]['os_threads']:.0f} "
                f"OS threads, RSS {alone[2]['rss_mb']:.0f} MB"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paused", type=int, default=100, help="runs paused (default 100)")
    parser.add_argument("--storm", type=int, default=300, help="alerts in the storm (300)")
    parser.add_argument("--clicks", type=int, default=20, help="clicks per phase (20; 0: none)")
    parser.add_argument(
        "--click-every", type=float, default=0.25, help="seconds between clicks (0.25)"
    )
    parser.add_argument("--ungated", type=int, default=5, help="ungated alerts timed (5)")
    parser.add_argument("--window", type=float, default=10, help="CPU measuring window (10 s)")
    parser.add_argument(
        "--poll", type=float, help="what-if: every paused run polls every POLL seconds"
    )
    parser.add_argument("--role", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.role == "standin":
        role_standin(int(rest[0]))
    elif args.role == "storm":
        role_storm(rest[0], int(rest[1]), rest[2])
    elif args.role == "clicks":
        role_clicks(rest[0], Path(rest[1]), float(rest[2]), Path(rest[3]))
    else:
        run(args)


if __name__ == "__main__":
    main()
