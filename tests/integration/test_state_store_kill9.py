"""kill -9 in the middle of a burst of claims: every claim the store answered "started" is
kept, with its start record, although the writes were committed in groups by whichever
thread led the batch (issue 15's group commit). SQLite and PostgreSQL alike."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from clampdown.core.state_store import StateStore
from tests.integration.test_state_store import claim, store_url  # noqa: F401 (fixture)
from tests.paths import REPO
from tests.pg import postgres_url  # noqa: F401  (session fixture)

BURST = textwrap.dedent(
    """
    import sys, threading, time
    from pathlib import Path
    sys.path.insert(0, {repo!r})
    from clampdown.core.home import write_private
    from clampdown.core.state_store import StateStore
    store = StateStore({url!r})
    starts = Path({starts!r})
    out = threading.Lock()

    def worker(n):
        for i in range(10_000):
            run_id = f"run-{{n}}-{{i}}"
            def record(run_id=run_id):
                write_private(starts / f"{{run_id}}.json", run_id, durable=True)
            c = store.claim(dedup_key=f"incident-{{n}}-{{i}}", dedup_ttl=600,
                            correlation_key=None, correlation_ttl=600, runbook="rb",
                            max_runs=1_000_000, is_finished=lambda r: False,
                            run_id=run_id, on_start=record)
            assert c.status == "started", c
            with out:  # what a sender would have been answered: 202
                print(f"incident-{{n}}-{{i}} {{run_id}}", flush=True)

    for n in range(16):
        threading.Thread(target=worker, args=(n,), daemon=True).start()
    time.sleep(600)
    """
)


def test_kill_9_mid_burst_loses_no_answered_claim(store_url: str, tmp_path: Path) -> None:  # noqa: F811
    StateStore(store_url).close()  # tables exist before the burst
    starts = tmp_path / "starts"
    starts.mkdir()
    script = BURST.format(repo=str(REPO), url=store_url, starts=str(starts))
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    answered: list[tuple[str, str]] = []
    deadline = time.monotonic() + 120
    assert proc.stdout is not None
    while len(answered) < 150 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        key, run_id = line.split()
        answered.append((key, run_id))
    os.killpg(proc.pid, signal.SIGKILL)  # mid-burst: batches are being decided and committed
    _, err = proc.communicate(timeout=30)
    assert len(answered) >= 150, err
    store = StateStore(store_url)
    try:
        for key, run_id in answered:
            again = claim(store, key, runbook="rb", run_id="late", on_start=lambda: None)
            assert (again.status, again.run_id) == ("duplicate", run_id), key
            assert (starts / f"{run_id}.json").read_text() == run_id
        kept = set(store.active_run_ids("rb"))
        assert {run_id for _, run_id in answered} <= kept
    finally:
        store.close()
