"""Expressions: native types, strict undefined names, conditions, and the two sandbox layers."""

from __future__ import annotations

from typing import Any

import pytest

from clampdown.core.expressions import (
    ExpressionError,
    compile_expression,
    condition_source,
    contains_expression,
    evaluate,
    render,
    walk_strings,
)

CONTEXT: dict[str, Any] = {
    "inputs": {
        "n": 3,
        "l": [1, 2],
        "flag": False,
        "m": {"a": 1},
        "s": "42",
        "name": "mallory",
        "k": "__class__",
    },
    "steps": {
        "snap": {"outputs": {"count": 5, "uri": "s3://evidence/x"}, "status": "succeeded"},
        "skipped": {"outputs": {}, "status": "skipped"},
    },
    "run": {"id": "run-1", "drill": True},
}


# --- native types ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ inputs.n }}", 3),
        ("{{ inputs.n * 2 + 1 }}", 7),
        ("{{ inputs.l }}", [1, 2]),
        ("{{ inputs.m }}", {"a": 1}),
        ("{{ inputs.flag }}", False),
        ("{{ not inputs.flag }}", True),
        ("{{ steps.snap.outputs.count > 2 }}", True),
        ("{{ run.drill }}", True),
        ("{{ none }}", None),
        ("{{ inputs.n / 2 }}", 1.5),
        ("{{ inputs.l }}\n", [1, 2]),  # a '|' block scalar ends in a newline
        ("{{ inputs.s }}", "42"),  # a string that looks like a number stays a string
        ("{{ '07' }}", "07"),
    ],
)
def test_whole_expression_keeps_its_native_type(source: str, expected: Any) -> None:
    assert compile_expression(source).native is True
    value = evaluate(source, CONTEXT)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("n={{ inputs.n }}", "n=3"),
        ("{{ inputs.n }}{{ inputs.n }}", "33"),
        ("{{ inputs.l }} items", "[1, 2] items"),
        ("evidence at {{ steps.snap.outputs.uri }}", "evidence at s3://evidence/x"),
        ("{{ inputs.name | upper }} / {{ inputs.l | join(',') }}", "MALLORY / 1,2"),
        ("{{ inputs.flag }} {# a comment #}", "False "),
    ],
)
def test_mixed_text_renders_to_a_string(source: str, expected: str) -> None:
    assert compile_expression(source).native is False
    assert evaluate(source, CONTEXT) == expected


@pytest.mark.parametrize("source", [" {{ inputs.l }}", "{{ inputs.l }} "])
def test_whole_expression_padded_with_spaces_keeps_its_native_type(source: str) -> None:
    assert evaluate(source, CONTEXT) == [1, 2]


def test_render_walks_dicts_and_lists_and_leaves_plain_values() -> None:
    value = {
        "count": "{{ inputs.n }}",
        "items": ["{{ inputs.l }}", "x-{{ inputs.n }}", 7],
        "plain": "no {braces} here",
        "flag": True,
        "nested": {"who": "{{ inputs.name }}"},
    }
    assert render(value, CONTEXT) == {
        "count": 3,
        "items": [[1, 2], "x-3", 7],
        "plain": "no {braces} here",
        "flag": True,
        "nested": {"who": "mallory"},
    }


def test_contains_expression_and_walk_strings() -> None:
    assert contains_expression("a {{ b }}") and contains_expression("{% if %}")
    assert contains_expression("{# c #}")
    assert not contains_expression("plain { text }") and not contains_expression(3)
    found = walk_strings({"a": "x {{ y }}", "b": ["{{ z }}", 1, "p"], "c": "plain"}, ("with",))
    assert found == [(("with", "a"), "x {{ y }}"), (("with", "b", 0), "{{ z }}")]


# --- undefined names are errors -------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "{{ inputs.missing }}",
        "prefix {{ inputs.missing }}",
        "{{ steps.skipped.outputs.uri }}",
        "{{ steps.nowhere.outputs.uri }}",
        "{{ inputs.missing + 1 }}",
    ],
)
def test_undefined_names_are_errors_with_a_clear_message(source: str) -> None:
    with pytest.raises(ExpressionError) as info:
        evaluate(source, CONTEXT)
    message = info.value.message
    assert message.startswith(f"expression {source.strip()!r} failed: ")
    assert "has no attribute" in message or "is undefined" in message
    assert "default('')" in info.value.hint


