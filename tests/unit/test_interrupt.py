"""Ctrl-C of `clampdown run`/`resume` ends the process in bounded time
(:mod:`clampdown.app.interrupt`), saying where the run stands from its ledger."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from clampdown.app.interrupt import BoundedInterrupt


class Left(Exception):
    """What the fake exit raises: the process would have ended here, with this code."""


def _ledger(tmp_path: Path, *records: dict[str, object]) -> Path:
    path = tmp_path / "ledger.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_a_second_ctrl_c_leaves_at_once_and_says_the_run_is_stopped(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    ledger = _ledger(tmp_path, {"type": "run.start"}, {"type": "step.start"})
    codes: list[int] = []
    interrupt = BoundedInterrupt("r1", ledger, grace=3600, leave=codes.append)
    interrupt()  # the first: asyncio cancels the run; only the clock starts here
    assert codes == []
    interrupt()
    assert codes == [130]
    said = capfd.readouterr().err
    assert "interrupted: run r1 stopped where it was (a second Ctrl-C)" in said
    assert "`clampdown resume r1` continues it" in said
    assert "`clampdown rollback r1 --plan`" in said


def test_after_the_grace_a_cancelled_run_says_so_and_leaves(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    ledger = _ledger(
        tmp_path,
        {"type": "run.start"},
        {"type": "run.end", "status": "cancelled"},
        {"type": "alert.joined"},  # records may follow run.end
    )
    left = threading.Event()
    codes: list[int] = []

    def leave(code: int) -> None:
        codes.append(code)
        left.set()

    BoundedInterrupt("r2", ledger, grace=0.05, leave=leave)()
    assert left.wait(30), "the clock did not end the process"
    assert codes == [130]
    said = capfd.readouterr().err
    assert "interrupted: run r2 ended as cancelled; exiting now (it had not stopped 0.05 s" in said
    assert "may still complete at AWS" in said


def test_a_torn_last_line_is_not_the_run_s_end(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    ledger = _ledger(tmp_path, {"type": "run.start"})
    with ledger.open("a") as fh:
        fh.write('{"type": "run.end", "status": "canc')  # the process died mid-write
    codes: list[int] = []
    interrupt = BoundedInterrupt("r3", ledger, grace=3600, leave=codes.append)
    interrupt()
    interrupt()
    assert "stopped where it was" in capfd.readouterr().err
