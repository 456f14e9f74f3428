"""One scoping run: pick the files, drive an engine, roll up, say what was not seen.

Kept apart from the action so the benchmark and tests can run a scope over a trail
bucket without an action context, and so the action reads as the steps it takes.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from clampdown_aws.forensics import access_logs, rollup, trail_reader
from clampdown_aws.forensics.coverage import blind, confidence
from clampdown_aws.forensics.embedded import EmbeddedScan, Malformed, Reread, connect
from clampdown_aws.forensics.principal import Principal
from clampdown_aws.forensics.sql import iso

MEMORY_LIMIT = "1GB"


@dataclass
class Scope:
    work: Path
    principal: Principal
    start: datetime
    end: datetime
    models: list[Any]
    threads: int = 2
    memory_limit: str = MEMORY_LIMIT
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    engine: str = "duckdb"
    files_scanned: int = 0
    records_scanned: int = 0
    keys: frozenset[str] = frozenset()
    access_locations: list[str] = field(default_factory=list)
    access_files: int = 0
    access_records: int = 0

    def __post_init__(self) -> None:
        self.con = connect(self.work, self.memory_limit, self.threads)
        access_logs.access_table(self.con)

    def _files(
        self, s3: Any, where: trail_reader.TrailLocation, wanted: list[str] | None
    ) -> tuple[list[trail_reader.TrailFile], list[dict[str, str]]]:
        """The window's files of every region read, and the gaps and absent regions."""
        present = trail_reader.regions(s3, where)
        spots = []
        if not where.multi_region:
            spots.append(
                blind(
                    "region_not_logged",
                    f"trail {where.name} logs only {where.home_region}: calls in other "
                    "regions (S3 buckets there included) are not in its files",
                )
            )
        files: list[trail_reader.TrailFile] = []
        for region in wanted or present:
            found = trail_reader.list_files(s3, where, region, self.start, self.end)
            if wanted and region not in present:
                spots.append(blind("region_not_logged", f"no log files at all for region {region}"))
                continue
            for gap_start, gap_end in trail_reader.gaps(found, self.start, self.end, self.now):
                spots.append(
                    blind(
                        "trail_gap",
                        f"no trail files for {region} from {iso(gap_start)} to "
                        f"{iso(gap_end)}: calls in that time may be missing",
                    )
                )
            files += found
        return files, spots

    def embedded(
        self, s3: Any, where: trail_reader.TrailLocation, wanted: list[str] | None
    ) -> list[dict[str, str]]:
        """Scan the window's files with DuckDB, batch by batch; the blind spots found."""
        files, spots = self._files(s3, where, wanted)
        again = self.work / "again"
        scan = EmbeddedScan(
            self.con,
            self.principal,
            self.start,
            self.end,
            self.work / "lookbehind",
            reread=_fetcher(s3, where.bucket, files, again),
        )
        fetched = 0
        batches = _prefetched(s3, where.bucket, trail_reader.batches(files), self.work)
        for local, broken in batches:
            fetched += len(local) + len(broken)
            try:
                scan.scan({path: item.key for path, item in local.items()})
            finally:
                for path in local:
                    path.unlink(missing_ok=True)
                shutil.rmtree(again, ignore_errors=True)
            problems = [(item.key, error) for item, error in broken]
            problems += [(bad.source, bad.error) for bad in scan.stats.malformed]
            for key, error in problems:
                spots.append(
                    blind("malformed_file", f"s3://{where.bucket}/{key}: {error} (skipped)")
                )
            scan.stats.malformed.clear()
        scan.close()
        self.files_scanned = fetched
        self.records_scanned = scan.stats.records
        self.keys = scan.keys
        return spots

    def access_logs(
        self, s3: Any, locations: list[access_logs.LogLocation]
    ) -> list[dict[str, str]]:
        """Read the S3 server access logs at ``locations`` after the CloudTrail scope (the
        sessions the suspect created are known by then): the suspect's requests go to
        ``access_hits``; unreadable locations, missing files and malformed lines are blind
        spots, never fatal."""
        if not locations:
            return []
        self.access_locations = [where.uri for where in locations]
        sessions = frozenset(
            row[0]
            for row in self.con.execute(
                "SELECT DISTINCT minted_arn FROM hits WHERE eventname = 'AssumeRole' "
                "AND error_code IS NULL AND minted_arn IS NOT NULL"
            ).fetchall()
        )
        spots = []
        if self.principal.kind == "access_key":
            spots.append(
                blind(
                    "access_logs_unattributable",
                    f"S3 server access logs record the caller's ARN, not the access key id: "
                    f"requests made with {self.principal.value} itself cannot be picked out "
                    "there (sessions it created with AssumeRole are); scope its user or role "
                    "ARN to include them",
                )
            )
            if not sessions:
                return spots
        scan = access_logs.AccessLogScan(self.con, self.principal, sessions, self.start, self.end)
        for where in locations:
            spots += self._access_location(s3, where, scan)
        self.access_files = scan.stats.files
        self.access_records = scan.stats.records
        return spots

    def _access_location(
        self, s3: Any, where: access_logs.LogLocation, scan: access_logs.AccessLogScan
    ) -> list[dict[str, str]]:
        files, error = access_logs.list_files(s3, where, self.start, self.end)
        if error:
            return [
                blind(
                    "access_logs_missing",
                    f"server access logs at {where.uri} (from {where.named_by}) cannot be "
                    f"listed ({error}): reads recorded there are not seen",
                )
            ]
        spots = []
        if not files:
            spots.append(
                blind(
                    "access_logs_missing",
                    f"no server access log files at {where.uri} (from {where.named_by}) "
                    f"delivered from {iso(self.start)} to "
                    f"{iso(self.end + access_logs.DELIVERY_LAG)}",
                )
            )
        batches = _prefetched(
            s3, where.bucket, trail_reader.batches(files), self.work, gunzip=False
        )
        for local, broken in batches:
            try:
                scan.scan({path: item.key for path, item in local.items()})
            finally:
                for path in local:
                    path.unlink(missing_ok=True)
            for item, problem in broken:
                spots.append(
                    blind("malformed_file", f"s3://{where.bucket}/{item.key}: {problem} (skipped)")
                )
        spots += access_logs.malformed_spots(where, scan.stats)
        scan.stats.malformed.clear()
        scan.stats.unreadable.clear()
        return spots

    def coverage_only(
        self, s3: Any, where: trail_reader.TrailLocation, wanted: list[str] | None
    ) -> list[dict[str, str]]:
        """Athena reads the table; the file listing still shows gaps and missing regions."""
        return self._files(s3, where, wanted)[1]

    def athena(self, query: Any, database: str, table: str) -> None:
        from clampdown_aws.forensics.athena import athena_scope

        rows, self.keys = athena_scope(query, database, table, self.principal, self.start, self.end)
        rollup.load_hits(self.con, rows)
        self.engine = "athena"

    def close(self) -> None:
        self.con.close()

    def result(self, spots: list[dict[str, str]]) -> dict[str, Any]:
        """The whole result (every object); the action bounds what goes to outputs."""
        rolled = rollup.roll_up(self.con, self.models)
        level, reason = confidence(spots, bool(self.access_locations), self.engine)
        found = rollup.objects(self.con, None)
        return {
            "window_start": iso(self.start),
            "window_end": iso(self.end),
            "summary": _summary(self.principal, rolled["totals"], found, level),
            "objects": found,
            **rolled,
            "linked_credentials": sorted(self.keys),
            "blind_spots": spots,
            "confidence": level,
            "confidence_reason": reason,
            "engine": self.engine,
            "files_scanned": self.files_scanned,
            "records_scanned": self.records_scanned,
            "access_log_locations": self.access_locations,
            "access_log_files_scanned": self.access_files,
            "access_log_records_scanned": self.access_records,
        }


