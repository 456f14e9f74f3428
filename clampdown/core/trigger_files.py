"""Trigger files (``kind: TriggerSet``): reading, the lint rules, and loading one for use.

:func:`lint_triggerset` is what ``clampdown lint`` runs on a trigger file, and what
:func:`load_triggerset` runs before the file is used: any lint error refuses it.
The model and the matcher are :mod:`clampdown.core.triggers`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import Any

from pydantic import ValidationError

from clampdown.core import inputs as inputs_mod
from clampdown.core.diagnostics import Diagnostic, InvalidFileError, did_you_mean
from clampdown.core.expressions import (
    ExpressionError,
    compile_expression,
    condition_offset,
    contains_expression,
    error_offset,
    reference_offset,
    status_offset,
    walk_strings,
)
from clampdown.core.loader import _diagnostics as schema_diagnostics
from clampdown.core.loader import library_names, load, read
from clampdown.core.models import API_VERSION, Runbook
from clampdown.core.triggers import ALERT_FIELDS, KIND, Trigger, TriggerSet
from clampdown.core.yamlsource import Path, Source

log = logging.getLogger("clampdown.triggers")


@dataclass(frozen=True)
class LoadedTriggers:
    model: TriggerSet
    source: Source


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


# --- lint ------------------------------------------------------------------------------------


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
    linter = _TriggerLinter(loaded, library_names(library), FsPath(library))
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
            self.check_expression((*here, "match"), trigger.match_source, condition=True)
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

    def check_expression(self, loc: Path, text: str, condition: bool = False) -> None:
        """One template (``condition``: ``match:``, compiled as ``condition_source``); each
        problem is reported at the ``{{`` of the expression it concerns."""

        def error(offset: int, message: str, hint: str, code: str) -> None:
            value = self.src.value_at(loc)
            if condition and isinstance(value, str):
                where = self.src.value_position(loc, condition_offset(value, offset), value)
            else:
                where = self.src.value_position(loc, offset, text)
            self.found.append(Diagnostic(self.src.path, *where, message, hint, code))

        try:
            expr = compile_expression(text)
        except ExpressionError as exc:
            hint = exc.hint
            if exc.message.startswith("expression syntax error"):
                hint = "trigger expressions look like {{ alert.principal }} or alert.type == 'x'"
            error(error_offset(text, exc), exc.message, hint, "expression")
            return
        if expr.uses_status_function:
            error(
                status_offset(text),
                "always(), success() and failure() belong in a runbook step's if:",
                "a trigger expression can only read alert",
                "expression",
            )
        for ref in expr.references:
            if ref.root != "alert":
                error(
                    reference_offset(text, ref),
                    f"'{ref.root}' is not defined in triggers",
                    "trigger expressions can read only alert (e.g. alert.principal); "
                    "pass facts to the runbook through inputs",
                    "reference",
                )
            elif ref.name is not None and ref.name not in ALERT_FIELDS:
                error(
                    reference_offset(text, ref),
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
