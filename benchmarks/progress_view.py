#!/usr/bin/env python3
"""What the live progress view costs: ``clampdown run`` of a long chain at a terminal
next to the same run piped (issue 15: a 500-step chain took 24.1 s at a terminal
against 15.3 s piped, 1.68x).

Prints figures, never asserts them. Each round runs the chain once piped (no live view:
one line per event) and once in a pseudo-terminal (50 rows, 160 columns: the live
table), alternately, on one warm Prefect home whose resident local API is up; with
``--tree OLD_CHECKOUT`` the old checkout's terminal run is measured in the same rounds.
Wall time, and CPU time of the command (user + system, with the children it waited for).

    python benchmarks/progress_view.py [--steps 500] [--runs 3] [--tree OLD_CHECKOUT]
"""

from __future__ import annotations

import argparse
import fcntl
import os
import pty
import resource
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from startup import CLAMPDOWN, ROOT, chain, environment, wall

ROWS, COLUMNS = 50, 160


def in_terminal(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """Wall and CPU time of ``argv`` with a pseudo-terminal as its stdin, stdout and stderr."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        env=env | {"TERM": "xterm-256color", "COLUMNS": str(COLUMNS), "LINES": str(ROWS)},
        stdin=follower,
        stdout=follower,
        stderr=follower,
        start_new_session=True,
    )
    os.close(follower)
    seen = bytearray()

    def drain() -> None:  # a terminal that is not read blocks the writer
        while True:
            try:
                data = os.read(leader, 65536)
            except OSError:
                return
            if not data:
                return
            seen.extend(data[-4096:])

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    code = proc.wait()
    took = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    reader.join(5)
    os.close(leader)
    if code != 0:
        raise SystemExit(f"{' '.join(argv)} failed at a terminal:\n{seen.decode(errors='replace')}")
    return took, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def show(label: str, figures: list[tuple[float, float]], base: list[tuple[float, float]]) -> None:
    took = statistics.median(f[0] for f in figures)
    cpu = statistics.median(f[1] for f in figures)
    base_took = statistics.median(f[0] for f in base)
    print(
        f"  {label:<34} {took:6.2f} s (CPU {cpu:5.2f} s)   x piped: {took / base_took:4.2f}   "
        f"rounds: {', '.join(f'{f[0]:.1f}' for f in figures)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500, help="steps of the chain")
    parser.add_argument("--runs", type=int, default=3, help="rounds")
    parser.add_argument("--tree", type=Path, help="also run an older checkout at a terminal")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="clampdown-bench-progress-"))
    env = environment(scratch / "prefect", scratch / "home")
    runbook = scratch / "chain.yaml"
    runbook.write_text(chain("chain", args.steps))
    old_env = None
    if args.tree:
        tree = args.tree.resolve()
        paths = [str(tree / p) for p in ("", "flows", "integrations")]
        old_env = env | {"PYTHONPATH": os.pathsep.join(paths)}
    stop = [*CLAMPDOWN, "prefect-api", "stop"]
    run = [*CLAMPDOWN, "run", str(runbook)]
    try:
        print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
        wall(run, env)  # warm-up: the resident local API starts and stays up
        piped, terminal, old = [], [], []
        for _ in range(args.runs):
            piped.append(wall(run, env))
            terminal.append(in_terminal(run, env, ROOT))
            if old_env is not None:
                old.append(in_terminal(run, old_env, args.tree.resolve()))
        print(f"clampdown run of a {args.steps}-step chain, {args.runs} rounds (medians):")
        show("piped (no live view)", piped, piped)
        show("at a terminal (live table)", terminal, piped)
        if old:
            show(f"at a terminal, {args.tree.name}", old, piped)
        print(f"load average {os.getloadavg()[0]:.1f} at the end")
    finally:
        subprocess.run(stop, cwd=ROOT, env=env, capture_output=True)


if __name__ == "__main__":
    main()
