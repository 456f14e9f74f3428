"""``aws.forensics.scope_inference_extraction``: how much of a model a caller could have sampled.

Model extraction through an inference API leaves no S3 read behind: the thief asks the
model many questions. What bounds the damage is how many answers the caller got, how
much faster than usual it asked, and what share of the endpoint's traffic was theirs.
This action reads the API Gateway access logs of the window and of a baseline window
before it (CloudWatch Logs, ``FilterLogEvents`` pages) and, when an endpoint is named,
its ``AWS/SageMaker`` ``Invocations`` metric, and reports per API key and caller:
requests and rate in the window, the same key's baseline rate, the multiple of it, the
requests above it, bytes returned, first and last request, and the share of the
endpoint's invocations.

The logs are the JSON access-log format AWS documents, with ``$context`` variables under
any of the names people give them (``apiKeyId``, ``ip``/``sourceIp``, ``caller``,
``userArn``, ``requestTimeEpoch``/``requestTime``, ``httpMethod``, ``resourcePath``,
``status``, ``responseLength``). ``$context.identity.apiKey`` is the key's *value*, a
credential: it is never output, only a SHA-256 fingerprint of it when no key id is logged.

Aggregation is plain Python, one dict entry per (key, caller): the events arrive through
paged API calls, which bound the volume long before a columnar engine would help
(docs/scoping.md). It only reads: no undo, not destructive.
"""

# No __future__ annotations: pydantic then reads each field's type as written instead of
# compiling its text at class creation (a ForwardRef per field; lint imports this module).

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from clampdown.core.actions import ActionContext, ActionInput, ActionOutput
from clampdown_aws.base import Aws, AwsAction
from clampdown_aws.forensics.exfiltration import BlindSpot

LOW = (
    "access_logging_off",
    "access_logs_elsewhere",
    "log_group_missing",
    "window_not_covered",
    "no_access_logs",
)
NO_KEY = "(no API key)"
MAX_MALFORMED_SAMPLES = 5
LOG_GROUP_PATTERN = r"^[A-Za-z0-9_./#-]{1,512}$"


class CallerUse(BaseModel):
    """One API key and caller: what it asked in the window, against its own baseline."""

    api_key_id: str
    caller: str
    requests: int
    rate_per_hour: float
    baseline_requests: int
    baseline_rate_per_hour: float
    multiple_of_baseline: float | None
    requests_over_baseline: int
    share_of_invocations: float | None
    bytes_out: int
    errors: int
    first_request: str | None
    last_request: str | None
    source_ips: list[str]
    resource_paths: list[str]


class Totals(BaseModel):
    requests: int
    callers: int
    bytes_out: int
    endpoint_invocations: int | None
    first_access: str | None
    last_access: str | None


