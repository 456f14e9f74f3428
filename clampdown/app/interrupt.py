"""Ctrl-C of a command that runs a run (``clampdown run``, ``clampdown resume``) ends it in
bounded time.

The first Ctrl-C cancels the run (asyncio's own handling: the run's task is cancelled at
its next await): steps not started are not run, the ledger gets ``run.end`` with status
``cancelled``, and the command exits 130. Two things kept the process from exiting after
that: a step's AWS call in a worker thread that does not answer (botocore waits minutes,
and the interpreter joins that thread at exit), and, under load, a cancellation that did
not reach the run's end at all. A responder who pressed Ctrl-C in the worst hour must get
the terminal back, so the first Ctrl-C also starts a clock: a process still here
:data:`GRACE` seconds later says what its ledger shows and exits 130 at once; a second
Ctrl-C does so without waiting. Nothing is lost by leaving: every ledger record is on disk
before the next step goes on, and a run without ``run.end`` is stopped, not gone
(``clampdown resume`` continues it; ``clampdown rollback --plan`` shows what can be undone).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from clampdown.core.ledger import first_record

GRACE = 10.0
"""Seconds a process may take to stop after the first Ctrl-C."""
EXIT_CODE = 130  # 128 + SIGINT, what a shell reports for a command stopped by Ctrl-C


class BoundedInterrupt:
    """Called on each Ctrl-C (from the signal handler, before asyncio's own handling)."""

    def __init__(
        self,
        run_id: str,
        ledger: Path,
        *,
        grace: float = GRACE,
        leave: Callable[[int], object] = os._exit,
    ) -> None:
        self.run_id = run_id
        self.ledger = ledger
        self.grace = grace
        self._leave = leave
        self._count = 0
        self._lock = threading.Lock()

    def __call__(self) -> None:
        self._count += 1
        if self._count == 1:
            threading.Thread(target=self._after_grace, name="ctrl-c-grace", daemon=True).start()
        else:
            self.leave_now("a second Ctrl-C")

    def _after_grace(self) -> None:
        threading.Event().wait(self.grace)
        self.leave_now(f"it had not stopped {self.grace:g} s after Ctrl-C")

    def leave_now(self, why: str) -> None:
        """Say where the run stands (from its ledger) and end the process, code 130."""
        with self._lock:
            end = first_record(self.ledger, "run.end")
            if end is not None:
                status = end.get("status")
                said = f"interrupted: run {self.run_id} ended as {status}; exiting now ({why})"
                more = "a step's call that was in flight may still complete at AWS"
            else:
                said = f"interrupted: run {self.run_id} stopped where it was ({why})"
                more = (
                    f"its ledger has no run.end yet: `clampdown resume {self.run_id}` continues it"
                )
            _write(
                f"\n{said}\nledger: {self.ledger} ({more}; `clampdown rollback {self.run_id} "
                "--plan` shows what can be undone)\n"
            )
            self._leave(EXIT_CODE)


def _write(text: str) -> None:
    """On stderr, as the command's other messages; the cursor a live table hid comes back."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    try:
        if sys.stdout.isatty():
            os.write(sys.stdout.fileno(), b"\x1b[?25h")
        os.write(sys.stderr.fileno(), text.encode(errors="replace"))
    except (OSError, ValueError):
        pass
