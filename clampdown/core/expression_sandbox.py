"""The sandbox expressions are evaluated in: Jinja's immutable sandbox, cut down and capped.

* Only allow-listed filters and tests exist in it, and no globals (``range``,
  ``cycler``…); :mod:`clampdown.core.expressions` refuses the rest before evaluation.
* Every operation that can grow a value (``*``, ``+``, ``%``, ``~``, ``join``,
  ``replace``, ``sum``) checks the size of its result against :data:`MAX_SIZE` before
  building it, so ``{{ 'x' * inputs.n }}`` with a huge ``n`` is a refusal, never a
  MemoryError in the engine. A repetition counts what it repeats whole (:func:`_weight`:
  items and characters at every depth): ``['x' * 100000] * 100000`` is only 100,000
  references in memory, but 10 GB as soon as anything prints it (the ledger, ``~``,
  ``tojson``, the step's text).
* A mapping's key wins over its attribute: ``inputs.items`` is the input named
  ``items``, not ``dict.items``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from jinja2 import StrictUndefined, nodes
from jinja2 import filters as jinja_filters
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import pass_environment, pass_eval_context

ALLOWED_FILTERS = frozenset(
    {
        "abs",
        "capitalize",
        "count",
        "d",
        "default",
        "dictsort",
        "first",
        "float",
        "int",
        "items",
        "join",
        "last",
        "length",
        "list",
        "lower",
        "max",
        "min",
        "replace",
        "reverse",
        "round",
        "sort",
        "string",
        "sum",
        "title",
        "tojson",
        "trim",
        "truncate",
        "unique",
        "upper",
        "urlencode",
    }
)
ALLOWED_TESTS = frozenset(
    {
        "boolean",
        "defined",
        "divisibleby",
        "eq",
        "equalto",
        "even",
        "false",
        "float",
        "ge",
        "gt",
        "in",
        "integer",
        "le",
        "lower",
        "lt",
        "mapping",
        "ne",
        "none",
        "number",
        "odd",
        "sequence",
        "string",
        "true",
        "undefined",
        "upper",
    }
)
MAX_SIZE = 100_000
"""The most characters (or items) any operation in an expression may build."""
# %-formatting: a width or precision above MAX_SIZE (or given by '*') builds a huge string
_PERCENT_FIELD = re.compile(r"%[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")


def too_big(what: str) -> SecurityError:
    """The refusal of an operation whose result would pass MAX_SIZE."""
    return SecurityError(f"{what} would be longer than {MAX_SIZE:,} characters or items")


def _size(value: Any) -> int:
    return len(value) if isinstance(value, str | list | tuple | dict) else 0


def _weight(value: Any, limit: int = MAX_SIZE) -> int:
    """Items and characters of ``value`` at every depth (a container's items, plus what
    each holds), counted only until it passes ``limit``: a value that repeats one object
    many times costs nothing to build, everything to print, and no more than ``limit``
    steps to weigh here."""
    total, stack = 0, [value]
    while stack and total <= limit:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, list | tuple):
            total += len(item)
            stack.extend(item)
        elif isinstance(item, dict):
            total += len(item)
            stack.extend(item.keys())
            stack.extend(item.values())
    return total


def _check_percent(template: str, args: Any) -> None:
    for match in _PERCENT_FIELD.finditer(template):
        for number in match.groups():
            if number == "*" or (number is not None and int(number) > MAX_SIZE):
                raise too_big("a %-format field")
    values = args.values() if isinstance(args, dict) else args
    values = values if isinstance(values, tuple | type({}.values())) else [args]
    if len(template) + sum(len(str(v)) for v in values) > MAX_SIZE:
        raise too_big("a %-format")


class _Sandbox(ImmutableSandboxedEnvironment):
    """The sandbox, also refusing memory bombs: every operation that can grow a value
    (``*``, ``+``, ``%``, ``~``, ``join``, ``replace``, ``sum``) checks the size of its
    result before building it."""

    intercepted_binops = frozenset({"*", "+", "%"})

    def getattr(self, obj: Any, attribute: str) -> Any:
        """``inputs.items`` is the input named ``items``, not the mapping's method: for a
        mapping that holds the key, data wins (Jinja would try the attribute first)."""
        if isinstance(obj, Mapping) and isinstance(attribute, str) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, count in ((left, right), (right, left)):
                sized = isinstance(seq, str | list | tuple) and isinstance(count, int)
                if sized and count > 0 and _weight(seq, MAX_SIZE // count) * count > MAX_SIZE:
                    raise too_big("a repetition")
        elif operator == "+" and _size(left) + _size(right) > MAX_SIZE:
            raise too_big("a concatenation")
        elif operator == "%" and isinstance(left, str):
            _check_percent(left, right)
        return super().call_binop(context, operator, left, right)

    def checked_concat(self, parts: tuple[Any, ...]) -> str:
        """``a ~ b``: the parts as text, refused before joining when too long."""
        texts = [str(p) for p in parts]
        if sum(map(len, texts)) > MAX_SIZE:
            raise too_big("a ~ concatenation")
        return "".join(texts)


class _CodeGenerator(CodeGenerator):
    """Jinja's code generator, with ``~`` routed through :meth:`_Sandbox.checked_concat`."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.checked_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


