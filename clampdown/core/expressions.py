"""Runbook expressions: Jinja2 in a sandbox, checked before anything is evaluated.

Two layers keep an expression from reaching Python internals:

1. A static allow-list over the parsed template. Only data lookups, literals,
   operators, an allow-listed set of filters and tests, and calls to the status
   functions (``always()``, ``success()``, ``failure()``) are accepted. Names
   starting with ``_``, method calls (``"{0.__class__}".format(x)``), the
   ``attr``/``format`` filters, ``{% %}`` statements and Jinja's default globals
   (``cycler``, ``joiner``, ``namespace``, ``lipsum``, ``range``) are rejected
   with a message, before evaluation. So is ``**``, which can hang the process.
2. Jinja's :class:`ImmutableSandboxedEnvironment` with :class:`StrictUndefined`
   evaluates what passed, so a runtime lookup cannot mutate or escape either, and
   a misspelt name is an error rather than an empty string; every operation that
   can grow a value is capped (:mod:`clampdown.core.expression_sandbox`), and an
   expression may nest at most :data:`MAX_DEPTH` levels.

A value that is one whole ``{{ … }}`` keeps its native type (an integer stays an
integer); anything else renders to a string.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from jinja2 import TemplateSyntaxError, Undefined, nodes
from jinja2.exceptions import SecurityError, UndefinedError

from clampdown.core.expression_sandbox import (
    ALLOWED_FILTERS,
    ALLOWED_TESTS,
    ENV,
    MAX_SIZE,
    too_big,
)

ROOT_NAMES = frozenset({"inputs", "steps", "run", "alert"})
STATUS_FUNCTIONS = frozenset({"always", "success", "failure"})
_ALLOWED_NODES: tuple[type[nodes.Node], ...] = (
    nodes.Template,
    nodes.Output,
    nodes.TemplateData,
    nodes.Const,
    nodes.Name,
    nodes.Getattr,
    nodes.Getitem,
    nodes.Slice,
    nodes.Tuple,
    nodes.List,
    nodes.Dict,
    nodes.Pair,
    nodes.Keyword,
    nodes.CondExpr,
    nodes.And,
    nodes.Or,
    nodes.Not,
    nodes.Neg,
    nodes.Pos,
    nodes.Add,
    nodes.Sub,
    nodes.Mul,
    nodes.Div,
    nodes.FloorDiv,
    nodes.Mod,
    nodes.Concat,
    nodes.Compare,
    nodes.Operand,
    nodes.Filter,
    nodes.Test,
    nodes.Call,
)
_WHOLE = re.compile(r"^\s*\{\{(?P<expr>.*)\}\}\s*$", re.DOTALL)


class ExpressionError(Exception):
    """An expression is malformed, forbidden, or failed to evaluate."""

    def __init__(self, message: str, hint: str = "", line: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.line = line

    def __str__(self) -> str:
        return f"{self.message} — {self.hint}" if self.hint else self.message


@dataclass(frozen=True)
class Reference:
    """A data lookup an expression makes: ``steps.<id>.<part>.<field>`` or ``inputs.<name>``."""

    root: str
    name: str | None
    part: str | None = None
    field: str | None = None
    line: int = 1


@dataclass(frozen=True)
class Expression:
    """A checked template: its source, whether it is native, and what it reads."""

    source: str
    native: bool
    references: tuple[Reference, ...] = field(default=())
    uses_status_function: bool = False
    # the one expression of a native template, parsed once (lint infers its type)
    node: nodes.Expr | None = field(default=None, compare=False, repr=False)
    # every {{ }} expression of the template, native or not (lint checks each operation)
    parts: tuple[nodes.Expr, ...] = field(default=(), compare=False, repr=False)


MAX_DEPTH = 48
"""The deepest nesting an expression may have (brackets, operators, filters)."""
_BRACKETS = {"(": 1, "[": 1, "{": 1, ")": -1, "]": -1, "}": -1}


def contains_expression(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value or "{#" in value)


@lru_cache(maxsize=4096)
def compile_expression(source: str) -> Expression:
    """Parse and check ``source``; raise :class:`ExpressionError` when it is not allowed."""
    _check_brackets(source)
    try:
        tree = ENV.parse(source)
    except RecursionError:
        raise _too_deep(1) from None
    except TemplateSyntaxError as exc:
        raise ExpressionError(
            f"expression syntax error: {exc.message}",
            "expressions look like {{ inputs.name }} or {{ steps.id.outputs.field }}",
            exc.lineno or 1,
        ) from None
    refs: list[Reference] = []
    status = _check(_descendants(tree), refs)
    node = _whole(source, tree)
    parts = (node,) if node is not None else _outputs(tree)
    return Expression(source, node is not None, tuple(refs), status, node, parts)


def _outputs(tree: nodes.Template) -> tuple[nodes.Expr, ...]:
    """The expressions of a template's ``{{ }}`` (its text left out)."""
    return tuple(  # statements are refused, so the body is its outputs (no deeper search)
        n
        for output in tree.body
        if isinstance(output, nodes.Output)
        for n in output.nodes
        if not isinstance(n, nodes.TemplateData)
    )