class ScopeInferenceExtraction(AwsAction):
    """Scope extraction through an inference API: per API key and caller, from access logs."""

    name = "aws.forensics.scope_inference_extraction"
    summary = "Scope inference-API use per API key and caller against its baseline (access logs)"
    iam_actions = (
        "logs:FilterLogEvents",
        "logs:DescribeLogGroups",
        "apigateway:GET",
        "cloudwatch:GetMetricData",
        "cloudwatch:ListMetrics",
    )

    class Input(ActionInput):
        log_group: str | None = Field(
            None,
            pattern=LOG_GROUP_PATTERN,
            description="the API's access-log group (default: the stage's destination)",
        )
        rest_api_id: str | None = Field(None, pattern=r"^[a-z0-9]{1,32}$")
        # API Gateway stage names: ASCII letters, digits, _ and - (the Unicode \w took
        # pydantic-core's Rust regex ~50 ms to compile)
        stage: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]{1,128}$")
        api_key_id: str | None = Field(
            None, pattern=r"^[A-Za-z0-9]{1,64}$", description="the suspect key (its id)"
        )
        endpoint_name: str | None = Field(
            None, pattern=r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$", description="SageMaker endpoint"
        )
        start: datetime | None = Field(None, description="window start (ISO 8601, UTC)")
        end: datetime | None = Field(None, description="window end (default: now)")
        lookback_hours: int = Field(24, ge=1, le=720, description="window when start is unset")
        baseline_hours: int = Field(
            168, ge=1, le=2160, description="the baseline: this long before the window"
        )
        max_callers: int = Field(50, ge=1, le=1000, description="callers listed in outputs")

        @field_validator("start", "end")
        @classmethod
        def _utc(cls, value: datetime | None) -> datetime | None:
            if value is not None and value.tzinfo is None:
                return value.replace(tzinfo=UTC)
            return value

        @model_validator(mode="after")
        def _check(self) -> "ScopeInferenceExtraction.Input":
            if self.start and self.end and self.start >= self.end:
                raise ValueError("start must be before end")
            if not self.log_group and not (self.rest_api_id and self.stage):
                raise ValueError("give log_group, or rest_api_id and stage (its access logs)")
            if bool(self.rest_api_id) != bool(self.stage):
                raise ValueError("rest_api_id and stage go together")
            return self

    class Output(ActionOutput):
        principal: str
        window_start: str
        window_end: str
        baseline_start: str
        summary: str
        suspect: CallerUse | None
        callers: list[CallerUse]
        callers_total: int
        callers_truncated: bool
        totals: Totals
        blind_spots: list[BlindSpot]
        confidence: Literal["high", "medium", "low"]
        confidence_reason: str
        log_group: str | None
        log_lines: int
        malformed_lines: int

    @classmethod
    def iam_resources(cls, with_: Mapping[str, Any]) -> dict[str, list[str]]:
        """Log events of the named group (else of log groups only), the named stage (none
        without ``rest_api_id``); CloudWatch metric reads have no resource-level permissions.
        IAM wildcards from ``clampdown iam-policy``'s reading of input patterns are kept."""
        group = _arn_part(with_.get("log_group")) or "*"
        out: dict[str, list[str]] = {
            "cloudwatch:GetMetricData": ["*"],
            "cloudwatch:ListMetrics": ["*"],
            "logs:DescribeLogGroups": ["arn:aws:logs:*:*:log-group:*"],
            "logs:FilterLogEvents": [f"arn:aws:logs:*:*:log-group:{group}:*"],
        }
        if with_.get("rest_api_id") is None:
            out["apigateway:GET"] = []
        else:
            api = _arn_part(with_.get("rest_api_id")) or "*"
            stage = _arn_part(with_.get("stage")) or "*"
            out["apigateway:GET"] = [f"arn:aws:apigateway:*::/restapis/{api}/stages/{stage}"]
        return out

    def apply(self, params: Input, aws: Aws, ctx: ActionContext) -> Output:
        end = params.end or datetime.now(UTC)
        start = params.start or end - timedelta(hours=params.lookback_hours)
        base = start - timedelta(hours=params.baseline_hours)
        spots: list[dict[str, str]] = []
        group = params.log_group
        if params.rest_api_id and params.stage:
            group, stage_spots = _stage_log_group(
                aws.client("apigateway"), params.rest_api_id, params.stage, group
            )
            spots += stage_spots
        usage = Usage(start, end, base)
        if group:
            spots += _read_logs(aws.client("logs"), group, usage)
        invocations = None
        if params.endpoint_name:
            invocations, metric_spots = _invocations(
                aws.client("cloudwatch"), params.endpoint_name, start, end
            )
            spots += metric_spots
        if usage.malformed:
            spots.append(_malformed_spot(usage))
        return _output(self.Output, params, usage, spots, group, invocations, ctx)


# --- reading -----------------------------------------------------------------------------


@dataclass
class Tally:
    requests: int = 0
    baseline: int = 0
    bytes_out: int = 0
    errors: int = 0
    first: float | None = None
    last: float | None = None
    ips: set[str] = field(default_factory=set)
    paths: dict[str, int] = field(default_factory=dict)


@dataclass
class Usage:
    """The tallies of one scope: per (key, caller), window and baseline kept apart."""

    start: datetime
    end: datetime
    base: datetime
    tallies: dict[tuple[str, str], Tally] = field(default_factory=dict)
    lines: int = 0
    malformed: int = 0
    malformed_samples: list[str] = field(default_factory=list)
    first_event: float | None = None

    def add(self, line: Mapping[str, Any], logged_ms: int) -> None:
        when = _request_time(line, logged_ms)
        self.first_event = when if self.first_event is None else min(self.first_event, when)
        tally = self.tallies.setdefault((_key_id(line), _caller(line)), Tally())
        if when < self.start.timestamp():
            tally.baseline += 1
            return
        tally.requests += 1
        tally.bytes_out += _int(line.get("responseLength"))
        tally.errors += _int(line.get("status")) >= 400
        tally.first = when if tally.first is None else min(tally.first, when)
        tally.last = when if tally.last is None else max(tally.last, when)
        ip = line.get("ip") or line.get("sourceIp")
        if ip:
            tally.ips.add(str(ip))
        path = line.get("resourcePath")
        if path:
            tally.paths[str(path)] = tally.paths.get(str(path), 0) + 1


