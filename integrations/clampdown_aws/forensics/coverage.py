"""What the trail could not have seen: blind spots, and the confidence they leave.

A scope that found nothing means "nothing taken" only if the trail was recording the
model buckets' object reads for the whole window. Each way it might not have been is a
blind spot ``{kind, detail}``:

* ``data_events_off`` — the trail's event selectors (basic or advanced, from
  ``GetEventSelectors``) do not log S3 object reads for a model's bucket/prefix (or, with no
  models named, for any bucket);
* ``management_events_off`` — read management events are not logged, so AssumeRole chains
  and bucket policy reads are invisible;
* ``window_not_covered`` — the trail started or stopped logging inside the window
  (``GetTrailStatus``), or no trail delivers to S3;
* ``region_not_logged`` — a single-region trail: other regions' calls are not in its files;
* ``trail_gap`` — an hour or more of the window with no file delivered for a region, or a
  delivery error;
* ``malformed_file`` — a file that could not be read (skipped), or an S3 server access log
  file with lines not in AWS's format (those lines skipped);
* ``access_logs_missing`` — server access logs named (input or ``GetBucketLogging``) but
  not listable, or no file of them for the window;
* ``access_logs_unattributable`` — the suspect is an access key id, which access logs do
  not record.

Confidence: ``low`` when object reads of a model (or the window) may be missing entirely
(data events off, window not covered); ``medium`` for partial blind spots (gaps, malformed
files, other regions, management events off); ``high`` otherwise.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

LOW = ("data_events_off", "window_not_covered")
S3_OBJECT = "AWS::S3::Object"


def blind(kind: str, detail: str) -> dict[str, str]:
    return {"kind": kind, "detail": detail}


def confidence(
    spots: list[dict[str, str]], access_logs: bool = False, engine: str = "duckdb"
) -> tuple[str, str]:
    """The confidence level and the sentence that explains it (``access_logs``: S3 server
    access logs were read too, which AWS delivers best-effort)."""
    level, reason = _level(spots)
    if access_logs:
        reason += (
            "; S3 server access logs were read too: AWS delivers them best-effort (most "
            "within a few hours, some records late or never), so a read found only there is "
            "real but their silence proves nothing"
        )
        if engine == "athena":
            reason += " (the access logs were read by the embedded DuckDB scan, not by Athena)"
    return level, reason


def _level(spots: list[dict[str, str]]) -> tuple[str, str]:
    if not spots:
        return "high", (
            "the trail logged S3 object reads for every model and management events, for "
            "the whole window, with no gap in its files and every file readable"
        )
    kinds = sorted({s["kind"] for s in spots})
    if any(k in LOW for k in kinds):
        return "low", (
            f"blind spots ({', '.join(kinds)}): object reads may have gone unrecorded, so an "
            "empty or small result does not mean nothing was taken"
        )
    return "medium", (
        f"blind spots ({', '.join(kinds)}): part of the window or of the account was not "
        "read; what was found is certain, more may have been taken"
    )


def _basic_covers(selector: dict[str, Any], arn: str) -> bool:
    if selector.get("ReadWriteType", "All") not in ("All", "ReadOnly"):
        return False
    for resource in selector.get("DataResources", []):
        if resource.get("Type") != S3_OBJECT:
            continue
        for value in resource.get("Values", []):
            if value in ("arn:aws:s3", "arn:aws:s3:::", "arn:aws:s3:::*") or arn.startswith(value):
                return True
    return False


def _field_ok(field: dict[str, Any], arn: str) -> bool | None:
    """Whether one advanced field selector keeps object reads of ``arn`` (None: not about it)."""
    name = field.get("Field")
    checks = {
        "eventCategory": lambda: "Data" in field.get("Equals", ["Data"]),
        "resources.type": lambda: S3_OBJECT in field.get("Equals", [S3_OBJECT]),
        "readOnly": lambda: field.get("Equals", ["true"]) != ["false"],
        "resources.ARN": lambda: _arn_ok(field, arn),
        "eventName": lambda: (
            "GetObject" in field.get("Equals", ["GetObject"])
            and "GetObject" not in field.get("NotEquals", [])
        ),
    }
    check = checks.get(str(name))
    return check() if check else None


def _arn_ok(field: dict[str, Any], arn: str) -> bool:
    if any(arn.startswith(v) for v in field.get("NotStartsWith", [])):
        return False
    if arn in field.get("NotEquals", []):
        return False
    if "StartsWith" in field:
        return any(arn.startswith(v) for v in field["StartsWith"])
    # Equals names single objects: a prefix is not covered as a whole
    return "Equals" not in field


def _advanced_covers(selector: dict[str, Any], arn: str) -> bool:
    fields = selector.get("FieldSelectors", [])
    category = [f for f in fields if f.get("Field") == "eventCategory"]
    types = [f for f in fields if f.get("Field") == "resources.type"]
    if not category or "Data" not in category[0].get("Equals", []):
        return False
    if not types or S3_OBJECT not in types[0].get("Equals", []):
        return False
    return all(_field_ok(f, arn) is not False for f in fields)


def logs_reads_of(selectors: dict[str, Any], arn: str) -> bool:
    """True when the trail logs S3 object reads for every object under ``arn``."""
    if any(_advanced_covers(s, arn) for s in selectors.get("AdvancedEventSelectors") or []):
        return True
    return any(_basic_covers(s, arn) for s in selectors.get("EventSelectors") or [])


def _logs_management(selectors: dict[str, Any]) -> bool:
    advanced = selectors.get("AdvancedEventSelectors") or []
    if advanced:
        for selector in advanced:
            for field in selector.get("FieldSelectors", []):
                if field.get("Field") == "eventCategory" and "Management" in field.get(
                    "Equals", []
                ):
                    return True
        return False
    basic = selectors.get("EventSelectors") or []
    if not basic:
        return True  # a trail without selectors logs all management events
    return any(
        s.get("IncludeManagementEvents", True) and s.get("ReadWriteType", "All") != "WriteOnly"
        for s in basic
    )


def selector_blind_spots(
    selectors: dict[str, Any], models: list[Any], trail: str
) -> list[dict[str, str]]:
    """``data_events_off`` per model not covered; ``management_events_off``."""
    spots = []
    if models:
        for model in models:
            arn = f"arn:aws:s3:::{model.bucket}/{model.prefix}"
            if not logs_reads_of(selectors, arn):
                spots.append(
                    blind(
                        "data_events_off",
                        f"trail {trail} does not log S3 object reads (data events) for "
                        f"model {model.name} (s3://{model.bucket}/{model.prefix}): reads of it "
                        "are invisible here",
                    )
                )
    elif not _logs_any_s3_reads(selectors):
        spots.append(
            blind(
                "data_events_off",
                f"trail {trail} logs no S3 data events: object reads are invisible here",
            )
        )
    if not _logs_management(selectors):
        spots.append(
            blind(
                "management_events_off",
                f"trail {trail} does not log read management events: AssumeRole chains and "
                "bucket policy reads are invisible here",
            )
        )
    return spots


def _logs_any_s3_reads(selectors: dict[str, Any]) -> bool:
    for selector in selectors.get("AdvancedEventSelectors") or []:
        fields = {f.get("Field"): f for f in selector.get("FieldSelectors", [])}
        category = fields.get("eventCategory", {}).get("Equals", [])
        kind = fields.get("resources.type", {}).get("Equals", [])
        if "Data" in category and S3_OBJECT in kind:
            return True
    return any(
        any(r.get("Type") == S3_OBJECT for r in s.get("DataResources", []))
        and s.get("ReadWriteType", "All") != "WriteOnly"
        for s in selectors.get("EventSelectors") or []
    )


def status_blind_spots(
    status: dict[str, Any], start: datetime, end: datetime, trail: str
) -> list[dict[str, str]]:
    """``window_not_covered`` from the trail's last start and stop; ``trail_gap`` for a
    delivery error."""
    spots = []
    started = status.get("StartLoggingTime")
    stopped = status.get("StopLoggingTime")
    logging = bool(status.get("IsLogging"))
    if not logging and (stopped is None or stopped < end):
        since = max(stopped, start) if stopped else start
        spots.append(
            blind(
                "window_not_covered",
                f"trail {trail} is not logging"
                + (f" (stopped {_iso(stopped)})" if stopped else "")
                + f": nothing from {_iso(since)} to {_iso(end)} was recorded",
            )
        )
    if started and started > start:
        gap_from = stopped if stopped and start < stopped < started else start
        if logging or not stopped or stopped > started:
            spots.append(
                blind(
                    "window_not_covered",
                    f"trail {trail} started logging at {_iso(started)}: nothing from "
                    f"{_iso(gap_from)} to {_iso(min(started, end))} was recorded",
                )
            )
    error = status.get("LatestDeliveryError")
    if error:
        spots.append(blind("trail_gap", f"trail {trail} reports a delivery error: {error}"))
    return spots


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