def _too_deep(line: int) -> ExpressionError:
    return ExpressionError(
        f"expression nested more than {MAX_DEPTH} levels deep",
        "split it: compute parts in earlier steps (core.set_output) or simplify the brackets",
        line,
    )


def _check_brackets(source: str) -> None:
    """Refuse deep bracket nesting before Jinja's recursive parser meets it."""
    depth = 0
    for match in re.finditer(r"[()\[\]{}]", source):
        depth = max(depth + _BRACKETS[match.group()], 0)
        if depth > MAX_DEPTH + 2:  # ``{{`` itself counts two
            raise _too_deep(source.count("\n", 0, match.start()) + 1)


def _check_depth(tree: nodes.Node) -> None:
    """Refuse a tree deeper than MAX_DEPTH (``not not … x``, ``a + a + … a``, long
    filter chains), walked without recursion so the check cannot overflow itself."""
    stack: list[tuple[nodes.Node, int]] = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH + 3:  # Template > Output > expression
            raise _too_deep(getattr(node, "lineno", 1))
        stack.extend((child, depth + 1) for child in node.iter_child_nodes())


def _descendants(tree: nodes.Node) -> list[nodes.Node]:
    """Every node below ``tree``, in the order ``tree.find_all`` yields them (depth first,
    left to right): one walk, without recursion, instead of one per kind of node looked
    for. A tree deeper than MAX_DEPTH is refused by :func:`_check_depth`, as before."""
    found: list[nodes.Node] = []
    stack: list[tuple[nodes.Node, int]] = [(tree, 0)]
    deepest = 0
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        found.append(node)
        stack.extend((child, depth + 1) for child in reversed(list(node.iter_child_nodes())))
    if deepest > MAX_DEPTH + 3:
        _check_depth(tree)  # raises, naming the line of the node it meets first
    return found[1:]


def _whole(source: str, tree: nodes.Template) -> nodes.Expr | None:
    """The expression of one ``{{ … }}`` with nothing else but surrounding whitespace
    (such a value keeps its native type), or None; read from the tree already parsed."""
    if not _WHOLE.match(source) or len(tree.body) != 1:
        return None
    output = tree.body[0]
    if not isinstance(output, nodes.Output):
        return None
    parts = [
        n for n in output.nodes if not (isinstance(n, nodes.TemplateData) and not n.data.strip())
    ]
    if len(parts) != 1 or isinstance(parts[0], nodes.TemplateData):
        return None
    return parts[0]


def condition_source(value: str | bool) -> str:
    """``if:`` may be written bare (``steps.a.outputs.ok``) or as ``{{ … }}``."""
    if isinstance(value, bool):
        return "{{ true }}" if value else "{{ false }}"
    text = value.strip()
    return text if contains_expression(text) else "{{ " + text + " }}"


def condition_offset(value: str, offset: int) -> int:
    """Where character ``offset`` of ``condition_source(value)`` (what is compiled) is in
    ``value`` (what is written): a bare condition is compiled wrapped in ``{{ }}``."""
    lead = len(value) - len(value.lstrip())
    text = value.strip()
    if contains_expression(text):
        return lead + offset
    return lead + max(0, min(offset - 3, len(text) - 1))


# --- where in a template a problem is (for lint's positions) ------------------------------------

# patterns, compiled (by re's cache) only when a problem is placed: a clean lint never is
_TAG = r"(?s)\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}"
_OPENER = r"\{[{%#]"


def error_offset(source: str, error: ExpressionError) -> int:
    """Offset in ``source`` of the ``{{`` of the expression that ``error`` (raised by
    :func:`compile_expression` for ``source``) is about: the first one refused on its own."""
    return _locate(source, error.line, lambda tag: _compiled(tag) is None)


