"""``aws.forensics.scope_exfiltration``: what a suspect read from S3, from the trail's files.

After containment the question is what was taken: which objects and versions, how many
bytes, from where, between when and when, and how sure we are. This action reads the
CloudTrail files of a window from the trail's bucket (or asks Athena), finds the S3 data
events and theft-relevant management events of the suspect — and of every credential the
suspect minted (AssumeRole, GetSessionToken, GetFederationToken, CreateAccessKey) — and
rolls them up per object, per model (a bucket prefix) and in total. Where configured it
reads the S3 server access logs too (:mod:`clampdown_aws.forensics.access_logs`). It says
what it could not see (:mod:`clampdown_aws.forensics.coverage`) and how that bounds the
answer.

The outputs stay small (the first ``max_objects`` objects, most bytes first); the full
result is a JSON document written to the evidence bucket (hashed in the run's manifest,
Object Lock) or, without one, to the run's folder, with its SHA-256 in the outputs.
It only reads: no undo, not destructive.
"""

# No __future__ annotations: pydantic then reads each field's type as written instead of
# compiling its text at class creation (a ForwardRef per field; lint imports this module).

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from clampdown.core.actions import ActionContext, ActionInput, ActionOutput
from clampdown.core.diagnostics import ClampdownError
from clampdown_aws.base import Aws, AwsAction, evidence_resources
from clampdown_aws.evidence import S3_WRITE
from clampdown_aws.forensics import coverage, trail_reader
from clampdown_aws.forensics.principal import PRINCIPAL_PATTERN, Principal, parse_principal

ATHENA_ACTIONS = (
    "athena:StartQueryExecution",
    "athena:GetQueryExecution",
    "athena:GetQueryResults",
    "athena:StopQueryExecution",
    "glue:GetDatabase",
    "glue:GetTable",
    "glue:GetPartitions",
    "s3:GetBucketLocation",
)
TRAIL_READ = ("s3:ListBucket", "s3:GetObject", "s3:GetBucketLogging")
EMPTY = "no reads by this principal in the window"


class TrailMissing(ClampdownError):
    """No trail to read: none delivers to S3, or the one named does not exist."""


