"""Fresh Prefect homes for the tests, all started from one migrated template.

A Prefect server on a new SQLite database first migrates it (Alembic, from empty to
head) and registers Prefect's block types in it: ~10 CPU-s, ~14 s on a quiet 2-core
machine. The product keeps the first database it migrates as the user's template
(:mod:`clampdown_flows.prefect_template`, in ``$XDG_CACHE_HOME/clampdown``) and starts
every new home from a copy, with Prefect's memo of the block registration, so that no
server registers the blocks again.

The tests use that path: the first pytest process (the xdist controller) makes a cache
folder for the session and points ``XDG_CACHE_HOME`` at it (:func:`template_folder`), so
the suite neither reads nor writes the user's own cache, and every server the tests start
on an empty home, in any process (``clampdown run``'s resident API, a drill's, serve's),
starts from the session's template. :func:`migrated_database` makes that template once
per session (the product's own start-up in a fresh process, under a file lock the
xdist workers share). :func:`seed_prefect_home` makes an empty home and the template; the
server started there copies it in, as it would for a user's second home.

A first migration (no template) is still exercised where that is the subject: tests that
point ``XDG_CACHE_HOME`` at a folder of their own (test_prefect_template.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

FOLDER_ENV = "CLAMPDOWN_TESTS_PREFECT_TEMPLATE"
"""The session's folder (the template's cache inside it); set by the first pytest process
(the xdist controller), inherited by the workers."""
DATABASE = "prefect.db"  # Prefect's default name in its home, and the template's
# Prefect's server start-up as a server process runs it, until it would serve: the
# product's template hooks keep the database it migrated. The process ends there (its
# background services need not stop cleanly: nothing of them is kept).
MIGRATE = """
import asyncio, os
from asgi_lifespan import LifespanManager
from clampdown_flows.prefect_api import create_app

async def start() -> None:
    await LifespanManager(create_app(), startup_timeout=900).__aenter__()
    os._exit(0)

asyncio.run(start())
"""


def template_folder() -> tuple[Path, bool]:
    """The session's folder, and whether this process made it (then it removes it at the
    end: :func:`remove_template_folder`). ``XDG_CACHE_HOME`` is set to its cache."""
    existing = os.environ.get(FOLDER_ENV)
    if existing:
        return Path(existing), False
    made = Path(tempfile.mkdtemp(prefix="clampdown-prefect-template-"))
    (made / "cache").mkdir(mode=0o700)
    os.environ[FOLDER_ENV] = str(made)
    os.environ["XDG_CACHE_HOME"] = str(made / "cache")
    return made, True


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    fd = os.open(folder / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another worker migrating: wait for its result
        yield
    finally:
        os.close(fd)


def _template() -> Path | None:
    """The session's template database if the product would use it, else None."""
    import importlib.util

    from clampdown_flows.prefect_template import migration_head, usable

    cache = Path(os.environ["XDG_CACHE_HOME"]) / "clampdown"
    prefect = importlib.util.find_spec("prefect")
    assert prefect is not None and prefect.submodule_search_locations
    versions = Path(prefect.submodule_search_locations[0]).joinpath(
        "server", "database", "_migrations", "versions", "sqlite"
    )
    head = migration_head(versions)
    found = [usable(folder, head) for folder in cache.glob("prefect-*-sqlite")] if head else []
    return next((path for path in found if path is not None), None)


def migrated_database() -> Path:
    """The session's template: a SQLite Prefect database migrated to Alembic's head with
    Prefect's block types registered, kept by the product's own start-up hooks (in a fresh
    process on an empty home), made once per test session; later calls, in any worker,
    return the same file."""
    folder = Path(os.environ.get(FOLDER_ENV) or template_folder()[0])
    with _locked(folder):
        found = _template()
        if found is not None:
            return found
        home = Path(tempfile.mkdtemp(prefix="home-", dir=folder))
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env |= {"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        done = subprocess.run(
            [sys.executable, "-c", MIGRATE], env=env, capture_output=True, text=True, timeout=900
        )
        found = _template()
        if done.returncode != 0 or found is None:
            raise RuntimeError(
                f"making the session's Prefect template failed (exit {done.returncode}, "
                f"usable template: {found}): {done.stderr[-3000:]}"
            )
        return found


def seed_prefect_home(home: Path) -> Path:
    """``home`` made (0700, as Prefect makes it) with no database, once the session's
    template exists: the first server there starts from a copy of it (the product's
    :mod:`clampdown_flows.prefect_template`), blocks registered. Returns ``home``."""
    from clampdown.core.home import private_dirs

    migrated_database()
    private_dirs(home)
    return home


def remove_template_folder(folder: Path) -> None:
    """Remove the session's folder (the process that made it, at the end of the session)."""
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
