"""The PostgreSQL run store (scaled mode without a shared filesystem) on a throwaway cluster:
checked appends, racing writers, the local cache, advisory-lock ownership across a
``kill -9``, and a row rewritten with SQL caught by ``clampdown verify``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from clampdown.app.cli import app
from clampdown.core.home import Home
from clampdown.core.ledger import GENESIS, Ledger, append_to, line_hash, read, verify_file
from clampdown.core.run_store import ChainConflict
from clampdown.core.run_store_pg import PostgresRunStore
from tests.paths import REPO
from tests.pg import postgres_url  # noqa: F401  (session fixture)


@pytest.fixture
def db_url(postgres_url: str) -> str:  # noqa: F811
    """A fresh, empty database of the session's cluster."""
    import psycopg

    name = f"runs_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return postgres_url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture
def store(db_url: str):
    s = PostgresRunStore(db_url)
    yield s
    s.close()


def line(seq: int, prev: str, type_: str = "step.end") -> bytes:
    return json.dumps({"seq": seq, "type": type_, "prev": prev}).encode()


def test_append_checks_the_chain_head(store: PostgresRunStore) -> None:
    first = line(0, GENESIS, "run.start")
    assert store.ended("r1") is False  # no such run yet
    store.append("r1", 0, GENESIS, first, ended=False)
    assert store.head("r1") == (1, line_hash(first))
    assert store.ended("r1") is False
    with pytest.raises(ChainConflict):  # does not extend the head
        store.append("r1", 1, GENESIS, line(1, GENESIS), ended=False)
    with pytest.raises(ChainConflict):  # a gap
        store.append("r1", 2, line_hash(first), line(2, line_hash(first)), ended=False)
    second = line(1, line_hash(first), "run.end")
    store.append("r1", 1, line_hash(first), second, ended=True)
    assert store.lines("r1") == [first, second]
    assert store.unended() == []
    assert store.ended("r1") is True


def test_two_writers_racing_for_one_seq_exactly_one_wins(store: PostgresRunStore) -> None:
    first = line(0, GENESIS, "run.start")
    store.append("race", 0, GENESIS, first, ended=False)
    barrier = threading.Barrier(8)
    won: list[int] = []
    lost: list[int] = []

    def write(i: int) -> None:
        candidate = json.dumps({"seq": 1, "writer": i, "prev": line_hash(first)}).encode()
        barrier.wait()
        try:
            store.append("race", 1, line_hash(first), candidate, ended=False)
            won.append(i)
        except ChainConflict:
            lost.append(i)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(lost) == 7
    lines = store.lines("race")
    assert len(lines) == 2 and json.loads(lines[1])["writer"] == won[0]
    assert store.head("race") == (2, line_hash(lines[1]))


def test_ledger_stores_first_and_any_machine_continues_the_chain(
    store: PostgresRunStore, tmp_path: Path
) -> None:
    """Two homes (two machines' disks) write one run's ledger in turn; a third, which never
    ran it, materializes it: the same bytes everywhere, and the chain verifies."""
    a, b, c = (Home(tmp_path / n, store=store) for n in ("a", "b", "c"))
    one = Ledger(a.run("r2").ledger, primary=a.run("r2").ledger_primary)
    one.redact("hunter2-secret")
    one.append("run.start", run={"id": "r2"}, note="token hunter2-secret")
    one.append("step.start", step="revoke")
    one.close()
    # serve on another machine records a joined alert meanwhile (no local copy there)
    append_to(b.run("r2").ledger, "alert.joined", primary=b.run("r2").ledger_primary, how="joined")
    two = Ledger(b.run("r2").ledger, primary=b.run("r2").ledger_primary)
    two.append("step.end", step="revoke", status="succeeded")
    # the first machine's writer, its cache now stale, chains on the stored head
    again = Ledger(a.run("r2").ledger, primary=a.run("r2").ledger_primary)
    again.append("run.end", status="succeeded")
    again.close()
    two.close()
    stored = store.lines("r2")
    assert [json.loads(x)["type"] for x in stored] == [
        "run.start",
        "step.start",
        "alert.joined",
        "step.end",
        "run.end",
    ]
    assert b"hunter2" not in b"".join(stored)
    c.run("r2").materialize()
    want = b"".join(x + b"\n" for x in stored)
    assert c.run("r2").ledger.read_bytes() == want
    assert a.run("r2").ledger.read_bytes() == want
    check = verify_file(c.run("r2").ledger)
    assert check.ok and check.complete and check.records == 5
    assert store.unended() == []