def reference_offset(source: str, ref: Reference) -> int:
    """Offset in ``source`` of the ``{{`` of the expression that makes the lookup ``ref``."""
    wanted = (ref.root, ref.name, ref.part, ref.field)

    def makes_it(tag: str) -> bool:
        expr = _compiled(tag)
        return expr is not None and any(
            (r.root, r.name, r.part, r.field) == wanted for r in expr.references
        )

    return _locate(source, ref.line, makes_it)


def status_offset(source: str) -> int:
    """Offset in ``source`` of the ``{{`` of the expression that calls a status function."""

    def calls_one(tag: str) -> bool:
        expr = _compiled(tag)
        return expr is not None and expr.uses_status_function

    return _locate(source, 1, calls_one)


def first_offset(source: str) -> int:
    """Offset in ``source`` of its first ``{{`` (or ``{%``, ``{#``), 0 without one: where
    a problem of the whole value (its type, text around an ``if:``) is reported."""
    found = re.search(_OPENER, source)
    return found.start() if found else 0


def _compiled(tag: str) -> Expression | None:
    try:
        return compile_expression(tag)
    except ExpressionError:
        return None


def _locate(source: str, line: int, wanted: Callable[[str], bool]) -> int:
    """The offset of the first ``{{ … }}`` (or ``{% %}``, ``{# #}``) of ``source`` that is
    ``wanted``, among those on template line ``line`` first; else of the first opener on
    that line, else of its first non-blank character.

    Why per tag: Jinja tells only the line of a node, and one line may hold several
    expressions. Called only for a problem lint reports, so each tag is compiled only
    then, and not at all when ``source`` has one opener and it starts the one tag (most
    values: the problem can be nowhere else).
    """
    tags = list(re.finditer(_TAG, source))
    if len(tags) == 1 and len(re.findall(_OPENER, source)) == 1:
        return tags[0].start()
    found = [(source.count("\n", 0, m.start()) + 1, m) for m in tags if wanted(m.group())]
    for first, match in found:
        if first <= line <= first + match.group().count("\n"):
            return match.start()
    if found:
        return found[0][1].start()
    start = 0
    for _ in range(line - 1):
        start = source.find("\n", start) + 1
        if start == 0:
            return 0
    end = source.find("\n", start)
    text = source[start : end if end >= 0 else len(source)]
    opener = re.search(_OPENER, text)
    return start + (opener.start() if opener else len(text) - len(text.lstrip()))


def _forbidden(node: nodes.Node, what: str, hint: str) -> ExpressionError:
    return ExpressionError(f"forbidden in expressions: {what}", hint, getattr(node, "lineno", 1))


def _check(found: list[nodes.Node], refs: list[Reference]) -> bool:
    """Reject any node off the allow-list; collect references (``found``: the tree's
    nodes in :func:`_descendants` order, so the first refusal is the leftmost)."""
    uses_status = False
    called = {id(n.node) for n in found if isinstance(n, nodes.Call)}
    for node in found:
        uses_status |= _check_node(node, called)
    lookups = [n for n in found if isinstance(n, nodes.Getattr | nodes.Getitem)]
    inner = {id(n.node) for n in lookups}
    for node in lookups:
        ref = None if id(node) in inner else _reference(node)
        if ref is not None:
            refs.append(ref)
    for node in found:
        if isinstance(node, nodes.Name) and node.name in ROOT_NAMES and id(node) not in inner:
            refs.append(Reference(node.name, None, line=node.lineno))
    return uses_status


def _check_node(node: nodes.Node, called: set[int]) -> bool:
    """Reject one node off the allow-list; True for a call of a status function."""
    if isinstance(node, nodes.Pow):
        raise _forbidden(
            node,
            "the ** operator",
            "a power can hang the engine; compute such values before they reach the runbook",
        )
    if not isinstance(node, _ALLOWED_NODES):
        raise _forbidden(
            node,
            f"the {type(node).__name__.lower()} construct",
            "only {{ … }} expressions are supported; for choices use "
            "{{ 'a' if condition else 'b' }}",
        )
    if isinstance(node, nodes.Name):
        _check_name(node, called)
    elif isinstance(node, nodes.Getattr) and node.attr.startswith("_"):
        raise _forbidden(
            node, f"the attribute '{node.attr}'", "names starting with '_' are Python internals"
        )
    elif isinstance(node, nodes.Getitem):
        if isinstance(node.arg, nodes.Const) and str(node.arg.value).startswith("_"):
            raise _forbidden(
                node,
                f"the key '{node.arg.value}'",
                "names starting with '_' are Python internals",
            )
    elif isinstance(node, nodes.Call):
        _check_call(node)
        return True
    elif isinstance(node, nodes.Filter | nodes.Test):
        _check_filter_or_test(node)
    elif isinstance(node, nodes.Const) and isinstance(node.value, str) and "__" in node.value:
        raise _forbidden(
            node,
            f"the string {node.value!r}",
            "strings containing '__' are refused to block format-string tricks",
        )
    return False


