"""The scope as SQL: one definition, rendered for DuckDB (embedded) or Athena (distributed).

Both engines read a relation shaped like the CloudTrail table AWS documents for Athena
(lower-case columns; ``useridentity`` a struct; ``requestparameters``,
``responseelements`` and ``additionaleventdata`` JSON strings; ``eventtime`` an ISO 8601
string). The embedded engine builds that shape as a view over the trail files it has
just downloaded (:mod:`clampdown_aws.forensics.embedded`); Athena has it as a table.

Three statements, the same text in both engines but for what a :class:`Dialect` fixes:
the table name, how a field of ``requestparameters`` (and the other two JSON columns) is
read, and Athena's partition filter:

* :func:`narrow_sql` — the window's S3 data events and theft-relevant management events,
  reduced to the columns the scope needs (``events``);
* :func:`minted_sql` — credentials the suspect minted (AssumeRole, GetSessionToken,
  GetFederationToken, CreateAccessKey): their events count as the suspect's;
* :func:`hits_sql` — the suspect's events.

tests/unit/test_scoping_engines.py runs the Athena rendering in DuckDB (which gets a
``json_extract_scalar`` macro) over a table of Athena's shape and checks it finds what the
embedded engine finds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from clampdown_aws.forensics.principal import literal

# Object-level reads and listings (S3 data events) that can move model bytes out.
DATA_EVENTS = (
    "GetObject",
    "HeadObject",
    "GetObjectAttributes",
    "GetObjectTorrent",
    "ListObjects",
    "ListObjectsV2",
    "ListObjectVersions",
    "CopyObject",
    "UploadPartCopy",
    "SelectObjectContent",
    "RestoreObject",
)
# Data events that name one object (rolled up in ``objects``).
OBJECT_EVENTS = (
    "GetObject",
    "HeadObject",
    "GetObjectAttributes",
    "GetObjectTorrent",
    "CopyObject",
    "UploadPartCopy",
    "SelectObjectContent",
    "RestoreObject",
)
# Management events that matter for theft: bucket policy and replication changes,
# batch jobs, and credentials minted (these also extend the suspect).
S3_MANAGEMENT = (
    "GetBucketPolicy",
    "PutBucketPolicy",
    "DeleteBucketPolicy",
    "PutBucketAcl",
    "PutBucketReplication",
    "CreateJob",
)
MINTING = ("AssumeRole", "GetSessionToken", "GetFederationToken", "CreateAccessKey")
IDENTITY_SOURCES = ("sts.amazonaws.com", "iam.amazonaws.com")

NARROW_COLUMNS = (
    "eventid",
    "requestid",
    "eventtime",
    "eventsource",
    "eventname",
    "awsregion",
    "source_ip",
    "user_agent",
    "error_code",
    "identity_type",
    "identity_arn",
    "access_key_id",
    "user_name",
    "issuer_arn",
    "bucket",
    "object_key",
    "version_id",
    "copy_source",
    "bytes_out",
    "minted_key",
    "minted_arn",
    "role_arn",
    "target_user",
)


@dataclass(frozen=True)
class Dialect:
    """What differs between the engines' SQL: how the table is named, how a field inside
    ``requestparameters``/``responseelements``/``additionaleventdata`` is read, and whether
    the table has the ``timestamp`` partition.

    Athena's table holds those three as JSON strings: ``json_extract_scalar(column,
    '$.a.b')`` (``$["x-amz-copy-source"]`` for a key with hyphens). The embedded engine's
    view holds them as structs with only the fields the scope reads, parsed once with the
    record (no JSON text written back and parsed again): ``column."a"."b"``.
    """

    name: str
    source: str
    structs: bool
    partitioned: bool

    def field(self, column: str, *path: str) -> str:
        if self.structs:
            return column + "".join(f'."{key}"' for key in path)
        steps = "".join(f'["{key}"]' if "-" in key else f".{key}" for key in path)
        return f"json_extract_scalar({column}, '${steps}')"


def duckdb_dialect(source: str = "cloudtrail") -> Dialect:
    return Dialect("duckdb", source, structs=True, partitioned=False)


def athena_dialect(database: str, table: str) -> Dialect:
    return Dialect("athena", f'"{database}"."{table}"', structs=False, partitioned=True)


def iso(moment: datetime) -> str:
    """CloudTrail's ``eventTime`` form, so comparisons on the string are comparisons in time."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _names(names: tuple[str, ...]) -> str:
    return ", ".join(literal(name) for name in names)


