"""Lint: every rule that needs the whole runbook, reported all at once with positions.

The loader checks the shape of a document; lint checks its meaning: the DAG,
the actions and their ``with`` fields, the expressions and what they refer to,
and whether a destructive step sits behind a human approval. ``plan`` and
``run`` call the same checks, so a runbook that lint rejects never executes.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path as FsPath
from typing import Any

from pydantic import BaseModel, ValidationError

from clampdown.core import expression_types as types
from clampdown.core import graph, model_views, type_checks
from clampdown.core import inputs as inputs_mod
from clampdown.core.actions import Action, ActionLoadError, Registry, with_problem
from clampdown.core.actions import registry as default_registry
from clampdown.core.diagnostics import Diagnostic, InvalidFileError, Severity, did_you_mean
from clampdown.core.expressions import (
    Expression,
    ExpressionError,
    Reference,
    compile_expression,
    condition_offset,
    condition_problem,
    condition_source,
    contains_expression,
    error_offset,
    first_offset,
    reference_offset,
    status_offset,
    walk_strings,
)
from clampdown.core.lint_gates import deciders_from_run, indirect_gates
from clampdown.core.loader import Loaded, load, reading_once
from clampdown.core.models import Runbook
from clampdown.core.yamlsource import Path, Source

STEP_PARTS = ("outputs", "status")
RUN_FIELDS = ("id", "runbook", "started_at", "trigger", "drill")


def lint_paths(
    paths: Iterable[str | FsPath], actions: Registry | None = None, *, strict: bool = False
) -> list[Diagnostic]:
    """Lint files and folders (``*.yaml``/``*.yml`` inside, recursively)."""
    with reading_once():  # triggers and drills name the runbooks linted here: parse them once
        return _lint_paths(paths, actions or default_registry(), strict)


def _lint_paths(paths: Iterable[str | FsPath], actions: Registry, strict: bool) -> list[Diagnostic]:
    found: list[Diagnostic] = []
    names: dict[str, str] = {}
    files, scanned = _files(paths, found)
    found.extend(_lint_drills(paths, files))
    for file in files:
        if _is_drill(file):
            continue  # linted above, against its library
        try:
            loaded = load(file)
        except InvalidFileError as exc:
            from clampdown.core.trigger_files import is_triggerset, lint_triggerset

            if is_triggerset(file):  # kind: TriggerSet has rules of its own
                found.extend(lint_triggerset(file, file.parent if file in scanned else None))
                continue
            found.extend(exc.diagnostics)
            continue
        found.extend(check(loaded, actions))
        name = loaded.model.metadata.name
        if name in names:
            found.append(
                loaded.source.diagnostic(
                    ("metadata", "name"),
                    f"runbook name '{name}' is also used by {names[name]}",
                    "names must be unique in a library",
                    code="duplicate-name",
                )
            )
        names.setdefault(name, str(file))
        if file in scanned and file.stem != name:
            found.append(
                loaded.source.diagnostic(
                    ("metadata", "name"),
                    f"file name '{file.name}' does not match the runbook name '{name}'",
                    f"rename the file to '{name}{file.suffix}': 'clampdown run {name}' looks "
                    "runbooks up by file name",
                    code="file-name",
                    severity="warning",
                )
            )
    if strict:
        found = [_as_error(d) for d in found]
    return found


def _files(
    paths: Iterable[str | FsPath], found: list[Diagnostic]
) -> tuple[list[FsPath], set[FsPath]]:
    """Files to lint, and which of them came from scanning a folder (a library)."""
    files: list[FsPath] = []
    scanned: set[FsPath] = set()
    for p in map(FsPath, paths):
        if p.is_dir():
            found_here = sorted(  # drills are linted apart, against this library
                f
                for f in p.rglob("*")
                if f.suffix in (".yaml", ".yml") and "drills" not in f.relative_to(p).parts
            )
            files.extend(found_here)
            scanned.update(found_here)
        elif p.is_file():
            files.append(p)
        else:
            found.append(Diagnostic(str(p), 1, 1, "no such file or folder", "check the path", "io"))
    return files, scanned


def _is_drill(file: FsPath) -> bool:
    return "drills" in file.parts and file.suffix in (".yaml", ".yml")


def _lint_drills(paths: Iterable[str | FsPath], files: list[FsPath]) -> list[Diagnostic]:
    """Drill files, against the library they sit in: those in a scanned library's drills/
    folder, and drill files named on the command line (library: the folder above drills/)."""
    batches: list[tuple[list[FsPath], FsPath]] = []
    for p in map(FsPath, paths):
        if p.is_dir() and (p / "drills").is_dir():
            drills = sorted(f for f in (p / "drills").rglob("*") if f.suffix in (".yaml", ".yml"))
            batches.append((drills, p))
    batches += [([f], f.parent.parent) for f in files if _is_drill(f) and f.parent.name == "drills"]
    if not any(drills for drills, _ in batches):
        return []
    from clampdown.core.drill_lint import lint_drills  # only when there are drills to lint

    return [d for drills, library in batches for d in lint_drills(drills, library)]


def _as_error(d: Diagnostic) -> Diagnostic:
    if d.severity == "error":
        return d
    return Diagnostic(d.path, d.line, d.column, d.message, d.hint, d.code, "error")


def load_runbook(
    path: str | FsPath, actions: Registry | None = None
) -> tuple[Loaded, list[Diagnostic]]:
    """Load a runbook for plan or run: raise on any error, return the warnings."""
    loaded = load(path)
    found = check(loaded, actions or default_registry())
    errors = [d for d in found if d.severity == "error"]
    if errors:
        raise InvalidFileError(errors)
    return loaded, found


_Written = tuple[Path, str, bool]
"""An expression as lint checks it: the path of its value, the text compiled (for an
``if:``, ``condition_source`` of the value), and whether it is that condition. A plain
tuple: one is made for every expression of a library's lint (issue 15's figure)."""


def check(loaded: Loaded, actions: Registry) -> list[Diagnostic]:
    """Every semantic rule for one validated runbook."""
    return _RunbookLinter(loaded.model, loaded.source, actions).run()


def _written_as_expression(value: Any, loc: tuple[Any, ...]) -> bool:
    """Whether the place ``loc`` of a literal ``with:`` mapping (or a place above it) is
    written as an expression: ``approvers: {users: "{{ inputs.who }}"}`` is a list once
    rendered, so the strict check of the text must not call it "not a list"; its type is
    checked instead, at any depth (:func:`clampdown.core.type_checks.with_value_problems`)."""
    for part in loc:
        if (isinstance(value, dict) and part in value) or (
            isinstance(value, list) and isinstance(part, int) and 0 <= part < len(value)
        ):
            value = value[part]
        else:
            return False
        if contains_expression(value):
            return True
    return False


class _RunbookLinter:
    def __init__(self, runbook: Runbook, source: Source, actions: Registry) -> None:
        self.rb = runbook
        self.src = source
        self.actions = actions
        self.found: list[Diagnostic] = []
        self.index = {s.id: i for i, s in reversed(list(enumerate(runbook.steps)))}
        self.needs = {  # self-needs are reported on their own, not again as a cycle
            s.id: [n for n in s.needs if n in self.index and n != s.id] for s in runbook.steps
        }
        self.ancestors: dict[str, set[str]] = {}
        self.action_of: dict[str, type[Action]] = {}

    def error(
        self, loc: Path, message: str, hint: str = "", code: str = "invalid", **kw: Any
    ) -> None:
        self.found.append(self.src.diagnostic(loc, message, hint, code=code, **kw))

    def warn(self, loc: Path, message: str, hint: str = "", code: str = "warning") -> None:
        self.found.append(self.src.diagnostic(loc, message, hint, code=code, severity="warning"))

    def expression_error(
        self,
        at: _Written,
        offset: int,
        message: str,
        hint: str,
        code: str,
        severity: Severity = "error",
    ) -> None:
        """Report a problem where it is written: at character ``offset`` of the text of ``at``
        (the ``{{`` of the expression concerned), mapped to its line and column in the
        file; at the value's start when the mapping cannot be sure."""
        loc, text, condition = at
        value = self.src.value_at(loc)
        if condition and isinstance(value, str):
            offset, text = condition_offset(value, offset), value
        line, col = self.src.value_position(loc, offset, text)
        self.found.append(Diagnostic(self.src.path, line, col, message, hint, code, severity))

    def reference_error(
        self, at: _Written, ref: Reference, message: str, hint: str, code: str
    ) -> None:
        """A problem of the lookup ``ref``, reported at the expression that makes it."""
        self.expression_error(at, reference_offset(at[1], ref), message, hint, code)

    def run(self) -> list[Diagnostic]:
        self.check_inputs()
        self.check_ids_and_needs()
        cycle = graph.find_cycle(self.needs)
        if cycle:
            first = cycle[0]
            self.error(
                ("steps", self.index[first], "needs"),
                f"steps form a cycle: {' -> '.join(cycle)}",
                "remove one of these needs so the steps can be ordered",
                "cycle",
            )
        else:
            self.ancestors = graph.upstream(self.needs)
        self.check_actions()
        self.check_expressions()
        self.check_gates()
        self.found.extend(indirect_gates(self.rb, self.src, self.action_of, self.ancestors))
        self.found.extend(deciders_from_run(self.rb, self.src, self.action_of))
        # one mistake in defaults: is inherited by many steps but reported once
        return sorted(set(self.found), key=lambda d: (d.line, d.column, d.message))

    def check_inputs(self) -> None:
        for name, spec in self.rb.inputs.items():
            if spec.default is None:
                continue
            try:
                inputs_mod.check_value(name, spec, spec.default, from_text=False)
            except inputs_mod.InputProblem as exc:
                self.error(
                    ("inputs", name, "default"),
                    f"default of input '{name}': {exc}",
                    "make the default satisfy the input's own type and constraints",
                    "input-default",
                )
            if spec.required:
                self.warn(
                    ("inputs", name, "required"),
                    f"input '{name}' is required and has a default, so it is never missing "
                    "and 'required' has no effect",
                    "drop 'required: true', or drop the default to make callers give it",
                    "input-default",
                )

    def check_ids_and_needs(self) -> None:
        seen: dict[str, int] = {}
        for i, step in enumerate(self.rb.steps):
            if step.id in seen:
                first = self.src.position(("steps", seen[step.id], "id"))[0]
                self.error(
                    ("steps", i, "id"),
                    f"duplicate step id '{step.id}' (first at line {first})",
                    "step ids must be unique in a runbook",
                    "duplicate-id",
                )
            seen.setdefault(step.id, i)
            for j, need in enumerate(step.needs):
                if need == step.id:
                    self.error(
                        ("steps", i, "needs", j),
                        f"step '{step.id}' needs itself",
                        "remove it from its own needs",
                        "needs",
                    )
                elif need not in self.index:
                    hint = did_you_mean(need, self.index) or "needs lists ids of other steps"
                    self.error(
                        ("steps", i, "needs", j), f"needs unknown step '{need}'", hint, "needs"
                    )

    def check_actions(self) -> None:
        for i, step in enumerate(self.rb.steps):
            if step.uses not in self.actions:
                hint = (
                    did_you_mean(step.uses, self.actions.names())
                    or "run 'clampdown actions' to list the actions"
                )
                self.error(
                    ("steps", i, "uses"), f"unknown action '{step.uses}'", hint, "unknown-action"
                )
                continue
            try:
                action = self.actions.get(step.uses)
            except ActionLoadError as exc:
                self.error(("steps", i, "uses"), exc.message, exc.hint, "unknown-action")
                continue
            self.action_of[step.id] = action
            self.check_with(i, step.with_, action.Input)

    def check_with(self, i: int, with_: dict[str, Any], model: type[BaseModel]) -> None:
        """Validate literal ``with`` values strictly (``"yes"`` is not a boolean, ``"5"`` not
        a number: what the JSON Schema says); expressions are checked by their types."""
        dynamic = {k for k, v in with_.items() if contains_expression(v)}
        literal = {k: v for k, v in with_.items() if k not in dynamic}
        fields = [f.alias or n for n, f in model.model_fields.items()]
        if model.model_config.get("extra") == "forbid":
            for key in sorted(dynamic - set(fields) - set(model.model_fields)):
                hint = did_you_mean(key, fields) or f"this action takes: {', '.join(fields)}"
                at: Path = ("steps", i, "with", key)
                self.error(at, f"unknown with field '{key}'", hint, "with", key=True)
        try:  # through its view unless a literal meets a pattern (core.model_views)
            model_views.checker(model, literal).model_validate(literal, strict=True)
        except ValidationError as exc:
            for err in exc.errors(include_url=False):
                loc = tuple(err["loc"])
                key = str(loc[0]) if loc else ""
                if key in dynamic or (not loc and dynamic) or _written_as_expression(literal, loc):
                    continue  # rendered at run time: checked by its type (check_expressions)
                where: Path = ("steps", i, "with", *loc)
                if err["type"] == "extra_forbidden":
                    hint = did_you_mean(key, fields) or (
                        f"this action takes: {', '.join(fields)}"
                        if fields
                        else "this action takes no with: fields"
                    )
                    self.error(where, f"unknown with field '{key}'", hint, "with", key=True)
                elif err["type"] == "missing":
                    self.error(
                        ("steps", i, "with")
                        if "with" in self.src.data["steps"][i]
                        else ("steps", i, "uses"),
                        f"missing with field '{key}'",
                        f"add '{key}:' under with:",
                        "with",
                    )
                else:
                    self.error(where, str(with_problem(err, err.get("input"))), "", "with")

    def check_expressions(self) -> None:
        for i, step in enumerate(self.rb.steps):
            scope = types.Scope(self.rb.inputs, self.output_type, type_checks.given_by(step.if_))
            for loc, text in walk_strings(step.with_, ("steps", i, "with")):
                expr = self.check_expression(loc, text, step.id)
                if expr is not None and not expr.uses_status_function:
                    self.check_type((loc, text, False), step.id, scope)
            for name in ("region", "account"):  # the step's own, or the one from defaults
                value = self.rb.setting(step, name, None)
                if contains_expression(value):
                    loc = (
                        ("steps", i, name)
                        if getattr(step, name) is not None
                        else ("defaults", name)
                    )
                    self.check_expression(loc, value, step.id)
            if step.if_ is not None:
                self.check_condition(i, step.id, step.if_, scope)
        for loc, text in walk_strings(self.rb.outputs, ("outputs",)):
            self.check_expression(loc, text, None)

    def check_condition(
        self, i: int, step_id: str, condition: str | bool, scope: types.Scope
    ) -> None:
        """``if:`` must be one expression that decides; text around it is always true."""
        loc: Path = ("steps", i, "if")
        source = condition_source(condition)
        if self.check_expression(loc, source, step_id, True) is None:
            return
        at: _Written = (loc, source, True)
        trap = condition_problem(condition)
        if trap is not None:
            self.expression_error(at, first_offset(source), trap.message, trap.hint, "if-text")
            return
        self.check_operations(at, scope)
        problem = type_checks.check_condition(types.infer(source, scope))
        if problem is not None:
            self.expression_error(at, first_offset(source), problem.message, problem.hint, "type")

    def check_type(self, at: _Written, step_id: str, scope: types.Scope) -> None:
        """The expression's static type against the action field it feeds."""
        action = self.action_of.get(step_id)
        if action is None:
            return
        loc, text, _ = at
        self.check_operations(at, scope)
        found = types.infer(text, scope)
        for problem in type_checks.with_value_problems(action.Input, loc[3:], found):
            error = problem.severity == "error"
            self.expression_error(
                at,
                first_offset(text),
                problem.message,
                problem.hint,
                "type" if error else "type-unknown",
                "error" if error else "warning",
            )

    def check_operations(self, at: _Written, scope: types.Scope) -> None:
        """Operations that fail for every value they may be given (``-`` of a string):
        the step would fail there when it runs."""
        text = at[1]
        if not types.may_fail(text):
            return
        for part in compile_expression(text).parts:
            for failure in types.certain_failures(part, scope):
                self.expression_error(
                    at,
                    first_offset(text),
                    failure,
                    "the step would fail here when it runs: convert the value first, or read "
                    "a value that has the kind the operation needs",
                    "type",
                )

    def output_type(self, step_id: str, name: str) -> types.ExprType | None:
        """``steps.<step_id>.outputs.<name>`` (None: the step's action is unknown)."""
        action = self.action_of.get(step_id)
        if action is None:
            return None
        return types.step_output_type(action.Output, self.rb.step(step_id).with_, step_id, name)

    def check_expression(
        self, loc: Path, text: str, step_id: str | None, condition: bool = False
    ) -> Expression | None:
        at: _Written = (loc, text, condition)
        try:
            expr = compile_expression(text)
        except ExpressionError as exc:
            self.expression_error(at, error_offset(text, exc), exc.message, exc.hint, "expression")
            return None
        if expr.uses_status_function and not condition:
            self.expression_error(
                at,
                status_offset(text),
                "always(), success() and failure() belong in if:",
                "use them only in a step's if: condition",
                "expression",
            )
        for ref in expr.references:
            if ref.root == "inputs":
                self.check_input_ref(at, ref)
            elif ref.root == "steps":
                self.check_step_ref(at, ref, step_id)
            elif ref.root == "run" and ref.name not in RUN_FIELDS:
                self.reference_error(
                    at,
                    ref,
                    f"run has no field '{ref.name}'",
                    did_you_mean(str(ref.name), RUN_FIELDS) or f"run has: {', '.join(RUN_FIELDS)}",
                    "reference",
                )
            elif ref.root == "alert":
                self.reference_error(
                    at,
                    ref,
                    "'alert' is only defined in triggers",
                    "pass the alert's facts to the runbook as inputs in triggers.yaml",
                    "reference",
                )
        return expr

    def check_input_ref(self, at: _Written, ref: Reference) -> None:
        name = ref.name
        if name is not None and name not in self.rb.inputs:
            hint = did_you_mean(name, self.rb.inputs) or "declare it under inputs:"
            self.reference_error(at, ref, f"input '{name}' is not declared", hint, "reference")

    def check_step_ref(self, at: _Written, ref: Reference, step_id: str | None) -> None:
        target = ref.name
        if target is None:
            return
        if target not in self.index:
            hint = did_you_mean(target, self.index) or "refer to the id of a step"
            self.reference_error(
                at, ref, f"steps.{target} refers to an unknown step", hint, "reference"
            )
            return
        if step_id is not None and self.ancestors and target not in self.ancestors.get(step_id, ()):
            what = "itself" if target == step_id else f"steps.{target}, which is not upstream"
            self.reference_error(
                at,
                ref,
                f"step '{step_id}' refers to {what}",
                f"add '{target}' to the needs of '{step_id}' (directly or through another step)"
                if target != step_id
                else "a step cannot read its own outputs",
                "reference",
            )
            return
        if ref.part is not None and ref.part not in STEP_PARTS:
            self.reference_error(
                at,
                ref,
                f"steps.{target}.{ref.part} does not exist",
                did_you_mean(ref.part, STEP_PARTS) or "use steps.<id>.outputs or steps.<id>.status",
                "reference",
            )
            return
        self.check_gated_ref(at, ref, step_id)
        action = self.action_of.get(target)
        if ref.part == "outputs" and ref.field is not None and action is not None:
            declared = action.declared_outputs(self.rb.step(target).with_)
            if declared is not None and ref.field not in declared:
                hint = did_you_mean(ref.field, declared) or (
                    f"{action.name} outputs: {', '.join(sorted(declared))}"
                    if declared
                    else f"{action.name} has no outputs"
                )
                where = "output" if step_id is None else "expression"
                self.reference_error(
                    at,
                    ref,
                    f"steps.{target}.outputs.{ref.field} can never be set: "
                    f"{action.name} has no output '{ref.field}'",
                    hint,
                    f"unreachable-{where}",
                )

    def check_gated_ref(self, at: _Written, ref: Reference, step_id: str | None) -> None:
        """What an approver approves is what runs: a gated step's with: may only use
        values known when its approval asks (inputs, run, steps upstream of the gate)."""
        target = ref.name
        if step_id is None or target is None or tuple(at[0][2:3]) != ("with",):
            return
        step = self.rb.step(step_id)
        for gate in step.needs:
            action = self.action_of.get(gate)
            if action is None or not action.approval_gate:
                continue
            if target not in self.ancestors.get(gate, set()):
                self.reference_error(
                    at,
                    ref,
                    f"gated step '{step_id}' uses steps.{target}, which is not known yet "
                    f"when '{gate}' asks for approval",
                    f"add '{target}' to the needs of '{gate}' so the approver sees the value"
                    if target != gate
                    else "a gated step's parameters cannot depend on its own approval",
                    "gated-parameters",
                )

    def check_gates(self) -> None:
        gates = {sid for sid, action in self.action_of.items() if action.approval_gate}
        for i, step in enumerate(self.rb.steps):
            action = self.action_of.get(step.id)
            if action is None or not action.destructive:
                continue
            if not (self.ancestors.get(step.id, set()) & gates) and not step.preapproved:
                self.warn(
                    ("steps", i, "uses"),
                    f"destructive action '{step.uses}' has no approval gate upstream",
                    "add an approval.request step and list it in needs, or say who "
                    "pre-authorised it in preapproved: (an error with --strict)",
                    "ungated-destructive",
                )