def _check_name(node: nodes.Name, called: set[int]) -> None:
    if node.name in STATUS_FUNCTIONS:
        if id(node) not in called:  # a bare function object is always truthy
            raise _forbidden(node, f"'{node.name}' without parentheses", f"write {node.name}()")
        return
    if node.name not in ROOT_NAMES:
        raise _forbidden(
            node,
            f"the name '{node.name}'",
            "expressions can read inputs, steps, run and alert",
        )


def _check_call(node: nodes.Call) -> None:
    if not (isinstance(node.node, nodes.Name) and node.node.name in STATUS_FUNCTIONS):
        raise _forbidden(
            node,
            "calling a method or function",
            "only always(), success() and failure() can be called; "
            "use filters for transformations, e.g. {{ x | upper }}",
        )
    if node.args or node.kwargs or node.dyn_args or node.dyn_kwargs:
        raise _forbidden(
            node,
            f"arguments to {node.node.name}()",
            f"write {node.node.name}() with no arguments",
        )


def _check_filter_or_test(node: nodes.Filter | nodes.Test) -> None:
    kind, allowed = (
        ("filter", ALLOWED_FILTERS) if isinstance(node, nodes.Filter) else ("test", ALLOWED_TESTS)
    )
    if node.name not in allowed:
        raise _forbidden(
            node,
            f"the {kind} '{node.name}'",
            f"allowed {kind}s: {', '.join(sorted(allowed))}",
        )


def _reference(node: nodes.Node) -> Reference | None:
    """Turn a lookup chain ``steps.a.outputs.x`` into a Reference (outermost chains only)."""
    chain: list[str] = []
    current: nodes.Node = node
    while isinstance(current, nodes.Getattr | nodes.Getitem):
        if isinstance(current, nodes.Getattr):
            chain.append(current.attr)
        elif isinstance(current.arg, nodes.Const) and isinstance(current.arg.value, str):
            chain.append(current.arg.value)
        else:
            chain = []
        current = current.node
    if not isinstance(current, nodes.Name) or current.name not in ROOT_NAMES:
        return None
    chain.reverse()
    if not chain:
        return None
    padded = [*chain, None, None, None][:3]
    return Reference(current.name, padded[0], padded[1], padded[2], node.lineno)


def evaluate(source: str, context: Mapping[str, Any]) -> Any:
    """Evaluate one checked template in ``context``; native when it is a whole expression."""
    expr = compile_expression(source)
    shown = _shown(source)
    try:
        if expr.native:
            inner = _WHOLE.match(source)["expr"]  # type: ignore[index]
            value = _materialized(_native(inner)(**context))
            _raise_if_undefined(value)
            return value
        return _render_text(source, context)
    except UndefinedError as exc:
        raise ExpressionError(
            f"expression {shown} failed: {exc.message}",
            "check the name; a skipped step has no outputs — use "
            "{{ steps.x.outputs.y | default('') }}",
        ) from None
    except SecurityError as exc:
        raise ExpressionError(f"expression {shown} refused by the sandbox: {exc}") from None
    except RecursionError:
        raise ExpressionError(
            f"expression {shown} failed: nested too deeply", _too_deep(1).hint
        ) from None
    except Exception as exc:  # an expression must fail the step, never the engine
        raise ExpressionError(f"expression {shown} failed: {exc}") from None


@lru_cache(maxsize=4096)
def _native(inner: str) -> Any:
    """The sandbox's compiled expression for ``inner``, compiled once per source.

    Why cached: a trigger's templates are rendered for every alert and a runbook's for
    every step; Jinja compiles a source to Python code each time it is given one (2.8 ms
    of the 12 ms of CPU one alert's triage took, benchmarks/serve_throughput.py). The
    compiled code keeps calling back into the sandboxed environment at run time, so a
    cached one is checked exactly as a new one would be.
    """
    return ENV.compile_expression(inner, undefined_to_none=False)


