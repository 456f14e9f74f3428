"""Failure table (docs/operations.md, "what survives what"): a worker's local disk full,
with the run store (``CLAMPDOWN_RUN_STORE=postgresql``).

With the run store a machine's ``CLAMPDOWN_HOME`` is only a cache: each ledger record is
stored in PostgreSQL first, then written to the local ``ledger.jsonl``. When the local
disk is full the record is still stored, the local copy is left as it was (logged:
"local copy not updated") and the run's writer goes on; once there is room again the
local copy is brought back level with the store. The disk is a real 256 KiB tmpfs filled
to the last byte (as tests/integration/test_ledger_disk_full.py does; skipped where
``mount`` is not allowed).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from clampdown.core.home import Home
from clampdown.core.ledger import Ledger, verify_file
from clampdown.core.run_store_pg import PostgresRunStore
from tests.pg import postgres_url  # noqa: F401  (session fixture)

BIG = "x" * 6000  # more than a page: the full disk cannot take the line


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of 256 KiB under the test's folder; unmounted whatever happens."""
    where = tmp_path / "disk"
    where.mkdir()
    mounted = _run("mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(where))
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        if _run("umount", str(where)).returncode != 0:
            _run("umount", "-l", str(where))


def fill(disk: Path) -> Path:
    """Write a filler file until the disk refuses another byte."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            try:
                if os.write(fd, b"\0" * 4096) < 4096:
                    break
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                break
    finally:
        os.close(fd)
    return filler


@pytest.fixture
def store(postgres_url: str) -> Iterator[PostgresRunStore]:  # noqa: F811
    import psycopg

    name = f"runs_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    made = PostgresRunStore(postgres_url.rsplit("/", 1)[0] + f"/{name}")
    yield made
    made.close()


def test_a_full_local_disk_keeps_the_record_in_the_store_and_the_run_goes_on(
    store: PostgresRunStore,
    small_disk: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    worker = Home(small_disk / "home", store=store).run("r1")
    ledger = Ledger(worker.ledger, primary=worker.ledger_primary)
    ledger.append("run.start", run={"id": "r1"})
    ledger.append("step.start", step="revoke")
    on_disk = worker.ledger.read_bytes()
    filler = fill(small_disk)

    with caplog.at_level(logging.WARNING, logger="clampdown.ledger"):
        ledger.append("step.end", step="revoke", status="succeeded", note=BIG)  # no raise
    assert any("local copy not updated" in r.getMessage() for r in caplog.records), caplog.text
    assert worker.ledger.read_bytes() == on_disk  # untouched: no torn line
    assert [json.loads(x)["type"] for x in store.lines("r1")][-1] == "step.end"

    elsewhere = Home(tmp_path / "another-machine", store=store).run("r1")
    elsewhere.materialize()  # any machine reads the run from the store
    assert verify_file(elsewhere.ledger).records == 3

    filler.unlink()  # room again: the next record brings the local copy level
    ledger.append("run.end", status="succeeded")
    ledger.close()
    want = b"".join(x + b"\n" for x in store.lines("r1"))
    assert worker.ledger.read_bytes() == want
    check = verify_file(worker.ledger)
    assert check.ok and check.complete and check.records == 4
