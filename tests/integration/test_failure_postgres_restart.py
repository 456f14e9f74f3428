"""Failure table (docs/operations.md, "what survives what"): PostgreSQL (the run store)
stopped and restarted while a run writes its ledger.

The run store's server is really stopped (``pg_ctl stop -m immediate``: a crash, an OOM
kill) and started again on the same data. A record written while it is down stops the
run with an error that names the database, and nothing of it is kept (not in the store,
not in the local copy). The restart dropped the owner's lock session, so the writer that
held the run refuses its next record ("no longer holds run …"), and a process that holds
the run again (a worker continuing it) chains on the stored head.

A cluster of this test's own, reached only by its unix socket: the session's cluster is
shared by other tests and is never stopped, and no TCP port must be taken again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from clampdown.core.home import Home
from clampdown.core.ledger import Ledger, LedgerWriteError, verify_file
from clampdown.core.run_store_pg import PostgresRunStore
from tests.pg import Cluster, find_bin_dir

BOUND = 60.0


class StoppableCluster(Cluster):
    """A cluster listening on its unix socket only, that can be stopped and started again."""

    def start(self) -> None:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E",
                  "UTF8", "--no-sync", "--no-instructions")  # fmt: skip
        self.up()
        self.url = f"postgresql://postgres@/postgres?host={self.root}&port={self.port}"

    def up(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses='' -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l",
                  str(self.root / "server.log"), "-w", "-t", "60", "start")  # fmt: skip

    def down(self) -> None:
        """Stopped as a crash stops it: no shutdown checkpoint, connections cut."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")


@pytest.fixture
def cluster() -> Iterator[StoppableCluster]:
    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    made = StoppableCluster(bin_dir)
    try:
        made.start()
        yield made
    finally:
        made.stop()


def stored_types(store: PostgresRunStore, run_id: str) -> list[str]:
    return [json.loads(x)["type"] for x in store.lines(run_id)]


def test_postgres_stopped_mid_run_stops_the_run_cleanly_and_its_restart_drops_the_hold(
    cluster: StoppableCluster, tmp_path: Path
) -> None:
    store = PostgresRunStore(cluster.url)
    try:
        worker = Home(tmp_path / "worker", store=store).run("r1")
        held = store.try_hold("r1")
        assert held is not None
        ledger = Ledger(worker.ledger, primary=worker.ledger_primary)
        ledger.append("run.start", run={"id": "r1"})
        ledger.append("step.start", step="revoke")
        local = worker.ledger.read_bytes()

        cluster.down()
        with pytest.raises(LedgerWriteError) as stopped:
            ledger.append("step.end", step="revoke", status="succeeded")
        assert "to the run store (PostgreSQL)" in stopped.value.message
        assert "nothing of it was written, so the run stops" in stopped.value.message
        assert "CLAMPDOWN_STATE_URL" in str(stopped.value.hint)
        assert worker.ledger.read_bytes() == local  # nothing half-written here either

        cluster.up()
        deadline = time.monotonic() + BOUND  # the pool reconnects: wait until it answers
        while True:
            try:
                stored = stored_types(store, "r1")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert stored == ["run.start", "step.start"]  # the failed record is not there
        with pytest.raises(LedgerWriteError) as refused:  # its lock session died with it
            ledger.append("step.end", step="revoke", status="succeeded")
        assert "no longer holds run r1" in refused.value.message
        ledger.close()
        held.release()

        again = store.try_hold("r1")  # a worker continuing the run
        assert again is not None
        other = Home(tmp_path / "another-worker", store=store).run("r1")
        other.materialize()
        resumed = Ledger(other.ledger, primary=other.ledger_primary)
        resumed.append("step.end", step="revoke", status="succeeded")
        resumed.append("run.end", status="succeeded")
        resumed.close()
        again.release()
        assert stored_types(store, "r1") == ["run.start", "step.start", "step.end", "run.end"]
        check = verify_file(other.ledger)
        assert check.ok and check.complete and check.records == 4
    finally:
        store.close()
