"""Triggers: which runbook an alert starts, with which inputs, and what counts as one incident.

A ``kind: TriggerSet`` file (``runbooks/triggers.yaml``) lists triggers in order;
the first whose ``match`` holds for an alert wins, so a specific trigger goes above
a general one. Every expression sees one name, ``alert`` (the normalised
:class:`~clampdown.core.alert.Alert`, with ``alert.raw`` for anything not lifted out),
and runs in the same sandbox as runbook expressions.

Two keys decide what "one incident" means, because alert sources repeat
themselves (GuardDuty updates a finding, Alertmanager re-sends a firing alert):

* ``dedup_key`` (default ``{{ alert.source }}:{{ alert.id }}``): the same key inside
  ``dedup_window`` is the same alert again; it is recorded in the run it started.
* ``correlate_by`` (e.g. ``{{ alert.principal }}``): a different alert with the
  same key inside ``correlate_window`` joins the run still in progress *that gives the
  same response* (:func:`response_of`: containment or evidence only). Correlation
  escalates, never suppresses: both keys are scoped to the response
  (:func:`response_key`), so an alert that asks for containment is never joined to,
  nor deduplicated into, an evidence-only run; it starts its own run and the triage
  links the two (``alert.correlated``).

This module is the model and the matcher; reading, linting and loading trigger files is
:mod:`clampdown.core.trigger_files`. What to do with a match (dedup state, starting
runs) lives in :mod:`clampdown_flows.triage`.
"""

# No __future__ annotations: pydantic then reads each field's type as written instead of
# compiling its text at class creation (a ForwardRef per field; lint imports this module).

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, field_validator

from clampdown.core import inputs as inputs_mod
from clampdown.core.alert import Alert
from clampdown.core.diagnostics import ClampdownError
from clampdown.core.durations import PositiveDuration
from clampdown.core.expressions import (
    ExpressionError,
    condition_problem,
    condition_source,
    evaluate_condition,
    render,
)
from clampdown.core.models import RUNBOOK_NAME, Runbook, Severity, StrictModel

KIND = "TriggerSet"
TRIGGER_NAME = re.compile(r"^[a-z0-9]+([_-][a-z0-9]+)*$")
DEFAULT_DEDUP_KEY = "{{ alert.source }}:{{ alert.id }}"
DEFAULT_WINDOW = 15 * 60.0
DEFAULT_MAX_CONCURRENT_RUNS = 5
ALERT_FIELDS = tuple(Alert.model_fields)
MAX_KEY_TEXT = 1024  # a key longer than this is an expression bug, not an incident name

TriageStatus = Literal["started", "joined", "deduplicated", "ignored"]


@dataclass(frozen=True)
class TriageOutcome:
    """What happened to one alert; the alert endpoints turn it into their HTTP answer.

    ``run_id`` is the run started, joined or deduplicated into (None when ignored);
    ``trigger`` the name of the trigger that matched; ``reason`` a short sentence
    for the sender and the log. It lives in the core so the triage (core + flows)
    and the endpoints (integrations) share it without the core importing a provider.
    """

    status: TriageStatus
    run_id: str | None = None
    trigger: str | None = None
    reason: str = ""