class Model(BaseModel):
    """A model: the bucket prefix its artifacts live under."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    bucket: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    prefix: str = ""


class ObjectRead(BaseModel):
    bucket: str | None
    key: str
    version_id: str | None
    reads: int
    bytes_out: int
    first_access: str
    last_access: str
    source_ips: list[str]
    user_agents: list[str]
    sources: list[Literal["access_log", "cloudtrail"]]


class ModelRollup(BaseModel):
    model: str
    bucket: str
    prefix: str
    objects: int
    bytes_out: int
    first_access: str | None
    last_access: str | None


class Totals(BaseModel):
    objects: int
    bytes_out: int
    events: int
    denied_events: int
    source_ips: list[str]
    user_agents: list[str]
    first_access: str | None
    last_access: str | None
    reads_by_source: dict[str, int]


class ManagementEvent(BaseModel):
    time: str
    event_name: str
    source_ip: str | None
    user_agent: str | None
    detail: str


class BlindSpot(BaseModel):
    kind: str
    detail: str


class ScopeExfiltration(AwsAction):
    """Scope what a suspect principal read from S3 in a window (CloudTrail data events)."""

    name = "aws.forensics.scope_exfiltration"
    summary = "Scope what a principal read from S3 (objects, versions, bytes, IPs) from CloudTrail"
    iam_actions = (
        "cloudtrail:DescribeTrails",
        "cloudtrail:GetTrailStatus",
        "cloudtrail:GetEventSelectors",
        *TRAIL_READ,
        *S3_WRITE,
        *ATHENA_ACTIONS,
    )

    class Input(ActionInput):
        principal: str = Field(
            pattern=PRINCIPAL_PATTERN,  # ASCII, as IAM names are (principal.py says why)
            description="suspect: IAM user name or ARN, role ARN, role session "
            "(role/session or assumed-role ARN), or access key id",
        )
        start: datetime | None = Field(None, description="window start (ISO 8601, UTC)")
        end: datetime | None = Field(None, description="window end (default: now)")
        lookback_hours: int = Field(24, ge=1, le=2160, description="window when start is unset")
        models: list[Model] = Field(default_factory=list, description="models: bucket prefixes")
        trail_name: str | None = Field(None, description="trail (default: the account's)")
        trail_bucket: str | None = Field(
            None, description="the trail's bucket: narrows `clampdown iam-policy` (checked at run)"
        )
        account: str | None = Field(
            None, pattern=r"^\d{12}$", description="account whose logs to read (org trails)"
        )
        regions: list[str] | None = Field(
            None, description="regions to read (default: every region with log files)"
        )
        engine: Literal["duckdb", "athena"] = "duckdb"
        athena_database: str | None = Field(None, pattern=r"^[A-Za-z0-9_]+$")
        athena_table: str | None = Field(None, pattern=r"^[A-Za-z0-9_]+$")
        athena_output: str | None = Field(None, pattern=r"^s3://.+")
        athena_workgroup: str = "primary"
        access_logs: list[str] = Field(
            default_factory=list,
            description="S3 server access log folders to read too (s3://bucket/prefix/)",
        )
        discover_access_logs: bool = Field(
            True, description="also read where GetBucketLogging says each model bucket logs"
        )
        max_objects: int = Field(100, ge=1, le=10000, description="objects listed in outputs")
        bucket: str | None = Field(None, description="evidence bucket for the full result")

        @field_validator("start", "end")
        @classmethod
        def _utc(cls, value: datetime | None) -> datetime | None:
            if value is not None and value.tzinfo is None:
                return value.replace(tzinfo=UTC)
            return value

        @field_validator("access_logs")
        @classmethod
        def _s3_uris(cls, value: list[str]) -> list[str]:
            for uri in value:
                if not re.match(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$", uri):
                    raise ValueError(
                        f"access_logs entry {uri!r} is not s3://bucket/prefix/ "
                        "(the target bucket and prefix of the server access logging)"
                    )
            return value

        @model_validator(mode="after")
        def _check(self) -> "ScopeExfiltration.Input":
            if self.start and self.end and self.start >= self.end:
                raise ValueError("start must be before end")
            if self.engine == "athena" and not (self.athena_database and self.athena_table):
                raise ValueError(
                    "engine athena needs athena_database and athena_table "
                    "(the CloudTrail table of docs/scoping.md) and athena_output"
                )
            return self

    class Output(ActionOutput):
        principal: str
        window_start: str
        window_end: str
        summary: str
        objects: list[ObjectRead]
        objects_total: int
        objects_truncated: bool
        models: list[ModelRollup]
        totals: Totals
        management_events: list[ManagementEvent]
        linked_credentials: list[str]
        blind_spots: list[BlindSpot]
        confidence: Literal["high", "medium", "low"]
        confidence_reason: str
        engine: Literal["duckdb", "athena"]
        trail: str | None
        files_scanned: int
        records_scanned: int
        access_log_locations: list[str]
        access_log_files_scanned: int
        access_log_records_scanned: int
        results_uri: str
        results_sha256: str

    @classmethod
    def iam_resources(cls, with_: Mapping[str, Any]) -> dict[str, list[str]]:
        """Trail files read only under ``AWSLogs/`` (of ``trail_bucket`` when given), the
        result written to the evidence bucket, Athena and Glue only with ``engine: athena``."""
        out = evidence_resources(with_.get("bucket"))
        evidence = out["s3:ListBucket"][0]
        out["s3:GetBucketObjectLockConfiguration"] = [evidence]
        trail = _literal(with_.get("trail_bucket"))
        files = f"arn:aws:s3:::{trail}/*AWSLogs/*" if trail else "arn:aws:s3:::*/AWSLogs/*"
        out["s3:GetObject"] = [*out["s3:GetObject"], files]
        out["s3:ListBucket"] = [evidence, f"arn:aws:s3:::{trail}"] if trail else ["arn:aws:s3:::*"]
        out["cloudtrail:DescribeTrails"] = ["*"]  # AWS: no resource-level permissions
        name = _literal(with_.get("trail_name"))
        if name:
            arn = name if name.startswith("arn:") else f"arn:aws:cloudtrail:*:*:trail/{name}"
            out["cloudtrail:GetTrailStatus"] = out["cloudtrail:GetEventSelectors"] = [arn]
        out.update(_athena_resources(with_))
        out.update(_access_log_resources(with_, out))
        return out

    def apply(self, params: Input, aws: Aws, ctx: ActionContext) -> Output:
        from clampdown_aws.forensics.scope import Scope

        end = params.end or datetime.now(UTC)
        start = params.start or end - timedelta(hours=params.lookback_hours)
        cloudtrail, s3 = aws.client("cloudtrail"), aws.client("s3")
        trail = _find_trail(cloudtrail, params.trail_name, ctx.region)
        principal = parse_principal(
            params.principal, params.account or trail["TrailARN"].split(":")[4]
        )
        if params.trail_bucket and params.trail_bucket != trail["S3BucketName"]:
            raise TrailMissing(
                f"trail {trail['Name']} delivers to bucket {trail['S3BucketName']}, "
                f"not trail_bucket {params.trail_bucket}",
                "fix trail_bucket (it narrows the IAM policy) or trail_name",
            )
        account = params.account or _account_of(principal, trail)
        where = trail_reader.location(s3, trail, account)
        spots = coverage.status_blind_spots(
            cloudtrail.get_trail_status(Name=trail["TrailARN"]), start, end, where.name
        )
        selectors = cloudtrail.get_event_selectors(TrailName=trail["TrailARN"])
        spots += coverage.selector_blind_spots(selectors, params.models, where.name)
        with tempfile.TemporaryDirectory(prefix="clampdown-scope-") as work:
            scope = Scope(Path(work), principal, start, end, params.models, _threads())
            try:
                if params.engine == "athena":
                    runner = _athena_runner(aws, params)
                    assert params.athena_database and params.athena_table
                    scope.athena(runner, params.athena_database, params.athena_table)
                    spots += scope.coverage_only(s3, where, params.regions)
                else:
                    spots += scope.embedded(s3, where, params.regions)
                locations, found = _access_log_locations(s3, params)
                spots += found
                spots += scope.access_logs(s3, locations)
                result = scope.result(spots)
            finally:
                scope.close()  # before its spill folder is removed
        document = {**result, "principal": principal.written, "trail": trail["TrailARN"]}
        uri, digest = _write_result(aws, ctx, params.bucket, document)
        ctx.logger.info(
            "scope of %s: %d objects, %d bytes out, confidence %s -> %s",
            principal.written,
            result["totals"]["objects"],
            result["totals"]["bytes_out"],
            result["confidence"],
            uri,
        )
        listed = result["objects"][: params.max_objects]
        return self.Output(
            **{k: v for k, v in document.items() if k not in ("objects", "trail")},
            objects=listed,
            objects_total=len(result["objects"]),
            objects_truncated=len(result["objects"]) > len(listed),
            trail=trail["TrailARN"],
            results_uri=uri,
            results_sha256=digest,
        )


def _access_log_locations(
    s3: Any, params: ScopeExfiltration.Input
) -> tuple[list[Any], list[dict[str, str]]]:
    """The access log folders to read: the ``access_logs`` input, then (unless turned off)
    where ``GetBucketLogging`` says each model bucket's logs go."""
    from clampdown_aws.forensics import access_logs

    locations = [access_logs.parse_uri(uri) for uri in params.access_logs]
    spots: list[dict[str, str]] = []
    if params.discover_access_logs and params.models:
        found, spots = access_logs.discover(s3, [m.bucket for m in params.models])
        given = {(w.bucket, w.prefix) for w in locations}
        locations += [w for w in found if (w.bucket, w.prefix) not in given]
    return locations, spots


