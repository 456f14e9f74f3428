"""The issue-5 alert storm through HTTP, against ``clampdown serve``'s real app on a real port.

300 signed alerts about 10 incidents (10 suspect principals) arrive at once from three
sources, each authenticated its own way: GuardDuty findings through EventBridge (bearer
token), PagerDuty v3 webhooks (``X-PagerDuty-Signature``) and generic DLP alerts (HMAC
with a timestamp). A few deliveries are sent twice on purpose. Expected:

* exactly 10 runs start (one per incident); every genuine delivery is accepted and each
  of its alerts is in exactly one run's ledger (the trigger of ``run.start`` or an
  ``alert.joined`` record) — the run of its principal;
* each repeated delivery is refused once as a replay (409) and recorded once;
* after the server stops and a new app starts over the same ``CLAMPDOWN_HOME`` (the
  dedup state is SQLite beside the ledgers), more alerts about the same incidents inside
  the window start nothing: they join or repeat the 10 runs, and the old deliveries are
  still refused as replays.

Runs are not executed: ``start_run`` is a fake that records the call and writes the
run's first ledger record a moment later (as the in-process starter's thread does), and
never ``run.end`` — so every run counts as in progress and later alerts join it.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import random
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from clampdown.app.serve import create_app
from clampdown.core.ledger import Ledger, new_run_id, read, verify_file
from clampdown.core.settings import settings
from tests import paths

FIXTURES = paths.FIXTURES / "alerts"
TOKEN = "storm-bearer-token-0123456789"
PD_SECRET = "storm-pagerduty-secret"
HMAC_SECRET = "storm-generic-hmac-secret"
ACCOUNT = "123456789012"
INCIDENTS = 10
PER_SOURCE = 10  # deliveries per incident and source: 10 x 3 x 10 = 300
REPLAYED = 15  # deliveries of the burst sent a second time on purpose

RUNBOOK = """\
apiVersion: clampdown/v1
kind: Runbook
metadata: {name: contain-iam-user, title: Contain an IAM user, severity: critical}
inputs:
  principal_arn: {type: string, required: true, pattern: '^arn:aws:iam::\\d{12}:(user|role)/.+$'}
steps:
  - id: note
    uses: core.log
    with: {message: "containing {{ inputs.principal_arn }}"}
"""

TRIGGERS = """\
apiVersion: clampdown/v1
kind: TriggerSet
triggers:
  - name: model-theft-suspect
    match: alert.principal and ':user/' in alert.principal
    runbook: contain-iam-user
    inputs:
      principal_arn: "{{ alert.principal }}"
    correlate_by: "suspect:{{ alert.principal }}"
    dedup_window: 15m
    max_concurrent_runs: 50
