"""The distributed engine: the same scope as Athena queries over the CloudTrail table.

For trails too big for one machine (months, an organization): Athena scans the table AWS
documents for CloudTrail (``CREATE EXTERNAL TABLE … ROW FORMAT SERDE
'org.apache.hive.hcatalog.data.JsonSerDe'`` — or the CloudTrail SerDe — with partition
projection on ``timestamp``; docs/scoping.md has the statement). Only the suspect's
events come back (the narrow rows of :func:`~clampdown_aws.forensics.sql.hits_sql`), and
they are rolled up locally by the same code as the embedded engine's.

The credentials the suspect minted are found first, a query per round until no new key
appears (usually one or two rounds), then one query returns the events.

:class:`AthenaRunner` is the plumbing: StartQueryExecution, GetQueryExecution polled with
back-off until a final state, GetQueryResults paged. It takes any callable with the same
shape in tests (tests/unit/test_scoping_sql.py runs the Athena SQL in DuckDB).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from clampdown.core.diagnostics import ClampdownError
from clampdown_aws.forensics.principal import Principal, identity_predicate
from clampdown_aws.forensics.sql import NARROW_COLUMNS, athena_dialect, hits_sql, minted_sql

MAX_CLOSURE_ROUNDS = 10
POLL_FIRST = 0.2  # seconds; doubles up to POLL_MAX
POLL_MAX = 5.0
QUERY_TIMEOUT = 30 * 60.0

Rows = list[dict[str, str | None]]
QueryFn = Callable[[str], Rows]


class AthenaQueryFailed(ClampdownError):
    """An Athena query ended FAILED or CANCELLED, or did not end in time."""


@dataclass
class AthenaRunner:
    """Runs one query at a time and returns its rows as dicts of strings."""

    athena: Any
    database: str
    output: str
    workgroup: str
    sleep: Callable[[float], None] = time.sleep
    timeout: float = QUERY_TIMEOUT
    executions: list[str] = field(default_factory=list)

    def __call__(self, sql: str) -> Rows:
        args: dict[str, Any] = {
            "QueryString": sql,
            "QueryExecutionContext": {"Database": self.database},
            "WorkGroup": self.workgroup,
        }
        if self.output:
            args["ResultConfiguration"] = {"OutputLocation": self.output}
        execution = self.athena.start_query_execution(**args)["QueryExecutionId"]
        self.executions.append(execution)
        self._wait(execution)
        return self._rows(execution)

    def _wait(self, execution: str) -> None:
        delay, waited = POLL_FIRST, 0.0
        while True:
            status = self.athena.get_query_execution(QueryExecutionId=execution)
            state = status["QueryExecution"]["Status"]
            if state["State"] == "SUCCEEDED":
                return
            if state["State"] in ("FAILED", "CANCELLED"):
                reason = state.get("StateChangeReason") or "no reason given"
                raise AthenaQueryFailed(
                    f"Athena query {execution} {state['State']}: {reason}",
                    "check athena_database/athena_table (the CloudTrail table of "
                    "docs/scoping.md), the workgroup and athena_output",
                )
            if waited >= self.timeout:
                self.athena.stop_query_execution(QueryExecutionId=execution)
                raise AthenaQueryFailed(
                    f"Athena query {execution} still {state['State']} after "
                    f"{self.timeout:.0f} s: stopped",
                    "narrow the window, or use a table with partition projection",
                )
            self.sleep(delay)
            waited += delay
            delay = min(delay * 2, POLL_MAX)

    def _rows(self, execution: str) -> Rows:
        rows: Rows = []
        header: list[str] | None = None
        pages = self.athena.get_paginator("get_query_results")
        for page in pages.paginate(QueryExecutionId=execution):
            for row in page["ResultSet"].get("Rows", []):
                values = [cell.get("VarCharValue") for cell in row.get("Data", [])]
                if header is None:
                    header = [str(v) for v in values]
                    continue
                rows.append(dict(zip(header, values, strict=False)))
        return rows


def athena_scope(
    query: QueryFn,
    database: str,
    table: str,
    principal: Principal,
    start: datetime,
    end: datetime,
) -> tuple[Rows, frozenset[str]]:
    """The suspect's events (narrow rows) and the keys it minted, via ``query``."""
    dialect = athena_dialect(database, table)
    keys: frozenset[str] = frozenset()
    for _ in range(MAX_CLOSURE_ROUNDS):
        sql = minted_sql(identity_predicate(principal, keys), dialect=dialect, window=(start, end))
        found = {row["minted_key"] for row in query(sql) if row.get("minted_key")}
        if found <= keys:
            break
        keys = keys | frozenset(found)
    sql = hits_sql(identity_predicate(principal, keys), dialect=dialect, window=(start, end))
    rows = query(sql)
    missing = [c for c in NARROW_COLUMNS if rows and c not in rows[0]]
    if missing:
        raise AthenaQueryFailed(
            f"Athena returned rows without the columns {', '.join(missing)}",
            "the result does not come from clampdown's query; check the workgroup's settings",
        )
    return rows, keys