def _literal(value: Any) -> str | None:
    """A ``with`` value usable in an ARN: a plain string, not an expression or a wildcard."""
    if isinstance(value, str) and value and not any(c in value for c in "{*?"):
        return value
    return None


def _access_log_resources(
    with_: Mapping[str, Any], out: dict[str, list[str]]
) -> dict[str, list[str]]:
    """``GetBucketLogging`` on the model buckets named literally (else any bucket), and
    read access to the ``access_logs`` folders written literally. A folder found only by
    ``GetBucketLogging``, or given by an expression, is not granted (reading any object of
    any bucket is too wide for a forensics role): name it literally in ``access_logs``;
    until then the scope reports it as not readable (``access_logs_missing``)."""
    models = with_.get("models")
    buckets = (
        [_literal(m.get("bucket")) if isinstance(m, Mapping) else None for m in models]
        if isinstance(models, list)
        else []
    )
    discover = with_.get("discover_access_logs", True) is not False
    grants: dict[str, list[str]] = {
        "s3:GetBucketLogging": (
            [f"arn:aws:s3:::{b}" for b in dict.fromkeys(buckets) if b]
            if discover and buckets and all(buckets)
            else (["arn:aws:s3:::*"] if discover and models else [])
        )
    }
    uris = with_.get("access_logs")
    if isinstance(uris, list) and uris and all(_literal(u) for u in uris):
        listed = [u.removeprefix("s3://").partition("/") for u in uris]
        objects = [f"arn:aws:s3:::{b}/{p}*" for b, _, p in listed]
        grants["s3:GetObject"] = [*out["s3:GetObject"], *objects]
        if out["s3:ListBucket"] != ["arn:aws:s3:::*"]:
            extra = [f"arn:aws:s3:::{b}" for b, _, _ in listed]
            grants["s3:ListBucket"] = list(dict.fromkeys([*out["s3:ListBucket"], *extra]))
    return grants


