"""Expressions: native types, strict undefined names, conditions, and the two sandbox layers."""

from __future__ import annotations

from typing import Any

import pytest

from clampdown.core.expressions import (
    ExpressionError,
    compile_expression,
    condition_problem,
    condition_source,
    contains_expression,
    evaluate,
    evaluate_condition,
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


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ (inputs.l + inputs.l) | unique }}", [1, 2]),
        ("{{ inputs.l | reverse }}", [2, 1]),
        ("{{ inputs.m | items }}", [("a", 1)]),
        ("{{ {'u': inputs.l | unique} }}", {"u": [1, 2]}),
        ("{{ [inputs.l | reverse] }}", [[2, 1]]),
    ],
)
def test_a_lazy_filter_result_is_a_list_that_reads_the_same_twice(
    source: str, expected: Any
) -> None:
    # Jinja gives generators here; one consumed by its first reader was recorded as []
    # by core.set_output (and read as [] by the steps after it)
    value = evaluate(source, CONTEXT)
    assert value == expected
    assert value == expected  # not used up by the first comparison


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


# --- sandbox, layer 3: size and depth limits ------------------------------------------------

BIG = "'x' * 100000"


@pytest.mark.parametrize(
    ("source", "operation"),
    [
        ("{{ [" + BIG + ", 'y'] | join('z' * 100000) }}", "join"),
        ("{{ [" + BIG + ", 'y'] | join('z') }}", "join"),
        ("{{ (" + BIG + ") | replace('x', 'yy') }}", "replace"),
        ("{{ ('ab' * 50000) | replace('', 'x') }}", "replace"),
        ("{{ [[1] * 100000, [1] * 100000] | sum(start=[]) }}", "sum"),
        ("{{ '%0100000000d' % 1 }}", "a %-format field"),
        ("{{ '%*d' % (100000000, 1) }}", "a %-format field"),
        ("{{ '%s%s' % (" + BIG + ", " + BIG + ") }}", "a %-format"),
        ("{{ (" + BIG + ") ~ 'y' }}", "a ~ concatenation"),
        ("{{ 'y' ~ (" + BIG + ") ~ 'y' }}", "a ~ concatenation"),
        ("{{ (" + BIG + ") + 'y' }}", "a concatenation"),
        ("{{ [1] * 100000 + [2] }}", "a concatenation"),
        ("{{ 'x' * 100000001 }}", "a repetition"),
        ("x{{ 'x' * 100000 }}", "the rendered text"),
    ],
)
def test_every_operation_that_grows_a_value_is_capped(source: str, operation: str) -> None:
    with pytest.raises(ExpressionError) as info:
        evaluate(source, CONTEXT)
    assert info.value.message.endswith(
        f"refused by the sandbox: {operation} would be longer than 100,000 characters or items"
    ), info.value.message
    assert len(info.value.message) < 400  # the runaway source is not pasted whole


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ ['a', 'b'] | join(', ') }}", "a, b"),
        ("{{ 'aXb' | replace('X', '--') }}", "a--b"),
        ("{{ [1, 2, 3] | sum }}", 6),
        ("{{ [[1], [2]] | sum(start=[]) }}", [1, 2]),
        ("{{ '%s-%03d' % ('k', 7) }}", "k-007"),
        ("{{ '%(a)s' % {'a': 1} }}", "1"),
        ("{{ 'a' ~ 1 ~ none }}", "a1None"),
        ("{{ 'a' + 'b' }}", "ab"),
        ("{{ [1] + [2] }}", [1, 2]),
        ("{{ 2 + 3 }}", 5),
        ("{{ 7 % 4 }}", 3),
    ],
)
def test_capped_operations_still_work_below_the_cap(source: str, expected: Any) -> None:
    assert evaluate(source, CONTEXT) == expected


def test_the_format_filter_is_not_offered() -> None:
    with pytest.raises(ExpressionError, match="the filter 'format'"):
        compile_expression("{{ '%0100000000d' | format(1) }}")