def test_undefined_message_names_the_missing_key() -> None:
    with pytest.raises(ExpressionError, match=r"'dict object' has no attribute 'missing'"):
        evaluate("{{ inputs.missing }}", CONTEXT)


def test_default_filter_covers_a_skipped_step() -> None:
    assert evaluate("{{ steps.skipped.outputs.uri | default('n/a') }}", CONTEXT) == "n/a"
    assert evaluate("{{ steps.skipped.outputs.uri is defined }}", CONTEXT) is False


@pytest.mark.parametrize("source", ["{{ [inputs.missing] }}", "{{ {'a': inputs.missing} }}"])
def test_undefined_inside_a_native_container_is_an_error(source: str) -> None:
    with pytest.raises(ExpressionError, match="missing"):
        evaluate(source, CONTEXT)


def test_runtime_failures_become_expression_errors() -> None:
    with pytest.raises(ExpressionError, match=r"failed: division by zero"):
        evaluate("{{ inputs.n / 0 }}", CONTEXT)


# --- if: conditions -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "source"),
    [
        ("steps.snap.outputs.count > 2", "{{ steps.snap.outputs.count > 2 }}"),
        ("  steps.snap.status == 'succeeded'  ", "{{ steps.snap.status == 'succeeded' }}"),
        ("{{ inputs.flag }}", "{{ inputs.flag }}"),
        ("always()", "{{ always() }}"),
        (True, "{{ true }}"),
        (False, "{{ false }}"),
    ],
)
def test_condition_source(value: str | bool, source: str) -> None:
    assert condition_source(value) == source


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("steps.snap.outputs.count > 2", True),
        ("steps.snap.outputs.count > 9", False),
        ("steps.snap.status == 'succeeded' and not inputs.flag", True),
        ("{{ inputs.flag }}", False),
        (True, True),
        (False, False),
    ],
)
def test_conditions_evaluate_to_booleans(value: str | bool, expected: bool) -> None:
    result = evaluate(condition_source(value), CONTEXT)
    assert result is expected


def test_status_functions_are_detected_and_callable() -> None:
    assert compile_expression(condition_source("always()")).uses_status_function is True
    assert compile_expression("{{ steps.snap.status }}").uses_status_function is False
    context = {**CONTEXT, "always": lambda: True, "failure": lambda: False}
    assert evaluate(condition_source("always() and not failure()"), context) is True
    with pytest.raises(ExpressionError, match=r"forbidden in expressions: arguments to always\(\)"):
        compile_expression("{{ always(1) }}")


def test_references_are_collected() -> None:
    expr = compile_expression(
        "{{ steps.snap.outputs.uri }} {{ inputs['name'] }} {{ steps.a.status }}"
    )
    found = {(r.root, r.name, r.part, r.field) for r in expr.references}
    assert found == {
        ("steps", "snap", "outputs", "uri"),
        ("inputs", "name", None, None),
        ("steps", "a", "status", None),
    }


# --- sandbox, layer 1: refused before evaluation --------------------------------------------


ESCAPES = [
    "{{ inputs.__class__ }}",
    "{{ inputs['__class__'] }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ joiner.__init__.__globals__.os }}",
    "{{ namespace() }}",
    "{{ lipsum }}",
    "{{ range(10) }}",
    "{{ '{0.__class__}'.format(inputs) }}",
    "{{ inputs | attr('__class__') }}",
    "{{ 'x' | format(inputs) }}",
    "{% for x in inputs %}{% endfor %}",
    "{% set x = 1 %}",
    "{{ self }}",
    "{{ config }}",
    "{{ inputs.a.__init__ }}",
    "{{ ().__class__.__base__ }}",
    "{{ '%s' | format('a') }}",
    "{{ inputs.name | map('upper') | list }}",
    "{{ inputs.name is callable }}",
    "{{ inputs.l.pop() }}",
    "{{ inputs['_' ~ '_class__'] }}",
    "{% import 'os' as os %}",
    "{% include 'x' %}",
    "{{ request }}",
]


