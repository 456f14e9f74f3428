"""Static types for runbook expressions: what a ``{{ … }}`` gives, known before the run.

Lint calls :func:`infer` on every expression in a step's ``with`` and ``if:``;
:mod:`clampdown.core.type_checks` checks the result against the action's input model.

Types are described as JSON Schema kinds (``string``, ``integer``, ``number``,
``boolean``, ``array``, ``object``, ``null``) because both ends speak it: runbook
inputs declare ``type: string`` and friends, and an action's input and output
models give their fields through pydantic's JSON Schema. They come from:

* the inputs' declarations (type, ``default``, ``enum``, ``pattern``, ``min_items``,
  whether the input may be missing);
* the output models of the actions upstream (``steps.X.outputs.Y``);
* literals, operators and filters (``| length`` is an integer, ``| join`` a string,
  ``| default(x)`` adds x's type…);
* the step's own ``if:`` (:func:`clampdown.core.type_checks.given_by`):
  ``if: "{{ inputs.x }}"`` means ``inputs.x`` is given and not empty wherever the
  step uses it (and so do ``| length > 0`` and ``is not none``).

What cannot be known before the run (an output declared as ``Any``, a value read
with a computed key) is :data:`UNKNOWN`; lint then warns and says so instead of
guessing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from jinja2 import nodes
from pydantic import BaseModel

from clampdown.core import model_views
from clampdown.core.expressions import compile_expression
from clampdown.core.models import InputSpec

KINDS = ("string", "integer", "number", "boolean", "array", "object", "null")
_NAMES = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "array": "a list",
    "object": "a mapping",
    "null": "none",
}


@dataclass(frozen=True)
class ExprType:
    """What an expression gives: its possible kinds and what is known about its value.

    ``kinds`` None: not known before the run (``why`` says why). ``origin`` names
    where the value comes from, for messages (``input 'bucket'``).
    """

    kinds: frozenset[str] | None
    origin: str = "the expression"
    why: str = ""
    may_be_empty: str = ""  # why a list or string may be empty ("" : it cannot be)
    pattern: str | None = None
    enum: tuple[Any, ...] | None = None
    items: ExprType | None = None
    none_why: str = ""  # why it is none at times, when that is certain ("" : not known)

    @property
    def known(self) -> bool:
        return self.kinds is not None

    def describe(self) -> str:
        if self.kinds is None:
            return "a value of unknown type"
        return " or ".join(_NAMES[k] for k in KINDS if k in self.kinds)


UNKNOWN = ExprType(None, why="its type is not known before the run")


def _of(*kinds: str, origin: str = "the expression", **kw: Any) -> ExprType:
    return ExprType(frozenset(kinds), origin, **kw)


def union(a: ExprType, b: ExprType) -> ExprType:
    """A value that is either ``a`` or ``b``.

    What one side knows about its strings (``pattern``), its lists (``items``) or its
    values (``enum``) still holds when the other side cannot be a string, a list or
    anything but none: an optional field ``str | None`` with a pattern takes strings
    matching it, and ``list[str] | None`` lists of strings (without this rule the
    ``null`` variant erased both, and lint let any text into such a field)."""
    if a.kinds is None or b.kinds is None:
        return a if a.kinds is None else b
    a_values, b_values = _values(a), _values(b)
    enum = (*a_values, *b_values) if a_values is not None and b_values is not None else None
    return ExprType(
        a.kinds | b.kinds,
        a.origin if a.origin == b.origin else "the expression",
        may_be_empty=a.may_be_empty or b.may_be_empty,
        pattern=_kept(a.pattern, b.pattern, a.kinds, b.kinds, {"string"}),
        enum=enum,
        items=_kept(a.items, b.items, a.kinds, b.kinds, {"array", "object"}),
        none_why=a.none_why or b.none_why,
    )


def _values(t: ExprType) -> tuple[Any, ...] | None:
    """Every value ``t`` may have (None: not known); a type that is only none has one."""
    if t.enum is None and t.kinds == frozenset({"null"}):
        return (None,)
    return t.enum


def _kept(a: Any, b: Any, a_kinds: frozenset[str], b_kinds: frozenset[str], of: set[str]) -> Any:
    """A fact about the values of the kinds ``of`` (a string's pattern, a list's items) in
    a union: each side's, as long as the other side has no such values."""
    if a == b:
        return a
    if not b_kinds & of:
        return a
    return b if not a_kinds & of else None


