"""The dedup/correlation/delivery state: atomic across threads and processes, durable, on
SQLite (local mode) and on a throwaway PostgreSQL cluster (scaled mode)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest

from clampdown.core import state_store
from clampdown.core.diagnostics import ClampdownError
from clampdown.core.state_store import StateStore
from tests.paths import REPO
from tests.pg import postgres_url  # noqa: F401  (session fixture)


def never_finished(_run_id: str) -> bool:
    return False


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty state database of each kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.sqlite3'}"
    import psycopg

    base = request.getfixturevalue("postgres_url")
    name = f"state_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return base.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture
def store(store_url: str):
    s = StateStore(store_url)
    yield s
    s.close()


def claim(store: StateStore, key: str, corr: str | None = None, **kw):
    args = {
        "dedup_key": key,
        "dedup_ttl": 60.0,
        "correlation_key": corr,
        "correlation_ttl": 60.0,
        "runbook": "contain-iam-user",
        "max_runs": 50,
        "is_finished": never_finished,
        **kw,
    }
    return store.claim(**args)


def test_first_seen_is_true_once_per_window(store: StateStore) -> None:
    assert store.first_seen("pagerduty:delivery-1", 60) is True
    assert store.first_seen("pagerduty:delivery-1", 60) is False
    assert store.first_seen("pagerduty:delivery-2", 60) is True
    assert store.first_seen("short", 0.05) is True
    time.sleep(0.1)
    assert store.first_seen("short", 60) is True  # expired: a new delivery
    assert store.first_seen("short", 60) is False


def test_reserve_attach_then_duplicate_and_joined(store: StateStore) -> None:
    first = claim(store, "guardduty:f1", "arn:aws:iam::111122223333:user/mallory")
    assert first.status == "reserved" and first.reservation
    # the run is not started yet: others must wait rather than start a second one
    assert claim(store, "guardduty:f1").status == "pending"
    assert claim(store, "pagerduty:p1", "arn:aws:iam::111122223333:user/mallory").status == (
        "pending"
    )
    store.attach(first.reservation, "run-a")
    again = claim(store, "guardduty:f1")
    assert (again.status, again.run_id) == ("duplicate", "run-a")
    joined = claim(store, "pagerduty:p1", "arn:aws:iam::111122223333:user/mallory")
    assert (joined.status, joined.run_id) == ("joined", "run-a")
    # the joined alert's own key now points at the run too
    assert claim(store, "pagerduty:p1").run_id == "run-a"
    other = claim(store, "guardduty:f2", "arn:aws:iam::111122223333:user/bob")
    assert other.status == "reserved"
    assert store.active_run_ids() == ["run-a"]


def test_a_finished_run_is_not_joined(store: StateStore) -> None:
    first = claim(store, "a:1", "who")
    store.attach(first.reservation, "run-1")
    finished = {"run-1"}
    later = claim(store, "a:2", "who", is_finished=lambda r: r in finished)
    assert later.status == "reserved"  # a new run: the correlated one is over
    store.attach(later.reservation, "run-2")
    assert claim(store, "a:3", "who", is_finished=lambda r: r in finished).run_id == "run-2"


def test_release_frees_the_incident(store: StateStore) -> None:
    first = claim(store, "k", "c")
    store.release(first.reservation)
    assert claim(store, "k", "c").status == "reserved"


def test_windows_expire(store: StateStore, monkeypatch: pytest.MonkeyPatch) -> None:
    # the store's clock (time.time, read in Python) moved on by hand: 1.2 s later at once
    clock = [time.time()]
    monkeypatch.setattr(state_store, "time", SimpleNamespace(time=lambda: clock[0]))
    first = claim(store, "k", "c", dedup_ttl=1.0, correlation_ttl=1.0)
    store.attach(first.reservation, "run-1")
    assert claim(store, "k").status == "duplicate"
    clock[0] += 1.2
    assert claim(store, "k").status == "reserved"
    assert claim(store, "k2", "c").status == "reserved"  # correlation expired too


def test_stale_reservation_is_dropped(store: StateStore, monkeypatch) -> None:
    claim(store, "k")  # its process "dies": never attached
    monkeypatch.setattr(state_store, "PENDING_STALE", 3600.0)
    assert claim(store, "k").status == "pending"
    monkeypatch.setattr(state_store, "PENDING_STALE", 0.0)  # now older than the window
    time.sleep(0.01)
    assert claim(store, "k").status == "reserved"


def test_max_runs_counts_unfinished_runs_and_reservations(store: StateStore) -> None:
    finished: set[str] = set()

    def done(run_id: str) -> bool:
        return run_id in finished

    a = claim(store, "a", max_runs=2, is_finished=done)
    b = claim(store, "b", max_runs=2, is_finished=done)  # a is reserved: it counts
    full = claim(store, "c", max_runs=2, is_finished=done)
    assert (full.status, full.active) == ("full", 2)
    store.attach(a.reservation, "run-a")
    store.attach(b.reservation, "run-b")
    assert claim(store, "c", max_runs=2, is_finished=done).status == "full"
    # other runbooks have their own slots
    assert claim(store, "d", runbook="lock-model-artifacts", max_runs=2).status == "reserved"
    finished.add("run-a")
    assert claim(store, "c", max_runs=2, is_finished=done).status == "reserved"
    assert "run-a" not in store.active_run_ids()


def test_claim_with_a_run_id_starts_in_one_transaction(store: StateStore) -> None:
    """The caller's run id takes the keys and a slot at once, its start recorded inside:
    the next alerts of the incident see the run (never a reservation to wait for)."""
    recorded: list[str] = []
    first = claim(
        store, "guardduty:f1", "who", run_id="run-a", on_start=lambda: recorded.append("a")
    )
    assert (first.status, first.run_id, first.reservation) == ("started", "run-a", None)
    assert recorded == ["a"]
    asked: list[str] = []
    again = claim(store, "guardduty:f1", run_id="run-b", on_start=lambda: asked.append("b"))
    assert (again.status, again.run_id) == ("duplicate", "run-a")
    joined = claim(store, "pagerduty:p1", "who", run_id="run-c", on_start=lambda: asked.append("c"))
    assert (joined.status, joined.run_id) == ("joined", "run-a")
    assert asked == []  # an alert that starts nothing records nothing
    assert store.active_run_ids() == ["run-a"]


def test_a_start_that_cannot_be_recorded_claims_nothing(store: StateStore) -> None:
    def full_disk() -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        claim(store, "k", "c", run_id="run-x", on_start=full_disk)
    assert store.active_run_ids() == []
    retry = claim(store, "k", "c", run_id="run-y", on_start=lambda: None)
    assert (retry.status, retry.run_id) == ("started", "run-y")
    assert claim(store, "k2", "c").run_id == "run-y"  # its correlation key was free too


def test_max_runs_counts_runs_started_with_their_id(store: StateStore) -> None:
    finished: set[str] = set()

    def ask(key: str, run_id: str):
        return claim(store, key, max_runs=2, is_finished=finished.__contains__, run_id=run_id)

    assert ask("a", "run-a").status == "started"
    assert ask("b", "run-b").status == "started"
    full = ask("c", "run-c")
    assert (full.status, full.active) == ("full", 2)
    finished.add("run-a")
    assert ask("c", "run-c").status == "started"
    assert sorted(store.active_run_ids()) == ["run-b", "run-c"]


def test_long_keys_are_hashed_not_truncated(store: StateStore) -> None:
    base = "x" * 500
    first = claim(store, base + "1")
    store.attach(first.reservation, "run-1")
    assert claim(store, base + "1").status == "duplicate"
    assert claim(store, base + "2").status == "reserved"


def test_state_survives_reopen(store_url: str) -> None:
    s = StateStore(store_url)
    first = claim(s, "guardduty:f1", "who")
    s.attach(first.reservation, "run-1")
    assert s.first_seen("delivery", 60)
    s.hold(
        runbook="contain-iam-user",
        trigger="t",
        dedup_key="k",
        alert={"id": "a1"},
        reason="at its limit",
    )
    s.close()
    reopened = StateStore(store_url)
    try:
        assert claim(reopened, "guardduty:f1").run_id == "run-1"
        assert claim(reopened, "pagerduty:p1", "who").status == "joined"
        assert reopened.first_seen("delivery", 60) is False
        [held] = reopened.held_alerts()
        assert (held.alert, held.reason) == ({"id": "a1"}, "at its limit")
    finally:
        reopened.close()


@pytest.mark.parametrize("how", ["reserve", "record"])
def test_atomic_under_16_threads(store: StateStore, how: str) -> None:
    """16 threads, 10 incidents, each alert repeated: exactly one run per incident, whether
    the claim reserves (then attach) or starts with the caller's run id (recording inside)."""
    barrier = threading.Barrier(16)
    reserved: list[str] = []
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()

    def worker(n: int) -> None:
        barrier.wait()
        for i in range(40):
            key = f"incident-{(n + i) % 10}"
            while True:
                if how == "record":  # a start that takes a moment: other claims wait for it
                    result = claim(
                        store,
                        key,
                        f"principal-{(n + i) % 10}",
                        run_id=f"run-{key}",
                        on_start=lambda: time.sleep(0.002),
                    )
                else:
                    result = claim(store, key, f"principal-{(n + i) % 10}")
                if result.status != "pending":
                    break
                assert how == "reserve"  # a run id claimed at once is never pending
                time.sleep(0.005)
            if result.status == "reserved":
                store.attach(result.reservation, f"run-{key}")
            if result.status in ("reserved", "started"):
                with lock:
                    reserved.append(key)
            with lock:
                outcomes[result.status] += 1

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(reserved) == sorted(f"incident-{i}" for i in range(10))
    assert outcomes["reserved" if how == "reserve" else "started"] == 10
    assert sum(outcomes.values()) == 16 * 40
    assert sorted(store.active_run_ids()) == sorted(f"run-incident-{i}" for i in range(10))


