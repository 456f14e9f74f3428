"""Trigger triage: one run per incident under a storm, nothing lost, no duplicate after a restart."""

from __future__ import annotations

import contextlib
import json
import os
import random
import sqlite3
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from clampdown.app.cli import app as cli_app
from clampdown.core.alert import Alert
from clampdown.core.diagnostics import ClampdownError, InvalidFileError
from clampdown.core.ledger import Ledger, new_run_id, read, verify_file
from clampdown.core.runs import RunNotStarted
from clampdown.core.settings import settings
from clampdown.core.state_store import StateStore
from clampdown_flows.triage import TriggerTriage
from tests.integration.test_local_starter import loads  # noqa: F401 - fixture

TRIGGERS = """\
apiVersion: clampdown/v1
kind: TriggerSet
triggers:
  - name: iam-user
    match: alert.principal and ':user/' in alert.principal
    runbook: contain-iam-user
    inputs:
      principal_arn: "{{ alert.principal }}"
    correlate_by: "{{ alert.principal }}"
    max_concurrent_runs: MAX
"""


def principal(k: int) -> str:
    return f"arn:aws:iam::111122223333:user/suspect-{k}"


def make_alert(source: str, alert_id: str, who: str | None, **kw: Any) -> Alert:
    return Alert(
        source=source,  # type: ignore[arg-type]
        id=alert_id,
        type=kw.pop("type", "UnauthorizedAccess:IAMUser/MaliciousIPCaller"),
        title=kw.pop("title", f"{source} alert {alert_id}"),
        severity=kw.pop("severity", "high"),
        principal=who,
        observed_at=datetime(2025, 1, 1, tzinfo=UTC),
        **kw,
    )


class FakeStarter:
    """``start_run`` that records calls and writes a minimal real ledger a moment later,
    like InProcessStarter (the run's thread writes run.start after start_run returned)."""

    def __init__(self, delay: float = 0.02, fail: bool = False) -> None:
        self.calls: list[tuple[Path, dict[str, Any], dict[str, Any]]] = []
        self.delay = delay
        self.fail = fail
        self.lock = threading.Lock()
        self.threads: list[threading.Thread] = []

    def __call__(self, runbook: Path, inputs: dict[str, Any], trigger: dict[str, Any]) -> str:
        if self.fail:
            raise RuntimeError("Prefect API unreachable")
        run_id = new_run_id()
        with self.lock:
            self.calls.append((runbook, inputs, trigger))
        thread = threading.Thread(target=self._write, args=(run_id, runbook, inputs, trigger))
        thread.start()
        self.threads.append(thread)
        return run_id

    def _write(self, run_id: str, runbook: Path, inputs: dict, trigger: dict) -> None:
        time.sleep(self.delay)
        ledger = Ledger(settings().ledger_path(run_id))
        ledger.append(
            "run.start",
            run={"id": run_id, "runbook": runbook.stem, "trigger": trigger},
            inputs=inputs,
        )
        ledger.close()

    def finish(self, run_id: str) -> None:
        ledger = Ledger(settings().ledger_path(run_id))
        ledger.append("run.end", status="succeeded", outputs={})
        ledger.close()

    def join(self) -> None:
        for t in self.threads:
            t.join()


class RecordingFakeStarter(FakeStarter):
    """A FakeStarter that also starts in three moves, as InProcessStarter does for the
    triage (prepare, record inside the claim, launch after it): it checks, while it records,
    that the claim is not visible to another connection yet (it commits with the record)."""

    def __init__(self, state_url: str, delay: float = 0.02, fail: bool = False) -> None:
        super().__init__(delay, fail)
        self.database = state_url.removeprefix("sqlite:///")
        self.recorded: list[str] = []
        self.discarded: list[str] = []
        self.preloaded: list[Any] = []
        self.libraries: list[Any] = []

    def prepare(
        self,
        runbook: Path,
        inputs: dict[str, Any],
        trigger: dict[str, Any],
        *,
        run_id: str,
        preloaded: Any = None,
        library: Path | None = None,
    ) -> FakePrepared:
        self.preloaded.append(preloaded)
        self.libraries.append(library)
        return FakePrepared(self, run_id, runbook, inputs, trigger)

    def committed_runs(self) -> set[str]:
        """Run slots as another connection sees them (a plain WAL reader: the store's own
        connections take the write lock, which the claim that is recording holds)."""
        with contextlib.closing(sqlite3.connect(self.database)) as conn:
            return {r[0] for r in conn.execute("SELECT run_id FROM clampdown_active_runs")}