class Trigger(StrictModel):
    """One rule: alerts it matches, the runbook it starts, and what one incident is."""

    name: str = Field(description="snake_case or kebab-case, unique in the file")
    description: str | None = None
    match: str | bool = Field(
        True, description="expression over alert; bare (alert.type == 'x') or {{ … }}"
    )
    severity_at_least: Severity | None = Field(None, description="ignore less severe alerts")
    runbook: str = Field(description="name of a runbook in the library")
    inputs: dict[str, Any] = Field(
        default_factory=dict, description="runbook inputs; values may be expressions over alert"
    )
    dedup_key: str = Field(
        DEFAULT_DEDUP_KEY, description="alerts with the same key inside dedup_window are one"
    )
    dedup_window: PositiveDuration = Field(DEFAULT_WINDOW)
    correlate_by: str | None = Field(
        None, description="alerts with the same (non-empty) key join the run in progress"
    )
    correlate_window: PositiveDuration | None = Field(None, description="default: dedup_window")
    max_concurrent_runs: int = Field(
        DEFAULT_MAX_CONCURRENT_RUNS, ge=1, le=1000, description="per runbook, over all triggers"
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not TRIGGER_NAME.match(value):
            suggestion = re.sub(r"[^a-z0-9]+", "-", value.lower()).strip("-") or "trigger"
            raise ValueError(
                f"trigger name '{value}' is not snake_case or kebab-case; write '{suggestion}'"
            )
        return value

    @field_validator("match")
    @classmethod
    def _one_expression(cls, value: str | bool) -> str | bool:
        """``match: "{{ a }} and {{ b }}"`` renders to text, always true: the trigger
        would start its runbook for every alert. Refused as ``if:`` is."""
        try:
            problem = condition_problem(value)
        except ExpressionError:
            return value  # malformed: the file lint's expression check says where and why
        if problem is not None:
            raise ValueError(str(problem).replace("if:", "match:"))
        return value

    @field_validator("runbook")
    @classmethod
    def _runbook(cls, value: str) -> str:
        if not RUNBOOK_NAME.match(value):
            raise ValueError(f"'{value}' is not a runbook name (kebab-case, no path or .yaml)")
        return value

    @property
    def correlation_window(self) -> float:
        return self.dedup_window if self.correlate_window is None else self.correlate_window

    @property
    def match_source(self) -> str:
        return condition_source(self.match)


class TriggerSet(StrictModel):
    """A whole trigger file."""

    api_version: Literal["clampdown/v1"] = Field(alias="apiVersion")
    kind: Literal["TriggerSet"]
    description: str | None = None
    triggers: list[Trigger] = Field(min_length=1)


@dataclass(frozen=True)
class Match:
    """What an alert would start: the trigger, its runbook, rendered inputs and keys."""

    trigger: Trigger
    runbook: str
    inputs: dict[str, Any]
    dedup_key: str
    correlation_key: str | None


Response = Literal["containment", "evidence"]


def response_of(runbook: Runbook, destructive: Callable[[str], bool]) -> Response:
    """What a runbook does for an incident: ``containment`` when any step's action changes
    something (``destructive(uses)``), else ``evidence`` (it only reads and records).

    Why: correlation must escalate, never suppress — an alert that asks for containment
    may only join a run that contains, never an evidence-only run.
    """
    return "containment" if any(destructive(step.uses) for step in runbook.steps) else "evidence"


def response_key(response: str, key: str) -> str:
    """``key`` scoped to a response: dedup and correlation only meet within the same one."""
    return f"{response}|{key}"


@dataclass(frozen=True)
class TriggerCheck:
    """Why one trigger did or did not match an alert (for ``clampdown triggers test``)."""

    trigger: str
    matched: bool
    reason: str


class TriggerError(ClampdownError):
    """The matching trigger could not compute its inputs or keys for this alert.

    ``trigger`` is that trigger: the triage holds the alert under its name and runbook
    (a trigger bug must not lose the alert, nor try the next trigger)."""

    def __init__(self, message: str, hint: str = "", trigger: Trigger | None = None) -> None:
        super().__init__(message, hint)
        self.trigger = trigger


# --- matching --------------------------------------------------------------------------------


def alert_context(alert: Alert) -> dict[str, Any]:
    """The expression context: ``alert`` as plain JSON data (dates as ISO strings).

    Plain data rather than the model: the sandbox then has no methods to reach,
    and ``alert.raw.detail.type`` works through dict lookups.
    """
    return {"alert": alert.model_dump(mode="json")}


def explain(trigger_set: TriggerSet, alert: Alert) -> list[TriggerCheck]:
    """Every trigger's verdict in file order, up to and including the first match."""
    context = alert_context(alert)
    verdicts: list[TriggerCheck] = []
    for trigger in trigger_set.triggers:
        verdict = _verdict(trigger, alert, context)
        verdicts.append(verdict)
        if verdict.matched:
            break
    return verdicts


def _verdict(trigger: Trigger, alert: Alert, context: Mapping[str, Any]) -> TriggerCheck:
    if trigger.severity_at_least and not alert.at_least(trigger.severity_at_least):
        return TriggerCheck(
            trigger.name, False, f"severity {alert.severity} is below {trigger.severity_at_least}"
        )
    try:
        held = evaluate_condition(trigger.match, context)
    except ExpressionError as exc:  # e.g. alert.raw.detail on an alert without one
        return TriggerCheck(trigger.name, False, f"match failed: {exc.message}")
    return TriggerCheck(trigger.name, held, "match holds" if held else "match is false")


def match_alert(trigger_set: TriggerSet, alert: Alert) -> Match | None:
    """The first matching trigger with its inputs and keys rendered, or None.

    Raises :class:`TriggerError` (naming the trigger) when the matching trigger's inputs
    or keys cannot be computed for this alert: that is a trigger bug the caller must report
    (serve holds the alert), never a reason to try the next trigger (which would start the
    wrong runbook).
    """
    verdicts = explain(trigger_set, alert)
    if not verdicts or not verdicts[-1].matched:
        return None
    trigger = next(t for t in trigger_set.triggers if t.name == verdicts[-1].trigger)
    context = alert_context(alert)
    try:
        inputs = render(trigger.inputs, context)
    except ExpressionError as exc:
        raise TriggerError(
            f"trigger '{trigger.name}': inputs: {exc.message}",
            "fix the inputs expression in the trigger file",
            trigger,
        ) from None
    dedup_key = _key(trigger, "dedup_key", trigger.dedup_key, context)
    if dedup_key is None:
        raise TriggerError(
            f"trigger '{trigger.name}': dedup_key is empty for this alert",
            "make dedup_key always give a value, e.g. include alert.id",
            trigger,
        )
    correlation_key = (
        _key(trigger, "correlate_by", trigger.correlate_by, context)
        if trigger.correlate_by
        else None
    )
    return Match(trigger, trigger.runbook, inputs, dedup_key, correlation_key)


def _key(trigger: Trigger, name: str, source: str, context: Mapping[str, Any]) -> str | None:
    """Render a key; None or empty means "no key" (e.g. an alert without a principal)."""
    try:
        value = render(source, context)
    except ExpressionError as exc:
        raise TriggerError(
            f"trigger '{trigger.name}': {name}: {exc.message}",
            f"fix {name} in the trigger file",
            trigger,
        ) from None
    if value is None:
        return None
    text = str(value).strip()
    if not text or text == "None":
        return None
    if len(text) > MAX_KEY_TEXT:
        raise TriggerError(
            f"trigger '{trigger.name}': {name} is {len(text)} characters long",
            f"keep {name} under {MAX_KEY_TEXT} characters: use ids, not payloads",
            trigger,
        )
    return text


def check_inputs(match: Match, runbook: Runbook) -> dict[str, Any]:
    """The inputs validated against the runbook (defaults applied), or :class:`InputError`."""
    return inputs_mod.validate(runbook.inputs, match.inputs)