def _read_logs(logs: Any, group: str, usage: Usage) -> list[dict[str, str]]:
    """Page through the group's events from the baseline's start to the window's end."""
    pages = logs.get_paginator("describe_log_groups").paginate(logGroupNamePrefix=group)
    described = (g for page in pages for g in page.get("logGroups", []))
    found = next((g for g in described if g.get("logGroupName") == group), None)
    if found is None:
        return [_spot("log_group_missing", f"log group {group} does not exist: no access logs")]
    spots = _coverage(found, usage)
    for event in _events(logs, group, usage.base, usage.end):
        usage.lines += 1
        line = _parse(event.get("message", ""))
        if line is None:
            usage.malformed += 1
            if len(usage.malformed_samples) < MAX_MALFORMED_SAMPLES:
                usage.malformed_samples.append(f"{event.get('logStreamName')}@{event['timestamp']}")
            continue
        usage.add(line, int(event["timestamp"]))
    if not any(t.requests for t in usage.tallies.values()) and not usage.malformed:
        spots.append(
            _spot(
                "no_access_logs",
                f"log group {group} holds no access-log line in the window: the API had no "
                "traffic, or logging stopped; an empty result is not proof of no use",
            )
        )
    elif usage.first_event is not None and usage.first_event > usage.start.timestamp() + 3600:
        spots.append(
            _spot(
                "window_not_covered",
                f"the first access-log line is at {_iso(usage.first_event)}, over an hour "
                "after the window starts: earlier requests may be missing",
            )
        )
    return spots


def _coverage(group: Mapping[str, Any], usage: Usage) -> list[dict[str, str]]:
    """The group was created, or keeps events, too short a time for the baseline."""
    spots = []
    created = group.get("creationTime")
    if created and created / 1000 > usage.base.timestamp():
        spots.append(
            _spot(
                "baseline_not_covered",
                f"log group {group['logGroupName']} was created at {_iso(created / 1000)}, after "
                "the baseline starts: baseline rates are low, multiples high",
            )
        )
    retention = group.get("retentionInDays")
    if retention and datetime.now(UTC) - timedelta(days=retention) > usage.base:
        spots.append(
            _spot(
                "baseline_not_covered",
                f"log group {group['logGroupName']} keeps {retention} days: the baseline "
                "window is partly expired",
            )
        )
    return spots


def _events(logs: Any, group: str, start: datetime, end: datetime) -> Iterator[dict[str, Any]]:
    paginator = logs.get_paginator("filter_log_events")
    pages = paginator.paginate(
        logGroupName=group,
        startTime=int(start.timestamp() * 1000),
        endTime=int(end.timestamp() * 1000),
    )
    for page in pages:
        yield from page.get("events", [])


def _stage_log_group(
    apigateway: Any, api: str, stage: str, given: str | None
) -> tuple[str | None, list[dict[str, str]]]:
    """The stage's access-log group (its ``accessLogSettings``), or why there is none."""
    settings = apigateway.get_stage(restApiId=api, stageName=stage).get("accessLogSettings") or {}
    arn = settings.get("destinationArn") or ""
    if not arn:
        spot = _spot(
            "access_logging_off",
            f"stage {stage} of API {api} has no access logging: no request of the window "
            "is on record, so no caller's use can be measured",
        )
        return given, [spot]
    if ":log-group:" not in arn:
        return given, [_spot("access_logs_elsewhere", f"stage {stage} logs to {arn}, not read")]
    group = arn.split(":log-group:", 1)[1].removesuffix(":*")
    return given or group, []