def _fetcher(s3: Any, bucket: str, files: list[trail_reader.TrailFile], folder: Path) -> Reread:
    """How the scan fetches passed-over files again (a key minted later called in them):
    into ``folder``, a new sub-folder per call; :meth:`Scope.embedded` empties it after
    each batch."""
    by_key = {item.key: item for item in files}

    def reread(sources: list[str]) -> tuple[dict[Path, str], list[Malformed]]:
        folder.mkdir(exist_ok=True)
        into = Path(tempfile.mkdtemp(dir=folder))
        good, bad = trail_reader.fetch(s3, bucket, [by_key[key] for key in sources], into)
        return (
            {path: item.key for path, item in good.items()},
            [Malformed(item.key, error) for item, error in bad],
        )

    return reread


Fetched = tuple[dict[Path, trail_reader.TrailFile], list[tuple[trail_reader.TrailFile, str]]]


def _prefetched(
    s3: Any,
    bucket: str,
    batches: Iterator[list[trail_reader.TrailFile]],
    work: Path,
    gunzip: bool = True,
) -> Iterator[Fetched]:
    """Batches downloaded one ahead: the next batch is fetched while DuckDB scans this one
    (at most two batches on disk; two folders used in turn)."""
    folders = [work / "batch-0", work / "batch-1"]
    for folder in folders:
        folder.mkdir(exist_ok=True)
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending: Future[Fetched] | None = None
        for index, batch in enumerate(batches):
            ahead = pool.submit(trail_reader.fetch, s3, bucket, batch, folders[index % 2], gunzip)
            if pending is not None:
                yield pending.result()
            pending = ahead
        if pending is not None:
            yield pending.result()


def _summary(principal: Principal, totals: dict[str, Any], found: list[Any], level: str) -> str:
    who = principal.describe()
    if not found:
        text = f"{who}: no reads by this principal in the window"
        if level != "high":
            text += " — but see the blind spots: this does not show that nothing was taken"
        return text
    return (
        f"{who}: {totals['objects']} object(s), {totals['bytes_out']} bytes out, "
        f"from {len(totals['source_ips'])} source IP(s), "
        f"{totals['first_access']} to {totals['last_access']} (confidence {level})"
    )