class FakePrepared:
    def __init__(self, starter: RecordingFakeStarter, run_id: str, *args: Any) -> None:
        self.starter = starter
        self.run_id = run_id
        self.args = args

    def record(self) -> None:
        if self.starter.fail:
            raise RuntimeError("Prefect API unreachable")
        assert self.run_id not in self.starter.committed_runs()  # the claim is not committed yet
        with self.starter.lock:
            self.starter.recorded.append(self.run_id)

    def launch(self, on_start: Callable[[], None] | None = None) -> None:
        """Never calls ``on_start``: the launcher then sees the run.start in the ledger."""
        runbook, inputs, trigger = self.args
        with self.starter.lock:
            self.starter.calls.append((runbook, inputs, trigger))
        thread = threading.Thread(target=self.starter._write, args=(self.run_id, *self.args))
        thread.start()
        self.starter.threads.append(thread)

    def discard(self) -> None:
        self.starter.discarded.append(self.run_id)


@pytest.fixture(params=["reserves", "records"])
def make_starter(request: pytest.FixtureRequest, state_url: str):
    """Both ways the triage starts a run: a plain ``start_run`` (the claim reserves, then
    attaches) and a starter recording the start inside the claim (serve's local mode)."""

    def make(**kw: Any) -> FakeStarter:
        if request.param == "records":
            return RecordingFakeStarter(state_url, **kw)
        return FakeStarter(**kw)

    return make


def ledger_of(run_id: str) -> Path:
    return settings().ledger_path(run_id)


@pytest.fixture
def triggers_file(tmp_path: Path):
    def write(max_runs: int = 50, text: str = TRIGGERS) -> Path:
        path = tmp_path / "triggers.yaml"
        path.write_text(text.replace("MAX", str(max_runs)), encoding="utf-8")
        return path

    return write


@pytest.fixture
def state_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'state' / 'state.sqlite3'}"


def storm_alerts(incidents: range, per_source: int, tag: str) -> list[Alert]:
    """GuardDuty repeats its finding; PagerDuty has 2 incidents and Alertmanager 5 alerts per
    suspect: all about the same principal, so they dedup or correlate into one run."""
    alerts = []
    for k in incidents:
        for j in range(per_source):
            alerts.append(make_alert("guardduty", f"gd-finding-{k}", principal(k)))
            alerts.append(
                make_alert(
                    "pagerduty", f"pd-{tag}-{k}-{j % 2}", principal(k), type="incident.triggered"
                )
            )
            alerts.append(
                make_alert(
                    "alertmanager",
                    f"am-{tag}-{k}-{j % 5}@t",
                    principal(k),
                    type="SageMakerInvocationSpike",
                )
            )
    return alerts


def fire(triage: TriggerTriage, alerts: list[Alert]) -> list[Any]:
    with ThreadPoolExecutor(max_workers=32) as pool:
        return list(pool.map(triage, alerts))


def deferred_written(triage: TriggerTriage, bound: float = 30.0) -> None:
    """Wait until the ``alert.joined`` records the triage deferred (their run had not written
    ``run.start`` yet) are written: its ``LedgerWaits`` writes them at its next look after
    the run started, not by the time ``starter.join()`` returns (a bound for the event, not
    a timing check)."""
    deadline = time.monotonic() + bound
    while triage._late.pending():
        assert time.monotonic() < deadline, f"still waiting: {triage._late.pending()}"
        time.sleep(0.02)


def ledger_records() -> dict[str, list[dict[str, Any]]]:
    runs = settings().home / "runs"
    return {p.parent.name: read(p) for p in runs.glob("*/ledger.jsonl")}