def test_a_stale_or_altered_cache_is_replaced_by_the_store(
    store: PostgresRunStore, tmp_path: Path
) -> None:
    home = Home(tmp_path / "h", store=store)
    files = home.run("r3")
    ledger = Ledger(files.ledger, primary=files.ledger_primary)
    ledger.append("run.start", run={"id": "r3"})
    ledger.close()
    files.ledger.write_bytes(b'{"forged": true}\n')
    files.materialize()
    assert [r["type"] for r in read(files.ledger)] == ["run.start"]


def test_files_and_materialize_mirror_the_inbox(store: PostgresRunStore, tmp_path: Path) -> None:
    writer = Home(tmp_path / "w", store=store).run("r4")
    writer.write("start.json", '{"run_id": "r4"}')
    writer.write("decisions/d1.json", "{}")
    writer.write("decisions/d2.json", "{}")
    writer.write("approvals/.key", "ab" * 32)
    assert writer.names("decisions") == ["d1.json", "d2.json"]
    assert writer.names("approvals") == []  # hidden files are not requests
    reader = Home(tmp_path / "r", store=store).run("r4")
    reader.materialize()
    assert (reader.dir / "decisions" / "d1.json").is_file()
    assert (reader.dir / "approvals" / ".key").stat().st_mode & 0o777 == 0o600
    writer.remove("decisions/d1.json")
    assert reader.read("decisions/d1.json") is None
    reader.materialize()
    assert not (reader.dir / "decisions" / "d1.json").exists()
    assert (reader.dir / "decisions" / "d2.json").is_file()
    assert store.unended() == ["r4"]  # a start record and no run.end: a run to continue


HOLDER = textwrap.dedent(
    """
    import sys, time
    from clampdown.core.run_store_pg import PostgresRunStore
    held = PostgresRunStore(sys.argv[1]).try_hold(sys.argv[2])
    print("held" if held else "refused", flush=True)
    time.sleep(600)
    """
)