@pytest.mark.parametrize(
    "source",
    [
        "{{ " + "(" * 3000 + "1" + ")" * 3000 + " }}",
        "{{ " + "[" * 3000 + "]" * 3000 + " }}",
        "{{ " + "not " * 3000 + "true }}",
        "{{ " + "- " * 3000 + "1 }}",
        "{{ " + "1 + " * 3000 + "1 }}",
        "{{ 1" + " | abs" * 3000 + " }}",
        "{{ inputs.n" + " and inputs.n" * 3000 + " }}",
    ],
)
def test_deep_nesting_is_an_expression_error_not_a_recursion_error(source: str) -> None:
    with pytest.raises(ExpressionError) as info:
        compile_expression(source)
    assert info.value.message == "expression nested more than 48 levels deep"
    assert "split it" in info.value.hint


def test_the_depth_error_names_the_template_line() -> None:
    source = "first line\nsecond {{ " + "(" * 100 + "1" + ")" * 100 + " }}"
    with pytest.raises(ExpressionError) as info:
        compile_expression(source)
    assert info.value.line == 2


def test_reasonable_nesting_is_fine() -> None:
    assert evaluate("{{ " + "(" * 20 + "1" + ")" * 20 + " }}", CONTEXT) == 1


# --- if: the text trap ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "fix"),
    [
        ("{{ inputs.flag }} and {{ inputs.flag }}", "{{ inputs.flag and inputs.flag }}"),
        ("{{ inputs.name }} == 'x'", "{{ inputs.name == 'x' }}"),
        ("go: {{ inputs.flag }}", "{{ go: inputs.flag }}"),
    ],
)
def test_an_if_that_renders_to_text_is_refused(condition: str, fix: str) -> None:
    problem = condition_problem(condition)
    assert problem is not None and "always true" in problem.message
    assert problem.hint.startswith("write one expression: if: ")
    if "go:" not in condition:
        assert fix in problem.hint
    with pytest.raises(ExpressionError, match="always true"):
        evaluate_condition(condition, CONTEXT)  # the engine never runs such a step


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("{{ inputs.flag }}", False),
        ("not inputs.flag", True),
        ("{{ inputs.name }}", True),  # a given, non-empty value: the documented idiom
        (" {{ inputs.n > 2 }} ", True),
        (True, True),
        (False, False),
    ],
)
def test_one_expression_in_if_is_evaluated(condition: Any, expected: bool) -> None:
    assert condition_problem(condition) is None
    assert evaluate_condition(condition, CONTEXT) is expected


@pytest.mark.parametrize("text", ["false", "False", "no", "0", "off"])
def test_if_refuses_text_that_reads_as_false(text: str) -> None:
    with pytest.raises(ExpressionError, match="counts as true"):
        evaluate_condition("{{ inputs.word }}", {"inputs": {"word": text}})


@pytest.mark.parametrize("name", ["items", "keys", "values", "get", "copy", "update"])
def test_a_key_named_like_a_mapping_method_is_the_data(name: str) -> None:
    assert evaluate("{{ inputs." + name + " }}", {"inputs": {name: ["a"]}}) == ["a"]
    assert evaluate("{{ inputs." + name + " | length }}", {"inputs": {name: ["a"]}}) == 1


def test_a_mapping_method_without_such_a_key_is_still_not_callable() -> None:
    with pytest.raises(ExpressionError, match="calling a method"):
        compile_expression("{{ inputs.items() }}")


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ (inputs.l | unique)[0] }}", 1),  # indexed inside the expression
        ("{{ (inputs.l | reverse)[0] }}", 2),
        ("{{ ({'a': 1} | items)[0][0] }}", "a"),
        ("{{ (inputs.l | unique) | length }}", 2),
        ("left {{ inputs.l | unique }} right", "left [1, 2] right"),  # in text
        ("{{ inputs.l | reverse }} and {{ inputs.l | unique }}", "[2, 1] and [1, 2]"),
    ],
)
def test_lazy_filters_give_lists_inside_expressions_and_text(source: str, expected: Any) -> None:
    """Jinja's unique, reverse (of a list) and items give generators: inside an expression
    ``(x | unique)[0]`` failed, and text rendered ``<generator object …>``."""
    assert evaluate(source, CONTEXT) == expected
