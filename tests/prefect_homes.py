"""Fresh Prefect homes for the tests, each with a copy of one migrated database.

A Prefect server on a new SQLite database first migrates it (Alembic, from empty to
head: ~14 s and ~10 CPU-s on a quiet 2-core machine), and the suite used to do that
once per xdist worker, once for the drills' API, and once more for every fresh Prefect
home a test makes. Here the migration runs once per test session (:func:`migrated_database`,
shared by the xdist workers through a file lock in a folder the first pytest process
makes), and :func:`seed_prefect_home` copies the result into a new home as its
``prefect.db``. A server started on the copy still runs Prefect's own start-up
(``run_migrations``: ``alembic upgrade head``, a no-op at head that costs ~0.3 s; block
registration, which is redone because its memo is keyed by the database URL): the
product's code path is unchanged, it finds the work done.

A real first migration is still covered: the installed wheel's drill and the quick start
run on empty homes on purpose, and nothing here is used there.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

FOLDER_ENV = "CLAMPDOWN_TESTS_PREFECT_TEMPLATE"
"""The folder holding the session's migrated database; set by the first pytest process
(the xdist controller), inherited by the workers."""
DATABASE = "prefect.db"  # Prefect's default name in its home (PREFECT_API_DATABASE_*)
MIGRATE = """
import asyncio
from prefect.server.database import provide_database_interface
asyncio.run(provide_database_interface().create_db())  # what a server's start-up runs
"""


def template_folder() -> tuple[Path, bool]:
    """The session's folder for the migrated database, and whether this process made it
    (then it removes it at the end: :func:`remove_template_folder`)."""
    existing = os.environ.get(FOLDER_ENV)
    if existing:
        return Path(existing), False
    made = tempfile.mkdtemp(prefix="clampdown-prefect-template-")
    os.environ[FOLDER_ENV] = made
    return Path(made), True


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    fd = os.open(folder / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another worker migrating: wait for its result
        yield
    finally:
        os.close(fd)


def _environment(folder: Path, database: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    return env | {
        "PREFECT_HOME": str(folder / "home"),
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{database}",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }


def migrated_database() -> Path:
    """A SQLite Prefect database migrated to Alembic's head by Prefect's own ``create_db``
    (in a fresh process: Prefect's database interface is a per-process singleton), made
    once per test session; later calls, in any worker, return the same file."""
    folder = Path(os.environ.get(FOLDER_ENV) or template_folder()[0])
    database = folder / DATABASE
    with _locked(folder):
        if database.is_file():
            return database
        building = folder / f"building-{os.getpid()}.db"
        building.unlink(missing_ok=True)
        done = subprocess.run(
            [sys.executable, "-c", MIGRATE],
            env=_environment(folder, building),
            capture_output=True,
            text=True,
            timeout=600,
        )
        if done.returncode != 0:
            raise RuntimeError(f"migrating a template Prefect database failed: {done.stderr}")
        # one self-contained file (nothing left in a -wal beside it), published under its
        # final name only once complete
        with contextlib.closing(sqlite3.connect(building)) as db:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        building.replace(database)
    return database


def seed_prefect_home(home: Path) -> Path:
    """``home`` made (0700, as Prefect makes it) with a copy of :func:`migrated_database`
    as its database, unless it has one already; returns ``home``."""
    from clampdown.core.home import private_dirs

    private_dirs(home)
    target = home / DATABASE
    if not target.exists():
        copied = home / f".{DATABASE}.{os.getpid()}"
        with (
            contextlib.closing(sqlite3.connect(migrated_database())) as source,
            contextlib.closing(sqlite3.connect(copied)) as destination,
        ):
            source.backup(destination)
        copied.replace(target)
    return home


def remove_template_folder(folder: Path) -> None:
    """Remove the session's folder (the process that made it, at the end of the session)."""
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
