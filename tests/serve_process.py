"""A real ``clampdown serve`` process for tests of what it refuses at start: it must exit
with its error before anything listens, and a serve that answers instead is a failure."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

CLI = str(Path(sys.executable).parent / "clampdown")


@contextlib.contextmanager
def serve_process(env: dict[str, str], log: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """`clampdown serve` in a process group of its own; whatever is left is killed at exit."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [CLI, "serve", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, 9)
            proc.wait(30)


def exit_or_answer(proc: subprocess.Popen[bytes], port: int, bound: float = 120) -> int | str:
    """The process's exit code, or "answered" once it answers /healthz (the refusal
    failed): whichever comes first (the bound only turns a hang into a failure)."""
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        code = proc.poll()
        if code is not None:
            return code
        with contextlib.suppress(httpx.HTTPError, ValueError):
            if "runbooks" in httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).json():
                return "answered"  # this serve listens: it did not refuse
        time.sleep(0.1)
    return "neither"