def _given(t: ExprType) -> ExprType:
    """``t`` known to be truthy: not none, not empty."""
    if t.kinds is None:
        return t
    kinds = t.kinds - {"null"} or t.kinds
    return replace(t, kinds=kinds, may_be_empty="", none_why="")


def _not_none(t: ExprType) -> ExprType:
    if t.kinds is None:
        return t
    return replace(t, kinds=t.kinds - {"null"} or t.kinds, none_why="")


# --- where values come from ------------------------------------------------------------------


def input_type(name: str, spec: InputSpec) -> ExprType:
    """The type of ``inputs.<name>`` from its declaration."""
    origin = f"input '{name}'"
    kinds = {spec.type}
    none_why = ""
    if spec.default is None and not spec.required:
        kinds.add("null")  # not given: the value is none
        none_why = f"{origin} is optional and has no default"
    empty = ""
    if spec.type == "array" and not (spec.min_items or 0) >= 1:
        empty = (
            f"{origin} defaults to []"
            if spec.default == []
            else f"{origin} may be given as [] (it has no min_items)"
        )
    elif spec.type == "string" and (spec.default == "" or (spec.enum and "" in spec.enum)):
        empty = f"{origin} may be ''"
    enum = tuple(spec.enum) if spec.enum is not None else None
    return ExprType(
        frozenset(kinds),
        origin,
        may_be_empty=empty,
        pattern=spec.pattern,
        enum=enum,
        none_why=none_why,
    )


def schema_type(schema: Mapping[str, Any], defs: Mapping[str, Any], origin: str) -> ExprType:
    """The type of a value described by a JSON Schema (a pydantic model's field)."""
    if "$ref" in schema:
        schema = defs.get(str(schema["$ref"]).rsplit("/", 1)[-1], {})
    if "anyOf" in schema or "oneOf" in schema:
        parts = [schema_type(s, defs, origin) for s in schema.get("anyOf", schema.get("oneOf"))]
        result = parts[0]
        for part in parts[1:]:
            result = union(result, part)
        return replace(result, origin=origin)
    if "const" in schema:
        value = schema["const"]
        return ExprType(frozenset({kind_of(value)}), origin, enum=(value,))
    kind = schema.get("type")
    if "enum" in schema and kind is None:
        kind = kind_of(schema["enum"][0]) if schema["enum"] else None
    if kind is None:
        return replace(UNKNOWN, origin=origin, why=f"{origin} is declared without a type")
    kinds = frozenset(kind if isinstance(kind, list) else [kind])
    items = schema_type(schema["items"], defs, origin) if "items" in schema else None
    empty = ""
    if "array" in kinds and not schema.get("minItems"):
        empty = f"{origin} may be an empty list"
    return ExprType(
        kinds,
        origin,
        may_be_empty=empty,
        pattern=schema.get("pattern"),
        enum=tuple(schema["enum"]) if "enum" in schema else None,
        items=items,
    )


def kind_of(value: Any) -> str:
    """The JSON Schema kind of a Python value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list | tuple) else "object"


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A model's JSON Schema, built once per model and only when lint first needs it
    (:func:`clampdown.core.model_views.schema`: without compiling its patterns)."""
    return model_views.schema(model)


