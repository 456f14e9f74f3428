"""The embedded engine: DuckDB scans the downloaded trail files, batch by batch.

Per batch, one parse: DuckDB reads the files (gunzipped while they were downloaded,
:func:`~clampdown_aws.forensics.trail_reader.fetch`) straight into typed rows with only
the fields the scope reads (``read_text`` + ``json_transform``). From those rows it takes,
per file, the record count, the newest event, the access keys that made calls, and
whether any record was made by the suspect (the principal or a key it minted): the
*suspect's files*. Only those go on to the costly part, presented as a view shaped like
Athena's CloudTrail table, narrowed by :func:`~clampdown_aws.forensics.sql.narrow_sql`
into ``fresh``; on that small table it finds credentials the suspect minted (repeating
until no new key appears) and appends the suspect's events to ``hits``.

Why this is exact, not a heuristic: every event the scope reports is selected by
:func:`~clampdown_aws.forensics.principal.identity_predicate` over the caller's identity
(``hits_sql``, ``minted_sql``), and the per-file test is that same predicate over the same
typed fields, so a file it passes over holds no event of the suspect *as known then*. It
does not read raw text (a substring test would miss an identity written with JSON escapes).
A key the suspect mints later can have made calls in a file already passed over (a file of
another region delivered before the one holding the ``AssumeRole``): each passed-over file's
calling keys stay listed (``skipped``, one narrow row per file and key) while its events are
inside :data:`LOOKBEHIND`; when a new key appears, the listed files it called in are read
again (fetched again by the caller's ``reread``) and scanned as the suspect's files of this
batch, which may reveal further keys, until none does.

Memory holds one batch, its narrow rows (``fresh``) and the suspect's own events, whatever
the window or the event rate. Files are read in delivery order, so the suspect's files'
narrow rows are also written to a Parquet file in the work folder, deleted once all their
events are more than :data:`LOOKBEHIND` older than the newest event seen; only their minting
events stay in memory (``mints``, a small table: the chain is followed through them). When
a batch reveals a key the suspect minted, those look-behind files are read for that key's
earlier calls too.

A batch that DuckDB cannot read (broken JSON, a file with no ``Records``) is read again
file by file: the broken files are reported and skipped, the others counted as usual.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from clampdown_aws.forensics.principal import Principal, identity_predicate, literal
from clampdown_aws.forensics.sql import (
    MINTING,
    NARROW_COLUMNS,
    duckdb_dialect,
    hits_sql,
    iso,
    minted_sql,
)
from clampdown_aws.forensics.sql import narrow_sql as narrow_query

LOOKBEHIND = timedelta(minutes=30)
_ISO = "%Y-%m-%dT%H:%M:%SZ"
_MINTING = ", ".join(literal(name) for name in MINTING)
MAX_CLOSURE_ROUNDS = 10

# Who made a call: what identity_predicate compares (both structures below read it).
_IDENTITY = {
    "type": "VARCHAR",
    "arn": "VARCHAR",
    "accessKeyId": "VARCHAR",
    "userName": "VARCHAR",
    "sessionContext": {"sessionIssuer": {"arn": "VARCHAR"}},
}
# The fields the scope reads; json_transform ignores the rest of each record, and gives NULL
# for a field whose JSON type differs (another service's ``credentials`` that is a string).
_RECORD = {
    "eventID": "VARCHAR",
    "requestID": "VARCHAR",
    "eventTime": "VARCHAR",
    "eventSource": "VARCHAR",
    "eventName": "VARCHAR",
    "awsRegion": "VARCHAR",
    "sourceIPAddress": "VARCHAR",
    "userAgent": "VARCHAR",
    "errorCode": "VARCHAR",
    "userIdentity": _IDENTITY,
    "requestParameters": {
        "bucketName": "VARCHAR",
        "key": "VARCHAR",
        "versionId": "VARCHAR",
        "x-amz-copy-source": "VARCHAR",
        "roleArn": "VARCHAR",
        "userName": "VARCHAR",
    },
    "responseElements": {
        "credentials": {"accessKeyId": "VARCHAR"},
        "accessKey": {"accessKeyId": "VARCHAR"},
        "assumedRoleUser": {"arn": "VARCHAR"},
    },
    "additionalEventData": {"bytesTransferredOut": "VARCHAR"},
}
_STRUCTURE = json.dumps({"Records": [_RECORD]})

# Athena's CloudTrail table, built from the typed records of the batch (the three JSON
# columns as structs: see sql.Dialect).
_VIEW = """CREATE OR REPLACE TEMP VIEW cloudtrail AS
SELECT
  r.eventID AS eventid,
  r.requestID AS requestid,
  r.eventTime AS eventtime,
  r.eventSource AS eventsource,
  r.eventName AS eventname,
  r.awsRegion AS awsregion,
  r.sourceIPAddress AS sourceipaddress,
  r.userAgent AS useragent,
  r.errorCode AS errorcode,
  {'type': r.userIdentity.type, 'arn': r.userIdentity.arn,
   'accesskeyid': nullif(r.userIdentity.accessKeyId, ''), 'username': r.userIdentity.userName,
   'sessioncontext': {'sessionissuer': {'arn': r.userIdentity.sessionContext.sessionIssuer.arn}}}
    AS useridentity,
  r.requestParameters AS requestparameters,
  r.responseElements AS responseelements,
  r.additionalEventData AS additionaleventdata
