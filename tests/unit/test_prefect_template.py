"""The migrated Prefect database template: when it is trusted, how it is copied and kept.

No server here: the databases are small SQLite files shaped like a migrated one (an
``alembic_version`` row), and Prefect's block registry digest and memo writer are
stand-ins recording their calls. tests/integration/test_prefect_template.py starts real
servers on new homes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from clampdown_flows import prefect_template
from clampdown_flows.prefect_template import (
    DATABASE,
    FACTS,
    StartupHooks,
    TemplateDatabase,
    copy_database,
    migration_head,
    save,
    sqlite_file,
    template_folder,
    usable,
)

HEAD = "cafe00000002"


def migrated(path: Path, version: str = HEAD, rows: int = 3) -> Path:
    """A database as Prefect's migrations leave one: at ``version``, with some rows."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
        db.execute("INSERT INTO alembic_version VALUES (?)", (version,))
        db.execute("CREATE TABLE block_type (name TEXT)")
        db.executemany("INSERT INTO block_type VALUES (?)", [(f"b{i}",) for i in range(rows)])
        db.commit()
    return path


def kept(folder: Path, version: str = HEAD, blocks: str | None = "registry") -> Path:
    """A template as :func:`save` keeps one."""
    source = migrated(folder.parent / f"source-{folder.name}.db", version)
    assert save(source, folder, {"head": HEAD, "blocks": blocks})
    return folder


class Prefect:
    """Stand-ins for Prefect's block registry digest and memo store."""

    def __init__(self, registry: str = "registry") -> None:
        self.registry = registry
        self.memos: list[str] = []

    def digest(self, for_this_database: bool) -> str:
        return f"{self.registry}@home" if for_this_database else self.registry

    def template(self, database: Path, folder: Path) -> TemplateDatabase:
        return TemplateDatabase(database, folder, HEAD, self.digest, self.memos.append)


def test_migration_head_is_the_revision_nothing_revises(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text('revision = "aaa"\ndown_revision = None\n')
    (tmp_path / "b.py").write_text('revision = "bbb"\ndown_revision = "aaa"\n')
    (tmp_path / "c.py").write_text("revision: str = 'ccc'\ndown_revision: str = 'bbb'\n")
    assert migration_head(tmp_path) == "ccc"
    (tmp_path / "d.py").write_text('revision = "ddd"\ndown_revision = "bbb"\n')  # a branch
    assert migration_head(tmp_path) is None


def test_the_installed_prefect_has_one_sqlite_head() -> None:
    import prefect

    versions = Path(prefect.__file__).parent / "server/database/_migrations/versions/sqlite"
    head = migration_head(versions)
    assert head is not None and len(head) == 12


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite+aiosqlite:////tmp/x/prefect.db", "/tmp/x/prefect.db"),
        ("sqlite+aiosqlite:///relative.db", "relative.db"),
        ("sqlite+aiosqlite:///file.db?timeout=5", "file.db"),
        ("sqlite+aiosqlite:///:memory:", None),
        ("sqlite+aiosqlite:///file:x?mode=memory&cache=shared&uri=true", None),
        ("postgresql+asyncpg://u:p@db/prefect", None),
        ("", None),
    ],
)
def test_sqlite_file(url: str, expected: str | None) -> None:
    assert sqlite_file(url) == (Path(expected) if expected else None)


def test_template_folder_is_in_the_users_cache_per_prefect_version(tmp_path: Path) -> None:
    assert template_folder("3.9.1", {"XDG_CACHE_HOME": str(tmp_path)}) == (
        tmp_path / "clampdown" / "prefect-3.9.1-sqlite"
    )
    assert template_folder("3.9.1", {}) == (
        Path.home() / ".cache" / "clampdown" / "prefect-3.9.1-sqlite"
    )


def test_a_kept_template_is_private_and_trusted(tmp_path: Path) -> None:
    folder = kept(tmp_path / "template")
    assert (folder.stat().st_mode & 0o777) == 0o700
    assert ((folder / DATABASE).stat().st_mode & 0o777) == 0o600
    assert ((folder / FACTS).stat().st_mode & 0o777) == 0o600
    assert json.loads((folder / FACTS).read_text()) == {"head": HEAD, "blocks": "registry"}
    assert usable(folder, HEAD) == folder / DATABASE
    assert sorted(p.name for p in folder.iterdir()) == [DATABASE, FACTS]  # no leftovers


