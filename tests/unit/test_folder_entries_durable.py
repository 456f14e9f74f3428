"""A new run's files must survive a power loss by name, not only by content.

POSIX makes a file's fsync cover its bytes, not the folder entry that names it (nor the
entries of folders made for it), so the start record and the ledger fsync the folders
they create entries in. These tests record every fsync by the path it was made on and
check the folders' fsyncs happen, and happen before the first record is written.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from clampdown.core import home as home_module
from clampdown.core import ledger as ledger_module
from clampdown.core.home import sync_entries, write_private
from clampdown.core.ledger import Ledger


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """("fsync" | "write", path) in the order they happened."""
    seen: list[tuple[str, str]] = []
    real_fsync, real_write = os.fsync, os.write

    def fsync(fd: int) -> None:
        seen.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def write(fd: int, data: bytes) -> int:
        seen.append(("write", os.readlink(f"/proc/self/fd/{fd}")))
        return real_write(fd, data)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(ledger_module.os, "write", write)
    return seen


def test_a_new_ledger_has_its_entry_and_new_folders_synced_before_its_first_record(
    tmp_path: Path, events: list[tuple[str, str]]
) -> None:
    path = tmp_path / "runs" / "run-1" / "ledger.jsonl"
    ledger = Ledger(path)
    ledger.append("run.start", runbook="r")
    ledger.close()

    first_write = events.index(("write", str(path)))
    synced_before = {p for kind, p in events[:first_write] if kind == "fsync"}
    # the file's name lives in run-1, run-1's in runs, runs' in tmp_path
    assert {str(path.parent), str(path.parent.parent), str(tmp_path)} <= synced_before


def test_reopening_an_existing_ledger_syncs_no_folder(
    tmp_path: Path, events: list[tuple[str, str]]
) -> None:
    path = tmp_path / "ledger.jsonl"
    Ledger(path).append("run.start", runbook="r")
    events.clear()
    Ledger(path).append("step.start", step="a")
    assert [p for kind, p in events if kind == "fsync"] == [str(path)]


def test_a_durable_private_file_syncs_its_folder_and_the_folders_made_for_it(
    tmp_path: Path, events: list[tuple[str, str]]
) -> None:
    path = tmp_path / "runs" / "run-2" / "start.json"
    write_private(path, "{}", durable=True)
    synced = [p for kind, p in events if kind == "fsync"]
    assert {str(path.parent), str(path.parent.parent), str(tmp_path)} <= set(synced)


def test_a_file_system_that_cannot_sync_folders_is_not_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(fd: int) -> None:
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(home_module.os, "fsync", refuse)
    sync_entries(tmp_path, [tmp_path / "a"])  # no exception

    def fail(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(home_module.os, "fsync", fail)
    with pytest.raises(OSError):
        sync_entries(tmp_path)
