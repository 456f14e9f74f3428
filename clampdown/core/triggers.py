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
  same key inside ``correlate_window`` joins the run still in progress. Keys are
  global strings, so triggers of different sources that compute the same key
  share runs; prefix a key (``extraction:…``) to keep runbooks apart.

This module is the model, the loader, the lint rules and the matcher. What to do
with a match (dedup state, starting runs) lives in :mod:`clampdown_flows.triage`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator

from clampdown.core import inputs as inputs_mod
from clampdown.core.alert import Alert
from clampdown.core.diagnostics import ClampdownError, Diagnostic, InvalidFileError, did_you_mean
from clampdown.core.durations import PositiveDuration
from clampdown.core.expressions import (
    ExpressionError,
    compile_expression,
    condition_source,
    contains_expression,
    evaluate,
    render,
    walk_strings,
)
from clampdown.core.loader import _diagnostics as schema_diagnostics
from clampdown.core.loader import load, read
from clampdown.core.models import API_VERSION, RUNBOOK_NAME, Runbook, Severity, StrictModel
from clampdown.core.yamlsource import Path, Source

log = logging.getLogger("clampdown.core.triggers")

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


@dataclass(frozen=True)
class Verdict:
    """Why one trigger did or did not match an alert (for ``clampdown triggers test``)."""

    trigger: str
    matched: bool
    reason: str


class TriggerError(ClampdownError):
    """The matching trigger could not compute its inputs or keys for this alert."""


@dataclass(frozen=True)
class LoadedTriggers:
    model: TriggerSet
    source: Source


# --- loading ---------------------------------------------------------------------------------


def is_triggerset(path: str | FsPath) -> bool:
    """Whether a YAML file declares ``kind: TriggerSet`` (for lint's dispatch on kind)."""
    try:
        source = read(path)
    except InvalidFileError:
        return False
    return isinstance(source.data, dict) and source.data.get("kind") == KIND


def load_document(path: str | FsPath) -> LoadedTriggers:
    """Parse and schema-validate a trigger file; raise :class:`InvalidFileError` with positions."""
    source = read(path)
    data = source.data
    if not isinstance(data, dict):
        raise InvalidFileError(
            [
                source.diagnostic(
                    (),
                    "a trigger file must be a mapping",
                    f"start with 'apiVersion: {API_VERSION}' and 'kind: {KIND}'",
                )
            ]
        )
    if data.get("kind") != KIND:
        loc: Path = ("kind",) if "kind" in data else ()
        found = f"kind '{data.get('kind')}'" if "kind" in data else "no kind"
        raise InvalidFileError(
            [
                source.diagnostic(
                    loc,
                    f"a trigger file needs kind: {KIND}, this one has {found}",
                    f"write 'kind: {KIND}'",
                    code="schema",
                )
            ]
        )
    try:
        return LoadedTriggers(TriggerSet.model_validate(data), source)
    except ValidationError as exc:
        raise InvalidFileError(schema_diagnostics(exc, TriggerSet, source)) from None


def load_triggerset(path: str | FsPath, library: str | FsPath | None = None) -> TriggerSet:
    """Load a trigger file for use: any lint error refuses it (like a runbook for ``run``)."""
    found = lint_triggerset(path, library)
    errors = [d for d in found if d.severity == "error"]
    if errors:
        raise InvalidFileError(errors)
    for warning in found:
        log.warning("%s", warning)
    return load_document(path).model


# --- matching --------------------------------------------------------------------------------


def alert_context(alert: Alert) -> dict[str, Any]:
    """The expression context: ``alert`` as plain JSON data (dates as ISO strings).

    Plain data rather than the model: the sandbox then has no methods to reach,
    and ``alert.raw.detail.type`` works through dict lookups.
    """
    return {"alert": alert.model_dump(mode="json")}


def explain(trigger_set: TriggerSet, alert: Alert) -> list[Verdict]:
    """Every trigger's verdict in file order, up to and including the first match."""
    context = alert_context(alert)
    verdicts: list[Verdict] = []
    for trigger in trigger_set.triggers:
        verdict = _verdict(trigger, alert, context)
        verdicts.append(verdict)
        if verdict.matched:
            break
    return verdicts