def test_a_template_not_at_this_prefects_head_is_ignored(tmp_path: Path) -> None:
    assert usable(kept(tmp_path / "template"), "beef00000003") is None


def test_a_template_whose_database_is_at_another_version_is_ignored(tmp_path: Path) -> None:
    folder = kept(tmp_path / "template", version="cafe00000001")  # facts say HEAD
    assert usable(folder, HEAD) is None


@pytest.mark.parametrize("what", ["folder", "database", "facts"])
def test_a_template_others_can_write_is_ignored(tmp_path: Path, what: str) -> None:
    folder = kept(tmp_path / "template")
    target = {"folder": folder, "database": folder / DATABASE, "facts": folder / FACTS}[what]
    target.chmod(0o777 if what == "folder" else 0o666)
    assert usable(folder, HEAD) is None


def test_a_symlinked_template_database_is_ignored(tmp_path: Path) -> None:
    folder = kept(tmp_path / "template")
    elsewhere = migrated(tmp_path / "elsewhere.db")
    elsewhere.chmod(0o600)
    (folder / DATABASE).unlink()
    (folder / DATABASE).symlink_to(elsewhere)
    assert usable(folder, HEAD) is None


def test_a_corrupt_template_is_ignored(tmp_path: Path) -> None:
    folder = kept(tmp_path / "template")
    database = folder / DATABASE
    data = bytearray(database.read_bytes())
    data[4096:8192] = b"\xff" * 4096  # the second page: a table's b-tree
    database.write_bytes(bytes(data))
    assert usable(folder, HEAD) is None
    (folder / DATABASE).write_bytes(b"not a database at all")
    assert usable(folder, HEAD) is None


def test_copy_database_never_replaces_an_existing_one(tmp_path: Path) -> None:
    source = migrated(tmp_path / "source.db")
    target = tmp_path / "home" / DATABASE
    target.parent.mkdir()
    assert copy_database(source, target)
    assert (target.stat().st_mode & 0o777) == 0o600
    with contextlib.closing(sqlite3.connect(target)) as db:
        assert db.execute("SELECT count(*) FROM block_type").fetchone() == (3,)
    other = migrated(tmp_path / "other.db", rows=7)
    assert not copy_database(other, target)
    with contextlib.closing(sqlite3.connect(target)) as db:
        assert db.execute("SELECT count(*) FROM block_type").fetchone() == (3,)
    assert sorted(p.name for p in target.parent.iterdir()) == [DATABASE]


def test_first_start_migrates_and_keeps_the_template_then_the_next_home_is_seeded(
    tmp_path: Path,
) -> None:
    prefect = Prefect()
    folder = tmp_path / "cache" / "template"
    first = tmp_path / "home-1" / DATABASE
    first.parent.mkdir()
    start = prefect.template(first, folder)
    assert start.before_startup() == "migrating"
    assert not first.exists()  # Prefect makes and migrates it
    migrated(first)  # ... as Prefect's start-up does
    assert start.after_startup()
    assert usable(folder, HEAD) is not None
    assert json.loads((folder / FACTS).read_text())["blocks"] == "registry"
    assert not start.after_startup()  # once

    second = tmp_path / "home-2" / DATABASE
    assert prefect.template(second, folder).before_startup() == "seeded"
    with contextlib.closing(sqlite3.connect(second)) as db:
        assert db.execute("SELECT version_num FROM alembic_version").fetchone() == (HEAD,)
    assert prefect.memos == ["registry@home"]  # Prefect's memo: blocks are registered


def test_no_memo_when_the_block_registry_differs_from_the_templates(tmp_path: Path) -> None:
    folder = kept(tmp_path / "template", blocks="registry")
    prefect = Prefect(registry="another collection installed")
    assert prefect.template(tmp_path / DATABASE, folder).before_startup() == "seeded"
    assert prefect.memos == []  # Prefect registers the blocks again


def test_an_existing_database_is_left_alone(tmp_path: Path) -> None:
    folder = kept(tmp_path / "template")
    home = migrated(tmp_path / DATABASE, rows=9)
    prefect = Prefect()
    start = prefect.template(home, folder)
    assert start.before_startup() == "existing"
    assert not start.after_startup()  # a used database never becomes the template
    with contextlib.closing(sqlite3.connect(home)) as db:
        assert db.execute("SELECT count(*) FROM block_type").fetchone() == (9,)
    assert prefect.memos == []