def output_type(model: type[BaseModel], step_id: str, name: str) -> ExprType:
    """The type of ``steps.<step_id>.outputs.<name>`` from the action's output model."""
    schema = model_schema(model)
    prop = schema.get("properties", {}).get(name)
    origin = f"steps.{step_id}.outputs.{name}"
    if prop is None:
        return replace(UNKNOWN, origin=origin, why=f"{origin} is not a declared output")
    return schema_type(prop, schema.get("$defs", {}), origin)


def step_output_type(
    model: type[BaseModel], with_: Mapping[str, Any], step_id: str, name: str
) -> ExprType | None:
    """``steps.<step_id>.outputs.<name>`` from the action's output model, or from the
    literal ``with:`` value a step publishes under that name (``core.set_output``)."""
    if name in model.model_fields:
        return output_type(model, step_id, name)
    value = with_.get(name)
    if name in with_ and not (isinstance(value, str) and "{{" in value):
        return ExprType(frozenset({kind_of(value)}), f"steps.{step_id}.outputs.{name}")
    return None


RUN_TYPES = {
    "id": _of("string", origin="run.id"),
    "runbook": _of("string", origin="run.runbook"),
    "started_at": _of("string", origin="run.started_at"),
    "drill": _of("boolean", origin="run.drill"),
    "trigger": _of("object", origin="run.trigger"),
}
STATUS = _of(
    "string",
    origin="a step status",
    enum=("succeeded", "failed", "skipped", "cancelled"),
)


@dataclass
class Scope:
    """What an expression can read, as types: the runbook's inputs and upstream outputs.

    ``outputs(step_id, name)`` answers ``steps.X.outputs.Y`` (None: X's action is
    unknown); ``given`` holds the references the step's ``if:`` proves truthy.
    """

    inputs: Mapping[str, InputSpec]
    outputs: Callable[[str, str], ExprType | None]
    given: dict[tuple[str, ...], str] = field(default_factory=dict)  # path -> "truthy"/"not none"


# --- inference -------------------------------------------------------------------------------


def expression_node(source: str) -> nodes.Expr | None:
    """The single expression of a whole ``{{ … }}`` template (None: text around it)."""
    return compile_expression(source).node


def infer(source: str, scope: Scope) -> ExprType:
    """The type of a template: a whole ``{{ … }}`` keeps its type, anything else is text."""
    node = expression_node(source)
    if node is None:
        return _of("string", origin="the text", why="text with {{ }} in it renders to a string")
    return infer_node(node, scope)


def infer_node(node: nodes.Node, scope: Scope) -> ExprType:
    handler = _HANDLERS.get(type(node))
    return handler(node, scope) if handler is not None else UNKNOWN


def _const(node: nodes.Const, scope: Scope) -> ExprType:
    value = node.value
    return _of(
        kind_of(value), origin=repr(value), may_be_empty="" if value != "" else "''", enum=(value,)
    )


def _list(node: nodes.List | nodes.Tuple, scope: Scope) -> ExprType:
    items: ExprType | None = None
    for item in node.items:
        t = infer_node(item, scope)
        items = t if items is None else union(items, t)
    return _of(
        "array", origin="a list", may_be_empty="" if node.items else "the list is []", items=items
    )


def reference_path(node: nodes.Node) -> tuple[str, ...] | None:
    """``inputs.a`` -> ("inputs", "a"); None when a part is computed."""
    parts: list[str] = []
    while isinstance(node, nodes.Getattr | nodes.Getitem):
        if isinstance(node, nodes.Getattr):
            parts.append(node.attr)
        elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str | int):
            parts.append(str(node.arg.value))
        else:
            return None
        node = node.node
    if not isinstance(node, nodes.Name):
        return None
    return (node.name, *reversed(parts))


def _lookup(node: nodes.Getattr | nodes.Getitem, scope: Scope) -> ExprType:
    path = reference_path(node)
    if path is None:
        base = infer_node(node.node, scope)
        if isinstance(node, nodes.Getitem) and base.items is not None:
            return base.items
        return replace(UNKNOWN, why="a value read with a computed key")
    found = _path_type(path, scope)
    how = scope.given.get(path)
    if how == "truthy":
        return _given(found)
    return _not_none(found) if how == "not none" else found


