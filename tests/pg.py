"""A throwaway PostgreSQL cluster for tests: ``initdb`` into a temp dir, ``pg_ctl start``.

Use the session fixture :func:`postgres_url` (import it into a test module: every
module that does shares one cluster per session). It finds the installed server binaries
(``/usr/lib/postgresql/<version>/bin`` or ``PATH``), listens on a free loopback port
with its unix socket in the temp dir, and is removed at the end of the session.

PostgreSQL refuses to run as root, so as root the cluster belongs to ``nobody``
(started through ``runuser``) in a temp dir that user owns. Only when no binaries
are installed is the fixture skipped, and it says why.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

SERVER_USER = "nobody"


def find_bin_dir() -> Path | None:
    """The newest installed PostgreSQL server's bin folder, or None."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: (
            int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0
        ),
    )
    if candidates:
        return Path(candidates[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Cluster:
    """One running cluster; :attr:`url` is a SQLAlchemy/psycopg URL to its ``postgres`` db."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="clampdown-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.as_root = os.geteuid() == 0
        if self.as_root:
            entry = pwd.getpwnam(SERVER_USER)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if self.as_root:
            command = ["runuser", "-u", SERVER_USER, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd="/")
        if result.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(
                f"{' '.join(args[:1])} failed ({result.returncode}): "
                f"{result.stdout}{result.stderr}{tail}"
            )
        return result

    def start(self) -> None:
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        )
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=200"
        )
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.root / "server.log"),
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


_SESSION_CLUSTER = pytest.StashKey[str]()


@pytest.fixture(scope="session")
def postgres_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """URL of a fresh PostgreSQL cluster for the session (``postgresql://postgres@…``).

    One cluster per session (per xdist worker). Each test module that imports this
    fixture gets a session fixture of its own (pytest registers an imported fixture once
    per module), so the first one to run starts the cluster and the others hand out its
    URL: before, every importing module started a cluster of its own (initdb and a
    server each). The first one is also the last torn down, after every session fixture
    set up later that uses the cluster. Tests take databases of their own on it
    (``CREATE DATABASE`` with a unique name)."""
    running = request.session.stash.get(_SESSION_CLUSTER, None)
    if running is not None:
        yield running
        return
    bin_dir = find_bin_dir()
    if bin_dir is None:
        if os.environ.get("CI"):  # CI installs them (.ci/run): a skip there would hide a gap
            pytest.fail("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    cluster = Cluster(bin_dir)
    try:
        cluster.start()
    except Exception:
        cluster.stop()
        raise
    request.session.stash[_SESSION_CLUSTER] = cluster.url
    try:
        yield cluster.url
    finally:
        del request.session.stash[_SESSION_CLUSTER]
        cluster.stop()
