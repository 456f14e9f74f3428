"""A real full disk and a real read-only CLAMPDOWN_HOME: a 256 KiB tmpfs, filled up or
remounted read-only. A ledger append fails with a clear error, leaves no torn line, and the
ledger still verifies; once space is freed the run's next record chains on.

Needs ``mount`` (root, or CAP_SYS_ADMIN): skipped with the reason otherwise. ``chmod`` is no
stand-in for a read-only home here (root writes through it), so the tmpfs is remounted ``ro``.
The last test runs a real flow whose ledger refuses writes after its first step (a stand-in
for the disk, which cannot be filled at a chosen step) and continues it once "space" is back.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clampdown.app.cli import app
from clampdown.core.ledger import Ledger, LedgerWriteError, read, verify_file

SIZE = "256k"
BIG = "x" * 6000  # more than one page: the write needs a page the full disk does not have


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of 256 KiB mounted under the test's folder; unmounted whatever happens."""
    where = tmp_path / "disk"
    where.mkdir()
    mounted = _run("mount", "-t", "tmpfs", "-o", f"size={SIZE},mode=0700", "tmpfs", str(where))
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
    chunk = b"\0" * 4096
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            try:
                if os.write(fd, chunk) < len(chunk):
                    break
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                break
    finally:
        os.close(fd)
    return filler


def started(path: Path) -> Ledger:
    ledger = Ledger(path)
    ledger.append("run.start", run={"id": "r1", "runbook": "contain-iam-user"}, inputs={})
    ledger.append("step.start", step="revoke")
    return ledger


def test_a_full_disk_fails_the_append_cleanly_and_the_run_goes_on_once_space_is_freed(
    small_disk: Path,
) -> None:
    path = small_disk / "home" / "runs" / "r1" / "ledger.jsonl"
    ledger = started(path)
    before = path.read_bytes()
    filler = fill(small_disk)
    with pytest.raises(LedgerWriteError) as caught:
        ledger.append("step.end", step="revoke", status="succeeded", outputs={"note": BIG})
    error = caught.value
    assert "No space left on device" in error.message
    assert str(path) in error.message and "ENOSPC" in error.message
    assert "free space on the disk that holds CLAMPDOWN_HOME" in error.hint
    assert path.read_bytes() == before  # no torn line
    check = verify_file(path)
    assert check.ok and check.records == 2, check.message

    filler.unlink()  # the operator frees space
    ledger.append("step.end", step="revoke", status="succeeded", outputs={"note": BIG})
    ledger.append("run.end", status="succeeded")
    ledger.close()
    assert [r["seq"] for r in read(path)] == [0, 1, 2, 3]
    check = verify_file(path)
    assert check.ok and check.complete, check.message
    result = CliRunner().invoke(app, ["verify", str(path)])
    assert "TAMPERED" not in result.output and "chain intact over 4 records" in result.output


def test_a_full_disk_refuses_a_new_run_before_its_first_record(small_disk: Path) -> None:
    fill(small_disk)
    path = small_disk / "home" / "runs" / "r2" / "ledger.jsonl"
    with pytest.raises(LedgerWriteError) as caught:
        ledger = Ledger(path)
        ledger.append("run.start", run={"id": "r2", "note": BIG}, inputs={})
    assert "ENOSPC" in caught.value.message and "free space" in caught.value.hint
    assert not path.exists() or path.stat().st_size == 0  # no phantom start record


def test_a_read_only_home_is_refused_with_what_to_do_and_its_ledgers_still_verify(
    small_disk: Path,
) -> None:
    home = small_disk / "home"
    path = home / "runs" / "r1" / "ledger.jsonl"
    ledger = started(path)
    ledger.close()
    before = path.read_bytes()
    remounted = _run("mount", "-o", "remount,ro", str(small_disk))
    assert remounted.returncode == 0, remounted.stderr
    with pytest.raises(LedgerWriteError) as caught:  # the run going on
        ledger.append("step.end", step="revoke", status="succeeded")
    assert "Read-only file system (EROFS)" in caught.value.message
    assert "CLAMPDOWN_HOME is on a read-only filesystem: make it writable" in caught.value.hint
    with pytest.raises(LedgerWriteError) as new_run:  # a new run: its folder cannot be made
        Ledger(home / "runs" / "r3" / "ledger.jsonl")
    assert "could not create the folder of the run ledger" in new_run.value.message
    assert "EROFS" in new_run.value.message
    assert path.read_bytes() == before
    check = verify_file(path)
    assert check.ok and check.records == 2, check.message


def test_a_run_whose_ledger_cannot_be_written_stops_saying_why_and_resumes_after(
    prefect_server: str, clampdown_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real run (engine-self-check) whose disk fills after its first step: the flow run
    fails with the ledger's error (file, ENOSPC, what to do), the ledger ends at the last
    record written, and once space is back the run is continued as the error says
    (``clampdown resume`` calls the same ``run_in_process(..., resume=True)``) to
    ``run.end`` with an intact chain."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from clampdown.core import ledger as ledger_mod
    from clampdown_flows.respond import run_in_process
    from tests.paths import REPO

    real = ledger_mod.Ledger._write_whole
    written: list[str] = []

    def full_after_first_step(self: Ledger, fd: int, line: bytes, size: int, type_: str) -> None:
        if len(written) >= 4:  # run.start, ledger.unsigned, the first step's start and end
            raise ledger_mod.LedgerWriteError.of(
                self.path, type_, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            )
        real(self, fd, line, size, type_)
        written.append(type_)

    runbook = str(REPO / "runbooks" / "engine-self-check.yaml")
    path = clampdown_home / "runs" / "diskfull0001" / "ledger.jsonl"
    with temporary_settings({PREFECT_API_URL: prefect_server}):
        monkeypatch.setattr(ledger_mod.Ledger, "_write_whole", full_after_first_step)
        state = run_in_process(runbook, {"responder": "alice"}, run_id="diskfull0001")
        assert state.is_failed()
        assert "could not write the step.start record to the run ledger" in str(state.message)
        assert "No space left on device (ENOSPC)" in str(state.message)
        assert "clampdown resume diskfull0001" in str(state.message)
        assert [r["type"] for r in read(path)] == written
        assert verify_file(path).ok

        monkeypatch.setattr(ledger_mod.Ledger, "_write_whole", real)  # space freed
        resumed = run_in_process(runbook, {}, run_id="diskfull0001", resume=True)
    assert resumed.is_completed(), resumed.message
    records = read(path)
    assert records[-1]["type"] == "run.end" and records[-1]["status"] == "succeeded"
    assert "run.resumed" in [r["type"] for r in records]
    check = verify_file(path)
    assert check.ok and check.complete, check.message
