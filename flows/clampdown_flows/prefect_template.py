"""Prefect's migrations done once per user and Prefect version, not once per Prefect home.

A local Prefect server on a new home first migrates its empty SQLite database (Alembic,
from empty to head: some 10 CPU-s, most of a first start's 15 s on the 2-core reference
machine) and registers Prefect's block types in it (about 1 CPU-s). Every new home gets
the same result. So the first server that migrates a database keeps a copy of it, as it is
right after Prefect's start-up and before the server answers its first request, in the
user's cache (:func:`template_folder`: ``$XDG_CACHE_HOME/clampdown``, else
``~/.cache/clampdown``, a folder per Prefect version); a server started on a home with no
database copies that template in (SQLite's backup API) before Prefect's start-up and
before Prefect's app is built. When the copy is at the head of this Prefect's migrations,
that server process skips Alembic's check (a no-op at head, ~0.2 s of its start) through
Prefect's own setting, ``PREFECT_SERVER_DATABASE_MIGRATE_ON_START=false``, set in its own
environment only (:func:`skip_migration_check`); through Prefect's own memo of block
registration, it also finds its block types registered. Any other start (an existing
database, an untrusted template, a first migration) runs Prefect's migrations as always.

The template is used only if it can be trusted: the folder and file are the user's own and
private (0700 / 0600), the file passes ``PRAGMA integrity_check`` and its Alembic version is
the head of this Prefect's SQLite migrations; otherwise it is ignored and Prefect migrates
as it always did. It is written atomically (a private temporary file, then a rename), and
a new home's database is created only if none exists (a hard link: a server that opened a
database of its own meanwhile keeps it). The block memo is written only when the template
recorded the same block registry as this process has (same Prefect, same collections);
otherwise Prefect registers the blocks again. PostgreSQL and in-memory databases are left
alone.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sqlite3
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

logger = logging.getLogger("clampdown.prefect")

DATABASE = "prefect.db"
FACTS = "template.json"  # beside the template: its Alembic head and block registry digest
MIGRATE_ON_START = "PREFECT_SERVER_DATABASE_MIGRATE_ON_START"  # Prefect's own setting
_REVISION = re.compile(r"^(down_)?revision\s*(?::[^=]*)?=\s*(.+)$", re.MULTILINE)


def template_folder(version: str, environ: dict[str, str] | None = None) -> Path:
    """The user's folder for Prefect ``version``'s template (not created here)."""
    env = os.environ if environ is None else environ
    cache = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "clampdown" / f"prefect-{version}-sqlite"


def sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite connection URL; None for another database or memory."""
    if not url.startswith(("sqlite:", "sqlite+")):
        return None
    _, _, rest = url.partition(":///")
    path = rest.split("?", 1)[0]
    if not path or path == ":memory:" or "mode=memory" in url:
        return None
    return Path(path).expanduser()


def migration_head(versions: Path) -> str | None:
    """The one revision of ``versions`` (Alembic scripts) that no other revises; None when
    that is not exactly one (then no template is trusted)."""
    revisions, parents = set(), set()
    for script in versions.glob("*.py"):
        for down, value in _REVISION.findall(script.read_text(encoding="utf-8")):
            names = set(re.findall(r"[\"']([0-9a-zA-Z_]+)[\"']", value))
            (parents if down else revisions).update(names)
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


def _private(path: Path, mode: int) -> bool:
    """``path`` is the user's own, of kind ``mode`` (a folder or a file), and not a symlink;
    nobody else may read or write it."""
    try:
        info = path.lstat()
    except OSError:
        return False
    return (
        stat.S_IFMT(info.st_mode) == mode
        and info.st_uid == os.getuid()
        and not info.st_mode & 0o077
    )