class Spy(dict):
    """A context value that records any read, to prove a refused template never ran."""

    touched: list[str]

    def __init__(self) -> None:
        super().__init__()
        self.touched = []

    def __getitem__(self, key: Any) -> Any:
        self.touched.append(f"[{key!r}]")
        return super().__getitem__(key)

    def __iter__(self):
        self.touched.append("iter")
        return super().__iter__()

    def __getattr__(self, name: str) -> Any:
        self.touched.append(f".{name}")
        raise AttributeError(name)


@pytest.mark.parametrize("source", ESCAPES)
def test_escape_attempts_are_refused_at_compile_time(source: str) -> None:
    with pytest.raises(ExpressionError) as info:
        compile_expression(source)
    message = info.value.message
    assert message.startswith(("forbidden in expressions", "expression syntax error")), message
    assert info.value.hint


@pytest.mark.parametrize("source", ESCAPES)
def test_escape_attempts_never_touch_the_context(source: str) -> None:
    spy = Spy()
    with pytest.raises(
        ExpressionError, match=r"^(forbidden in expressions|expression syntax error)"
    ):
        evaluate(source, {"inputs": spy, "steps": spy})
    assert spy.touched == []


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{ inputs.__class__ }}", "forbidden in expressions: the attribute '__class__'"),
        ("{{ inputs['__class__'] }}", "forbidden in expressions: the key '__class__'"),
        (
            "{{ cycler.__init__.__globals__ }}",
            "forbidden in expressions: the attribute '__globals__'",
        ),
        ("{{ lipsum }}", "forbidden in expressions: the name 'lipsum'"),
        ("{{ range(10) }}", "forbidden in expressions: calling a method or function"),
        ("{{ inputs | attr('__class__') }}", "forbidden in expressions: the filter 'attr'"),
        ("{{ '%s' | format('a') }}", "forbidden in expressions: the filter 'format'"),
        ("{% for x in inputs %}{% endfor %}", "forbidden in expressions: the for construct"),
        ("{{ inputs.name is callable }}", "forbidden in expressions: the test 'callable'"),
        ("{{ inputs['_' ~ '_class__'] }}", "forbidden in expressions: the string '_class__'"),
    ],
)
def test_refusal_names_what_is_forbidden(source: str, message: str) -> None:
    with pytest.raises(ExpressionError) as info:
        compile_expression(source)
    assert info.value.message == message


def test_refusal_reports_the_template_line() -> None:
    with pytest.raises(ExpressionError) as info:
        compile_expression("line one\nline two {{ inputs.__class__ }}\n")
    assert info.value.line == 2
    with pytest.raises(ExpressionError) as info:
        compile_expression("one\ntwo\nthree {{ inputs.x }")
    assert info.value.line == 3
    assert info.value.message.startswith("expression syntax error")


# --- sandbox, layer 2: dynamic lookups refused at run time ----------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "{{ inputs[inputs.k] }}",
        "found {{ inputs[inputs.k] }}",
        "{{ inputs['_' ~ '_cla' ~ 'ss_' ~ '_'] }}",
        "{{ [inputs] | join(attribute=inputs.k) }}",
        "{{ [inputs] | sum(attribute=inputs.k) }}",
        "{{ [inputs, inputs] | sort(attribute=inputs.k) }}",
        "{{ [inputs] | unique(attribute=inputs.k) | list }}",
    ],
)
def test_dynamic_dunder_lookup_is_refused_by_the_sandbox(source: str) -> None:
    compile_expression(source)  # passes the static layer: only the sandbox stands in the way
    with pytest.raises(ExpressionError) as info:
        evaluate(source, CONTEXT)
    assert "refused by the sandbox" in info.value.message
    assert "<class" not in info.value.message


def test_dynamic_lookup_of_a_normal_key_still_works() -> None:
    context = {"inputs": {"k": "name", "name": "mallory"}}
    assert evaluate("{{ inputs[inputs.k] }}", context) == "mallory"
