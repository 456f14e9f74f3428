"""Whether a value of a known type fits the action field it feeds, and whether an ``if:``
decides: the checks lint runs on the types :mod:`clampdown.core.expression_types` infers.

Each check gives :class:`Problem` values: an error when the mismatch is certain (a string
into a list field, a list that may be empty into a field that needs one item, a number
into a string field, an optional input with no default into a field that takes no none),
a warning when it cannot be known before the run, saying so.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from jinja2 import nodes
from pydantic import BaseModel, TypeAdapter, ValidationError

from clampdown.core.actions import with_problem
from clampdown.core.expression_types import (
    ExprType,
    expression_node,
    model_schema,
    reference_path,
    schema_type,
)
from clampdown.core.expressions import condition_source


@dataclass(frozen=True)
class FieldType:
    """What an action's input field takes, from the model's JSON Schema."""

    name: str
    accepts: ExprType
    min_items: int = 0
    min_length: int = 0
    schema: Mapping[str, Any] = field(default_factory=dict)
    defs: Mapping[str, Any] = field(default_factory=dict)  # the model's $defs, for $ref

    def describe(self) -> str:
        text = self.accepts.describe()
        if self.min_items:
            text += f" with at least {self.min_items} item{'s' if self.min_items > 1 else ''}"
        if self.accepts.pattern:
            text += f" matching {self.accepts.pattern}"
        return text


def field_type(model: type[BaseModel], name: str) -> FieldType | None:
    """The field ``name`` (by alias) of an action input model (None: no such field)."""
    schema = model_schema(model)
    return _property(schema, schema.get("$defs", {}), name, name)


def _property(
    schema: Mapping[str, Any], defs: Mapping[str, Any], name: str, label: str
) -> FieldType | None:
    """The property ``name`` of an object ``schema`` (any of its variants that has it),
    as the field ``label``; None when no variant declares it."""
    props = [
        s["properties"][name] for s in _flatten(schema, defs) if name in s.get("properties", {})
    ]
    if not props:
        return None
    prop: Mapping[str, Any] = props[0] if len(props) == 1 else {"anyOf": props}
    accepts = schema_type(prop, defs, f"field '{label}'")
    flat = _flatten(prop, defs)
    return FieldType(
        label,
        accepts,
        min_items=max((s.get("minItems", 0) for s in flat), default=0),
        min_length=max((s.get("minLength", 0) for s in flat), default=0),
        schema=prop,
        defs=defs,
    )


def item_field(parent: FieldType) -> FieldType | None:
    """The field type of one item of a list field."""
    items = parent.accepts.items
    if items is None:
        return None
    variants = [
        v
        for s in _flatten(parent.schema, parent.defs)
        if "items" in s
        for v in _flatten(s["items"], parent.defs)
    ]
    return FieldType(
        f"{parent.name}[]",
        items,
        min_length=max((v.get("minLength", 0) for v in variants), default=0),
        schema={"anyOf": variants},
        defs=parent.defs,
    )


def with_value_problems(
    model: type[BaseModel], where: tuple[str | int, ...], value: ExprType
) -> list[Problem]:
    """Problems of ``value`` written at ``with.<where>`` of a step using ``model``: a
    field, an item of a list (an index), a key of a mapping field (such as
    ``approvers.users``), at any depth. A place the model's schema does not describe
    (a free-form mapping) gives none: the step checks it when it runs."""
    if not where:
        return []
    target = field_type(model, str(where[0]))
    for part in where[1:]:
        if target is None:
            return []
        if isinstance(part, int):
            target = item_field(target)
        else:
            target = _property(target.schema, target.defs, part, f"{target.name}.{part}")
    if target is None:
        return []
    problems = check_field(value, target)
    if len(where) == 1 and not any(p.severity == "error" for p in problems):
        problems.extend(_refused_by_validator(model, str(where[0]), value))
    return problems


def _refused_by_validator(model: type[BaseModel], name: str, value: ExprType) -> list[Problem]:
    """A value lint knows (a constant, an input's enum, a step status) that the field's own
    validator refuses (``role_arn``: an IAM role ARN), as the run would: a literal in its
    place is refused by lint, so the same text written as ``{{ 'info' }}`` or coming from an
    enum is too. Only fields with a validator of their own: their JSON Schema says
    nothing, and other fields need no model built (lint's cost)."""
    if value.enum is None:
        return []
    checked = {
        f for d in model.__pydantic_decorators__.field_validators.values() for f in d.info.fields
    }
    fields = [n for n, f in model.model_fields.items() if name in (n, f.alias)]
    if not fields or fields[0] not in checked:
        return []
    for v in value.enum:
        if v is None:
            continue  # none is checked on its own (check_field)
        try:
            model.model_validate({name: v})
        except ValidationError as exc:
            refused = [e for e in exc.errors(include_url=False) if tuple(e["loc"][:1]) == (name,)]
            if refused:
                rule = with_problem(refused[0], v).rule
                return [
                    Problem(
                        "error",
                        f"{value.origin} may be {v!r}, which field '{name}' refuses: {rule}",
                        "feed the field a value it takes"
                        + (
                            ", or change the input's enum"
                            if value.origin.startswith("input '")
                            else ""
                        ),
                    )
                ]
    return []


def _flatten(schema: Mapping[str, Any], defs: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The variants of ``schema``: its ``anyOf`` members, each ``$ref`` read from ``defs``."""
    if "$ref" in schema:
        return _flatten(defs.get(str(schema["$ref"]).rsplit("/", 1)[-1], {}), defs)
    if "anyOf" in schema:
        return [s for sub in schema["anyOf"] for s in _flatten(sub, defs)]
    return [schema]


@dataclass(frozen=True)
class Problem:
    """A mismatch between an expression and its field: an error, or a warning when the
    answer cannot be known before the run."""

    severity: str
    message: str
    hint: str


_LAX = {"number": {"integer", "number"}}  # an integer goes where a number is taken


def check_field(value: ExprType, target: FieldType) -> list[Problem]:
    """Whether a value of type ``value`` can feed ``target``; one problem at most per rule."""
    accepted = target.accepts.kinds
    if accepted is None:
        return []
    if value.kinds is None:
        if (
            accepted <= {"string", "null"}
            and not target.accepts.pattern
            and not target.accepts.enum
        ):
            return []  # any text goes; the engine checks the rest when the step runs
        return [
            Problem(
                "warning",
                f"{value.origin} feeds field '{target.name}' ({target.describe()}), "
                f"but {value.why or 'its type is not known before the run'}",
                "it is checked when the step runs; cannot be checked statically",
            )
        ]
    takes = set(accepted) | {k for a in accepted for k in _LAX.get(a, ())}
    wrong = set(value.kinds) - takes - {"null"}
    problems: list[Problem] = []
    if wrong:
        problems.append(_wrong_kind(value, target, wrong == set(value.kinds) - {"null"}))
    if "null" in value.kinds and "null" not in accepted:
        problems.append(_maybe_none(value, target))
    if not wrong:
        problems.extend(_constraints(value, target))
        problems.extend(_item_problems(value, target))
    return problems


def _item_problems(value: ExprType, target: FieldType) -> list[Problem]:
    """The items of a list lint knows (``{{ [1, 2] }}``, ``{{ [inputs.a, inputs.b] }}``)
    against the item type of a list field: a list of integers into ``buckets`` (strings)
    is refused by the run item by item. Errors only: a warning about an item repeats
    the one its value gets where it is written."""
    if (
        value.items is None
        or value.kinds != {"array"}
        or "array" not in (target.accepts.kinds or ())
    ):
        return []
    item = item_field(target)
    if item is None:
        return []
    return [
        Problem(p.severity, f"an item of {value.origin}: {p.message}", p.hint)
        for p in check_field(value.items, item)
        if p.severity == "error"
    ]


def _wrong_kind(value: ExprType, target: FieldType, always: bool) -> Problem:
    got = value.describe()
    message = (
        f"{value.origin} is {got}, but field '{target.name}' takes {target.describe()}"
        if always
        else f"{value.origin} may be {got}; field '{target.name}' takes {target.describe()}"
    )
    return Problem("error", message, _kind_fix(value, target))


def _kind_fix(value: ExprType, target: FieldType) -> str:
    accepted = target.accepts.kinds or frozenset()
    kinds = value.kinds or frozenset()
    subject = value.origin if value.origin.startswith(("input", "steps")) else "the value"
    if "array" in accepted and "string" in kinds:
        inner = value.origin.removeprefix("input '").removesuffix("'")
        return (
            f'write a list: ["{{{{ inputs.{inner} }}}}"], or declare the input as type: array'
            if value.origin.startswith("input")
            else 'write a list around it: ["{{ … }}"]'
        )
    if "string" in accepted and kinds & {"integer", "number", "boolean"}:
        return f"declare {subject} as type: string, or convert it: {{{{ … | string }}}}"
    if accepted & {"integer", "number"} and "string" in kinds:
        return f"declare {subject} as type: integer (or number), or convert it: {{{{ … | int }}}}"
    if "boolean" in accepted:
        return f"declare {subject} as type: boolean, or compare: {{{{ {_ref(subject)} == 'yes' }}}}"
    return f"give field '{target.name}' {target.describe()}"


def _maybe_none(value: ExprType, target: FieldType) -> Problem:
    if value.none_why:
        name = value.origin.removeprefix("input '").split("'")[0]
        fix = (
            "write | default('…', true): without true, default() replaces only undefined values"
            if "default()" in value.none_why
            else "give the input a default, make it required: true, or run the step only "
            f'when it is given: if: "{{{{ inputs.{name} }}}}"'
        )
        return Problem(
            "error",
            f"{value.none_why}: when it is not given, field '{target.name}' gets none, "
            "which it does not take",
            fix,
        )
    return Problem(
        "warning",
        f"{value.origin} may be none; field '{target.name}' does not take none",
        "add | default(…, true) or an if: that tests the value; otherwise the step "
        "fails when it is none",
    )


def _constraints(value: ExprType, target: FieldType) -> list[Problem]:
    problems: list[Problem] = []
    if value.may_be_empty and (target.min_items or target.min_length):
        what = "item" if target.min_items else "character"
        subject = value.origin
        guard = (
            f'if: "{{{{ inputs.{subject[7:-1]} }}}}"' if subject.startswith("input '") else "an if:"
        )
        fix = f"run the step only when it has one: {guard}" + (
            ", or declare min_items: 1 on the input" if subject.startswith("input '") else ""
        )
        problems.append(
            Problem(
                "error",
                f"{value.may_be_empty}, but field '{target.name}' needs at least one {what}",
                fix,
            )
        )
    pattern = target.accepts.pattern
    if pattern and value.enum is not None:
        bad = [v for v in value.enum if isinstance(v, str) and not re.search(pattern, v)]
        if bad:
            problems.append(
                Problem(
                    "error",
                    f"{value.origin} may be {bad[0]!r}, which does not match field "
                    f"'{target.name}''s pattern {pattern}",
                    "change the input's enum, or feed a field that takes it"
                    if value.origin.startswith("input '")
                    else "feed a field that takes it",
                )
            )
    elif pattern and value.pattern is None and "string" in (value.kinds or ()):
        problems.append(
            Problem(
                "warning",
                f"{value.origin} feeds field '{target.name}', which must match {pattern}; "
                "whether it does cannot be known statically",
                f"give {value.origin} a pattern (checked before the run starts)"
                if value.origin.startswith("input")
                else "it is checked when the step runs",
            )
        )
    problems.extend(_shape_problems(value, target))
    allowed = target.accepts.enum
    if allowed is not None and value.enum is None:
        choices = ", ".join(str(v) for v in allowed if v is not None)
        problems.append(
            Problem(
                "warning",
                f"{value.origin} feeds field '{target.name}', which takes one of: {choices}; "
                "whether it does cannot be known statically",
                f"give {value.origin} an enum of these values (checked before the run starts)"
                if value.origin.startswith("input")
                else "it is checked when the step runs",
            )
        )
    if allowed is not None and value.enum is not None:
        bad = [v for v in value.enum if v is not None and v not in allowed]  # none: above
        if bad:
            problems.append(
                Problem(
                    "error",
                    f"{value.origin} may be {bad[0]!r}; field '{target.name}' takes one of: "
                    + ", ".join(map(str, allowed)),
                    "change the input's enum to these values",
                )
            )
    return problems


_FORMATS: dict[str, tuple[str, type]] = {
    "date-time": ("an ISO 8601 date and time", datetime),
    "date": ("an ISO 8601 date", date),
}


def _shape_problems(value: ExprType, target: FieldType) -> list[Problem]:
    """What the schema asks beyond a kind: a string's format (a ``datetime`` field takes
    only text that reads as one) and a mapping's keys (a field that is a model of its own,
    such as ``api_gateway``): the run refuses values that break them, so lint says so when
    it cannot know (a warning), or when a value it knows breaks them (an error)."""
    variants = _flatten(target.schema, target.defs)
    problems: list[Problem] = []
    formats = {v["format"] for v in variants if v.get("type") == "string" and "format" in v}
    for name in sorted(formats & set(_FORMATS)):
        what, kind = _FORMATS[name]
        if value.enum is None and "string" in (value.kinds or ()):
            problems.append(
                Problem(
                    "warning",
                    f"{value.origin} feeds field '{target.name}', which takes {what}; "
                    "whether it is one cannot be known statically",
                    "it is checked when the step runs",
                )
            )
        for v in value.enum or ():
            if isinstance(v, str) and not _reads_as(kind, v):
                problems.append(
                    Problem(
                        "error",
                        f"{value.origin} may be {v!r}, which is not {what} (field '{target.name}')",
                        "give a date and time such as 2026-12-06T07:00:00Z",
                    )
                )
                break
    keyed = [v for v in variants if v.get("type") == "object" and v.get("properties")]
    if keyed and "object" in (value.kinds or ()):
        keys = ", ".join(keyed[0]["properties"])
        problems.append(
            Problem(
                "warning",
                f"{value.origin} is a mapping: whether its keys fit field '{target.name}' "
                f"({keys}) cannot be known statically",
                f"write the mapping under {target.name}: with a value for each key, so lint "
                "checks each one; otherwise it is checked when the step runs",
            )
        )
    return problems


def _reads_as(kind: type, text: str) -> bool:
    """Whether the run (pydantic) takes ``text`` as a ``kind`` (datetime or date)."""
    try:
        TypeAdapter(kind).validate_python(text)
    except ValidationError:
        return False
    return True


def check_condition(value: ExprType) -> Problem | None:
    """An ``if:`` must decide: text that reads as false (an enum of 'false', 'no') would
    count as true."""
    falsy = [
        v
        for v in value.enum or ()
        if isinstance(v, str) and v.strip().lower() in ("false", "no", "off", "0", "none", "null")
    ]
    if falsy:
        return Problem(
            "error",
            f"if: reads {value.origin}, which may be the text {falsy[0]!r}: non-empty text "
            "counts as true",
            f"compare explicitly: {{{{ {_ref(value.origin)} == 'yes' }}}}, or declare the input "
            "as type: boolean",
        )
    return None


def _ref(origin: str) -> str:
    if origin.startswith("input '"):
        return f"inputs.{origin[7:-1]}"
    return origin


# --- what an if: proves ----------------------------------------------------------------------


def given_by(condition: str | bool | None) -> dict[tuple[str, ...], str]:
    """References a step's ``if:`` proves truthy (or not none) whenever the step runs.

    Only the conjuncts of a top-level ``and`` count: ``{{ inputs.a and inputs.b }}``
    proves both, ``{{ inputs.a or inputs.b }}`` proves neither.
    """
    if condition is None or isinstance(condition, bool):
        return {}
    try:
        node = expression_node(condition_source(condition))
    except Exception:  # a bad if: is reported on its own
        return {}
    found: dict[tuple[str, ...], str] = {}
    for part in _conjuncts(node) if node is not None else []:
        path, how = _proves(part)
        if path is not None:
            found[path] = how
    return found


def _conjuncts(node: nodes.Node) -> Iterable[nodes.Node]:
    if isinstance(node, nodes.And):
        yield from _conjuncts(node.left)
        yield from _conjuncts(node.right)
    else:
        yield node


def _proves(node: nodes.Node) -> tuple[tuple[str, ...] | None, str]:
    """``x`` / ``x | length > 0`` / ``x | length >= 1``: x truthy; ``x is not none``: not none."""
    if isinstance(node, nodes.Getattr | nodes.Getitem):
        return reference_path(node), "truthy"
    if isinstance(node, nodes.Not) and isinstance(node.node, nodes.Test):
        test = node.node
        if test.name == "none":
            return reference_path(test.node), "not none"
    if isinstance(node, nodes.Compare) and len(node.ops) == 1:
        left, op = node.expr, node.ops[0]
        if (
            isinstance(left, nodes.Filter)
            and left.name in ("length", "count")
            and isinstance(op.expr, nodes.Const)
            and (op.op, op.expr.value) in (("gt", 0), ("gteq", 1), ("ne", 0))
            and left.node is not None
        ):
            return reference_path(left.node), "truthy"
        if op.op == "ne" and isinstance(op.expr, nodes.Const) and op.expr.value in ("", None):
            return reference_path(left), "not none" if op.expr.value is None else "truthy"
    return None, ""