def read_facts(folder: Path) -> dict[str, Any] | None:
    """The template's recorded facts (head, block digest), if folder and files are private."""
    if not (_private(folder, stat.S_IFDIR) and _private(folder / FACTS, stat.S_IFREG)):
        return None
    try:
        facts = json.loads((folder / FACTS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return facts if isinstance(facts, dict) else None


def usable(folder: Path, head: str) -> Path | None:
    """The template database in ``folder`` if it can be trusted (see the module docstring)."""
    template = folder / DATABASE
    facts = read_facts(folder)
    if facts is None or facts.get("head") != head or not _private(template, stat.S_IFREG):
        return None
    try:
        with contextlib.closing(sqlite3.connect(f"file:{template}?mode=ro", uri=True)) as db:
            if db.execute("PRAGMA integrity_check").fetchone() != ("ok",):
                return None
            versions = db.execute("SELECT version_num FROM alembic_version").fetchall()
    except sqlite3.Error:
        return None
    return template if versions == [(head,)] else None


def at_head(database: Path, head: str) -> bool:
    """Whether ``database``'s Alembic version is ``head`` (read only; False on any error)."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
            versions = db.execute("SELECT version_num FROM alembic_version").fetchall()
    except sqlite3.Error:
        return False
    return versions == [(head,)]


def copy_database(source: Path, target: Path) -> bool:
    """``source`` copied to ``target`` (0600) if ``target`` does not exist; False if it did.

    Copied with SQLite's backup API into a private temporary file beside ``target``, then
    hard-linked into place, which fails instead of replacing a database that another
    process created meanwhile."""
    building = target.with_name(f".{target.name}.{os.getpid()}.building")
    building.unlink(missing_ok=True)
    os.close(os.open(building, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    try:
        with (
            contextlib.closing(sqlite3.connect(f"file:{source}?mode=ro", uri=True)) as src,
            contextlib.closing(sqlite3.connect(building)) as dst,
        ):
            src.backup(dst)
            dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
        os.link(building, target)
    except FileExistsError:
        return False
    finally:
        building.unlink(missing_ok=True)
    return True


def save(database: Path, folder: Path, facts: dict[str, Any]) -> bool:
    """Keep ``database`` (just migrated, before any request) as ``folder``'s template."""
    if folder.exists() and not _private(folder, stat.S_IFDIR):
        logger.warning("not keeping a Prefect template in %s: not a private folder", folder)
        return False
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    building = folder / f".{DATABASE}.{os.getpid()}"
    building.unlink(missing_ok=True)
    os.close(os.open(building, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    try:
        with (
            contextlib.closing(sqlite3.connect(database)) as src,
            contextlib.closing(sqlite3.connect(building)) as dst,
        ):
            src.backup(dst)
            dst.execute("PRAGMA journal_mode=DELETE")
        with contextlib.closing(sqlite3.connect(building)) as dst:
            if dst.execute("PRAGMA integrity_check").fetchone() != ("ok",):
                return False
        facts_file = folder / f".{FACTS}.{os.getpid()}"
        fd = os.open(facts_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(facts, handle)
        os.replace(building, folder / DATABASE)  # the database first: facts name a whole one
        os.replace(facts_file, folder / FACTS)
    finally:
        building.unlink(missing_ok=True)
    return True


class TemplateDatabase:
    """One server start's use of the template: :meth:`before_startup` seeds a new home's
    database (or notes that Prefect will migrate it), :meth:`after_startup` keeps a
    database this start migrated as the template. Prefect's parts are passed in so that
    this class stays testable without a server."""

    def __init__(
        self,
        database: Path | None,
        folder: Path,
        head: str | None,
        blocks_digest: Callable[[bool], str | None],
        write_memo: Callable[[str], None],
    ) -> None:
        self.database = database
        self.folder = folder
        self.head = head
        self.blocks_digest = blocks_digest  # the registry's digest (True: for this database)
        self.write_memo = write_memo
        self.migrating = False  # this start migrates an empty database: keep it after
        self.registry: str | None = None

    def before_startup(self) -> str:
        """Seed a home without a database; what happened: ``seeded`` (a copy of the template,
        at this Prefect's head), ``copied`` (a copy whose version could not be read back:
        Prefect's check decides), ``migrating``, ``existing`` or ``off``."""
        if self.database is None or self.head is None:
            return "off"
        if self.database.exists():
            return "existing"
        self.registry = self.blocks_digest(False)
        template = usable(self.folder, self.head)
        if template is None:
            self.migrating = True
            return "migrating"
        self.database.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not copy_database(template, self.database):
            return "existing"
        facts = read_facts(self.folder) or {}
        if self.registry is not None and facts.get("blocks") == self.registry:
            memo = self.blocks_digest(True)
            if memo is not None:
                self.write_memo(memo)
        return "seeded" if at_head(self.database, self.head) else "copied"

    def after_startup(self) -> bool:
        """Keep the database this start migrated as the template (never raises)."""
        if not self.migrating or self.database is None:
            return False
        self.migrating = False
        try:
            return save(self.database, self.folder, {"head": self.head, "blocks": self.registry})
        except (OSError, sqlite3.Error) as exc:
            logger.warning("could not keep a migrated Prefect database as a template: %s", exc)
            return False


class StartupHooks:
    """An ASGI wrapper calling ``after`` when the server's start-up completed (Prefect's
    migrations and block registration done, before the first request is served).
    Everything else passes through unchanged."""

    def __init__(self, app: Any, after: Callable[[], object]):
        self.app = app
        self.after = after

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def hooked_send(message: Any) -> None:
            if message.get("type") == "lifespan.startup.complete":
                guarded(self.after)
            await send(message)

        await self.app(scope, receive, hooked_send)


def guarded(hook: Callable[[], Any]) -> Any:
    """A template problem must not stop the server: Prefect then migrates as it would.
    The hook's result, or None when it raised (logged)."""
    try:
        return hook()
    except Exception as exc:
        logger.warning("Prefect database template: %s", exc)
        return None


def prepare(template: TemplateDatabase) -> str | None:
    """Before Prefect's app is built: seed a new home from the template and, when the copy
    is at this Prefect's head, skip Alembic's no-op check in this server process. What
    :meth:`TemplateDatabase.before_startup` did (None: it failed, Prefect migrates)."""
    outcome = guarded(template.before_startup)
    if outcome == "seeded":
        skip_migration_check()
    return outcome


def skip_migration_check() -> None:
    """Prefect's own ``PREFECT_SERVER_DATABASE_MIGRATE_ON_START=false``, for this process.

    Set in the server process's environment; the app factory then has Prefect's settings
    re-read from it before Prefect's app is built
    (:func:`clampdown_flows.prefect_api.settings_follow_environment`), so the start-up that
    app runs reads it. Only for a database this process just copied from the template and
    read back at head: nothing else changes, and the next start on this home checks again
    as Prefect always does.
    """
    os.environ[MIGRATE_ON_START] = "false"


def for_this_server() -> TemplateDatabase:
    """The template for this process's Prefect settings and installed Prefect."""
    import prefect
    from prefect.settings import get_current_settings

    current = get_current_settings()
    url = current.server.database.connection_url
    database = sqlite_file(url.get_secret_value() if url else "")
    versions = Path(prefect.__file__).parent / "server/database/_migrations/versions/sqlite"
    head = migration_head(versions) if versions.is_dir() else None
    return TemplateDatabase(
        database, template_folder(prefect.__version__), head, _blocks_digest, _write_memo
    )


def _blocks_digest(for_this_database: bool) -> str | None:
    """Prefect's own digest of its block registry, as its server computes it to skip
    registering blocks again (``prefect.server.api.server._memoize_block_auto_registration``:
    the registry, the collections' block data and the database URL setting); with a fixed
    mark instead of the URL for the template's record."""
    from hashlib import sha256

    import prefect.plugins
    from prefect.blocks.core import Block
    from prefect.server.models.block_registration import COLLECTIONS_BLOCKS_DATA_PATH
    from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL
    from prefect.utilities.dispatch import get_registry_for_type
    from prefect.utilities.hashing import hash_objects

    prefect.plugins.load_prefect_collections()
    collections = json.loads(Path(COLLECTIONS_BLOCKS_DATA_PATH).read_text(encoding="utf-8"))
    url = PREFECT_API_DATABASE_CONNECTION_URL.value() if for_this_database else "template"
    return hash_objects(get_registry_for_type(Block), collections, url, hash_algo=sha256)


def _write_memo(digest: str) -> None:
    """Prefect's memo store (TOML) saying the blocks of this registry are registered."""
    from prefect.settings import PREFECT_MEMO_STORE_PATH

    fd = os.open(PREFECT_MEMO_STORE_PATH.value(), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(f'block_auto_registration = "{digest}"\n')