FROM (SELECT unnest(recs) AS r FROM {source})"""

# Per file: what the count and the look-behind need, and whether the suspect made any of
# its calls ({identity}: identity_predicate over structs with the narrow columns' names).
# Straight from the text, through list functions: materialising every record of the batch
# as a typed row cost about twice the parse itself (docs/benchmarks.md). ``newest`` only
# among the window's events, as the narrow query keeps them: a file with none cannot add
# to the answer, and a forged far-off eventTime cannot age the look-behind.
_FACTS = json.dumps({"Records": [{"eventTime": "VARCHAR", "userIdentity": _IDENTITY}]})
_FILE_FACTS = """SELECT filename,
  len(recs) AS records,
  list_max([r.eventTime FOR r IN recs IF r.eventTime >= {start} AND r.eventTime < {end}])
    AS newest,
  list_distinct([nullif(r.userIdentity.accessKeyId, '') FOR r IN recs]) AS keys,
  coalesce(list_bool_or([{identity} FOR i IN [
    {'identity_type': r.userIdentity.type, 'identity_arn': r.userIdentity.arn,
     'access_key_id': nullif(r.userIdentity.accessKeyId, ''),
     'user_name': r.userIdentity.userName,
     'issuer_arn': r.userIdentity.sessionContext.sessionIssuer.arn} FOR r IN recs]]), false)
    AS suspect