@lru_cache(maxsize=4096)
def _template(source: str) -> Any:
    """The sandbox's compiled template for ``source``, compiled once (see :func:`_native`)."""
    return ENV.from_string(source)


def _render_text(source: str, context: Mapping[str, Any]) -> str:
    """A template with text: its pieces joined, refused once longer than MAX_SIZE."""
    pieces: list[str] = []
    size = 0
    for piece in _template(source).generate(**context):
        size += len(piece)
        if size > MAX_SIZE:
            raise too_big("the rendered text")
        pieces.append(piece)
    return "".join(pieces)


def _shown(source: str, limit: int = 120) -> str:
    """The source as messages quote it: a runaway expression is not pasted whole."""
    text = source.strip()
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f" (… {len(text):,} chars)"


FALSE_WORDS = frozenset({"false", "no", "off", "0", "none", "null"})
"""Text that reads as false but, being non-empty text, would count as true in ``if:``."""


def condition_problem(value: str | bool) -> ExpressionError | None:
    """Why ``if:`` can never mean what it says, or None.

    ``if: "{{ a }} and {{ b }}"`` (several expressions, or text around one) renders to
    text such as ``"False and False"``, which is non-empty and so always true. Lint
    reports it and the engine refuses to evaluate it (the step fails, it never runs).
    """
    source = condition_source(value)
    if compile_expression(source).native:
        return None
    body = re.sub(r"\s+", " ", re.sub(r"\{\{-?|-?\}\}", " ", source)).strip()
    fix = "{{ " + body + " }}"
    try:
        compile_expression(fix)
    except ExpressionError:
        fix = "{{ inputs.go and inputs.freeze }}"
    return ExpressionError(
        "if: has several {{ }} expressions or text around one: it renders to text, "
        "which is always true (even 'False and False')",
        f'write one expression: if: "{fix}"',
    )


def evaluate_condition(value: str | bool, context: Mapping[str, Any]) -> bool:
    """A step's ``if:``, as the engine decides it (the rule lint checks).

    Refuses the text trap (:func:`condition_problem`) and a result that is text
    reading as false (``"false"``, ``"no"``…), which Python would call true.
    """
    problem = condition_problem(value)
    if problem is not None:
        raise problem
    result = evaluate(condition_source(value), context)
    if isinstance(result, str) and result.strip().lower() in FALSE_WORDS:
        raise ExpressionError(
            f"if: gave the text {result!r}, which counts as true",
            "compare explicitly, e.g. {{ inputs.x == 'yes' }}, or make the input a boolean",
        )
    return bool(result)


def _materialized(value: Any) -> Any:
    """A native result with its lazy parts made lists.

    Why: Jinja's ``unique``, ``reverse`` (of a list) and ``items`` give generators and
    iterators. Kept as such, the value is consumed by whatever reads it first: a
    ``core.set_output`` of ``{{ inputs.l | unique }}`` recorded ``[]`` in the ledger and
    gave its readers an empty list, where lint (rightly) expects the list."""
    if isinstance(value, Iterator):
        return [_materialized(item) for item in value]
    if isinstance(value, dict):
        return {k: _materialized(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_materialized(item) for item in value)
    return value


def _raise_if_undefined(value: Any) -> None:
    """A native result may hide an undefined name inside a list or dict literal."""
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    elif isinstance(value, dict):
        for item in value.values():
            _raise_if_undefined(item)
    elif isinstance(value, list | tuple):
        for item in value:
            _raise_if_undefined(item)


def render(value: Any, context: Mapping[str, Any]) -> Any:
    """Render every string inside ``value`` (dicts and lists recursively)."""
    if isinstance(value, str):
        return evaluate(value, context) if contains_expression(value) else value
    if isinstance(value, dict):
        return {k: render(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, context) for v in value]
    return value


def walk_strings(
    value: Any, loc: tuple[str | int, ...] = ()
) -> list[tuple[tuple[str | int, ...], str]]:
    """Every expression string inside ``value`` with its path, for lint."""
    if isinstance(value, str):
        return [(loc, value)] if contains_expression(value) else []
    if isinstance(value, dict):
        return [item for k, v in value.items() for item in walk_strings(v, (*loc, k))]
    if isinstance(value, list):
        return [item for i, v in enumerate(value) for item in walk_strings(v, (*loc, i))]
    return []


StatusFunctions = dict[str, Callable[[], bool]]