def _verdict(trigger: Trigger, alert: Alert, context: Mapping[str, Any]) -> Verdict:
    if trigger.severity_at_least and not alert.at_least(trigger.severity_at_least):
        return Verdict(
            trigger.name, False, f"severity {alert.severity} is below {trigger.severity_at_least}"
        )
    try:
        held = bool(evaluate(trigger.match_source, context))
    except ExpressionError as exc:  # e.g. alert.raw.detail on an alert without one
        return Verdict(trigger.name, False, f"match failed: {exc.message}")
    return Verdict(trigger.name, held, "match holds" if held else "match is false")


def match_alert(trigger_set: TriggerSet, alert: Alert) -> Match | None:
    """The first matching trigger with its inputs and keys rendered, or None.

    Raises :class:`TriggerError` when the matching trigger's inputs or keys cannot
    be computed for this alert: that is a trigger bug the caller must report,
    never a reason to try the next trigger (which would start the wrong runbook).
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
        ) from None
    dedup_key = _key(trigger, "dedup_key", trigger.dedup_key, context)
    if dedup_key is None:
        raise TriggerError(
            f"trigger '{trigger.name}': dedup_key is empty for this alert",
            "make dedup_key always give a value, e.g. include alert.id",
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
            f"trigger '{trigger.name}': {name}: {exc.message}", f"fix {name} in the trigger file"
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
        )
    return text


def check_inputs(match: Match, runbook: Runbook) -> dict[str, Any]:
    """The inputs validated against the runbook (defaults applied), or :class:`InputError`."""
    return inputs_mod.validate(runbook.inputs, match.inputs)


# --- lint ------------------------------------------------------------------------------------


def library_runbooks(library: str | FsPath) -> dict[str, FsPath]:
    """Runbook files of a library by name (file stem), as ``clampdown run`` finds them."""
    folder = FsPath(library)
    if not folder.is_dir():
        return {}
    names: dict[str, FsPath] = {}
    for file in sorted(folder.glob("*.y*ml")):
        if file.name != "triggers.yaml":
            names.setdefault(file.stem, file)
    return names


def lint_triggerset(path: str | FsPath, library: str | FsPath | None = None) -> list[Diagnostic]:
    """Every problem of a trigger file, with positions: schema, names, expressions, runbooks.

    ``library`` is where runbook names resolve (default ``$CLAMPDOWN_LIBRARY``).
    """
    try:
        loaded = load_document(path)
    except InvalidFileError as exc:
        return exc.diagnostics
    if library is None:
        from clampdown.core.settings import settings

        library = settings().library
    linter = _TriggerLinter(loaded, library_runbooks(library), FsPath(library))
    return linter.run()


class _TriggerLinter:
    def __init__(self, loaded: LoadedTriggers, runbooks: dict[str, FsPath], library: FsPath):
        self.ts = loaded.model
        self.src = loaded.source
        self.runbooks = runbooks
        self.library = library
        self.found: list[Diagnostic] = []

    def error(
        self, loc: Path, message: str, hint: str = "", code: str = "invalid", **kw: Any
    ) -> None:
        self.found.append(self.src.diagnostic(loc, message, hint, code=code, **kw))

    def warn(
        self, loc: Path, message: str, hint: str = "", code: str = "warning", **kw: Any
    ) -> None:
        self.found.append(
            self.src.diagnostic(loc, message, hint, code=code, severity="warning", **kw)
        )

    def run(self) -> list[Diagnostic]:
        seen: dict[str, int] = {}
        catch_all: str | None = None
        for i, trigger in enumerate(self.ts.triggers):
            here: Path = ("triggers", i)
            if trigger.name in seen:
                first = self.src.position(("triggers", seen[trigger.name], "name"))[0]
                self.error(
                    (*here, "name"),
                    f"duplicate trigger name '{trigger.name}' (first at line {first})",
                    "trigger names must be unique in the file",
                    "duplicate-name",
                )
            seen.setdefault(trigger.name, i)
            if catch_all is not None:
                self.warn(
                    (*here, "name"),
                    f"trigger '{trigger.name}' can never match: trigger '{catch_all}' "
                    "above it matches every alert",
                    "the first matching trigger wins: move the general one to the end",
                    "unreachable-trigger",
                )
            elif _matches_everything(trigger):
                catch_all = trigger.name
            self.check_expressions(i, trigger)
            self.check_runbook(i, trigger)
        return sorted(set(self.found), key=lambda d: (d.line, d.column, d.message))

    def check_expressions(self, i: int, trigger: Trigger) -> None:
        here: Path = ("triggers", i)
        if "match" in self.src.data["triggers"][i]:
            self.check_expression((*here, "match"), trigger.match_source)
        for loc, text in walk_strings(trigger.inputs, (*here, "inputs")):
            self.check_expression(loc, text)
        if "dedup_key" in self.src.data["triggers"][i]:
            self.check_expression((*here, "dedup_key"), trigger.dedup_key)
            if not contains_expression(trigger.dedup_key):
                self.warn(
                    (*here, "dedup_key"),
                    "dedup_key has no expression: every alert this trigger matches is "
                    "the same incident",
                    "include the alert's identity, e.g. {{ alert.source }}:{{ alert.id }}",
                    "constant-key",
                )
        if trigger.correlate_by is not None:
            self.check_expression((*here, "correlate_by"), trigger.correlate_by)
            if not contains_expression(trigger.correlate_by):
                self.warn(
                    (*here, "correlate_by"),
                    "correlate_by has no expression: every alert joins one run",
                    "correlate by a fact of the alert, e.g. {{ alert.principal }}",
                    "constant-key",
                )

    def check_expression(self, loc: Path, text: str) -> None:
        try:
            expr = compile_expression(text)
        except ExpressionError as exc:
            hint = exc.hint
            if exc.message.startswith("expression syntax error"):
                hint = "trigger expressions look like {{ alert.principal }} or alert.type == 'x'"
            self.error(loc, exc.message, hint, "expression")
            return
        if expr.uses_status_function:
            self.error(
                loc,
                "always(), success() and failure() belong in a runbook step's if:",
                "a trigger expression can only read alert",
                "expression",
            )
        for ref in expr.references:
            if ref.root != "alert":
                self.error(
                    loc,
                    f"'{ref.root}' is not defined in triggers",
                    "trigger expressions can read only alert (e.g. alert.principal); "
                    "pass facts to the runbook through inputs",
                    "reference",
                )
            elif ref.name is not None and ref.name not in ALERT_FIELDS:
                self.error(
                    loc,
                    f"alert has no field '{ref.name}'",
                    did_you_mean(ref.name, ALERT_FIELDS) or f"alert has: {', '.join(ALERT_FIELDS)}",
                    "reference",
                )

    def check_runbook(self, i: int, trigger: Trigger) -> None:
        here: Path = ("triggers", i)
        path = self.runbooks.get(trigger.runbook)
        if path is None:
            hint = did_you_mean(trigger.runbook, self.runbooks) or (
                f"runbooks in {self.library}: {', '.join(sorted(self.runbooks)) or 'none'}"
            )
            self.error(
                (*here, "runbook"),
                f"no runbook named '{trigger.runbook}' in the library",
                hint,
                "unknown-runbook",
            )
            return
        try:
            runbook: Runbook = load(path).model
        except InvalidFileError:
            self.error(
                (*here, "runbook"),
                f"runbook '{trigger.runbook}' does not load",
                f"run 'clampdown lint {path}'",
                "runbook-invalid",
            )
            return
        specs = runbook.inputs
        for name, value in trigger.inputs.items():
            loc: Path = (*here, "inputs", name)
            if name not in specs:
                hint = did_you_mean(name, specs) or (
                    f"{trigger.runbook} takes: {', '.join(specs) or 'no inputs'}"
                )
                self.error(
                    loc,
                    f"runbook '{trigger.runbook}' has no input '{name}'",
                    hint,
                    "unknown-input",
                    key=True,
                )
            elif not contains_expression(value) and value is not None:
                try:
                    inputs_mod.check_value(name, specs[name], value, from_text=False)
                except inputs_mod.InputProblem as exc:
                    self.error(loc, f"input '{name}': {exc}", "", "input")
        for name, spec in specs.items():
            if spec.required and spec.default is None and name not in trigger.inputs:
                where: Path = (
                    (*here, "inputs")
                    if "inputs" in self.src.data["triggers"][i]
                    else (*here, "runbook")
                )
                self.error(
                    where,
                    f"runbook '{trigger.runbook}' requires input '{name}'",
                    f'map it under inputs:, e.g. {name}: "{{{{ alert.principal }}}}"',
                    "missing-input",
                    key=True,
                )


def _matches_everything(trigger: Trigger) -> bool:
    source = trigger.match_source.replace(" ", "").lower()
    return source in ("{{true}}", "{{1}}") and trigger.severity_at_least is None