def test_storm_gives_one_run_per_incident_and_loses_nothing(
    triggers_file, state_url, make_starter
) -> None:
    starter = make_starter()
    triage = TriggerTriage(triggers_file(), StateStore(state_url), starter, ledger_of)
    alerts = storm_alerts(range(10), 10, "a")
    random.Random(5).shuffle(alerts)
    assert len(alerts) == 300
    outcomes = fire(triage, alerts)
    starter.join()
    deferred_written(triage)

    assert len(starter.calls) == 10
    if isinstance(starter, RecordingFakeStarter):  # each start recorded once, none undone
        assert sorted(starter.recorded) == sorted(
            o.run_id for o in outcomes if o.status == "started"
        )
        assert starter.discarded == []
    statuses = Counter(o.status for o in outcomes)
    assert statuses["started"] == 10
    assert statuses["ignored"] == 0
    assert statuses["deduplicated"] + statuses["joined"] == 290
    run_of: dict[str, str] = {}  # principal -> run id: every alert of a suspect went there
    for alert, outcome in zip(alerts, outcomes, strict=True):
        assert outcome.trigger == "iam-user"
        assert run_of.setdefault(alert.principal, outcome.run_id) == outcome.run_id
    assert len(set(run_of.values())) == 10

    # nothing lost: each delivery is in its run's ledger, once (run.start or alert.joined)
    ledgers = ledger_records()
    assert set(ledgers) == set(run_of.values())
    recorded: Counter[tuple[str, str]] = Counter()
    where: dict[tuple[str, str], set[str]] = defaultdict(set)
    for run_id, records in ledgers.items():
        assert verify_file(ledger_of(run_id)).ok
        assert records[0]["type"] == "run.start"
        trigger = records[0]["run"]["trigger"]
        assert trigger["type"] == "alert" and trigger["trigger"] == "iam-user"
        assert "raw" not in trigger["alert"]
        summaries = [trigger["alert"]] + [
            r["alert"] for r in records if r["type"] == "alert.joined"
        ]
        for summary in summaries:
            assert run_of[summary["principal"]] == run_id
            recorded[(summary["source"], summary["id"])] += 1
            where[(summary["source"], summary["id"])].add(run_id)
    assert sum(recorded.values()) == 300
    assert recorded == Counter((a.source, a.id) for a in alerts)
    assert all(len(runs) == 1 for runs in where.values())

    # restart mid-window: a new store and triage over the same state file
    triage.store.close()
    again = TriggerTriage(triggers_file(), StateStore(state_url), starter, ledger_of)
    more = storm_alerts(range(10), 2, "b")
    later = fire(again, more)
    starter.join()
    deferred_written(again)
    assert len(starter.calls) == 10
    assert {o.status for o in later} <= {"deduplicated", "joined"}
    for alert, outcome in zip(more, later, strict=True):
        assert outcome.run_id == run_of[alert.principal]
    joined_after = sum(
        1 for records in ledger_records().values() for r in records if r["type"] == "alert.joined"
    )
    assert joined_after == 290 + len(more)
    again.store.close()


def test_no_trigger_matches_is_ignored_with_reason(triggers_file, state_url) -> None:
    starter = FakeStarter()
    triage = TriggerTriage(triggers_file(), StateStore(state_url), starter, ledger_of)
    outcome = triage(make_alert("generic", "g1", None))
    assert (outcome.status, outcome.run_id) == ("ignored", None)
    assert outcome.reason == "no trigger matches this alert"
    assert starter.calls == []


def test_over_max_concurrent_runs_is_held_and_retried_by_the_next_repeat(
    triggers_file, state_url, make_starter, monkeypatch: pytest.MonkeyPatch
) -> None:
    starter = make_starter(delay=0)
    store = StateStore(state_url)
    held: list[str] = []
    triage = TriggerTriage(
        triggers_file(max_runs=2),
        store,
        starter,
        ledger_of,
        on_held=lambda alert, reason: held.append(alert.id),
    )
    first = triage(make_alert("guardduty", "f1", principal(1)))
    second = triage(make_alert("guardduty", "f2", principal(2)))
    third = triage(make_alert("guardduty", "f3", principal(3)))
    starter.join()
    assert [first.status, second.status] == ["started", "started"]
    assert third.status == "ignored" and third.trigger == "iam-user"
    assert "already has 2 runs in progress (max_concurrent_runs 2)" in third.reason
    [kept] = store.held_alerts()
    assert (kept.alert["id"], kept.runbook, kept.reason) == ("f3", "contain-iam-user", third.reason)
    assert held == ["f3"]
    monkeypatch.setenv("CLAMPDOWN_STATE_URL", state_url)  # what `clampdown serve` used
    listed = CliRunner().invoke(cli_app, ["triggers", "held", "--format", "json"])
    assert listed.exit_code == 0, listed.output
    assert [(h["alert"]["id"], h["runbook"]) for h in json.loads(listed.output)] == [
        ("f3", "contain-iam-user")
    ]
    starter.finish(first.run_id)  # a slot frees: the source's next repeat starts a run
    retry = triage(make_alert("guardduty", "f3", principal(3)))
    assert retry.status == "started"
    assert len(starter.calls) == 3