def _path_type(path: tuple[str, ...], scope: Scope) -> ExprType:
    root, rest = path[0], path[1:]
    if root == "inputs" and len(rest) == 1 and rest[0] in scope.inputs:
        return input_type(rest[0], scope.inputs[rest[0]])
    if root == "run" and len(rest) == 1 and rest[0] in RUN_TYPES:
        return RUN_TYPES[rest[0]]
    if root == "steps" and len(rest) == 2 and rest[1] == "status":
        return STATUS
    if root == "steps" and len(rest) == 3 and rest[1] == "outputs":
        found = scope.outputs(rest[0], rest[2])
        if found is not None:
            return found
    where = ".".join(path)
    return replace(UNKNOWN, origin=where, why=f"the type of {where} is not known before the run")


def _name(node: nodes.Name, scope: Scope) -> ExprType:
    if node.name in ("inputs", "run", "steps"):
        return _of("object", origin=node.name)
    return UNKNOWN


def _boolean(node: nodes.Node, scope: Scope) -> ExprType:
    return _of("boolean", origin="a comparison or test")


def _either(node: nodes.And | nodes.Or, scope: Scope) -> ExprType:
    """``a and b`` / ``a or b`` give one of their operands (Python's rule), not a boolean."""
    return union(infer_node(node.left, scope), infer_node(node.right, scope))


def _cond(node: nodes.CondExpr, scope: Scope) -> ExprType:
    other = infer_node(node.expr2, scope) if node.expr2 is not None else _of("null")
    return union(infer_node(node.expr1, scope), other)


_NUMERIC = frozenset({"integer", "number", "boolean"})  # Python: True + 1 == 2, -True == -1


def _operand(t: ExprType) -> frozenset[str] | None:
    """The kinds an operand of arithmetic has when the operation works: none fails it (the
    step fails with the expression's error), so it adds no kind to the result; a boolean
    counts as the integer it is."""
    if t.kinds is None:
        return None
    kinds = t.kinds - {"null"}
    return frozenset("integer" if k == "boolean" else k for k in kinds) if kinds else None


def _arith(node: nodes.BinExpr, scope: Scope) -> ExprType:
    left = _operand(infer_node(node.left, scope))
    right = _operand(infer_node(node.right, scope))
    if left is None or right is None:
        return UNKNOWN
    if left <= _NUMERIC and right <= _NUMERIC:
        whole = left == right == {"integer"} and not isinstance(node, nodes.Div)
        return _of("integer" if whole else "number", origin="arithmetic")
    for kind in ("string", "array"):
        if left == {kind} and (isinstance(node, nodes.Mul | nodes.Mod) or right == {kind}):
            return _of(kind, origin=f"a {kind} operation")
    return UNKNOWN


def _unary(node: nodes.UnaryExpr, scope: Scope) -> ExprType:
    inner = _operand(infer_node(node.node, scope))
    if inner is None or not inner <= _NUMERIC:
        return UNKNOWN
    return _of(*sorted(inner), origin="arithmetic")


def _concat(node: nodes.Concat, scope: Scope) -> ExprType:
    return _of("string", origin="a ~ concatenation")


def _slice_of(node: nodes.Getitem, scope: Scope) -> ExprType:
    if isinstance(node.arg, nodes.Slice):
        base = infer_node(node.node, scope)
        return _reshaped(base, "a slice", "a slice may be empty")
    return _lookup(node, scope)


def _reshaped(base: ExprType, origin: str, empty: str = "") -> ExprType:
    """``base`` after an operation that keeps its kind but not its value (a slice,
    ``| reverse``, ``| abs``): ``'info'[1:]`` is no longer one of an enum's values, nor
    bound to match the pattern the whole did."""
    if base.kinds is None:
        return base
    return replace(
        base, origin=origin, enum=None, pattern=None, may_be_empty=empty or base.may_be_empty
    )