def _athena_resources(with_: Mapping[str, Any]) -> dict[str, list[str]]:
    """None of the Athena calls for the embedded engine; the workgroup, the table and the
    output bucket when they are written literally."""
    engine = with_.get("engine", "duckdb")
    if engine == "duckdb":
        return {name: [] for name in ATHENA_ACTIONS}
    out: dict[str, list[str]] = {}
    workgroup = _literal(with_.get("athena_workgroup", "primary"))
    if workgroup:
        for name in ATHENA_ACTIONS:
            if name.startswith("athena:"):
                out[name] = [f"arn:aws:athena:*:*:workgroup/{workgroup}"]
    database, table = _literal(with_.get("athena_database")), _literal(with_.get("athena_table"))
    if database and table:
        glue = [
            "arn:aws:glue:*:*:catalog",
            f"arn:aws:glue:*:*:database/{database}",
            f"arn:aws:glue:*:*:table/{database}/{table}",
        ]
        out.update({name: glue for name in ATHENA_ACTIONS if name.startswith("glue:")})
    output = _literal(with_.get("athena_output"))
    if output and output.startswith("s3://"):
        out["s3:GetBucketLocation"] = [f"arn:aws:s3:::{output[5:].split('/', 1)[0]}"]
    return out


def _threads() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def _account_of(principal: Principal, trail: dict[str, Any]) -> str:
    """The account whose logs hold the suspect's calls: its ARN's, else the trail's."""
    if principal.value.startswith("arn:"):
        return principal.value.split(":")[4]
    return str(trail["TrailARN"].split(":")[4])


def _find_trail(cloudtrail: Any, name: str | None, region: str | None) -> dict[str, Any]:
    from clampdown_aws.evidence_cloudtrail import TrailNotFound
    from clampdown_aws.evidence_cloudtrail import _find_trail as find

    try:
        trail = find(cloudtrail, name, region)
    except TrailNotFound as exc:
        raise TrailMissing(str(exc.args[0]), "check trail_name, or leave it out") from None
    if trail is None:
        raise TrailMissing(
            f"no CloudTrail trail in {region or 'the default region'} delivers to S3: "
            "there are no trail files to scope from",
            "create a trail with S3 data events on the model buckets (docs/scoping.md); "
            "for past events only LookupEvents (management events, 90 days) is left",
        )
    return trail


def _athena_runner(aws: Aws, params: ScopeExfiltration.Input) -> Any:
    from clampdown_aws.forensics.athena import AthenaRunner

    return AthenaRunner(
        aws.client("athena"),
        database=params.athena_database or "",
        output=params.athena_output or "",
        workgroup=params.athena_workgroup,
    )


def _write_result(
    aws: Aws, ctx: ActionContext, bucket: str | None, document: dict[str, Any]
) -> tuple[str, str]:
    """The full result as JSON: evidence bucket when one is set, else the run's folder."""
    from clampdown.core.settings import settings

    body = json.dumps(document, indent=1, sort_keys=True).encode()
    name = f"{ctx.step_id}/exfiltration-scope.json"
    if bucket or settings().evidence_bucket:
        from clampdown_aws.evidence import checked_store

        store = checked_store(aws, ctx, bucket)
        obj = store.put(name, [body], "application/json")
        store.write_manifest()
        return f"s3://{store.bucket}/{obj.key}", obj.sha256
    path = ctx.run_dir / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)
    return path.as_uri(), hashlib.sha256(body).hexdigest()