def test_start_failure_frees_the_incident_and_asks_for_a_retry(
    triggers_file, state_url, make_starter
) -> None:
    """A starter that fails (here: unexpectedly) started nothing: RunNotStarted goes up to
    the endpoint (503 + Retry-After), the incident's keys are free, nothing is held."""
    starter = make_starter(fail=True)
    store = StateStore(state_url)
    triage = TriggerTriage(triggers_file(), store, starter, ledger_of)
    with pytest.raises(RunNotStarted) as caught:
        triage(make_alert("guardduty", "f1", principal(1)))
    assert "could not start contain-iam-user: RuntimeError: Prefect API unreachable" in str(
        caught.value
    )
    assert store.held_alerts() == [] and store.active_run_ids() == []
    starter.fail = False
    assert triage(make_alert("guardduty", "f1", principal(1))).status == "started"


def test_a_runbook_that_cannot_start_as_asked_is_held(triggers_file, state_url) -> None:
    """A ClampdownError of the starter (e.g. secret inputs with no sealing key) is not
    fixed by a retry: the alert is held for a responder and answered ignored."""

    def refuse(runbook: Path, inputs: dict[str, Any], trigger: dict[str, Any]) -> str:
        raise ClampdownError("runbook contain-iam-user has secret inputs", "set the key")

    store = StateStore(state_url)
    triage = TriggerTriage(triggers_file(), store, refuse, ledger_of)
    outcome = triage(make_alert("guardduty", "f1", principal(1)))
    assert outcome.status == "ignored" and "has secret inputs" in outcome.reason
    assert store.held_alerts()[0].alert["id"] == "f1"


def test_inputs_the_runbook_refuses_are_held(triggers_file, state_url) -> None:
    text = TRIGGERS.replace("alert.principal and ':user/' in alert.principal", "true")
    starter = FakeStarter()
    store = StateStore(state_url)
    triage = TriggerTriage(triggers_file(text=text), store, starter, ledger_of)
    outcome = triage(make_alert("guardduty", "f1", "arn:aws:iam::111122223333:role/r"))
    assert outcome.status == "ignored"
    assert "cannot start contain-iam-user" in outcome.reason and "principal_arn" in outcome.reason
    assert starter.calls == []
    assert store.held_alerts()[0].alert["principal"] == "arn:aws:iam::111122223333:role/r"


def test_a_recorded_start_gets_the_checked_runbook_loaded_once(
    triggers_file,
    state_url,
    loads: list[str],  # noqa: F811 - the fixture
) -> None:
    """The triage loads and checks a runbook once per file version and hands it to the
    starter (and so to the run): not loaded again per alert, the digest of its bytes."""
    import hashlib

    starter = RecordingFakeStarter(state_url, delay=0)
    triage = TriggerTriage(triggers_file(), StateStore(state_url), starter, ledger_of)
    outcomes = [triage(make_alert("guardduty", f"f{k}", principal(k))) for k in range(3)]
    starter.join()
    assert [o.status for o in outcomes] == ["started"] * 3
    assert len(loads) == 1
    given = {id(g) for g in starter.preloaded}
    assert len(given) == 1
    first = starter.preloaded[0]
    assert first.model.metadata.name == "contain-iam-user"
    assert first.digest == hashlib.sha256(Path(first.path).read_bytes()).hexdigest()
    assert starter.recorded == [o.run_id for o in outcomes]
    # the library the runbook was found in goes with it (no settings read per alert)
    assert starter.libraries == [triage.library] * 3


def test_a_runbook_error_while_recording_is_held_and_claims_nothing(
    triggers_file, state_url
) -> None:
    """A ClampdownError of the recording starter (secret inputs with no sealing key) rolls
    the claim back and holds the alert; the next alert of the incident may start a run."""
    starter = RecordingFakeStarter(state_url, delay=0)
    store = StateStore(state_url)
    triage = TriggerTriage(triggers_file(), store, starter, ledger_of)
    refused: list[str] = []

    def refuse(self: FakePrepared) -> None:
        refused.append(self.run_id)
        raise ClampdownError("runbook contain-iam-user has secret inputs", "set the key")

    real = FakePrepared.record
    FakePrepared.record = refuse  # type: ignore[method-assign]
    try:
        outcome = triage(make_alert("guardduty", "f1", principal(1)))
    finally:
        FakePrepared.record = real  # type: ignore[method-assign]
    assert outcome.status == "ignored" and "has secret inputs" in outcome.reason
    assert store.held_alerts()[0].alert["id"] == "f1"
    assert len(refused) == 1 and store.active_run_ids() == [] and starter.calls == []
    again = triage(make_alert("guardduty", "f1", principal(1)))
    starter.join()
    assert again.status == "started" and again.run_id != refused[0]