def _filter(node: nodes.Filter, scope: Scope) -> ExprType:
    base = infer_node(node.node, scope) if node.node is not None else UNKNOWN
    rule = _FILTERS.get(node.name)
    if rule is None:
        return UNKNOWN
    return rule(base, node, scope)


def _default(base: ExprType, node: nodes.Filter, scope: Scope) -> ExprType:
    fallback = infer_node(node.args[0], scope) if node.args else _of("string", origin="''")
    boolean = any(isinstance(a, nodes.Const) and a.value is True for a in node.args[1:2]) or any(
        k.key == "boolean" and isinstance(k.value, nodes.Const) and k.value.value
        for k in node.kwargs
    )
    # without boolean=true, default() replaces only an undefined value (a skipped step's
    # output), not none: an input that was not given stays none
    if boolean:
        return union(_given(base), fallback)
    result = union(base, fallback)
    if base.none_why:
        result = replace(result, none_why=base.none_why + ", and default() without true keeps none")
    return result


def _same(base: ExprType, node: nodes.Filter, scope: Scope) -> ExprType:
    return _reshaped(base, f"| {node.name}")


def _sorted(base: ExprType, node: nodes.Filter, scope: Scope) -> ExprType:
    """``| sort`` gives a list: of the items of a list, the characters of a string, the
    keys of a mapping."""
    if base.kinds is None:
        return base
    items = base.items if base.kinds == {"array"} else None
    if base.kinds == {"string"}:
        items = _of("string", origin="a character")
    return _of("array", origin="| sort", may_be_empty=base.may_be_empty, items=items)


def _item(base: ExprType, node: nodes.Filter, scope: Scope) -> ExprType:
    return base.items if base.items is not None else UNKNOWN


def _text_of(base: ExprType, node: nodes.Filter, scope: Scope) -> ExprType:
    return _of("string", origin=f"| {node.name}", may_be_empty=base.may_be_empty)


def _fixed(kind: str) -> Callable[[ExprType, nodes.Filter, Scope], ExprType]:
    return lambda base, node, scope: _of(kind, origin=f"| {node.name}")


def _listed(base: ExprType, node: nodes.Filter, scope: Scope) -> ExprType:
    return _of("array", origin=f"| {node.name}", may_be_empty=base.may_be_empty, items=base.items)


def _summed(base: ExprType, node: nodes.Filter, scope: Scope) -> ExprType:
    start = next((k.value for k in node.kwargs if k.key == "start"), None)
    if start is None and len(node.args) > 1:
        start = node.args[1]
    return infer_node(start, scope) if start is not None else _of("number", origin="| sum")


_FILTERS: dict[str, Callable[[ExprType, nodes.Filter, Scope], ExprType]] = {
    "default": _default,
    "d": _default,
    "length": _fixed("integer"),
    "count": _fixed("integer"),
    "int": _fixed("integer"),
    "float": _fixed("number"),
    "round": _fixed("number"),
    "abs": _same,
    "join": _text_of,
    "string": _text_of,
    "lower": _text_of,
    "upper": _text_of,
    "title": _text_of,
    "capitalize": _text_of,
    "trim": _text_of,
    "replace": _text_of,
    "truncate": _text_of,
    "urlencode": _text_of,
    "tojson": _fixed("string"),
    "list": _listed,
    "sort": _sorted,
    "unique": _listed,
    "reverse": _same,
    "first": _item,
    "last": _item,
    "min": _item,
    "max": _item,
    "sum": _summed,
    "items": _fixed("array"),
    "dictsort": _fixed("array"),
}
_HANDLERS: dict[type[nodes.Node], Callable[[Any, Scope], ExprType]] = {
    nodes.Const: _const,
    nodes.List: _list,
    nodes.Tuple: _list,
    nodes.Dict: lambda node, scope: _of("object", origin="a mapping"),
    nodes.Getattr: _lookup,
    nodes.Getitem: _slice_of,
    nodes.Name: _name,
    nodes.Compare: _boolean,
    nodes.Test: _boolean,
    nodes.Not: _boolean,
    nodes.Call: _boolean,  # always(), success(), failure()
    nodes.And: _either,
    nodes.Or: _either,
    nodes.CondExpr: _cond,
    nodes.Add: _arith,
    nodes.Sub: _arith,
    nodes.Mul: _arith,
    nodes.Div: _arith,
    nodes.FloorDiv: _arith,
    nodes.Mod: _arith,
    nodes.Neg: _unary,
    nodes.Pos: _unary,
    nodes.Concat: _concat,
    nodes.Filter: _filter,
}


