"""From the suspect's events (``hits``) to what was taken: objects, models, totals.

Both engines end here: the embedded engine fills ``hits`` as it scans, the Athena engine
loads the rows its query returned (:func:`load_hits`). The roll-up is SQL in DuckDB.

* An object is (bucket, key, version id) of a successful object-level data event;
  ``CopyObject``/``UploadPartCopy`` count against their *source* (``x-amz-copy-source``).
  ``version_id`` is the version asked for; CloudTrail does not record which version a
  ``GetObject`` without one returned (it was the current one at that time).
* ``bytes_out`` is the sum of ``additionalEventData.bytesTransferredOut``.
* Failed calls (``errorCode`` set: AccessDenied, NoSuchKey, …) are not reads; they are
  counted in ``totals.denied_events``.
* An event delivered twice (same ``eventID``) counts once.
* S3 server access log records of the suspect (``access_hits``,
  :mod:`clampdown_aws.forensics.access_logs`) are reads too: a request in both sources (the
  same S3 request ID: CloudTrail's ``requestID``, the access log's Request ID) counts once,
  with CloudTrail's figures; each object says where it was seen (``sources``).
"""

from __future__ import annotations

from typing import Any

from clampdown_aws.forensics.embedded import NARROW_TYPES
from clampdown_aws.forensics.principal import literal
from clampdown_aws.forensics.sql import DATA_EVENTS, MINTING, NARROW_COLUMNS, OBJECT_EVENTS
from clampdown_aws.forensics.sql import S3_MANAGEMENT as S3_MGMT

MAX_LISTED = 100  # source IPs / user agents listed per object and in the totals
MAX_MANAGEMENT = 200

_COPY = "ltrim(url_decode(split_part(copy_source, '?', 1)), '/')"
_IS_COPY = "eventname IN ('CopyObject', 'UploadPartCopy') AND copy_source IS NOT NULL"
_OBJECT_NAMES = ", ".join(literal(n) for n in OBJECT_EVENTS)
_READS = f"""WITH trail AS (
  SELECT
    CASE WHEN {_IS_COPY} THEN split_part({_COPY}, '/', 1) ELSE bucket END AS bucket,
    CASE WHEN {_IS_COPY} THEN substr({_COPY}, strpos({_COPY}, '/') + 1) ELSE object_key END
      AS key,
    CASE WHEN {_IS_COPY} THEN nullif(split_part(copy_source, 'versionId=', 2), '')
      ELSE version_id END AS version_id,
    eventtime, bytes_out, source_ip, user_agent, requestid
  FROM hits
  WHERE eventsource = 's3.amazonaws.com'
    AND eventname IN ({_OBJECT_NAMES})
    AND error_code IS NULL
),
logged AS (
  SELECT bucket, object_key AS key, version_id, eventtime, bytes_out, source_ip, user_agent,
    request_id AS requestid
  FROM access_hits
  WHERE eventname IN ({_OBJECT_NAMES}) AND error_code IS NULL
),
reads AS (
  SELECT trail.*,
    CASE WHEN requestid IN (SELECT requestid FROM logged WHERE requestid IS NOT NULL)
      THEN 'both' ELSE 'cloudtrail' END AS seen_in
  FROM trail
  UNION ALL
  SELECT logged.*, 'access_log' AS seen_in
  FROM logged
  WHERE requestid IS NULL
    OR requestid NOT IN (SELECT requestid FROM trail WHERE requestid IS NOT NULL)
)"""
_OBJECTS = f"""CREATE OR REPLACE TEMP TABLE taken AS
{_READS}
SELECT
  bucket, key, version_id,
  count(*) AS reads,
  CAST(coalesce(sum(bytes_out), 0) AS BIGINT) AS bytes_out,
  min(eventtime) AS first_access,
  max(eventtime) AS last_access,
  list(DISTINCT source_ip ORDER BY source_ip) FILTER (WHERE source_ip IS NOT NULL)
    AS source_ips,
  list(DISTINCT user_agent ORDER BY user_agent) FILTER (WHERE user_agent IS NOT NULL)
    AS user_agents,
  list_sort(list_distinct(flatten(list(CASE seen_in WHEN 'both'
    THEN ['access_log', 'cloudtrail'] ELSE [seen_in] END)))) AS sources,
  count(*) FILTER (WHERE seen_in = 'cloudtrail') AS only_trail,
  count(*) FILTER (WHERE seen_in = 'access_log') AS only_logged,
  count(*) FILTER (WHERE seen_in = 'both') AS in_both
FROM reads
WHERE key IS NOT NULL AND key <> ''
GROUP BY bucket, key, version_id"""