def test_a_claim_that_fails_after_the_start_was_recorded_discards_it(
    triggers_file, state_url, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The start is recorded inside the claim; when the claim then cannot commit, the
    recorded start is removed (it must not be continued as a stopped run) and nothing runs."""
    import sqlalchemy as sa

    starter = RecordingFakeStarter(state_url, delay=0)
    store = StateStore(state_url)
    triage = TriggerTriage(triggers_file(), store, starter, ledger_of)

    def commit_fails(**kw: Any) -> Any:
        kw["on_start"]()
        raise sa.exc.OperationalError("COMMIT", {}, Exception("disk I/O error"))

    monkeypatch.setattr(store, "claim", commit_fails)
    with pytest.raises(sa.exc.OperationalError):
        triage(make_alert("guardduty", "f1", principal(1)))
    assert len(starter.recorded) == 1
    assert starter.discarded == starter.recorded
    assert starter.calls == []


def test_joined_alert_is_recorded_after_run_end_and_slack_hook_called(
    triggers_file, state_url
) -> None:
    starter = FakeStarter(delay=0)
    joined: list[tuple[str, str]] = []

    def on_joined(run_id: str, alert: Alert) -> None:
        joined.append((run_id, alert.id))
        raise RuntimeError("Slack is down")  # must not change the outcome

    triage = TriggerTriage(
        triggers_file(),
        StateStore(state_url),
        starter,
        ledger_of,
        on_joined=on_joined,
        is_finished=lambda run_id: False,
    )
    first = triage(make_alert("guardduty", "f1", principal(1)))
    starter.join()
    starter.finish(first.run_id)
    outcome = triage(make_alert("pagerduty", "p1", principal(1), type="incident.triggered"))
    assert (outcome.status, outcome.run_id) == ("joined", first.run_id)
    assert joined == [(first.run_id, "p1")]
    records = read(ledger_of(first.run_id))
    assert [r["type"] for r in records] == ["run.start", "run.end", "alert.joined"]
    assert records[-1]["how"] == "joined" and records[-1]["alert"]["id"] == "p1"
    assert verify_file(ledger_of(first.run_id)).ok


def test_secrets_in_raw_never_reach_the_ledger(triggers_file, state_url) -> None:
    starter = FakeStarter(delay=0)
    triage = TriggerTriage(triggers_file(), StateStore(state_url), starter, ledger_of)
    alert = make_alert("generic", "g1", principal(1), raw={"token": "xoxb-very-secret-token"})
    first = triage(alert)
    triage(make_alert("generic", "g1", principal(1), raw={"token": "xoxb-very-secret-token"}))
    starter.join()
    text = ledger_of(first.run_id).read_text()
    assert "xoxb-very-secret-token" not in text
    assert json.dumps(starter.calls[0][2]).find("xoxb") == -1


def test_trigger_file_reloads_and_a_bad_edit_keeps_the_old_one(triggers_file, state_url) -> None:
    path = triggers_file()
    starter = FakeStarter(delay=0)
    triage = TriggerTriage(path, StateStore(state_url), starter, ledger_of)
    path.write_text(TRIGGERS.replace("MAX", "5").replace("name: iam-user", "name: renamed"))
    os.utime(path, (time.time() + 5, time.time() + 5))
    assert triage(make_alert("guardduty", "f1", principal(1))).trigger == "renamed"
    path.write_text(TRIGGERS.replace("MAX", "5").replace("contain-iam-user", "no-such-runbook"))
    os.utime(path, (time.time() + 10, time.time() + 10))
    assert triage(make_alert("guardduty", "f2", principal(2))).trigger == "renamed"


def test_a_trigger_file_that_does_not_lint_is_refused_at_start(triggers_file, state_url) -> None:
    path = triggers_file(text=TRIGGERS.replace("contain-iam-user", "contain-iam-usr"))
    with pytest.raises(InvalidFileError) as caught:
        TriggerTriage(path, StateStore(state_url), FakeStarter(), ledger_of)
    assert "no runbook named 'contain-iam-usr'" in str(caught.value)
    assert "did you mean 'contain-iam-user'?" in str(caught.value)


def test_without_a_trigger_file_every_alert_asks_for_a_retry_until_one_lints(
    tmp_path: Path, state_url, caplog: pytest.LogCaptureFixture
) -> None:
    """``missing_ok`` (serve with no trigger file): no alert is ignored, each raises NoTriggers
    (503 + Retry-After at the endpoint) and nothing is held; a file that appears and does
    not lint is said once and still refused; once it lints it is in force."""
    from clampdown_flows.triage import NoTriggers

    path = tmp_path / "later" / "triggers.yaml"
    store = StateStore(state_url)
    starter = FakeStarter(delay=0)
    triage = TriggerTriage(path, store, starter, ledger_of, missing_ok=True)
    assert triage.problem is not None and triage.problem.startswith("no trigger file")
    with pytest.raises(NoTriggers):
        triage(make_alert("guardduty", "f1", principal(1)))
    path.parent.mkdir()
    path.write_text(TRIGGERS.replace("MAX", "5").replace("contain-iam-user", "contain-iam-usr"))
    with caplog.at_level("ERROR", "clampdown.triage"):
        for _ in range(2):
            with pytest.raises(NoTriggers):
                triage(make_alert("guardduty", "f1", principal(1)))
    [said] = [r.getMessage() for r in caplog.records if "does not lint" in r.getMessage()]
    assert f"{path}:" in said and "answered 503 until it does" in said
    assert triage.problem is not None and "does not lint" in triage.problem
    assert store.held_alerts() == [] and starter.calls == []
    path.write_text(TRIGGERS.replace("MAX", "5"))
    os.utime(path, (time.time() + 5, time.time() + 5))
    assert triage(make_alert("guardduty", "f1", principal(1))).status == "started"
    assert triage.problem is None
    starter.join()


def test_a_trigger_file_deleted_while_in_use_keeps_its_triggers(triggers_file, state_url) -> None:
    path = triggers_file()
    starter = FakeStarter(delay=0)
    triage = TriggerTriage(path, StateStore(state_url), starter, ledger_of, missing_ok=True)
    path.unlink()
    assert triage(make_alert("guardduty", "f1", principal(1))).status == "started"
    assert triage.problem is not None and "stay in force" in triage.problem
    starter.join()


SHIPPED = Path(__file__).resolve().parents[2] / "runbooks"


def shipped_triage(state_url: str, starter: FakeStarter, **kw: Any) -> TriggerTriage:
    return TriggerTriage(
        SHIPPED / "triggers.yaml", StateStore(state_url), starter, ledger_of, library=SHIPPED, **kw
    )


def correlated(run_id: str, bound: float = 30.0) -> list[dict[str, Any]]:
    """The run's ``alert.correlated`` records once it has one (a link into a run that had
    not written ``run.start`` when the alert came is appended by the triage's thread)."""
    deadline = time.monotonic() + bound
    while True:
        found = [r for r in read(ledger_of(run_id)) if r["type"] == "alert.correlated"]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.02)