def _partition_filter(start: datetime, end: datetime) -> str:
    """Athena's ``timestamp`` partition (``yyyy/MM/dd``, partition projection): the window's
    days, plus the next one (a file delivered after midnight holds the last events)."""
    first = start.strftime("%Y/%m/%d")
    last = (end + timedelta(days=1)).strftime("%Y/%m/%d")
    return f'"timestamp" BETWEEN {literal(first)} AND {literal(last)} AND '


def narrow_sql(dialect: Dialect, start: datetime, end: datetime) -> str:
    """The window's relevant events in the narrow shape every later step reads."""
    partition = _partition_filter(start, end) if dialect.partitioned else ""
    request, response = "requestparameters", "responseelements"
    field = dialect.field
    return f"""SELECT
  eventid,
  requestid,
  eventtime,
  eventsource,
  eventname,
  awsregion,
  sourceipaddress AS source_ip,
  useragent AS user_agent,
  errorcode AS error_code,
  useridentity.type AS identity_type,
  useridentity.arn AS identity_arn,
  useridentity.accesskeyid AS access_key_id,
  useridentity.username AS user_name,
  useridentity.sessioncontext.sessionissuer.arn AS issuer_arn,
  {field(request, "bucketName")} AS bucket,
  {field(request, "key")} AS object_key,
  {field(request, "versionId")} AS version_id,
  {field(request, "x-amz-copy-source")} AS copy_source,
  TRY_CAST({field("additionaleventdata", "bytesTransferredOut")} AS DOUBLE) AS bytes_out,
  coalesce(
    {field(response, "credentials", "accessKeyId")},
    {field(response, "accessKey", "accessKeyId")}
  ) AS minted_key,
  {field(response, "assumedRoleUser", "arn")} AS minted_arn,
  {field(request, "roleArn")} AS role_arn,
  {field(request, "userName")} AS target_user
FROM {dialect.source}
WHERE {partition}eventtime >= {literal(iso(start))}
  AND eventtime < {literal(iso(end))}
  AND (
    (eventsource = 's3.amazonaws.com' AND eventname IN ({_names(DATA_EVENTS + S3_MANAGEMENT)}))
    OR (eventsource IN ({_names(IDENTITY_SOURCES)}) AND eventname IN ({_names(MINTING)}))
  )"""


def _over(relation: str, dialect: Dialect | None, start: datetime, end: datetime) -> str:
    """Athena has no table of narrow rows: the narrow query becomes a CTE."""
    if dialect is None:
        return ""
    return f"WITH {relation} AS (\n{narrow_sql(dialect, start, end)}\n)\n"


def minted_sql(
    identity: str,
    relation: str = "events",
    dialect: Dialect | None = None,
    window: tuple[datetime, datetime] | None = None,
) -> str:
    """Access keys of credentials the suspect minted (successful calls only)."""
    prefix = _over(relation, dialect, *window) if dialect and window else ""
    return f"""{prefix}SELECT DISTINCT minted_key
FROM {relation}
WHERE eventname IN ({_names(MINTING)})
  AND error_code IS NULL
  AND minted_key IS NOT NULL
  AND {identity}"""


def hits_sql(
    identity: str,
    relation: str = "events",
    dialect: Dialect | None = None,
    window: tuple[datetime, datetime] | None = None,
) -> str:
    """The suspect's events in the narrow shape."""
    prefix = _over(relation, dialect, *window) if dialect and window else ""
    return f"""{prefix}SELECT {", ".join(NARROW_COLUMNS)}
FROM {relation}
WHERE {identity}"""