def test_the_owner_lock_is_released_when_its_process_is_killed(
    store: PostgresRunStore, db_url: str
) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, db_url, "r5"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert store.is_held("r5")
        assert store.try_hold("r5") is None  # another session holds it
        assert not store.is_held("r6")
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
        deadline = time.monotonic() + 30  # PostgreSQL sees the socket close
        while store.is_held("r5") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not store.is_held("r5")
        mine = store.try_hold("r5")
        assert mine is not None and store.is_held("r5")
        mine.release()
        assert not store.is_held("r5")
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def test_a_row_rewritten_with_sql_fails_verify(
    store: PostgresRunStore, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Someone with write access to the database edits a record: the chain (and the
    signature) name it, from a home that never ran the run."""
    import psycopg

    from clampdown.core.ledger_signing import generate_local_key, load_local_key, open_ledger

    key = generate_local_key(tmp_path / "keys" / "ledger.pem")
    files = Home(tmp_path / "worker", store=store).run("r7")
    ledger = open_ledger(files.ledger, "r7", load_local_key(key, tmp_path / "worker"))
    ledger.primary = files.ledger_primary
    ledger.append("run.start", run={"id": "r7"})
    ledger.append("step.end", step="revoke", status="succeeded")
    ledger.append("run.end", status="succeeded")
    ledger.close()
    monkeypatch.setenv("CLAMPDOWN_HOME", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("CLAMPDOWN_STATE_URL", db_url)
    monkeypatch.setenv("CLAMPDOWN_RUN_STORE", "postgresql")
    monkeypatch.setenv("CLAMPDOWN_LEDGER_KEY", str(key))
    runner = CliRunner()
    ok = runner.invoke(app, ["verify", "r7"])
    assert ok.exit_code == 0 and "OK: intact, signed" in ok.output, ok.output
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE clampdown_run_ledgers SET line = replace(line, 'succeeded', 'failed') "
            "WHERE run_id = 'r7' AND seq = 1"
        )
    bad = runner.invoke(app, ["verify", "r7"])
    assert bad.exit_code == 1 and "TAMPERED" in bad.output, bad.output
    missing = runner.invoke(app, ["verify", "nosuchrun"])
    assert missing.exit_code == 1 and "no ledger for run 'nosuchrun'" in missing.output
    assert "run store" in missing.output


def test_run_store_setting_needs_a_postgresql_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLAMPDOWN_RUN_STORE", "postgresql")
    monkeypatch.delenv("CLAMPDOWN_STATE_URL", raising=False)
    result = CliRunner().invoke(app, ["runs"])
    assert result.exit_code != 0
    assert "CLAMPDOWN_RUN_STORE" in result.output and "CLAMPDOWN_STATE_URL" in result.output
    assert "Traceback" not in result.output


START_ONLY = """\
apiVersion: clampdown/v1
kind: Runbook
metadata: {name: store-start-only, title: Started and nothing more, severity: high}
steps:
  - {id: note, uses: core.log, with: {message: "ran from its start record"}}
"""


def test_a_worker_continues_a_run_that_died_before_its_first_record(
    prefect_server: str, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its process stopped after the start record and before ``run.start``: another
    machine (another home) finds it in the run store and runs it from that record."""
    from clampdown.app.deployment import _continue_run
    from clampdown.app.local_runs import stopped_runs
    from clampdown.core.run_start import RunStart
    from clampdown.core.settings import settings

    library = tmp_path / "library"
    library.mkdir()
    (library / "store-start-only.yaml").write_text(START_ONLY)
    monkeypatch.setenv("CLAMPDOWN_LIBRARY", str(library))
    monkeypatch.setenv("CLAMPDOWN_STATE_URL", db_url)
    monkeypatch.setenv("CLAMPDOWN_RUN_STORE", "postgresql")
    monkeypatch.setenv("CLAMPDOWN_HOME", str(tmp_path / "died-here"))
    run_id = "startonly001"
    RunStart.of(run_id, "store-start-only", {}, {"type": "test"}).save(settings().paths.run(run_id))
    monkeypatch.setenv("CLAMPDOWN_HOME", str(tmp_path / "continues-here"))
    assert stopped_runs(settings().paths) == [run_id]
    _continue_run(run_id)
    store = settings().shared_run_store()
    assert store is not None
    records = [json.loads(x) for x in store.lines(run_id)]
    assert records[0]["type"] == "run.start"
    assert records[-1]["type"] == "run.end" and records[-1]["status"] == "succeeded"
    assert (tmp_path / "continues-here" / "runs" / run_id / "ledger.jsonl").is_file()
    assert stopped_runs(settings().paths) == []
    monkeypatch.setenv("CLAMPDOWN_HOME", str(tmp_path / "a-third-home"))
    listed = CliRunner().invoke(app, ["runs", "--format", "json"])
    assert listed.exit_code == 0, listed.output
    [summary] = json.loads(listed.output)
    assert (summary["run_id"], summary["status"]) == (run_id, "succeeded")


def test_the_slack_thread_of_a_run_is_found_from_another_home(
    store: PostgresRunStore, tmp_path: Path
) -> None:
    """The worker that posted the thread header keeps it in the store: serve (another
    home) links to it, and a worker continuing the run joins it instead of a new thread."""
    from clampdown_slack.app import thread_link
    from clampdown_slack.status import read_state, remember_thread, run_lock

    worker = Home(tmp_path / "worker", store=store).run("r8")
    with run_lock(worker.slack_thread_state):
        remember_thread(worker.slack_thread_state, "#sec", "C0SEC", "1700000000.000100", worker)
    serve = Home(tmp_path / "serve", store=store)
    link = thread_link("r8", 0, home=serve)
    assert link == "<https://slack.com/archives/C0SEC/p1700000000000100|open>"
    assert thread_link("r8", 0, home=Home(tmp_path / "serve-no-store")) is None
    other = Home(tmp_path / "other-worker", store=store).run("r8").materialize()
    assert read_state(other.slack_thread_state)["threads"]["C0SEC"]["thread_ts"] == (
        "1700000000.000100"
    )


def test_an_owner_whose_lock_session_ended_stops_writing(
    store: PostgresRunStore, db_url: str, tmp_path: Path
) -> None:
    """The database dropped the owner's lock session (a restart, a partition) and another
    worker took the run: the first owner's next record is refused, the chain does not fork
    or interleave, while an alert joining (no hold) still chains on."""
    import psycopg

    from clampdown.core.ledger import LedgerWriteError

    files = Home(tmp_path / "first", store=store).run("r9")
    held = store.try_hold("r9")
    assert held is not None
    ledger = Ledger(files.ledger, primary=files.ledger_primary)
    ledger.append("run.start", run={"id": "r9"})
    with psycopg.connect(db_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (held.pid,))  # type: ignore[attr-defined]
    other = PostgresRunStore(db_url)  # another worker's process
    try:
        taken = _wait_for_hold(other, "r9")
        with pytest.raises(LedgerWriteError) as refused:
            ledger.append("step.start", step="revoke")
        assert "no longer holds run r9" in refused.value.message
        assert "another process may be running it" in str(refused.value.hint)
        serve = PostgresRunStore(db_url)  # serve's process: it holds no run
        joined = Home(tmp_path / "serve", store=serve).run("r9")
        append_to(joined.ledger, "alert.joined", primary=joined.ledger_primary, how="joined")
        serve.close()
        assert [json.loads(x)["type"] for x in store.lines("r9")] == ["run.start", "alert.joined"]
        taken.release()
    finally:
        held.release()
        ledger.close()
        other.close()


def _wait_for_hold(store: PostgresRunStore, run_id: str) -> Any:
    deadline = time.monotonic() + 30
    while (held := store.try_hold(run_id)) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert held is not None
    return held


def test_an_unreachable_database_is_said_not_a_traceback(
    store: PostgresRunStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlalchemy as sa

    from clampdown.core.ledger import LedgerWriteError
    from clampdown.core.run_store import RunStoreError

    unreachable = "postgresql+psycopg://clampdown@127.0.0.1:1/clampdown"
    store.engine = sa.create_engine(unreachable)  # the server went away after start
    with pytest.raises(RunStoreError) as caught:
        store.unended()
    assert "the run store (PostgreSQL) failed" in caught.value.message
    assert "CLAMPDOWN_STATE_URL" in str(caught.value.hint)
    files = Home(tmp_path / "h", store=store).run("r10")
    with pytest.raises(LedgerWriteError) as refused:
        Ledger(files.ledger, primary=files.ledger_primary).append("run.start", run={})
    assert "could not write the run.start record of run r10 to the run store" in (
        refused.value.message
    )
    monkeypatch.setenv("CLAMPDOWN_HOME", str(tmp_path / "cli"))
    monkeypatch.setenv("CLAMPDOWN_STATE_URL", unreachable.replace("+psycopg", ""))
    monkeypatch.setenv("CLAMPDOWN_RUN_STORE", "postgresql")
    result = CliRunner().invoke(app, ["runs"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "the run store (PostgreSQL) cannot be opened" in result.output


def test_materialize_writes_nothing_outside_the_run_folder(
    store: PostgresRunStore, tmp_path: Path
) -> None:
    """A row whose name climbs out of the run folder (written with SQL by someone with
    the database) is refused, not written over another file of the machine."""
    for name in ("../../escaped.json", "/tmp/absolute.json", "approvals/../../x.json"):
        store.put("r11", name, b"{}")
    store.put("r11", "start.json", b"{}")
    files = Home(tmp_path / "home", store=store).run("r11").materialize()
    assert (files.dir / "start.json").is_file()
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert written == ["home/runs/r11/start.json"]