# --- operations that fail for every value they may be given ----------------------------------

_ITEMS = frozenset({"string", "array", "object"})
_ITERATING = ("first", "last", "min", "max", "sum", "unique", "list", "sort", "join")
_NEEDS: dict[str, tuple[frozenset[str], str]] = {
    **{name: (_ITEMS, "items") for name in (*_ITERATING, "length", "count", "reverse")},
    "items": (frozenset({"object"}), "keys"),
    "dictsort": (frozenset({"object"}), "keys"),
    "abs": (_NUMERIC, "a number"),
    "round": (_NUMERIC, "a number"),
}


_OPERATIONS = re.compile(
    r"[-+*/%|\[]|\b(?:inputs|run)\.\w+\.|\bsteps\.\w+\.(?:status\.|outputs\.\w+\.)"
)


def may_fail(source: str) -> bool:
    """Whether ``source`` has anything :func:`certain_failures` looks at: an operator, a
    filter, a subscript, or a name read into (``inputs.x.y``). Most values are a plain
    ``{{ inputs.x }}``; this keeps lint from walking them (lint's cost, issue 15)."""
    return _OPERATIONS.search(source) is not None


def certain_failures(node: nodes.Node, scope: Scope) -> list[str]:
    """Operations in ``node`` that fail whatever value their operand has, by its kinds:
    ``-`` of a string, ``| max`` of a boolean, ``inputs.flag[0]``. The run fails the step
    there (``bad operand type for unary -: 'str'``), so lint reports it.

    Only what is certain counts: an operand of unknown type, or one with any kind that
    works, is not a failure; nor is anything a condition or ``and``/``or`` may keep from
    being evaluated (the branches of ``x if c else y``, the right of ``and``/``or``, the
    fallback of ``default``), as the test deciding it is not followed."""
    found: list[str] = []
    _failures(node, scope, found)
    return found


def _failures(node: nodes.Node, scope: Scope, found: list[str]) -> None:
    if isinstance(node, nodes.CondExpr):
        _failures(node.test, scope, found)
        return
    if isinstance(node, nodes.And | nodes.Or):
        _failures(node.left, scope, found)
        return
    if isinstance(node, nodes.Test):
        return  # `x is number` and friends are how a value is told apart
    if isinstance(node, nodes.Name | nodes.Const | nodes.TemplateData):
        return
    path = reference_path(node) if isinstance(node, nodes.Getattr | nodes.Getitem) else None
    if path is not None:
        # a name's path (inputs.x.y): only reading into a value (inputs.x, run.drill, an
        # output) may fail; its prefixes are namespaces (steps.a.outputs), which lint's
        # reference checks cover. The commonest node of all, so this is kept cheap.
        if _reads_into_a_value(path):
            problem = _fails(node, scope)
            if problem:
                found.append(problem)
        return
    problem = _fails(node, scope)
    if problem:
        found.append(problem)
        return  # its operand's own problem would be one more line about the same mistake
    if isinstance(node, nodes.Filter) and node.name in ("default", "d"):
        if node.node is not None:
            _failures(node.node, scope, found)
        return
    for child in node.iter_child_nodes():
        _failures(child, scope, found)