"""


def principal(k: int) -> str:
    return f"arn:aws:iam::{ACCOUNT}:user/suspect-{k}"


# --- the fake start_run: real ledgers, no flow ------------------------------------------------


@dataclass
class RecordingStarter:
    """``start_run`` that records each call and writes ``run.start`` (never ``run.end``)
    from its own thread a moment after returning the run id, like ``InProcessStarter``."""

    delay: float = 0.02
    calls: list[tuple[str, Path, dict[str, Any], dict[str, Any]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    threads: list[threading.Thread] = field(default_factory=list)

    def __call__(self, runbook: Path, inputs: dict[str, Any], trigger: dict[str, Any]) -> str:
        run_id = new_run_id()
        ledger_path = settings().ledger_path(run_id)
        thread = threading.Thread(target=self._write, args=(ledger_path, run_id, inputs, trigger))
        with self.lock:
            self.calls.append((run_id, runbook, inputs, trigger))
            self.threads.append(thread)
        thread.start()
        return run_id

    def _write(self, path: Path, run_id: str, inputs: dict, trigger: dict) -> None:
        time.sleep(self.delay)
        ledger = Ledger(path)
        ledger.append(
            "run.start",
            run={"id": run_id, "runbook": "contain-iam-user", "trigger": trigger},
            inputs=inputs,
        )
        ledger.close()

    def join(self) -> None:
        with self.lock:
            threads = list(self.threads)
        for thread in threads:
            thread.join(10)


# --- a real server on a loopback port ---------------------------------------------------------


class LiveServer:
    """uvicorn serving ``app`` from a thread on a free loopback port; stop() is a clean shutdown
    (the app's lifespan closes its state store, as when ``clampdown serve`` stops)."""

    def __init__(self, app: Any) -> None:
        config = uvicorn.Config(
            app, host="127.0.0.1", port=0, log_level="warning", access_log=False, lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="storm-uvicorn", daemon=True)
        self.url = ""

    def start(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise AssertionError("uvicorn did not start")
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        assert not self.thread.is_alive(), "uvicorn did not stop"


# --- signed deliveries, one per source ------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """One HTTP request as the source sends it, and the alert it carries."""

    path: str
    body: bytes
    headers: dict[str, str]
    source: str
    alert_id: str
    principal: str


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


GUARDDUTY = fixture("guardduty_finding.json")
PAGERDUTY = fixture("pagerduty_incident_triggered.json")


def guardduty(k: int, finding: str) -> Delivery:
    """EventBridge delivers each (updated) finding as a new event: a new event id."""
    event = copy.deepcopy(GUARDDUTY)
    event["id"] = str(uuid.uuid4())
    event["time"] = now_iso()
    event["account"] = ACCOUNT
    detail = event["detail"]
    detail["id"], detail["accountId"] = finding, ACCOUNT
    detail["resource"]["accessKeyDetails"]["userName"] = f"suspect-{k}"
    detail["resource"]["accessKeyDetails"]["userType"] = "IAMUser"
    detail["title"] = f"Anomalous S3 GetObject activity by suspect-{k}"
    body = json.dumps(event).encode()
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    return Delivery("/alerts/guardduty", body, headers, "guardduty", finding, principal(k))


def pagerduty(k: int, incident: str) -> Delivery:
    """PagerDuty v3: every webhook event has its own id; the incident id is the alert id."""
    payload = copy.deepcopy(PAGERDUTY)
    event = payload["event"]
    event["id"] = str(uuid.uuid4())
    event["occurred_at"] = now_iso()
    event["data"]["id"] = incident
    event["data"]["title"] = f"Suspected model exfiltration by {principal(k)}"
    body = json.dumps(payload).encode()
    digest = hmac.new(PD_SECRET.encode(), body, hashlib.sha256).hexdigest()
    headers = {"X-PagerDuty-Signature": f"v1={digest}", "Content-Type": "application/json"}
    return Delivery("/alerts/pagerduty", body, headers, "pagerduty", incident, principal(k))


def generic(k: int, alert_id: str) -> Delivery:
    """The documented generic scheme: HMAC-SHA256 over ``v1:{timestamp}:{raw body}``."""
    payload = {
        "id": alert_id,
        "title": f"DLP proxy saw model weights leave the VPC for {principal(k)}",
        "severity": "critical",
        "type": "dlp.model_weights_egress",
        "principal": principal(k),
        "account": ACCOUNT,
        "region": "us-east-1",
    }
    body = json.dumps(payload).encode()
    timestamp = str(int(time.time()))
    message = b"v1:" + timestamp.encode() + b":" + body
    signature = "v1=" + hmac.new(HMAC_SECRET.encode(), message, hashlib.sha256).hexdigest()
    headers = {
        "X-Clampdown-Timestamp": timestamp,
        "X-Clampdown-Signature": signature,
        "Content-Type": "application/json",
    }
    return Delivery("/alerts/generic", body, headers, "generic", alert_id, principal(k))


def storm(per_source: int, tag: str) -> list[Delivery]:
    """Per incident: GuardDuty re-sends 3 findings, PagerDuty has 2 incidents, and every DLP
    alert is new — so alerts repeat (deduplicated) and differ (correlated by principal)."""
    deliveries = []
    for k in range(INCIDENTS):
        for j in range(per_source):
            deliveries.append(guardduty(k, f"gd{tag}{k:02d}{j % 3}" + "0" * 26))
            deliveries.append(pagerduty(k, f"P{tag.upper()}{k:02d}{j % 2}"))
            deliveries.append(generic(k, f"dlp-{tag}-{k}-{j}"))
    return deliveries


def post_all(url: str, deliveries: list[Delivery]) -> list[httpx.Response]:
    """All at once from a thread pool, each request on the wire as its source would send it."""
    limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
    with httpx.Client(base_url=url, timeout=60, limits=limits) as client:

        def send(d: Delivery) -> httpx.Response:
            return client.post(d.path, content=d.body, headers=d.headers)

        with ThreadPoolExecutor(max_workers=32) as pool:
            return list(pool.map(send, deliveries))


# --- reading the outcome ------------------------------------------------------------------------


def ledgers() -> dict[str, list[dict[str, Any]]]:
    runs = settings().home / "runs"
    return {p.parent.name: read(p) for p in sorted(runs.glob("*/ledger.jsonl"))}


def recorded_alerts() -> tuple[Counter[tuple[str, str]], dict[tuple[str, str], set[str]]]:
    """Every alert summary in every ledger: how often, and in which runs."""
    count: Counter[tuple[str, str]] = Counter()
    where: dict[tuple[str, str], set[str]] = defaultdict(set)
    for run_id, records in ledgers().items():
        summaries = [records[0]["run"]["trigger"]["alert"]]
        summaries += [r["alert"] for r in records if r["type"] == "alert.joined"]
        for summary in summaries:
            key = (summary["source"], summary["id"])
            count[key] += 1
            where[key].add(run_id)
    return count, where


def accepted_alert(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code in (200, 202), response.text
    [answer] = response.json()["alerts"]
    return answer


# --- the test -------------------------------------------------------------------------------------


@pytest.fixture
def library(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "library"
    folder.mkdir()
    (folder / "contain-iam-user.yaml").write_text(RUNBOOK, encoding="utf-8")
    (folder / "triggers.yaml").write_text(TRIGGERS, encoding="utf-8")
    monkeypatch.setenv("CLAMPDOWN_LIBRARY", str(folder))
    monkeypatch.delenv("CLAMPDOWN_TRIGGERS", raising=False)
    monkeypatch.delenv("CLAMPDOWN_STATE_URL", raising=False)
    monkeypatch.delenv("CLAMPDOWN_SLACK_BOT_TOKEN", raising=False)
    monkeypatch.delenv("CLAMPDOWN_SLACK_SIGNING_SECRET", raising=False)
    monkeypatch.setenv("CLAMPDOWN_ALERT_TOKEN", TOKEN)
    monkeypatch.setenv("CLAMPDOWN_PAGERDUTY_SECRET", PD_SECRET)
    monkeypatch.setenv("CLAMPDOWN_ALERT_HMAC_SECRET", HMAC_SECRET)
    return folder


@pytest.fixture
def starter() -> Iterator[RecordingStarter]:
    fake = RecordingStarter()
    yield fake
    fake.join()


def answered_once_each(
    sent: list[Delivery], responses: list[httpx.Response]
) -> dict[bytes, dict[str, Any]]:
    """Each delivery accepted once, its replay (whichever came second) refused with 409;
    the accepted answers by delivery body."""
    by_delivery: dict[bytes, list[httpx.Response]] = defaultdict(list)
    for delivery, response in zip(sent, responses, strict=True):
        by_delivery[delivery.body].append(response)
    assert len(by_delivery) == 300
    answers: dict[bytes, dict[str, Any]] = {}
    for body, got in by_delivery.items():
        codes = sorted(r.status_code for r in got)
        expected = [200, 409] if len(got) == 2 else [200]
        assert [200 if c == 202 else c for c in codes] == expected, [r.text for r in got]
        for response in got:
            if response.status_code == 409:
                assert "was already received (replay)" in response.json()["error"]
            else:
                answers[body] = accepted_alert(response)
    assert len(answers) == 300
    return answers


def one_run_per_incident(starter: RecordingStarter, library: Path) -> dict[str, str]:
    """Exactly one run per incident, started with that incident's principal; run id by
    principal."""
    assert len(starter.calls) == INCIDENTS
    started_for = {inputs["principal_arn"]: run_id for run_id, _, inputs, _ in starter.calls}
    assert set(started_for) == {principal(k) for k in range(INCIDENTS)}
    for _run_id, runbook, inputs, trigger in starter.calls:
        assert runbook == library / "contain-iam-user.yaml"
        assert trigger["type"] == "alert" and trigger["trigger"] == "model-theft-suspect"
        assert trigger["alert"]["principal"] == inputs["principal_arn"]
        assert "raw" not in trigger["alert"]
    return started_for


def test_storm_of_300_alerts_gives_10_runs_loses_nothing_and_survives_a_restart(
    library: Path, starter: RecordingStarter, clampdown_home: Path
) -> None:
    burst = storm(PER_SOURCE, "a")
    assert len(burst) == 300
    replays = random.Random(7).sample(burst, REPLAYED)
    sent = burst + replays
    random.Random(11).shuffle(sent)

    server = LiveServer(create_app(start_run=starter)).start()
    try:
        health = httpx.get(f"{server.url}/healthz", timeout=10).json()
        assert health["ok"] and "triggers" not in health, health  # the trigger file loaded
        responses = post_all(server.url, sent)
    finally:
        server.stop()
    starter.join()

    answers = answered_once_each(sent, responses)
    started_for = one_run_per_incident(starter, library)
    statuses = Counter(a["status"] for a in answers.values())
    assert statuses["started"] == INCIDENTS
    assert statuses["deduplicated"] + statuses["joined"] == 300 - INCIDENTS, statuses
    assert statuses["deduplicated"] > 0 and statuses["joined"] > 0
    assert sum(r.status_code == 202 for r in responses) == INCIDENTS
    for delivery in burst:  # every answer names the run of the delivery's principal
        assert answers[delivery.body]["run_id"] == started_for[delivery.principal]

    # nothing lost: every delivered alert is in exactly one run's ledger, its principal's run
    ledger_files = ledgers()
    assert set(ledger_files) == set(started_for.values())
    for run_id, records in ledger_files.items():
        assert verify_file(settings().ledger_path(run_id)).ok
        assert records[0]["type"] == "run.start"
        assert not any(r["type"] == "run.end" for r in records)
    count, where = recorded_alerts()
    assert count == Counter((d.source, d.alert_id) for d in burst)
    for delivery in burst:
        assert where[(delivery.source, delivery.alert_id)] == {started_for[delivery.principal]}
    assert (clampdown_home / "state.sqlite3").is_file()

    # restart mid-window: a new app over the same CLAMPDOWN_HOME; same incidents again
    later = storm(2, "b") + storm(1, "a")  # new alerts, and new deliveries of known alerts
    old = random.Random(3).sample(burst, 10)  # deliveries the first server already took
    server = LiveServer(create_app(start_run=starter)).start()
    try:
        again = post_all(server.url, later + old)
    finally:
        server.stop()
    starter.join()

    assert len(starter.calls) == INCIDENTS, "a restart must not start a run again"
    for response in again[len(later) :]:
        assert response.status_code == 409, response.text
        assert "was already received (replay)" in response.json()["error"]
    late_status: Counter[str] = Counter()
    for delivery, response in zip(later, again[: len(later)], strict=True):
        assert response.status_code == 200, response.text
        answer = accepted_alert(response)
        late_status[answer["status"]] += 1
        assert answer["run_id"] == started_for[delivery.principal]
    assert set(late_status) == {"deduplicated", "joined"}, late_status
    count, where = recorded_alerts()
    assert count == Counter((d.source, d.alert_id) for d in burst + later)
    for delivery in later:
        assert where[(delivery.source, delivery.alert_id)] == {started_for[delivery.principal]}
    for run_id in started_for.values():
        assert verify_file(settings().ledger_path(run_id)).ok