def test_no_template_for_another_database_or_an_unknown_head(tmp_path: Path) -> None:
    prefect = Prefect()
    off = TemplateDatabase(None, tmp_path, HEAD, prefect.digest, prefect.memos.append)
    assert off.before_startup() == "off"
    unknown = TemplateDatabase(tmp_path / DATABASE, tmp_path, None, prefect.digest, print)
    assert unknown.before_startup() == "off"
    assert not (tmp_path / DATABASE).exists()


def test_a_template_is_not_kept_in_a_folder_others_can_write(tmp_path: Path) -> None:
    folder = tmp_path / "template"
    folder.mkdir(mode=0o777)
    folder.chmod(0o777)
    assert not save(migrated(tmp_path / "source.db"), folder, {"head": HEAD})
    assert list(folder.iterdir()) == []


def test_startup_hooks_run_after_prefects_startup_and_never_stop_it() -> None:
    calls: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            message = await receive()
            calls.append(f"app got {message['type']}")
            await send({"type": "lifespan.startup.complete"})
        else:
            calls.append(f"app served {scope['type']}")

    def after() -> None:
        calls.append("after")
        raise OSError("disk full")  # a template problem: logged, the start goes on

    hooked = StartupHooks(app, after)

    async def receive() -> dict[str, str]:
        return {"type": "lifespan.startup"}

    async def send(message: dict[str, str]) -> None:
        calls.append(f"server got {message['type']}")

    asyncio.run(hooked({"type": "lifespan"}, receive, send))
    asyncio.run(hooked({"type": "http"}, receive, send))
    assert calls == [
        "app got lifespan.startup",
        "after",
        "server got lifespan.startup.complete",
        "app served http",
    ]


@pytest.mark.parametrize(
    ("home", "skipped"),
    [("new", True), ("existing", False), ("untrusted", False), ("unreadable", False)],
)
def test_only_a_home_just_seeded_at_head_skips_the_migration_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, home: str, skipped: bool
) -> None:
    skips: list[str] = []
    monkeypatch.setattr(prefect_template, "skip_migration_check", lambda: skips.append("skip"))
    folder = kept(tmp_path / "template")
    database = tmp_path / "home" / DATABASE
    if home == "existing":
        database.parent.mkdir()
        migrated(database)
    if home == "untrusted":
        folder.chmod(0o770)
    if home == "unreadable":  # copied, but the copy's version cannot be read back
        monkeypatch.setattr(prefect_template, "at_head", lambda database, head: False)
    outcome = prefect_template.prepare(Prefect().template(database, folder))
    expected = {"new": "seeded", "existing": "existing", "untrusted": "migrating"}
    assert outcome == expected.get(home, "copied")
    assert skips == (["skip"] if skipped else [])


def test_a_failing_seed_is_logged_and_prefect_migrates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    skips: list[str] = []
    monkeypatch.setattr(prefect_template, "skip_migration_check", lambda: skips.append("skip"))

    def full_disk(source: Path, target: Path) -> bool:
        raise OSError("disk full")

    monkeypatch.setattr(prefect_template, "copy_database", full_disk)
    template = Prefect().template(tmp_path / DATABASE, kept(tmp_path / "template"))
    assert prefect_template.prepare(template) is None
    assert skips == []


def test_at_head(tmp_path: Path) -> None:
    assert prefect_template.at_head(migrated(tmp_path / "a.db"), HEAD)
    assert not prefect_template.at_head(migrated(tmp_path / "b.db", "0ther"), HEAD)
    (tmp_path / "garbage.db").write_bytes(b"not a database" * 100)
    assert not prefect_template.at_head(tmp_path / "garbage.db", HEAD)
    assert not prefect_template.at_head(tmp_path / "missing.db", HEAD)


def test_kept_template_files_are_written_atomically(tmp_path: Path) -> None:
    """A second save over a template replaces it whole (rename), never in place."""
    folder = kept(tmp_path / "template")
    inode = (folder / DATABASE).stat().st_ino
    assert save(migrated(tmp_path / "newer.db", rows=5), folder, {"head": HEAD})
    assert (folder / DATABASE).stat().st_ino != inode
    assert os.listdir(folder) and sorted(os.listdir(folder)) == [DATABASE, FACTS]