def stop_logging(who: str) -> Alert:
    return make_alert("eventbridge", "ct-stop-1", who, type="StopLogging", title="StopLogging")


def test_stoplogging_then_guardduty_on_the_shipped_triggers_contains_the_user(
    state_url,
) -> None:
    """The must-show: the suspect turns logging off first; the finding still contains them."""
    starter = FakeStarter(delay=0.05)
    related: list[tuple[str, str, str]] = []
    triage = shipped_triage(
        state_url, starter, on_related=lambda run, a, new: related.append((run, a.id, new))
    )
    who = principal(7)
    evidence = triage(stop_logging(who))
    assert (evidence.status, evidence.trigger) == ("started", "cloudtrail-stop-logging")
    starter.join()
    finding = make_alert("guardduty", "gd-1", who)
    contain = triage(finding)
    assert contain.status == "started", contain
    assert contain.trigger == "guardduty-iam-user"
    assert f"related to run {evidence.run_id} (preserve-evidence)" in contain.reason
    starter.join()
    assert [(c[0].stem, c[1]) for c in starter.calls] == [
        ("preserve-evidence", {"principal_arn": who}),
        ("contain-iam-user", {"principal_arn": who, "lookback_hours": 24}),
    ]
    assert related == [(evidence.run_id, "gd-1", contain.run_id)]
    for run, other, runbook in (
        (evidence.run_id, contain.run_id, "contain-iam-user"),
        (contain.run_id, evidence.run_id, "preserve-evidence"),
    ):
        links = correlated(run)  # the new run's is written once its run.start is
        assert [(r["related_run"], r["related_runbook"]) for r in links] == [(other, runbook)]
        assert verify_file(ledger_of(run)).ok
    # the evidence run ends; GuardDuty re-sends the finding: it repeats the containment run
    starter.finish(evidence.run_id)
    again = triage(finding)
    assert (again.status, again.run_id) == ("deduplicated", contain.run_id)


