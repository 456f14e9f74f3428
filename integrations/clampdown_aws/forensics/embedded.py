"""The embedded engine: DuckDB scans the downloaded trail files, batch by batch.

Per batch, one scan: DuckDB parses the files (gunzipped while they were downloaded,
:func:`~clampdown_aws.forensics.trail_reader.fetch`) once, straight into typed rows with
only the fields the scope reads (``read_text`` + ``json_transform``), presents them as a
view shaped like Athena's CloudTrail table, and keeps the narrow rows of
:func:`~clampdown_aws.forensics.sql.narrow_sql` in ``recent``. Then, on that small
table, it finds credentials the suspect minted (repeating until no new key appears) and
appends the suspect's events to ``hits``.

Memory holds one batch, its narrow rows (``fresh``) and the suspect's own events, whatever
the window or the event rate. Files are read in delivery order, but the file holding an
``AssumeRole`` may be delivered after a file (of another region) holding the first calls
of the session it created; so each batch's narrow rows are also written to a Parquet file
in the work folder, and the files whose events are all older than :data:`LOOKBEHIND`
before the newest event seen are deleted. Only the minting events of that look-behind are
kept in memory (``mints``, a small table: the chain is followed through them). When a
batch reveals a key the suspect minted, the look-behind files are read for that key's
earlier calls. Before, the look-behind was an in-memory table of every narrow row of the
last 30 minutes, and it grew with the event rate (docs/benchmarks.md).

A batch that DuckDB cannot read (broken JSON, a file with no ``Records``) is read again
file by file: the broken files are reported and skipped, the others counted as usual.
"""

from __future__ import annotations

import json
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
    minted_sql,
)
from clampdown_aws.forensics.sql import narrow_sql as narrow_query