# Each racer runs both races, one after the other, each on keys of its own: "reserve"
# (claim, then attach) and "record" (claim with its run id, the start recorded inside).
# The two processes start each race together (a "go" line each), whatever their imports
# and the previous race took; one pair of processes for both races halves the interpreter
# starts (about 0.6 CPU-s each: SQLAlchemy and the driver imported).
RACES = ("reserve", "record")
PROCESS_SCRIPT = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {repo!r})
    from clampdown.core.state_store import StateStore
    store = StateStore({url!r})
    print("ready", flush=True)
    for how in {races!r}:
        sys.stdin.readline()  # both start the race together
        records = how == "record"
        won = []
        for i in range(60):
            key = f"{{how}}-incident-{{i % 12}}"
            while True:
                c = store.claim(dedup_key=key, dedup_ttl=60, correlation_key=None,
                                correlation_ttl=60, runbook=f"rb-{{how}}", max_runs=100,
                                is_finished=lambda r: False,
                                run_id=f"run-{{key}}-{{sys.argv[1]}}" if records else None,
                                on_start=(lambda: time.sleep(0.002)) if records else None)
                if c.status != "pending":
                    break
                time.sleep(0.005)
            if c.status == "reserved":
                store.attach(c.reservation, f"run-{{key}}-{{sys.argv[1]}}")
            if c.status in ("reserved", "started"):
                won.append(key)
            if store.first_seen(f"{{how}}-delivery-{{i}}", 60):
                won.append(f"{{how}}-delivery-{{i}}")
        print(",".join(won), flush=True)
    """
)


def test_atomic_across_two_processes(store_url: str) -> None:
    """Two processes race for the same incidents and deliveries, once per way of claiming
    (:data:`RACES`): exactly one of them wins each incident, and each delivery is first
    seen once."""
    StateStore(store_url).close()  # tables exist before the race
    script = PROCESS_SCRIPT.format(repo=str(REPO), url=store_url, races=RACES)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(n)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(2)
    ]
    # a racer that hangs (a claim pending forever) is killed: its readline below ends
    watchdog = threading.Timer(120, lambda: [p.kill() for p in procs])
    watchdog.start()
    try:
        for proc in procs:  # each has imported and opened its store
            assert proc.stdout is not None
            if proc.stdout.readline() != "ready\n":
                raise AssertionError(f"a racer did not start: {proc.communicate()[1]}")
        for how in RACES:
            for proc in procs:
                assert proc.stdin is not None
                proc.stdin.write("go\n")
                proc.stdin.flush()
            won: list[str] = []
            for proc in procs:
                assert proc.stdout is not None
                line = proc.stdout.readline()
                if not line:
                    why = proc.communicate()[1] or "killed after 120 s"
                    raise AssertionError(f"a racer ended in the {how} race: {why}")
                won += [w for w in line.strip().split(",") if w]
            incidents = sorted(w for w in won if w.startswith(f"{how}-incident-"))
            deliveries = sorted(w for w in won if w.startswith(f"{how}-delivery-"))
            assert incidents == sorted(f"{how}-incident-{i}" for i in range(12)), how
            assert deliveries == sorted(f"{how}-delivery-{i}" for i in range(60)), how
            assert len(won) == 12 + 60, how  # nothing of another race
        for proc in procs:
            _out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
    finally:
        watchdog.cancel()
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)


def test_sqlite_file_lives_beside_the_ledgers(clampdown_home: Path) -> None:
    s = StateStore()
    try:
        assert s.backend == "sqlite"
        s.first_seen("x", 1)
        assert (clampdown_home / "state.sqlite3").is_file()
    finally:
        s.close()


def test_state_url_setting_and_errors(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CLAMPDOWN_STATE_URL", f"sqlite:///{tmp_path / 'elsewhere.db'}")
    StateStore().close()
    assert (tmp_path / "elsewhere.db").is_file()
    with pytest.raises(ClampdownError, match="not a database URL"):
        StateStore("not a url")
    with pytest.raises(ClampdownError, match="unsupported state database 'mysql'"):
        StateStore("mysql://u:p@localhost/db")


def test_repr_never_shows_the_password(postgres_url: str) -> None:  # noqa: F811
    url = postgres_url.replace("postgres@", "postgres:hunter2secret@")
    s = StateStore(url)  # trust auth: the password is ignored by the server
    try:
        assert "hunter2secret" not in repr(s)
        assert "hunter2secret" not in str(s.engine.url)
    finally:
        s.close()