# Every event of the suspect: CloudTrail's, and access log requests CloudTrail did not have.
_EVENTS = """(
  SELECT eventtime, eventsource, eventname, error_code, source_ip, user_agent FROM hits
  UNION ALL
  SELECT eventtime, 's3.amazonaws.com', eventname, error_code, source_ip, user_agent
  FROM access_hits
  WHERE request_id IS NULL OR request_id NOT IN (
    SELECT requestid FROM hits WHERE requestid IS NOT NULL)
)"""

_DATA = f"""eventsource = 's3.amazonaws.com'
  AND eventname IN ({", ".join(literal(n) for n in DATA_EVENTS)})"""


def load_hits(con: Any, rows: list[dict[str, str | None]]) -> None:
    """Athena's rows (strings) into ``hits`` with the embedded engine's types.

    One statement for all rows: each column goes in as one typed list and DuckDB unnests
    them side by side (row ``i`` of every list is row ``i`` of the table). A row per
    statement (``executemany``) cost ~0.8 ms a row: seconds for a real result of
    thousands of rows, on the path to the scope people wait for.
    """
    from clampdown_aws.forensics.embedded import narrow_table

    narrow_table(con, "hits")
    if not rows:
        return
    columns = [
        [_typed(row.get(column), NARROW_TYPES[column]) for row in rows] for column in NARROW_COLUMNS
    ]
    unnested = ", ".join(
        f"unnest(${index}::{NARROW_TYPES[column]}[])"
        for index, column in enumerate(NARROW_COLUMNS, start=1)
    )
    con.execute(f"INSERT INTO hits SELECT {unnested}", columns)


def _typed(value: str | None, kind: str) -> Any:
    if value is None or value == "":
        return None
    if kind == "DOUBLE":
        try:
            return float(value)
        except ValueError:
            return None
    return value


def _object(row: tuple[Any, ...]) -> dict[str, Any]:
    bucket, key, version, reads, size, first, last, ips, agents, sources = row[:10]
    return {
        "bucket": bucket,
        "key": key,
        "version_id": version,
        "reads": int(reads),
        "bytes_out": int(size),
        "first_access": first,
        "last_access": last,
        "source_ips": list(ips or [])[:MAX_LISTED],
        "user_agents": list(agents or [])[:MAX_LISTED],
        "sources": list(sources or []),
    }


def objects(con: Any, limit: int | None) -> list[dict[str, Any]]:
    """Objects taken, most bytes first (``limit``: the first ones only)."""
    sql = (
        "SELECT * EXCLUDE (only_trail, only_logged, in_both) FROM taken "
        "ORDER BY bytes_out DESC, bucket, key, version_id NULLS FIRST"
    )
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    return [_object(row) for row in con.execute(sql).fetchall()]


