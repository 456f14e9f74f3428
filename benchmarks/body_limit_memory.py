#!/usr/bin/env python3
"""What an unsigned oversized body costs ``clampdown serve``: bytes read and peak memory.

Starts the real ``create_app`` on uvicorn in a child process (fake starter, a throwaway
``CLAMPDOWN_HOME``), sends one unsigned chunked body of ``--mib`` MiB to ``/slack/events``
over a raw socket, and prints the answer, how much the server took before it stopped
reading, and the server's resident memory before and at its peak (``VmHWM``). Baseline in
the same run: the same app with :class:`clampdown.app.body_limits.BodyLimit` switched off.

    python benchmarks/body_limit_memory.py [--mib 64]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time

SERVER = """
import sys
import uvicorn
from clampdown.app import body_limits
from clampdown.app.serve import create_app
if sys.argv[2] == "off":  # the baseline: no bound before the app reads the body
    async def passthrough(self, scope, receive, send):
        await self.app(scope, receive, send)
    body_limits.BodyLimit.__call__ = passthrough
uvicorn.run(create_app(start_run=lambda *a: "x"), host="127.0.0.1", port=int(sys.argv[1]),
            log_level="error")
"""
CHUNK = 64 * 1024


def _mib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith(field))
    return int(line.split()[1]) // 1024


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def measure(mode: str, mib: int) -> str:
    port = _free_port()
    home = tempfile.mkdtemp(prefix=f"clampdown-bench-{mode}-")
    env = {
        **os.environ,
        "CLAMPDOWN_HOME": home,
        "CLAMPDOWN_SLACK_SIGNING_SECRET": "bench-secret",
        "CLAMPDOWN_SLACK_BOT_TOKEN": "xoxb-bench",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(port), mode], env=env)
    try:
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", port)).close()
                break
            except OSError:
                time.sleep(0.1)
        before = _mib(server.pid, "VmRSS")
        sent = 0
        with socket.create_connection(("127.0.0.1", port)) as conn:
            conn.sendall(
                b"POST /slack/events HTTP/1.1\r\nHost: bench\r\n"
                b"Content-Type: application/x-www-form-urlencoded\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
            )
            try:
                while sent < mib * 1024 * 1024:
                    conn.sendall(b"%x\r\n" % CHUNK + b"a" * CHUNK + b"\r\n")
                    sent += CHUNK
                conn.sendall(b"0\r\n\r\n")
            except OSError:
                pass  # the server closed the connection: it stopped reading
            conn.settimeout(60)
            answer = conn.recv(200).split(b"\r\n")[0].decode()
        peak = _mib(server.pid, "VmHWM")
    finally:
        server.terminate()
        server.wait()
    return (
        f"{mode:>8}: {answer}; sender got {sent / 2**20:.0f} of {mib} MiB out before the "
        f"server stopped reading; server RSS {before} MiB, peak {peak} MiB (+{peak - before})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=64)
    args = parser.parse_args()
    print(measure("off", args.mib))
    print(measure("on", args.mib))


if __name__ == "__main__":
    main()