def _invocations(
    cloudwatch: Any, endpoint: str, start: datetime, end: datetime
) -> tuple[int | None, list[dict[str, str]]]:
    """The endpoint's ``Invocations`` (every variant) in the window, or why unknown."""
    metrics = cloudwatch.list_metrics(
        Namespace="AWS/SageMaker",
        MetricName="Invocations",
        Dimensions=[{"Name": "EndpointName", "Value": endpoint}],
    ).get("Metrics", [])
    if not metrics:
        return None, [_metrics_spot(endpoint)]
    queries = [
        {"Id": f"m{i}", "MetricStat": {"Metric": m, "Period": 3600, "Stat": "Sum"}}
        for i, m in enumerate(metrics[:100])
    ]
    paginator = cloudwatch.get_paginator("get_metric_data")
    total, seen = 0.0, False
    for page in paginator.paginate(MetricDataQueries=queries, StartTime=start, EndTime=end):
        for result in page.get("MetricDataResults", []):
            seen = seen or bool(result.get("Values"))
            total += sum(result.get("Values", []))
    if not seen:
        return None, [_metrics_spot(endpoint)]
    return int(total), []


def _metrics_spot(endpoint: str) -> dict[str, str]:
    return _spot(
        "metrics_unavailable",
        f"no AWS/SageMaker Invocations for endpoint {endpoint} in the window: callers' "
        "share of the endpoint's traffic is unknown",
    )


def _malformed_spot(usage: Usage) -> dict[str, str]:
    return _spot(
        "malformed_lines",
        f"{usage.malformed} of {usage.lines} access-log lines were not JSON access-log "
        f"records and were skipped (first: {', '.join(usage.malformed_samples)})",
    )


# --- one access-log line ----------------------------------------------------------------


def _parse(message: str) -> dict[str, Any] | None:
    """A JSON access-log line with at least a request id; None for anything else."""
    try:
        line = json.loads(message)
    except ValueError:
        return None
    if not isinstance(line, dict) or not (line.get("requestId") or line.get("extendedRequestId")):
        return None
    return line


def _key_id(line: Mapping[str, Any]) -> str:
    key = line.get("apiKeyId") or line.get("identity.apiKeyId")
    if key and key != "-":
        return str(key)
    value = line.get("apiKey") or line.get("identity.apiKey")
    if value and value != "-":  # the key's value is a credential: a fingerprint only
        return "value-sha256:" + hashlib.sha256(str(value).encode()).hexdigest()[:16]
    return NO_KEY


def _caller(line: Mapping[str, Any]) -> str:
    for name in ("userArn", "caller", "user", "identity.userArn", "identity.caller"):
        value = line.get(name)
        if value and value != "-":
            return str(value)
    return str(line.get("ip") or line.get("sourceIp") or "-")


def _request_time(line: Mapping[str, Any], logged_ms: int) -> float:
    """``requestTimeEpoch`` (ms), else ``requestTime`` (CLF), else when it was logged."""
    epoch = line.get("requestTimeEpoch")
    if epoch not in (None, "", "-"):
        try:
            return int(epoch) / 1000
        except (TypeError, ValueError):
            pass
    text = line.get("requestTime")
    if isinstance(text, str):
        try:
            return datetime.strptime(text, "%d/%b/%Y:%H:%M:%S %z").timestamp()
        except ValueError:
            pass
    return logged_ms / 1000


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


# --- the result --------------------------------------------------------------------------


def _output(
    model: Any,
    params: ScopeInferenceExtraction.Input,
    usage: Usage,
    spots: list[dict[str, str]],
    group: str | None,
    invocations: int | None,
    ctx: ActionContext,
) -> Any:
    hours = (usage.end - usage.start).total_seconds() / 3600
    base_hours = (usage.start - usage.base).total_seconds() / 3600
    uses = [
        _use(key, caller, t, hours, base_hours, invocations)
        for (key, caller), t in usage.tallies.items()
        if t.requests
    ]
    uses.sort(key=lambda u: (-u.requests, u.api_key_id, u.caller))
    suspect = _suspect(params.api_key_id, usage, hours, base_hours, invocations)
    level, reason = confidence(spots)
    times = [u.first_request for u in uses if u.first_request]
    lasts = [u.last_request for u in uses if u.last_request]
    totals = Totals(
        requests=sum(u.requests for u in uses),
        callers=len(uses),
        bytes_out=sum(u.bytes_out for u in uses),
        endpoint_invocations=invocations,
        first_access=min(times) if times else None,
        last_access=max(lasts) if lasts else None,
    )
    summary = _summary(params.api_key_id, suspect, totals, level)
    ctx.logger.info("inference scope: %s", summary)
    listed = uses[: params.max_callers]
    return model(
        principal=params.api_key_id or "every API key",
        window_start=_iso(usage.start.timestamp()),
        window_end=_iso(usage.end.timestamp()),
        baseline_start=_iso(usage.base.timestamp()),
        summary=summary,
        suspect=suspect,
        callers=listed,
        callers_total=len(uses),
        callers_truncated=len(uses) > len(listed),
        totals=totals,
        blind_spots=[BlindSpot(**s) for s in spots],
        confidence=level,
        confidence_reason=reason,
        log_group=group,
        log_lines=usage.lines,
        malformed_lines=usage.malformed,
    )


