"""Prefect's migrations once per user (issue 15): the first local API on an empty home
migrates it (a template that cannot be trusted is ignored) and keeps the result as the
user's template; the next empty home starts from a copy, with Prefect's block types
registered and its memo saying so, and runs flows.

Real servers on empty Prefect homes (no copy of the session's database), each in a fresh
process, with a cache folder of the test's own (``XDG_CACHE_HOME``).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

from clampdown_flows.prefect_template import migration_head, save, template_folder
from tests.paths import REPO
from tests.prefect_homes import migrated_database

FLOW_ON_LOCAL_API = """
from prefect import flow, task
from clampdown_flows.prefect_api import local_api

@task
def one() -> int:
    return 1

@flow(name="on-a-new-home")
def f() -> int:
    return one()

with local_api(timeout=900):
    assert f() == 1
"""

# Appended to FLOW_ON_LOCAL_API (one interpreter, Prefect imported once): after the flow,
# Prefect's own digest of its block registry against the memo the server's start found.
PREFECTS_OWN_MEMO = """
import tomllib
from prefect.settings import PREFECT_MEMO_STORE_PATH
from clampdown_flows.prefect_template import _blocks_digest

memo = tomllib.loads(PREFECT_MEMO_STORE_PATH.value().read_text())["block_auto_registration"]
print("memo matches:", memo == _blocks_digest(True))
"""


# The server's start-up in this process, as a server process runs it (the product's app
# factory, Prefect's lifespan), with Alembic's upgrade, Prefect's migration check, recorded.
MIGRATION_CHECKS = """
import asyncio, json, os
from asgi_lifespan import LifespanManager
from prefect.server.database.interface import PrefectDBInterface
from clampdown_flows.prefect_api import create_app

checks = []
upgrade = PrefectDBInterface.run_migrations_upgrade

async def recorded(self):
    checks.append("alembic upgrade")
    await upgrade(self)

PrefectDBInterface.run_migrations_upgrade = recorded

async def start() -> None:
    await LifespanManager(create_app(), startup_timeout=900).__aenter__()
    print(json.dumps(checks), flush=True)
    os._exit(0)

asyncio.run(start())
"""


def environment(tmp_path: Path, home: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    return env | {
        "PREFECT_HOME": str(tmp_path / home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "CRITICAL",
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }


def python(env: dict[str, str], code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def query(database: Path, sql: str) -> list[tuple[object, ...]]:
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        return db.execute(sql).fetchall()


def kept_template(tmp_path: Path) -> tuple[Path, str]:
    """The session's migrated database kept as this test's template; its folder and head."""
    import prefect

    kept = template_folder(prefect.__version__, {"XDG_CACHE_HOME": str(tmp_path / "cache")})
    versions = Path(prefect.__file__).parent / "server/database/_migrations/versions/sqlite"
    head = migration_head(versions)
    assert head is not None
    assert save(migrated_database(), kept, {"head": head, "blocks": None})
    return kept, head


def test_the_first_empty_home_keeps_a_template_and_the_next_starts_from_it(
    tmp_path: Path,
) -> None:
    """The user's cache holds an untrusted template: a database whose version is not the
    head its facts name (changed after it was kept). Copied, it would fail Prefect's start;
    ignored, Prefect migrates the first home, whose database replaces it as the template.
    (A first migration with no template folder at all is the session's own: the product's
    start in a fresh process on an empty cache, tests/prefect_homes.py, which fails the
    suite unless it keeps a private template at head.)"""
    kept, head = kept_template(tmp_path)
    with contextlib.closing(sqlite3.connect(kept / "prefect.db")) as db:  # tampered with
        db.execute("UPDATE alembic_version SET version_num = 'aaaaaaaaaaaa'")
        db.commit()
    first = environment(tmp_path, "first")
    python(first, FLOW_ON_LOCAL_API)  # ignores it and migrates, like Prefect always did
    # Prefect's start-up completed on the home (the flow ran): its database is at head, with
    # Prefect's block types, not the tampered copy
    first_database = tmp_path / "first" / "prefect.db"
    assert query(first_database, "SELECT version_num FROM alembic_version") == [(head,)]
    (folder,) = (tmp_path / "cache" / "clampdown").iterdir()
    template = folder / "prefect.db"
    assert folder == kept and stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(template.stat().st_mode) == 0o600
    facts = json.loads((folder / "template.json").read_text())
    assert facts["head"] == head and facts["blocks"] is not None  # the first home's, kept
    assert query(template, "SELECT version_num FROM alembic_version") == [(head,)]
    block_types = query(template, "SELECT count(*) FROM block_type")[0][0]
    assert block_types > 0
    # kept before the first request: the flow the first home ran is not in it
    assert query(template, "SELECT count(*) FROM flow_run") == [(0,)]
    assert query(first_database, "SELECT count(*) FROM flow_run") == [(1,)]

    second = environment(tmp_path, "second")
    ran = python(second, FLOW_ON_LOCAL_API + PREFECTS_OWN_MEMO)  # starts from the template
    database = tmp_path / "second" / "prefect.db"
    assert stat.S_IMODE(database.stat().st_mode) == 0o600
    assert query(database, "SELECT count(*) FROM block_type") == [(block_types,)]
    assert query(database, "SELECT count(*) FROM flow_run") == [(1,)]
    # Prefect's own digest of the blocks matches the memo: its start skipped registering
    assert ran.splitlines()[-1] == "memo matches: True", ran[-3000:]


def test_a_home_seeded_from_a_trusted_template_skips_alembics_check(tmp_path: Path) -> None:
    """Its database was copied and read back at head: the server's start runs no Alembic;
    the same home's next start (an existing database) checks as Prefect always does."""
    _, head = kept_template(tmp_path)
    env = environment(tmp_path, "home")
    assert json.loads(python(env, MIGRATION_CHECKS).splitlines()[-1]) == []
    # the start completed on the copy: block types registered (the template recorded no
    # registry, so no memo: Prefect registered them), tables at head. A flow on a home seeded
    # by a local API's server process is test 1's (its second home).
    database = tmp_path / "home" / "prefect.db"
    assert query(database, "SELECT count(*) FROM block_type")[0][0] > 0
    assert query(database, "SELECT version_num FROM alembic_version") == [(head,)]
    assert json.loads(python(env, MIGRATION_CHECKS).splitlines()[-1]) == ["alembic upgrade"]