LOOKBEHIND = timedelta(minutes=30)
_ISO = "%Y-%m-%dT%H:%M:%SZ"
_MINTING = ", ".join(literal(name) for name in MINTING)
MAX_CLOSURE_ROUNDS = 10

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
    "userIdentity": {
        "type": "VARCHAR",
        "arn": "VARCHAR",
        "accessKeyId": "VARCHAR",
        "userName": "VARCHAR",
        "sessionContext": {"sessionIssuer": {"arn": "VARCHAR"}},
    },
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
FROM (SELECT unnest(recs) AS r FROM batch)"""

NARROW_TYPES = {name: "VARCHAR" for name in NARROW_COLUMNS} | {"bytes_out": "DOUBLE"}


@dataclass
class Malformed:
    path: Path
    error: str


@dataclass
class ScanStats:
    files: int = 0
    records: int = 0
    malformed: list[Malformed] = field(default_factory=list)


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
    ) -> None:
        self.con = con
        self.principal = principal
        self.keys: frozenset[str] = frozenset()
        self.stats = ScanStats()
        self._narrow = narrow_query(duckdb_dialect(), start, end)
        self._spill = spill
        self._behind: list[tuple[Path, str]] = []  # look-behind files, newest event in each
        self._newest = ""
        narrow_table(con, "mints")
        narrow_table(con, "hits")

    def scan(self, paths: list[Path]) -> None:
        """Read one batch: load, narrow, match, keep the look-behind on disk."""
        if not paths:
            return
        self._load(paths)
        self.stats.files += len(paths)
        self.stats.records += int(
            self.con.execute("SELECT coalesce(sum(len(recs)), 0) FROM batch").fetchone()[0]
        )
        self.con.execute(_VIEW)
        self.con.execute(f"CREATE OR REPLACE TEMP TABLE fresh AS {self._narrow}")
        self.con.execute("DROP VIEW cloudtrail")
        self.con.execute("DROP TABLE batch")
        self._match()
        self._remember()
        self.con.execute("DROP TABLE fresh")

    def close(self) -> None:
        """Delete the look-behind files (the work folder goes too, but not always at once)."""
        for path, _ in self._behind:
            path.unlink(missing_ok=True)
        self._behind.clear()

    def _load(self, paths: list[Path]) -> None:
        """``batch``: one row per readable file, its typed ``recs``; broken files reported."""
        try:
            self.con.execute(f"CREATE TABLE batch AS {_read(paths)}")
        except _FILE_PROBLEMS:
            self.con.execute(f"CREATE TABLE batch AS {_read(paths[:1])} LIMIT 0")
            for path in paths:
                try:
                    self.con.execute(f"INSERT INTO batch {_read([path])}")
                except _FILE_PROBLEMS as exc:
                    self.stats.malformed.append(Malformed(path, _first_line(str(exc))))
        empty = self.con.execute("SELECT filename FROM batch WHERE recs IS NULL").fetchall()
        for (name,) in empty:
            self.stats.malformed.append(Malformed(Path(name), "no Records array in the file"))
        if empty:
            self.con.execute("DELETE FROM batch WHERE recs IS NULL")

    def _match(self) -> None:
        """Extend the suspect by minted credentials until nothing new (through this batch and
        the look-behind's minting events), then append its events: this batch's, and the
        look-behind's of any key first seen now."""
        known = self.keys
        candidates = "(SELECT * FROM fresh UNION ALL SELECT * FROM mints)"
        for _ in range(MAX_CLOSURE_ROUNDS):
            identity = identity_predicate(self.principal, self.keys)
            found = {
                row[0] for row in self.con.execute(minted_sql(identity, candidates)).fetchall()
            }
            if found <= self.keys:
                break
            self.keys = self.keys | found
        self._append(hits_sql(identity_predicate(self.principal, self.keys), "fresh"))
        new = self.keys - known
        if new and self._behind:
            files = ", ".join(literal(str(path)) for path, _ in self._behind)
            behind = f"read_parquet([{files}])"
            by_key = f"access_key_id IN ({', '.join(literal(k) for k in sorted(new))})"
            self._append(f"SELECT {', '.join(NARROW_COLUMNS)} FROM {behind} WHERE {by_key}")

    def _append(self, query: str) -> None:
        self.con.execute(
            f"INSERT INTO hits SELECT * FROM ({query}) AS h "
            "WHERE h.eventid NOT IN (SELECT eventid FROM hits)"
        )

    def _remember(self) -> None:
        """This batch's narrow rows to a look-behind file, its minting events to ``mints``;
        forget what is older than :data:`LOOKBEHIND` before the newest event seen."""
        newest = self.con.execute("SELECT max(eventtime) FROM fresh").fetchone()[0]
        if newest is None:
            return
        self._newest = max(self._newest, newest)
        self._spill.mkdir(parents=True, exist_ok=True)
        path = self._spill / f"behind-{self.stats.files:09d}.parquet"
        self.con.execute(f"COPY fresh TO {literal(str(path))} (FORMAT parquet)")
        self._behind.append((path, newest))
        self.con.execute(f"INSERT INTO mints SELECT * FROM fresh WHERE eventname IN ({_MINTING})")
        cutoff = (datetime.strptime(self._newest, _ISO) - LOOKBEHIND).strftime(_ISO)
        self.con.execute("DELETE FROM mints WHERE eventtime < ?", [cutoff])
        kept = []
        for path, last in self._behind:
            if last < cutoff:
                path.unlink(missing_ok=True)
            else:
                kept.append((path, last))
        self._behind = kept


def _read(paths: list[Path]) -> str:
    """One row per file: its name and its typed records. ``read_text`` hands DuckDB the
    (already gunzipped) text and ``json_transform`` parses it once, straight into the
    types above — about twice as fast as ``read_json_objects`` (which parses to validate,
    then again to transform) on CloudTrail's one-big-object files."""
    listed = ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths)
    return (
        f"SELECT filename, json_transform(content, '{_STRUCTURE}').Records AS recs "
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