FROM {source}"""

NARROW_TYPES = {name: "VARCHAR" for name in NARROW_COLUMNS} | {"bytes_out": "DOUBLE"}


@dataclass
class Malformed:
    """A file that could not be read: its source (the name the caller gave) and why."""

    source: str
    error: str


@dataclass
class ScanStats:
    files: int = 0
    records: int = 0
    suspect_files: int = 0  # read in full: the suspect made calls in them
    reread: int = 0  # passed over, then read again for a key minted later
    malformed: list[Malformed] = field(default_factory=list)


Reread = Callable[[list[str]], tuple[dict[Path, str], list[Malformed]]]
"""Fetch passed-over files again by source name: local paths (with their source names) and
the files that could not be fetched. The caller owns (and deletes) the local copies."""


def reread_local(sources: list[str]) -> tuple[dict[Path, str], list[Malformed]]:
    """For files that stay on disk (their source name is their path)."""
    found = {Path(source): source for source in sources if Path(source).is_file()}
    missing = [Malformed(s, "no longer on disk") for s in sources if Path(s) not in found]
    return found, missing


@dataclass
class _PassedOver:
    source: str
    newest: str


def connect(work: Path, memory_limit: str, threads: int) -> Any:
    """A DuckDB connection with bounded memory, spilling to ``work``, and the Presto names
    the shared SQL uses (``json_extract_scalar``)."""
    import duckdb

    con = duckdb.connect(
        ":memory:",
        config={
            "memory_limit": memory_limit,
            "threads": threads,
            "temp_directory": str(work / "spill"),
            "preserve_insertion_order": False,
            "enable_external_access": True,
        },
    )
    con.execute("CREATE MACRO json_extract_scalar(j, p) AS json_extract_string(j, p)")
    con.execute("CREATE MACRO array_join(l, sep) AS array_to_string(l, sep)")
    return con


def narrow_table(con: Any, name: str) -> None:
    columns = ", ".join(f"{column} {NARROW_TYPES[column]}" for column in NARROW_COLUMNS)
    con.execute(f"CREATE TABLE {name} ({columns})")


class EmbeddedScan:
    """Feed it batches of local trail files; it keeps the suspect's events in ``hits``."""

    def __init__(
        self,
        con: Any,
        principal: Principal,
        start: datetime,
        end: datetime,
        spill: Path,
        reread: Reread = reread_local,
        parse_whole_above: float = 0.5,
    ) -> None:
        self.con = con
        self.principal = principal
        self.keys: frozenset[str] = frozenset()
        self.stats = ScanStats()
        self._narrow = narrow_query(duckdb_dialect(), start, end)
        self._window = (literal(iso(start)), literal(iso(end)))
        self._spill = spill
        self._reread = reread
        self._behind: list[tuple[Path, str]] = []  # look-behind files, newest event in each
        self._passed: dict[int, _PassedOver] = {}  # by number; their keys in ``skipped``
        self._numbered = 0
        self._newest = ""
        # After a batch whose share of the suspect's files was above ``parse_whole_above``
        # (a busy role scoped), the next one is parsed whole at once: picking its files
        # first would parse most of them twice (below 0: always; 1: never).
        self._whole_above = parse_whole_above
        self._parse_whole_batch = parse_whole_above < 0
        narrow_table(con, "mints")
        narrow_table(con, "hits")
        con.execute("CREATE TABLE skipped (file INTEGER, key VARCHAR)")

    def scan(self, files: Iterable[Path] | Mapping[Path, str]) -> None:
        """Read one batch: parse, pick the suspect's files, narrow, match, keep the
        look-behind. ``files``: local paths, or local paths with the source name each
        stands for (what :class:`Malformed` and ``reread`` use)."""
        named = dict(files) if isinstance(files, Mapping) else {p: str(p) for p in files}
        if not named:
            return
        self.stats.files += len(named)
        whole = self._parse_whole_batch
        facts = self._read_facts(named, whole)
        self.stats.records += sum(records for _, records, _, _ in facts)
        self._newest = max([self._newest, *(newest for _, _, newest, _ in facts if newest)])
        suspect = {Path(name) for name, *_, is_suspect in facts if is_suspect}
        self.stats.suspect_files += len(suspect)
        narrow_table(self.con, "fresh")
        if whole:
            kept = ", ".join(literal(str(path)) for path in suspect)
            self.con.execute(
                f"DELETE FROM batch WHERE filename NOT IN ({kept})" if kept else "DELETE FROM batch"
            )
            self._narrow_batch()
        else:
            self._narrow_into_fresh({path: named[path] for path in named if path in suspect})
        self._parse_whole_batch = len(suspect) > self._whole_above * len(named)
        self._match(named)
        self._remember()
        self.con.execute("DROP TABLE fresh")

    def _read_facts(self, named: Mapping[Path, str], whole: bool) -> list[tuple[Any, ...]]:
        """Each readable file's (name, records, newest, suspect); the files passed over are
        listed with their calling keys. ``whole``: the batch is parsed in full into
        ``batch`` first, and the facts taken from there."""
        if whole:
            self._load(named, "batch", _read, "recs")
            self.con.execute(f"CREATE TABLE batch_files AS {self._facts_query('batch')}")
        else:
            self._load(named, "batch_files", self._facts_from_text, "records")
        facts = self.con.execute(
            "SELECT filename, records, newest, suspect FROM batch_files"
        ).fetchall()
        passed = [(name, newest) for name, _, newest, suspect in facts if newest and not suspect]
        self._pass_over(named, passed)
        self.con.execute("DROP TABLE batch_files")
        return facts

    def close(self) -> None:
        """Delete the look-behind files (the work folder goes too, but not always at once)."""
        for path, _ in self._behind:
            path.unlink(missing_ok=True)
        self._behind.clear()
        self._passed.clear()
        self.con.execute("DELETE FROM skipped")

    def _load(
        self,
        named: Mapping[Path, str],
        table: str,
        select: Callable[[list[Path]], str],
        records: str,
    ) -> None:
        """``table``: one row per readable file (``select``: the query over some files, a
        NULL ``records`` column where the file has no ``Records``); broken files reported."""
        paths = list(named)
        try:
            self.con.execute(f"CREATE TABLE {table} AS {select(paths)}")
        except _FILE_PROBLEMS:
            self.con.execute(f"CREATE TABLE {table} AS {select(paths[:1])} LIMIT 0")
            for path in paths:
                try:
                    self.con.execute(f"INSERT INTO {table} {select([path])}")
                except _FILE_PROBLEMS as exc:
                    self.stats.malformed.append(Malformed(named[path], _first_line(str(exc))))
        empty = self.con.execute(f"SELECT filename FROM {table} WHERE {records} IS NULL")
        by_name = {str(path): source for path, source in named.items()}
        for (name,) in empty.fetchall():
            source = by_name.get(name, name)
            self.stats.malformed.append(Malformed(source, "no Records array in the file"))
        self.con.execute(f"DELETE FROM {table} WHERE {records} IS NULL")

    def _facts_query(self, source: str) -> str:
        """Per file of ``source`` (rows of ``filename`` and typed ``recs``), its facts
        (:data:`_FILE_FACTS`) with the suspect as known now."""
        start, end = self._window
        identity = identity_predicate(self.principal, self.keys, row="i.")
        query = _FILE_FACTS.replace("{identity}", identity).replace("{source}", source)
        return query.replace("{start}", start).replace("{end}", end)

    def _facts_from_text(self, paths: list[Path]) -> str:
        return self._facts_query(f"({_typed(paths, _FACTS)})")

    def _narrow_into_fresh(self, named: Mapping[Path, str]) -> None:
        """Parse ``named`` in full (they hold the suspect's calls) and add their narrow rows
        to ``fresh``."""
        if not named:
            return
        self._load(named, "batch", _read, "recs")
        self._narrow_batch()

    def _narrow_batch(self) -> None:
        """``batch``'s narrow rows into ``fresh``; ``batch`` dropped."""
        self.con.execute(_VIEW.replace("{source}", "batch"))
        self.con.execute(f"INSERT INTO fresh {self._narrow}")
        self.con.execute("DROP VIEW cloudtrail")
        self.con.execute("DROP TABLE batch")

    def _pass_over(self, named: Mapping[Path, str], passed: list[tuple[str, str]]) -> None:
        """List the files without the suspect's calls, with the keys that called in them."""
        by_name = {str(path): source for path, source in named.items()}
        numbers = []
        for name, newest in passed:
            self._numbered += 1
            self._passed[self._numbered] = _PassedOver(by_name.get(name, name), newest)
            numbers.append((name, self._numbered))
        if not numbers:
            return
        listed = ", ".join(f"({literal(name)}, {number})" for name, number in numbers)
        self.con.execute(
            "INSERT INTO skipped SELECT n.number, unnest(f.keys) FROM batch_files f "
            f"JOIN (VALUES {listed}) AS n(filename, number) USING (filename)"
        )

    def _match(self, batch: Mapping[Path, str]) -> None:
        """Extend the suspect by minted credentials until nothing new (through this batch,
        the look-behind's minting events, and passed-over files the new keys called in),
        then append its events: this batch's, and the look-behind's of any key first seen
        now."""
        known = searched = self.keys
        while True:
            self._close_over_mints()
            if self.keys == searched or not self._read_again(self.keys - searched, batch):
                break
            searched = self.keys
        self._append(hits_sql(identity_predicate(self.principal, self.keys), "fresh"))
        new = self.keys - known
        if new and self._behind:
            files = ", ".join(literal(str(path)) for path, _ in self._behind)
            behind = f"read_parquet([{files}])"
            by_key = f"access_key_id IN ({', '.join(literal(k) for k in sorted(new))})"
            self._append(f"SELECT {', '.join(NARROW_COLUMNS)} FROM {behind} WHERE {by_key}")

    def _close_over_mints(self) -> None:
        candidates = "(SELECT * FROM fresh UNION ALL SELECT * FROM mints)"
        for _ in range(MAX_CLOSURE_ROUNDS):
            identity = identity_predicate(self.principal, self.keys)
            found = {
                row[0] for row in self.con.execute(minted_sql(identity, candidates)).fetchall()
            }
            if found <= self.keys:
                break
            self.keys = self.keys | found

    def _read_again(self, keys: frozenset[str], batch: Mapping[Path, str]) -> bool:
        """Scan the passed-over files that ``keys`` called in as this batch's suspect files
        (their narrow rows join ``fresh``); False when there are none."""
        listed = ", ".join(literal(key) for key in sorted(keys))
        numbers = [
            row[0]
            for row in self.con.execute(
                f"SELECT DISTINCT file FROM skipped WHERE key IN ({listed}) ORDER BY file"
            ).fetchall()
        ]
        if not numbers:
            return False
        sources = [self._passed.pop(number).source for number in numbers]
        self.con.execute(f"DELETE FROM skipped WHERE file IN ({', '.join(map(str, numbers))})")
        here = {source: path for path, source in batch.items()}
        local = {here[s]: s for s in sources if s in here}
        fetched, missing = self._reread([s for s in sources if s not in here])
        self.stats.malformed += [
            Malformed(m.source, f"could not be read again for a key minted later: {m.error}")
            for m in missing
        ]
        self.stats.reread += len(sources)
        self._narrow_into_fresh({**local, **fetched})
        return bool(local or fetched)

    def _append(self, query: str) -> None:
        self.con.execute(
            f"INSERT INTO hits SELECT * FROM ({query}) AS h "
            "WHERE h.eventid NOT IN (SELECT eventid FROM hits)"
        )

    def _remember(self) -> None:
        """This batch's narrow rows to a look-behind file, its minting events to ``mints``;
        forget what is older than :data:`LOOKBEHIND` before the newest event seen (files
        read and files passed over alike)."""
        if self.con.execute("SELECT count(*) FROM fresh").fetchone()[0]:
            newest = self.con.execute("SELECT max(eventtime) FROM fresh").fetchone()[0]
            self._spill.mkdir(parents=True, exist_ok=True)
            path = self._spill / f"behind-{self.stats.files:09d}.parquet"
            self.con.execute(f"COPY fresh TO {literal(str(path))} (FORMAT parquet)")
            self._behind.append((path, newest))
            self.con.execute(
                f"INSERT INTO mints SELECT * FROM fresh WHERE eventname IN ({_MINTING})"
            )
        if not self._newest:
            return
        cutoff = (datetime.strptime(self._newest, _ISO) - LOOKBEHIND).strftime(_ISO)
        self.con.execute("DELETE FROM mints WHERE eventtime < ?", [cutoff])
        kept = []
        for path, last in self._behind:
            if last < cutoff:
                path.unlink(missing_ok=True)
            else:
                kept.append((path, last))
        self._behind = kept
        old = [number for number, item in self._passed.items() if item.newest < cutoff]
        if old:
            for number in old:
                del self._passed[number]
            self.con.execute(f"DELETE FROM skipped WHERE file IN ({', '.join(map(str, old))})")


def _read(paths: list[Path]) -> str:
    """One row per file: its name and its typed records. ``read_text`` hands DuckDB the
    (already gunzipped) text and ``json_transform`` parses it once, straight into the
    types above — about twice as fast as ``read_json_objects`` (which parses to validate,
    then again to transform) on CloudTrail's one-big-object files."""
    return _typed(paths, _STRUCTURE)


def _typed(paths: list[Path], structure: str) -> str:
    listed = ", ".join(literal(str(path)) for path in paths)
    return (
        f"SELECT filename, json_transform(content, '{structure}').Records AS recs "
        f"FROM read_text([{listed}])"
    )


def _file_problems() -> tuple[type[Exception], ...]:
    """DuckDB errors that mean "this file is broken" (anything else, e.g. out of memory, is
    the engine's problem and is raised)."""
    import duckdb

    return (duckdb.IOException, duckdb.InvalidInputException, duckdb.ConversionException)


_FILE_PROBLEMS = _file_problems()


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0][:300] if text.strip() else "unreadable"
