"""Prefect's migrations once per user (issue 15): the first local API on an empty home
migrates it and keeps the result as the user's template; the next empty home starts from a
copy, with Prefect's block types registered and its memo saying so, and runs flows.

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


def test_the_first_empty_home_keeps_a_template_and_the_next_starts_from_it(
    tmp_path: Path,
) -> None:
    first = environment(tmp_path, "first")
    python(first, FLOW_ON_LOCAL_API)  # migrates, like Prefect always did
    (folder,) = (tmp_path / "cache" / "clampdown").iterdir()
    template = folder / "prefect.db"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(template.stat().st_mode) == 0o600
    facts = json.loads((folder / "template.json").read_text())
    assert query(template, "SELECT version_num FROM alembic_version") == [(facts["head"],)]
    block_types = query(template, "SELECT count(*) FROM block_type")[0][0]
    assert block_types > 0
    # kept before the first request: the flow the first home ran is not in it
    assert query(template, "SELECT count(*) FROM flow_run") == [(0,)]
    assert query(tmp_path / "first" / "prefect.db", "SELECT count(*) FROM flow_run") == [(1,)]

    second = environment(tmp_path, "second")
    ran = python(second, FLOW_ON_LOCAL_API + PREFECTS_OWN_MEMO)  # starts from the template
    database = tmp_path / "second" / "prefect.db"
    assert stat.S_IMODE(database.stat().st_mode) == 0o600
    assert query(database, "SELECT count(*) FROM block_type") == [(block_types,)]
    assert query(database, "SELECT count(*) FROM flow_run") == [(1,)]
    # Prefect's own digest of the blocks matches the memo: its start skipped registering
    assert ran.splitlines()[-1] == "memo matches: True", ran[-3000:]


def test_an_untrusted_template_is_ignored_and_prefect_migrates(tmp_path: Path) -> None:
    """A template whose database is not at the head its facts name (changed after it was
    kept): copied, it would fail Prefect's start; ignored, Prefect migrates the new home."""
    import prefect

    env = environment(tmp_path, "home")
    kept = template_folder(prefect.__version__, {"XDG_CACHE_HOME": str(tmp_path / "cache")})
    versions = Path(prefect.__file__).parent / "server/database/_migrations/versions/sqlite"
    head = migration_head(versions)
    assert save(migrated_database(), kept, {"head": head, "blocks": None})
    with contextlib.closing(sqlite3.connect(kept / "prefect.db")) as db:  # tampered with
        db.execute("UPDATE alembic_version SET version_num = 'aaaaaaaaaaaa'")
        db.commit()
    assert json.loads(python(env, MIGRATION_CHECKS).splitlines()[-1]) == ["alembic upgrade"]
    # Prefect's start-up completed on the home (the process above exits 0 only then): its
    # database is at head with Prefect's block types, not the tampered copy. That flows run
    # on a database Prefect migrated is test 1's (its first home): no flow here.
    database = tmp_path / "home" / "prefect.db"
    assert query(database, "SELECT version_num FROM alembic_version") == [(head,)]
    assert query(database, "SELECT count(*) FROM block_type")[0][0] > 0
    # and the database Prefect migrated replaced the untrusted template
    assert query(kept / "prefect.db", "SELECT version_num FROM alembic_version") == [(head,)]


def kept_template(tmp_path: Path) -> tuple[Path, str]:
    """The session's migrated database kept as this test's template; its folder and head."""
    import prefect

    kept = template_folder(prefect.__version__, {"XDG_CACHE_HOME": str(tmp_path / "cache")})
    versions = Path(prefect.__file__).parent / "server/database/_migrations/versions/sqlite"
    head = migration_head(versions)
    assert head is not None
    assert save(migrated_database(), kept, {"head": head, "blocks": None})
    return kept, head


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