def _join(eval_ctx: Any, value: Any, d: str = "", attribute: Any = None) -> str:
    items = list(value)
    size = sum(len(str(i)) for i in items) + len(str(d)) * max(len(items) - 1, 0)
    if attribute is None and size > MAX_SIZE:
        raise too_big("join")
    return _JINJA_JOIN(eval_ctx, items, d, attribute)  # type: ignore[no-any-return]


def _replace(eval_ctx: Any, s: Any, old: Any, new: Any, count: int | None = None) -> str:
    text, old, new = str(s), str(old), str(new)
    found = text.count(old) if count is None else min(count, text.count(old))
    if len(text) + max(found, 0) * (len(new) - len(old)) > MAX_SIZE:
        raise too_big("replace")
    return _JINJA_REPLACE(eval_ctx, text, old, new, count)  # type: ignore[no-any-return]


def _sum(environment: Any, iterable: Any, attribute: Any = None, start: Any = 0) -> Any:
    items = list(iterable)
    if attribute is None and _size(start) + sum(map(_size, items)) > MAX_SIZE:
        raise too_big("sum")
    return _JINJA_SUM(environment, items, attribute, start)


def _unique(
    environment: Any, value: Any, case_sensitive: bool = False, attribute: Any = None
) -> list[Any]:
    return list(_JINJA_UNIQUE(environment, value, case_sensitive, attribute))


def _reverse(value: Any) -> Any:
    reversed_ = _JINJA_REVERSE(value)
    return reversed_ if isinstance(reversed_, str) else list(reversed_)


def _items(value: Any) -> list[Any]:
    return list(_JINJA_ITEMS(value))


_JINJA_JOIN = jinja_filters.FILTERS["join"]
_JINJA_REPLACE = jinja_filters.FILTERS["replace"]
_JINJA_SUM = jinja_filters.FILTERS["sum"]
_JINJA_UNIQUE = jinja_filters.FILTERS["unique"]
_JINJA_REVERSE = jinja_filters.FILTERS["reverse"]
_JINJA_ITEMS = jinja_filters.FILTERS["items"]
_GUARDED_FILTERS: dict[str, Callable[..., Any]] = {
    "join": pass_eval_context(_join),
    "replace": pass_eval_context(_replace),
    "sum": pass_environment(_sum),
    # Jinja's give one-shot generators: `(x | unique)[0]` failed, text showed
    # "<generator object …>", and a value read twice was empty the second time
    "unique": pass_environment(_unique),
    "reverse": _reverse,
    "items": _items,
}


def _environment() -> ImmutableSandboxedEnvironment:
    env = _Sandbox(undefined=StrictUndefined, autoescape=False)
    env.code_generator_class = _CodeGenerator
    env.globals.clear()
    env.filters = {k: v for k, v in env.filters.items() if k in ALLOWED_FILTERS}
    env.filters.update(_GUARDED_FILTERS)
    env.tests = {k: v for k, v in env.tests.items() if k in ALLOWED_TESTS}
    return env


ENV = _environment()