def _use(
    key: str, caller: str, t: Tally, hours: float, base_hours: float, invocations: int | None
) -> CallerUse:
    rate = t.requests / hours
    base_rate = t.baseline / base_hours
    expected = base_rate * hours
    return CallerUse(
        api_key_id=key,
        caller=caller,
        requests=t.requests,
        rate_per_hour=round(rate, 3),
        baseline_requests=t.baseline,
        baseline_rate_per_hour=round(base_rate, 3),
        multiple_of_baseline=round(rate / base_rate, 1) if base_rate else None,
        requests_over_baseline=max(0, round(t.requests - expected)),
        share_of_invocations=round(t.requests / invocations, 4) if invocations else None,
        bytes_out=t.bytes_out,
        errors=t.errors,
        first_request=_iso(t.first) if t.first is not None else None,
        last_request=_iso(t.last) if t.last is not None else None,
        source_ips=sorted(t.ips),
        resource_paths=sorted(t.paths, key=lambda p: (-t.paths[p], p))[:10],
    )


def _suspect(
    key: str | None, usage: Usage, hours: float, base_hours: float, invocations: int | None
) -> CallerUse | None:
    """The suspect key over all its callers; zeros (not None) when it made no request."""
    if key is None:
        return None
    merged = Tally()
    for (k, _), t in usage.tallies.items():
        if k != key:
            continue
        merged.requests += t.requests
        merged.baseline += t.baseline
        merged.bytes_out += t.bytes_out
        merged.errors += t.errors
        merged.ips |= t.ips
        for path, n in t.paths.items():
            merged.paths[path] = merged.paths.get(path, 0) + n
        firsts = [x for x in (merged.first, t.first) if x is not None]
        lasts = [x for x in (merged.last, t.last) if x is not None]
        merged.first, merged.last = min(firsts, default=None), max(lasts, default=None)
    callers = sorted({c for k, c in usage.tallies if k == key})
    return _use(key, ", ".join(callers) or "-", merged, hours, base_hours, invocations)


def _summary(key: str | None, suspect: CallerUse | None, totals: Totals, level: str) -> str:
    if suspect is not None and not suspect.requests:
        return f"no requests by API key {key} in the window (confidence {level})"
    if suspect is not None:
        times = (
            f"{suspect.multiple_of_baseline:g}x its baseline rate"
            if suspect.multiple_of_baseline is not None
            else "no baseline (a new caller)"
        )
        share = (
            f", {suspect.share_of_invocations:.1%} of the endpoint's invocations"
            if suspect.share_of_invocations is not None
            else ""
        )
        return (
            f"API key {key}: {suspect.requests} requests ({times}, "
            f"{suspect.requests_over_baseline} over baseline), {suspect.bytes_out} bytes "
            f"returned{share} (confidence {level})"
        )
    return (
        f"{totals.requests} requests by {totals.callers} caller(s), {totals.bytes_out} bytes "
        f"returned (confidence {level})"
    )


def confidence(spots: list[dict[str, str]]) -> tuple[str, str]:
    """As for S3 scoping: low when the requests themselves may be unrecorded, medium when
    only the baseline, the metrics or some lines are missing, high otherwise."""
    if not spots:
        return "high", (
            "access logging was on and the log group covered the window and the baseline, "
            "every line was readable and the endpoint's invocations were known"
        )
    kinds = sorted({s["kind"] for s in spots})
    if any(k in LOW for k in kinds):
        return "low", (
            f"blind spots ({', '.join(kinds)}): requests may have gone unrecorded, so a "
            "small or empty result does not mean the model was not sampled"
        )
    return "medium", (
        f"blind spots ({', '.join(kinds)}): what was counted is certain; baselines, "
        "shares or some lines are incomplete"
    )


def _spot(kind: str, detail: str) -> dict[str, str]:
    return {"kind": kind, "detail": detail}


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _arn_part(value: Any) -> str | None:
    """A ``with`` value usable in an ARN: a literal or an IAM wildcard, not an expression."""
    if isinstance(value, str) and value and "{" not in value:
        return value
    return None