def _reads_into_a_value(path: tuple[str, ...]) -> bool:
    """Whether the path reads into a value rather than a namespace: ``inputs.x.y``,
    ``run.drill.x``, ``steps.a.status[0]``, ``steps.a.outputs.f.g``."""
    depth = {"inputs": 3, "run": 3, "steps": 4}.get(path[0])
    if depth is None:
        return False
    if path[0] == "steps" and len(path) >= 3 and path[2] == "outputs":
        depth = 5
    return len(path) >= depth


def _fails(node: nodes.Node, scope: Scope) -> str:
    """Why ``node`` fails for every value of its operand ("" : it may work)."""
    if isinstance(node, nodes.Neg | nodes.Pos):
        operand = infer_node(node.node, scope)
        if _none_of(operand, _NUMERIC):
            sign = "-" if isinstance(node, nodes.Neg) else "+"
            return f"{sign} of {operand.origin} fails: it is {operand.describe()}, not a number"
    elif isinstance(node, nodes.Filter) and node.name in _NEEDS and node.node is not None:
        operand = infer_node(node.node, scope)
        kinds, what = _NEEDS[node.name]
        if _none_of(operand, kinds):
            return (
                f"| {node.name} of {operand.origin} fails: it is {operand.describe()}, "
                f"which has no {what}"
            )
    elif isinstance(node, nodes.Getitem | nodes.Getattr):
        base = infer_node(node.node, scope)
        needs, what = _lookup_needs(node)
        if _none_of(base, needs):
            return f"reading {what} of {base.origin} fails: it is {base.describe()}"
    elif isinstance(node, _ARITH_NODES):
        left, right = infer_node(node.left, scope), infer_node(node.right, scope)
        if (
            left.kinds is not None
            and right.kinds is not None
            and not _any_works(node, left.kinds, right.kinds)
        ):
            return (
                f"{node.operator} fails for {left.describe()} and {right.describe()} "
                f"({left.origin}, {right.origin})"
            )
    return ""


_ARITH_NODES = (nodes.Add, nodes.Sub, nodes.Mul, nodes.Div, nodes.FloorDiv, nodes.Mod)
_SEQUENCES = frozenset({"string", "array"})


def _lookup_needs(node: nodes.Getitem | nodes.Getattr) -> tuple[frozenset[str], str]:
    """The kinds a lookup works on, and what it reads (for the message)."""
    if isinstance(node, nodes.Getattr):
        kinds: set[str] = set()
        if hasattr(str, node.attr) or hasattr(list, node.attr):
            kinds |= _ITEMS  # a method's name: not a certain failure
        if hasattr(int, node.attr) or hasattr(float, node.attr):
            kinds |= _NUMERIC  # .real, .imag: numbers have them too
        return frozenset(kinds or {"object"}), f".{node.attr}"
    if isinstance(node.arg, nodes.Slice):
        return _SEQUENCES, "a slice"
    if isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
        return frozenset({"object"}), f"[{node.arg.value!r}]"
    return _ITEMS, "an item"


def _any_works(node: nodes.BinExpr, left: frozenset[str], right: frozenset[str]) -> bool:
    """Whether some pair of the operands' kinds makes ``node`` work (Python's rules)."""
    numbers = {"integer", "number", "boolean"}
    for a in left:
        for b in right:
            if a in numbers and b in numbers:
                return True
            if isinstance(node, nodes.Add) and a == b and a in _SEQUENCES:
                return True
            if (
                isinstance(node, nodes.Mul)
                and {a, b} & _SEQUENCES
                and {a, b} & {"integer", "boolean"}
            ):
                return True
            if isinstance(node, nodes.Mod) and a == "string":
                return True
    return False


def _none_of(t: ExprType, kinds: frozenset[str]) -> bool:
    """Whether every kind ``t`` may have lacks what the operation needs (known kinds only)."""
    return t.kinds is not None and not (t.kinds & kinds)