def test_a_correlated_alert_of_the_same_runbook_still_joins(state_url) -> None:
    starter = FakeStarter(delay=0)
    triage = shipped_triage(state_url, starter)
    who = principal(8)
    first = triage(make_alert("guardduty", "gd-2", who))
    starter.join()
    second = triage(make_alert("pagerduty", "pd-2", who, type="incident.triggered"))
    assert (first.status, second.status) == ("started", "joined")
    assert second.run_id == first.run_id and len(starter.calls) == 1
    assert "alert.correlated" not in [r["type"] for r in read(ledger_of(first.run_id))]


def test_a_resend_after_an_evidence_run_ended_starts_containment(triggers_file, state_url) -> None:
    """A dedup key that pointed at an ended run of another runbook never swallows the alert."""
    evidence_only = TRIGGERS.replace("contain-iam-user", "preserve-evidence").replace(
        "    max_concurrent_runs: MAX\n", '    dedup_key: "gd:{{ alert.id }}"\n'
    )
    path = triggers_file(text=evidence_only)
    starter = FakeStarter(delay=0)
    triage = TriggerTriage(path, StateStore(state_url), starter, ledger_of)
    finding = make_alert("guardduty", "gd-3", principal(9))
    first = triage(finding)
    assert first.status == "started" and starter.calls[0][0].stem == "preserve-evidence"
    starter.join()
    starter.finish(first.run_id)
    # the operator fixes the trigger to contain; GuardDuty re-sends the same finding
    path.write_text(evidence_only.replace("preserve-evidence", "contain-iam-user"), "utf-8")
    later = path.stat().st_mtime + 5
    os.utime(path, (later, later))
    again = triage(finding)
    assert again.status == "started", again
    assert again.run_id != first.run_id and starter.calls[1][0].stem == "contain-iam-user"
    starter.join()


def test_runbooks_giving_the_same_response_still_join(triggers_file, state_url) -> None:
    """Two containment runbooks: the second alert joins, as the model-theft drill expects."""
    text = TRIGGERS.replace("    max_concurrent_runs: MAX\n", "") + (
        "  - name: paged\n"
        "    match: alert.source == 'pagerduty'\n"
        "    runbook: contain-model-theft\n"
        "    inputs:\n"
        '      principal_arn: "{{ alert.principal }}"\n'
        "      bucket: model-bucket\n"
        '    correlate_by: "{{ alert.principal }}"\n'
    )
    text = text.replace(
        "match: alert.principal and", "match: alert.source != 'pagerduty' and alert.principal and"
    )
    starter = FakeStarter(delay=0)
    triage = TriggerTriage(triggers_file(text=text), StateStore(state_url), starter, ledger_of)
    first = triage(make_alert("guardduty", "gd-4", principal(4)))
    starter.join()
    second = triage(make_alert("pagerduty", "pd-4", principal(4), type="incident.triggered"))
    assert (first.status, second.status, second.trigger) == ("started", "joined", "paged")
    assert second.run_id == first.run_id and len(starter.calls) == 1


def test_stoplogging_after_a_containment_run_still_preserves_evidence(state_url) -> None:
    starter = FakeStarter(delay=0)
    triage = shipped_triage(state_url, starter)
    who = principal(5)
    contain = triage(make_alert("guardduty", "gd-5", who))
    starter.join()
    evidence = triage(stop_logging(who))
    assert (contain.status, evidence.status) == ("started", "started")
    assert f"related to run {contain.run_id} (contain-iam-user)" in evidence.reason
    assert [c[0].stem for c in starter.calls] == ["contain-iam-user", "preserve-evidence"]
    starter.join()
