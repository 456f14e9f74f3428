"""``clampdown triggers test ALERT.json``: which trigger an alert matches, and what it would start.

Dry by construction: it loads the trigger file and the runbook, renders inputs and
keys, and validates the inputs — it never touches the dedup state or starts a run,
so it is safe to run against the production trigger file.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from clampdown.app.cli_errors import user_errors
from clampdown.app.cli_options import Format, FormatOpt
from clampdown.core.diagnostics import ClampdownError

MAX_ALERT_FILE = 1024 * 1024

out = Console(highlight=False, soft_wrap=True, emoji=False)


class AlertSource(StrEnum):
    guardduty = "guardduty"
    eventbridge = "eventbridge"
    sns = "sns"
    alertmanager = "alertmanager"
    pagerduty = "pagerduty"
    generic = "generic"


def register(app: typer.Typer) -> None:
    """Add the ``triggers`` command group to the ``clampdown`` app."""
    group = typer.Typer(help="Check which runbook alerts start.", no_args_is_help=True)
    group.command("test")(test)
    group.command("held")(held)
    app.add_typer(group, name="triggers")


def held(
    limit: Annotated[int, typer.Option("--limit", "-n", help="how many, newest first")] = 20,
    format: FormatOpt = Format.text,
) -> None:
    """Alerts a trigger matched that started no run (runbook at max_concurrent_runs,
    inputs refused, or the trigger's inputs or keys failed for the alert).

    They wait here for a responder: the incident's next alert starts a run once the cause
    is gone (a free slot, a fixed trigger file), or start the runbook by hand.
    """
    from clampdown.core.state_store import StateStore

    with user_errors():
        store = StateStore()
    try:
        found = store.held_alerts(limit)
    finally:
        store.close()
    if format is Format.json:
        rows = [
            {
                "at": datetime.fromtimestamp(h.at, UTC).isoformat(),
                "runbook": h.runbook,
                "trigger": h.trigger,
                "dedup_key": h.dedup_key,
                "reason": h.reason,
                "alert": h.alert,
            }
            for h in found
        ]
        out.print_json(json.dumps(rows, default=str))
        return
    if not found:
        out.print("no held alerts")
        return
    for h in found:
        title = h.alert.get("title", "")
        at = datetime.fromtimestamp(h.at, UTC).isoformat(timespec="seconds")
        out.print(
            f"{at}  {h.runbook}  ({h.trigger}) {h.dedup_key}: {title} — {h.reason}", markup=False
        )


def test(
    alert_file: Annotated[Path, typer.Argument(help="an alert as JSON (normalised, or raw)")],
    triggers: Annotated[
        Path | None,
        typer.Option("--triggers", "-t", help="trigger file (default: <library>/triggers.yaml)"),
    ] = None,
    source: Annotated[
        AlertSource | None,
        typer.Option("--source", "-s", help="parse a raw payload of this source"),
    ] = None,
    library: Annotated[Path | None, typer.Option("--library", "-L", help="runbook folder")] = None,
    format: FormatOpt = Format.text,
) -> None:
    """Show the trigger an alert matches, its runbook, inputs, and dedup/correlation keys."""
    with user_errors():
        report = dry_run(alert_file, triggers, source, library)
    if format is Format.json:
        out.print_json(json.dumps(report, default=str))
    else:
        for line in _text(report):
            out.print(line, markup=False)
    if report["alerts"] and not all(a["match"] for a in report["alerts"]):
        raise typer.Exit(3)  # scripts can tell "no trigger matches" from a match


def dry_run(
    alert_file: Path,
    triggers: Path | None = None,
    source: str | None = None,
    library: Path | None = None,
) -> dict[str, Any]:
    """Everything ``triggers test`` shows, as data (alerts from one payload, each explained)."""
    from clampdown.core.inputs import validate
    from clampdown.core.loader import library_names, load
    from clampdown.core.settings import settings
    from clampdown.core.trigger_files import load_triggerset
    from clampdown.core.triggers import TriggerError, explain, match_alert

    library = library or settings().library
    trigger_file = triggers or Path(library) / "triggers.yaml"
    trigger_set = load_triggerset(trigger_file, library)
    runbooks = library_names(library)
    results = []
    for alert in read_alerts(alert_file, source):
        entry: dict[str, Any] = {
            "alert": f"{alert.source}:{alert.id}",
            "title": alert.title,
            "verdicts": [v.__dict__ for v in explain(trigger_set, alert)],
            "match": None,
        }
        try:
            match = match_alert(trigger_set, alert)
        except TriggerError as exc:
            entry["error"] = str(exc)
            match = None
        if match is not None:
            problems = None
            try:
                validate(load(runbooks[match.runbook]).model.inputs, match.inputs)
            except ClampdownError as exc:
                problems = exc.message
            entry["match"] = {
                "trigger": match.trigger.name,
                "runbook": match.runbook,
                "inputs": match.inputs,
                "input_problems": problems,
                "dedup_key": match.dedup_key,
                "dedup_window": match.trigger.dedup_window,
                "correlation_key": match.correlation_key,
                "correlate_window": match.trigger.correlation_window,
                "max_concurrent_runs": match.trigger.max_concurrent_runs,
            }
        results.append(entry)
    return {"triggers": str(trigger_file), "alerts": results}


def read_alerts(path: Path, source: str | None) -> list[Any]:
    """Alerts from a file: a normalised Alert, a list of them, or a raw payload of ``source``."""
    from pydantic import ValidationError

    from clampdown.core.alert import Alert

    try:
        if path.stat().st_size > MAX_ALERT_FILE:
            raise ClampdownError(
                f"{path} is larger than {MAX_ALERT_FILE // 1024} KiB",
                "an alert payload is small: check the file",
            )
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ClampdownError(f"cannot read {path}: {exc}", "check the path") from None
    except ValueError as exc:
        raise ClampdownError(f"{path} is not JSON: {exc}", "give a JSON file") from None
    if source is not None:
        return _parse_raw(data, source)
    items = data if isinstance(data, list) else [data]
    alerts = []
    for index, item in enumerate(items):
        try:
            alerts.append(Alert.model_validate(item))
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in first["loc"]) or "alert"
            at = f"item {index}: " if isinstance(data, list) else ""
            raise ClampdownError(
                f"{path} is not a normalised alert: {at}{where}: {first['msg']}",
                "for a raw payload from a source, add --source guardduty|eventbridge|sns|"
                "alertmanager|pagerduty|generic",
            ) from None
    return alerts


def _parse_raw(data: Any, source: str) -> list[Any]:
    """Parse with the endpoints' own parsers (:mod:`clampdown_alerts.sources`), lazily.

    No signature is checked: this is a local file, and nothing is started. An SNS
    payload may be the whole ``Notification`` or just its ``Message`` (an alarm).
    """
    from datetime import UTC, datetime

    try:
        from clampdown_alerts import sources
        from clampdown_alerts.errors import AlertRejected
        from clampdown_alerts.settings import AlertSettings
    except ImportError:
        raise ClampdownError(
            "raw payloads need the alert parsers (clampdown_alerts.sources)",
            "give a normalised alert instead (no --source)",
        ) from None
    parsers = {
        "guardduty": sources.parse_guardduty,
        "eventbridge": sources.parse_eventbridge,
        "alertmanager": sources.parse_alertmanager,
        "pagerduty": sources.parse_pagerduty,
        "generic": lambda body: sources.parse_generic(body, datetime.now(UTC)),
        "sns": lambda body: (
            sources.parse_cloudwatch_alarm(body, AlertSettings().alarm_severity)
            if isinstance(body, dict) and "AlarmName" in body
            else sources.parse_sns_notification(body, AlertSettings().alarm_severity)
        ),
    }
    try:
        alerts = parsers[source](data)
    except AlertRejected as exc:
        raise ClampdownError(f"not a valid {source} payload: {exc.reason}") from None
    if not alerts:
        raise ClampdownError(
            f"this {source} payload holds no alert",
            "resolved alerts, alarms back to OK and acknowledgements start nothing",
        )
    return list(alerts)


def _text(report: dict[str, Any]) -> list[str]:
    lines = [f"triggers: {report['triggers']}"]
    for entry in report["alerts"]:
        lines.append("")
        lines.append(f"alert {entry['alert']}: {entry['title']}")
        for verdict in entry["verdicts"]:
            mark = "✔" if verdict["matched"] else "·"
            lines.append(f"  {mark} {verdict['trigger']}: {verdict['reason']}")
        if entry.get("error"):
            lines.append(f"  error: {entry['error']}")
        match = entry["match"]
        if match is None:
            if not entry.get("error"):
                lines.append("  no trigger matches: the alert would be ignored")
            continue
        lines.append(f"  trigger:     {match['trigger']}")
        lines.append(f"  runbook:     {match['runbook']}")
        lines.append("  inputs:")
        for name, value in match["inputs"].items():
            lines.append(f"    {name}: {json.dumps(value, default=str)}")
        if match["input_problems"]:
            lines.append(f"  inputs do not validate: {match['input_problems']}")
        lines.append(f"  dedup key:   {match['dedup_key']} (window {match['dedup_window']:g}s)")
        corr = match["correlation_key"] or "(none)"
        lines.append(f"  correlation: {corr} (window {match['correlate_window']:g}s)")
        lines.append(f"  max concurrent runs of {match['runbook']}: {match['max_concurrent_runs']}")
    return lines