def roll_up(con: Any, models: list[Any]) -> dict[str, Any]:
    """``taken`` from ``hits``; the totals, the per-model roll-up and management events.

    CloudTrail may deliver an event more than once (AWS documents duplicates; ``eventID``
    identifies them): each ``eventid`` counts once, whichever engine found it.
    """
    from clampdown_aws.forensics.access_logs import access_table

    access_table(con)
    con.execute("CREATE OR REPLACE TABLE hits AS SELECT DISTINCT ON (eventid) * FROM hits")
    con.execute(
        "CREATE OR REPLACE TABLE access_hits AS "
        "SELECT DISTINCT ON (coalesce(request_id, log_file || eventtime)) * FROM access_hits"
    )
    con.execute(_OBJECTS)
    total_objects, total_bytes, only_trail, only_logged, in_both = con.execute(
        "SELECT count(*), CAST(coalesce(sum(bytes_out), 0) AS BIGINT), "
        "coalesce(sum(only_trail), 0), coalesce(sum(only_logged), 0), "
        "coalesce(sum(in_both), 0) FROM taken"
    ).fetchone()
    events, denied, first, last = con.execute(
        f"""SELECT count(*),
             count(*) FILTER (WHERE error_code IS NOT NULL),
             min(eventtime) FILTER (WHERE {_DATA}),
             max(eventtime) FILTER (WHERE {_DATA})
           FROM {_EVENTS}"""
    ).fetchone()
    ips = _distinct(con, "source_ip")
    agents = _distinct(con, "user_agent")
    per_model = []
    for model in models:
        count, size, m_first, m_last = con.execute(
            "SELECT count(*), CAST(coalesce(sum(bytes_out), 0) AS BIGINT), "
            "min(first_access), max(last_access) FROM taken "
            "WHERE bucket = ? AND starts_with(key, ?)",
            [model.bucket, model.prefix],
        ).fetchone()
        per_model.append(
            {
                "model": model.name,
                "bucket": model.bucket,
                "prefix": model.prefix,
                "objects": int(count),
                "bytes_out": int(size),
                "first_access": m_first,
                "last_access": m_last,
            }
        )
    totals = {
        "objects": int(total_objects),
        "bytes_out": int(total_bytes),
        "events": int(events),
        "denied_events": int(denied),
        "source_ips": ips,
        "user_agents": agents,
        "first_access": first,
        "last_access": last,
        "reads_by_source": {
            "cloudtrail_only": int(only_trail),
            "access_log_only": int(only_logged),
            "both": int(in_both),
        },
    }
    return {"totals": totals, "models": per_model, "management_events": management(con)}


def _distinct(con: Any, column: str) -> list[str]:
    rows = con.execute(
        f"SELECT DISTINCT {column} FROM {_EVENTS} WHERE {column} IS NOT NULL "
        f"ORDER BY {column} LIMIT {MAX_LISTED}"
    ).fetchall()
    return [row[0] for row in rows]


def management(con: Any) -> list[dict[str, Any]]:
    """The suspect's theft-relevant management events, oldest first."""
    names = ", ".join(literal(n) for n in S3_MGMT + MINTING)
    rows = con.execute(
        "SELECT eventtime, eventname, source_ip, user_agent, error_code, bucket, role_arn, "
        f"minted_key, minted_arn, target_user FROM hits WHERE eventname IN ({names}) "
        f"ORDER BY eventtime, eventid LIMIT {MAX_MANAGEMENT}"
    ).fetchall()
    return [
        {
            "time": time,
            "event_name": name,
            "source_ip": ip,
            "user_agent": agent,
            "detail": _detail(name, error, bucket, role, key, arn, user),
        }
        for time, name, ip, agent, error, bucket, role, key, arn, user in rows
    ]


def _detail(
    name: str,
    error: str | None,
    bucket: str | None,
    role: str | None,
    key: str | None,
    arn: str | None,
    user: str | None,
) -> str:
    if name == "AssumeRole":
        text = f"assumed {role or 'a role'}" + (f" as {arn}" if arn else "")
        text += f" (temporary key {key}: its calls are counted as the suspect's)" if key else ""
    elif name in ("GetSessionToken", "GetFederationToken"):
        text = f"temporary credentials {key or '(key not recorded)'}"
    elif name == "CreateAccessKey":
        text = f"new access key {key or '(not recorded)'} for {user or 'itself'}"
    else:
        text = f"bucket {bucket or '(not recorded)'}"
    return f"{text} — failed: {error}" if error else text
