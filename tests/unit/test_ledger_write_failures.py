"""A ledger write that fails (disk full, read-only home, I/O error, short write) leaves no torn
line: the file is cut back to its length before the write, the error names the file, the OS
error and what to do, the chain head does not move, and the next append (once there is room)
chains on as if nothing had happened. The real-filesystem half is
tests/integration/test_ledger_disk_full.py."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from clampdown.app.cli import app
from clampdown.core import ledger as ledger_mod
from clampdown.core.diagnostics import ClampdownError
from clampdown.core.ledger import Ledger, LedgerWriteError, read, verify_file
from clampdown.core.ledger_signing import (
    generate_local_key,
    load_local_key,
    open_ledger,
    verify_ledger,
)

REAL_WRITE = os.write
REAL_FSYNC = os.fsync


class Disk:
    """Stands in for ``os.write``/``os.fsync`` on the ledger's file only (other fds pass)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.mode = "ok"  # ok | enospc | short | eio-on-fsync | edquot

    def ours(self, fd: int) -> bool:
        try:
            return os.path.samefile(f"/proc/self/fd/{fd}", self.path)
        except OSError:
            return False

    def write(self, fd: int, data: bytes) -> int:
        if not self.ours(fd) or self.mode in ("ok", "eio-on-fsync"):
            return REAL_WRITE(fd, data)
        if self.mode == "short":  # the disk took part of the line, then had no more room
            return REAL_WRITE(fd, data[: len(data) // 2])
        code = errno.EDQUOT if self.mode == "edquot" else errno.ENOSPC
        raise OSError(code, os.strerror(code))

    def fsync(self, fd: int) -> None:
        if self.mode == "eio-on-fsync" and self.ours(fd):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        REAL_FSYNC(fd)


@pytest.fixture
def disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Disk:
    fake = Disk(tmp_path / "runs" / "r1" / "ledger.jsonl")
    monkeypatch.setattr(ledger_mod.os, "write", fake.write)
    monkeypatch.setattr(ledger_mod.os, "fsync", fake.fsync)
    return fake


def started(path: Path, make: Callable[[Path], Ledger] = Ledger) -> Ledger:
    ledger = make(path)
    ledger.append("run.start", run={"id": "r1", "runbook": "contain"}, inputs={"user": "mallory"})
    ledger.append("step.start", step="revoke")
    return ledger


@pytest.mark.parametrize(
    ("mode", "said", "hint"),
    [
        ("enospc", "No space left on device (ENOSPC)", "free space on the disk"),
        ("short", "No space left on device (the disk took ", "free space on the disk"),
        ("eio-on-fsync", "Input/output error (EIO)", "I/O error: check it"),
        ("edquot", "Disk quota exceeded (EDQUOT)", "disk quota"),
    ],
)
def test_a_failed_write_leaves_the_file_as_it_was_and_says_what_to_do(
    disk: Disk, mode: str, said: str, hint: str
) -> None:
    ledger = started(disk.path)
    before = disk.path.read_bytes()
    disk.mode = mode
    with pytest.raises(LedgerWriteError) as caught:
        ledger.append("step.end", step="revoke", status="succeeded", outputs={"x": "y" * 300})
    error = caught.value
    assert isinstance(error, ClampdownError)  # the CLI prints it without a traceback
    assert disk.path.read_bytes() == before  # not one byte of the failed record is left
    assert error.path == disk.path and error.record_type == "step.end"
    assert f"could not write the step.end record to the run ledger {disk.path}" in error.message
    assert said in error.message, error.message
    assert "nothing of it was written and the ledger is as it was" in error.message
    assert hint in error.hint and "then continue the run: `clampdown resume r1`" in error.hint
    check = verify_file(disk.path)
    assert check.ok and check.records == 2, check.message


def test_the_next_append_after_space_frees_chains_on_the_last_record_on_disk(disk: Disk) -> None:
    ledger = started(disk.path)
    disk.mode = "short"
    for _ in range(3):  # the run's retries keep failing while the disk is full
        with pytest.raises(LedgerWriteError):
            ledger.append("step.end", step="revoke", status="succeeded")
    disk.mode = "ok"
    ledger.append("step.end", step="revoke", status="succeeded")
    ledger.append("run.end", status="succeeded")
    ledger.close()
    records = read(disk.path)
    assert [r["seq"] for r in records] == [0, 1, 2, 3]  # no gap where the failures were
    assert [r["type"] for r in records] == ["run.start", "step.start", "step.end", "run.end"]
    check = verify_file(disk.path)
    assert check.ok and check.complete, check.message


def test_a_signed_ledger_with_a_failed_append_still_verifies_intact(
    disk: Disk, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The failed record was signed before its write; neither its signature nor its anchor
    survive it, and ``clampdown verify`` says OK, not TAMPERED."""
    key = generate_local_key(tmp_path / "keys" / "ledger.pem")
    signer = load_local_key(key, tmp_path / "home")
    anchored: list[int] = []
    ledger = started(
        disk.path,
        lambda p: open_ledger(p, "r1", signer, [lambda run, seq, body: anchored.append(seq)]),
    )
    disk.mode = "enospc"
    with pytest.raises(LedgerWriteError):
        ledger.append("step.end", step="revoke", status="succeeded")
    disk.mode = "short"
    with pytest.raises(LedgerWriteError):
        ledger.append("step.end", step="revoke", status="succeeded")
    disk.mode = "ok"
    ledger.append("step.end", step="revoke", status="succeeded")
    ledger.append("run.end", status="succeeded")
    ledger.close()
    assert anchored == sorted(set(anchored)) and max(anchored) == 3  # failed ones never sent
    verdict = verify_ledger(disk.path.read_bytes().splitlines(), signer)
    assert verdict.status == "intact", verdict.message
    monkeypatch.setenv("CLAMPDOWN_LEDGER_KEY", str(key))
    result = CliRunner().invoke(app, ["verify", str(disk.path)])
    assert result.exit_code == 0, result.output
    assert "TAMPERED" not in result.output and "OK: intact" in result.output


def test_a_read_only_home_is_named_with_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def read_only(path: Any, flags: int, mode: int = 0o777) -> int:
        if flags & os.O_WRONLY:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return os.open(path, flags, mode)

    path = tmp_path / "runs" / "r1" / "ledger.jsonl"
    ledger = Ledger(path)
    monkeypatch.setattr(ledger_mod.os, "open", read_only)
    with pytest.raises(LedgerWriteError) as caught:
        ledger.append("run.start", run={"id": "r1"})
    assert "Read-only file system (EROFS)" in caught.value.message
    assert "read-only filesystem: make it writable" in caught.value.hint
    assert caught.value.hint.endswith("then start the run again")  # no run.start to resume
    assert not path.exists()


def test_a_home_whose_folder_cannot_be_created_is_a_ledger_write_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_room(path: Path, **_: Any) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ledger_mod, "private_dirs", no_room)
    with pytest.raises(LedgerWriteError) as caught:
        Ledger(tmp_path / "runs" / "r1" / "ledger.jsonl")
    assert "could not create the folder of the run ledger" in caught.value.message
    assert "free space" in caught.value.hint


def test_a_partial_last_line_left_by_a_crash_is_removed_before_the_next_record(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A power loss mid-write (or a cut-back that failed) can leave part of a line; the next
    append removes it rather than chaining after it for ever."""
    path = tmp_path / "ledger.jsonl"
    first = started(path)
    first.close()
    whole = path.read_bytes()
    with path.open("ab") as fh:
        fh.write(b'{"seq": 2, "ts": "2026-01-01T00:00:00Z", "type": "step.e')
    assert not verify_file(path).ok  # as verify would see it: a line that is no record
    again = Ledger(path)
    again.append("step.end", step="revoke", status="succeeded")
    again.append("run.end", status="succeeded")
    again.close()
    assert path.read_bytes().startswith(whole)
    check = verify_file(path)
    assert check.ok and check.complete and check.records == 4, check.message
    assert "ended with a partial record" in caplog.text
