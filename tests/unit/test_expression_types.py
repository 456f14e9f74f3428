"""Static types of expressions: inference from inputs, outputs, literals and filters, what an
``if:`` proves, and the check against the field an expression feeds."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import pytest
from pydantic import Field

from clampdown.core import expression_types as types
from clampdown.core import type_checks
from clampdown.core.actions import ActionInput, ActionOutput
from clampdown.core.models import InputSpec

INPUTS = {
    "name": InputSpec(type="string", required=True),
    "maybe": InputSpec(type="string"),  # optional, no default: none when not given
    "arn": InputSpec(type="string", required=True, pattern="^arn:"),
    "level": InputSpec(type="string", enum=["info", "warning"], default="info"),
    "tag": InputSpec(type="string", enum=["ok", "Not-ok"], default="ok"),
    "hours": InputSpec(type="integer", default=24),
    "ratio": InputSpec(type="number", default=0.5),
    "go": InputSpec(type="boolean", default=False),
    "roles": InputSpec(type="array", default=[]),
    "some": InputSpec(type="array", min_items=1, default=["a"]),
    "extra": InputSpec(type="object", default={}),
}


class Out(ActionOutput):
    denied: list[str]
    count: int
    who: str | None = None
    blob: Any = None


def outputs(step: str, name: str) -> types.ExprType | None:
    return types.output_type(Out, step, name) if step == "up" else None


def infer(source: str, condition: str | None = None) -> types.ExprType:
    scope = types.Scope(INPUTS, outputs, type_checks.given_by(condition))
    return types.infer(source, scope)


@pytest.mark.parametrize(
    ("source", "kinds"),
    [
        ("{{ inputs.name }}", {"string"}),
        ("{{ inputs.maybe }}", {"string", "null"}),
        ("{{ inputs.hours }}", {"integer"}),
        ("{{ inputs.hours * 60 }}", {"integer"}),
        ("{{ inputs.hours / 2 }}", {"number"}),
        ("{{ inputs.hours + inputs.ratio }}", {"number"}),
        ("{{ inputs.go }}", {"boolean"}),
        ("{{ not inputs.go }}", {"boolean"}),
        ("{{ inputs.hours > 2 }}", {"boolean"}),
        ("{{ inputs.name is string }}", {"boolean"}),
        ("{{ inputs.roles }}", {"array"}),
        ("{{ inputs.extra }}", {"object"}),
        ("{{ inputs.roles | length }}", {"integer"}),
        ("{{ inputs.roles | join(',') }}", {"string"}),
        ("{{ inputs.name | upper }}", {"string"}),
        ("{{ inputs.name ~ inputs.hours }}", {"string"}),
        ("{{ inputs.name + '-x' }}", {"string"}),
        ("{{ inputs.roles + ['x'] }}", {"array"}),
        ("{{ inputs.name * 2 }}", {"string"}),
        ("{{ '%s' % inputs.name }}", {"string"}),
        ("{{ inputs.hours | string }}", {"string"}),
        ("{{ inputs.name | int }}", {"integer"}),
        ("{{ inputs.roles | first }}", None),  # items of an input list: not declared
        ("{{ ['a', 'b'] | first }}", {"string"}),
        ("{{ [1, 2] | sum }}", {"number"}),
        ("{{ inputs.roles | sort }}", {"array"}),
        ("{{ inputs.go and inputs.name }}", {"boolean", "string"}),  # Python's and
        ("{{ inputs.name if inputs.go else 3 }}", {"string", "integer"}),
        ("{{ 'a' if inputs.go }}", {"string", "null"}),
        ("{{ [inputs.name] }}", {"array"}),
        ("{{ {'a': 1} }}", {"object"}),
        ("{{ none }}", {"null"}),
        ("{{ steps.up.outputs.denied }}", {"array"}),
        ("{{ steps.up.outputs.count }}", {"integer"}),
        ("{{ steps.up.outputs.who }}", {"string", "null"}),
        ("{{ steps.up.status }}", {"string"}),
        ("{{ run.drill }}", {"boolean"}),
        ("{{ run.id }}", {"string"}),
        ("{{ always() }}", {"boolean"}),
        ("text {{ inputs.hours }}", {"string"}),  # text around: always a string
        ("{{ inputs.hours }}{{ inputs.hours }}", {"string"}),
        ("{{ steps.up.outputs.blob }}", None),  # declared as Any
        ("{{ steps.other.outputs.x }}", None),  # an action lint does not know
        ("{{ inputs[inputs.name] }}", None),  # a computed key
    ],
)
def test_inferred_kinds(source: str, kinds: set[str] | None) -> None:
    found = infer(source)
    assert (None if found.kinds is None else set(found.kinds)) == kinds


def test_an_unknown_type_says_why() -> None:
    assert "not known before the run" in infer("{{ steps.other.outputs.x }}").why
    assert "declared without a type" in infer("{{ steps.up.outputs.blob }}").why
    assert "computed key" in infer("{{ inputs[inputs.name] }}").why


def test_emptiness_comes_from_the_declaration() -> None:
    assert infer("{{ inputs.roles }}").may_be_empty == "input 'roles' defaults to []"
    assert infer("{{ inputs.some }}").may_be_empty == ""  # min_items: 1
    assert infer("{{ [] }}").may_be_empty and not infer("{{ ['a'] }}").may_be_empty
    assert infer("{{ inputs.roles | join(',') }}").may_be_empty  # '' from []


def test_enum_and_pattern_travel_with_the_input() -> None:
    assert infer("{{ inputs.level }}").enum == ("info", "warning")
    assert infer("{{ inputs.arn }}").pattern == "^arn:"


@pytest.mark.parametrize(
    ("condition", "source", "kinds", "empty"),
    [
        ("{{ inputs.roles }}", "{{ inputs.roles }}", {"array"}, False),
        ("{{ inputs.roles | length > 0 }}", "{{ inputs.roles }}", {"array"}, False),
        ("inputs.roles | length >= 1", "{{ inputs.roles }}", {"array"}, False),
        ("{{ inputs.go and inputs.maybe }}", "{{ inputs.maybe }}", {"string"}, False),
        ("{{ inputs.maybe is not none }}", "{{ inputs.maybe }}", {"string"}, False),
        ("{{ inputs.maybe != '' }}", "{{ inputs.maybe }}", {"string"}, False),
        # or proves nothing about either side
        ("{{ inputs.roles or inputs.go }}", "{{ inputs.roles }}", {"array"}, True),
        ("{{ inputs.maybe or inputs.go }}", "{{ inputs.maybe }}", {"string", "null"}, False),
        ("{{ not inputs.roles }}", "{{ inputs.roles }}", {"array"}, True),
    ],
)
def test_an_if_proves_what_it_tests(
    condition: str, source: str, kinds: set[str], empty: bool
) -> None:
    found = infer(source, condition)
    assert set(found.kinds or ()) == kinds
    assert bool(found.may_be_empty) is empty


def test_default_without_true_keeps_none() -> None:
    kept = infer("{{ inputs.maybe | default('x') }}")
    assert "null" in (kept.kinds or ()) and "default() without true keeps none" in kept.none_why
    replaced = infer("{{ inputs.maybe | default('x', true) }}")
    assert replaced.kinds == frozenset({"string"})
    assert infer("{{ inputs.maybe | default('x', boolean=true) }}").kinds == frozenset({"string"})
    # a skipped step's outputs are undefined: default() without true is right there
    assert "null" not in (infer("{{ steps.up.outputs.count | default(0) }}").kinds or ())


# --- checking against fields -----------------------------------------------------------------


class Fields(ActionInput):
    text: str
    short: str = Field("x", min_length=1)
    name: str = Field("a", pattern=r"^[a-z]+$")
    level: str = Field("info", pattern="^(info|warning)$")
    items: list[str] = Field(default_factory=list)
    needed: list[str] = Field(["a"], min_length=1)
    count: int = 1
    ratio: float = 1.0
    flag: bool = False
    maybe: str | None = None


def check(source: str, field: str, condition: str | None = None) -> list[type_checks.Problem]:
    target = type_checks.field_type(Fields, field)
    assert target is not None
    return type_checks.check_field(infer(source, condition), target)


@pytest.mark.parametrize(
    ("source", "field"),
    [
        ("{{ inputs.name }}", "text"),
        ("{{ inputs.hours }}", "count"),
        ("{{ inputs.hours }}", "ratio"),  # an integer goes where a number is taken
        ("{{ inputs.ratio }}", "ratio"),
        ("{{ inputs.go }}", "flag"),
        ("{{ inputs.roles }}", "items"),
        ("{{ inputs.some }}", "needed"),
        ("{{ inputs.maybe }}", "maybe"),  # none is fine where the field takes none
        ("{{ inputs.level }}", "level"),  # every enum value matches the pattern
        ("{{ inputs.hours | string }}", "text"),
        ("{{ [inputs.name] }}", "needed"),
        ("{{ steps.other.outputs.x }}", "text"),  # unknown into free text: nothing to say
        ("text {{ inputs.hours }}", "text"),
    ],
)
def test_values_that_fit_their_field(source: str, field: str) -> None:
    assert check(source, field) == []


@pytest.mark.parametrize(
    ("source", "field", "message", "hint"),
    [
        (
            "{{ inputs.name }}",
            "items",
            "input 'name' is a string, but field 'items' takes a list",
            'write a list: ["{{ inputs.name }}"]',
        ),
        (
            "{{ inputs.hours }}",
            "text",
            "input 'hours' is an integer, but field 'text' takes a string",
            "type: string",
        ),
        (
            "{{ inputs.name }}",
            "count",
            "input 'name' is a string, but field 'count' takes an integer",
            "| int",
        ),
        (
            "{{ inputs.name }}",
            "flag",
            "input 'name' is a string, but field 'flag' takes true or false",
            "{{ inputs.name == 'yes' }}",
        ),
        (
            "{{ inputs.roles }}",
            "needed",
            "input 'roles' defaults to [], but field 'needed' needs at least one item",
            'if: "{{ inputs.roles }}"',
        ),
        (
            "{{ inputs.maybe }}",
            "text",
            "input 'maybe' is optional and has no default: when it is not given, field 'text' "
            "gets none",
            'if: "{{ inputs.maybe }}"',
        ),
        (
            "{{ inputs.tag }}",
            "name",
            "input 'tag' may be 'Not-ok', which does not match field 'name''s pattern",
            "enum",
        ),
        (
            "{{ inputs.hours if inputs.go else inputs.name }}",
            "count",
            "the expression may be a string or an integer; field 'count' takes an integer",
            "",
        ),
    ],
)
def test_values_that_do_not_fit_are_errors_with_a_fix(
    source: str, field: str, message: str, hint: str
) -> None:
    problems = check(source, field)
    assert [p.severity for p in problems] == ["error"], problems
    assert message in problems[0].message
    assert hint in problems[0].hint


def test_a_guard_in_if_removes_the_error() -> None:
    assert check("{{ inputs.roles }}", "needed", "{{ inputs.roles | length > 0 }}") == []
    assert check("{{ inputs.maybe }}", "text", "{{ inputs.maybe }}") == []


@pytest.mark.parametrize(
    ("source", "field", "says"),
    [
        ("{{ steps.up.outputs.blob }}", "count", "cannot be checked statically"),
        ("{{ inputs.name }}", "name", "cannot be known statically"),  # no pattern on the input
        ("{{ steps.up.outputs.who }}", "text", "may be none"),  # an output, not an input
    ],
)
def test_what_cannot_be_known_is_a_warning_that_says_so(source: str, field: str, says: str) -> None:
    problems = check(source, field)
    assert [p.severity for p in problems] == ["warning"], problems
    assert says in problems[0].message + problems[0].hint


def test_a_list_field_item_is_checked_against_the_item_type() -> None:
    parent = type_checks.field_type(Fields, "items")
    assert parent is not None
    item = type_checks.item_field(parent)
    assert item is not None and item.accepts.kinds == frozenset({"string"})
    problems = type_checks.check_field(infer("{{ inputs.hours }}"), item)
    assert problems and "takes a string" in problems[0].message


@pytest.mark.parametrize(
    ("condition", "bad"),
    [("{{ inputs.level }}", False), ("{{ inputs.go }}", False), ("{{ inputs.word }}", True)],
)
def test_an_if_that_may_read_text_false_is_an_error(condition: str, bad: bool) -> None:
    specs = {**INPUTS, "word": InputSpec(type="string", enum=["yes", "no"], default="no")}
    found = types.infer(condition, types.Scope(specs, outputs))
    problem = type_checks.check_condition(found)
    assert (problem is not None) is bad
    if problem is not None:
        assert "'no'" in problem.message and "{{ inputs.word == 'yes' }}" in problem.hint


def test_a_model_pydantic_cannot_describe_gives_unknown_types_not_a_crash() -> None:
    from pydantic import ConfigDict

    class Opaque:
        pass

    class Odd(ActionInput):
        model_config = ConfigDict(arbitrary_types_allowed=True)
        thing: Opaque | None = None

    class OddOut(ActionOutput):
        model_config = ConfigDict(arbitrary_types_allowed=True)
        thing: Opaque | None = None

    assert type_checks.field_type(Odd, "thing") is None  # unknown field: checked when the step runs
    assert types.output_type(OddOut, "s", "thing").kinds is None


class _Who(ActionInput):
    users: list[str] = Field(default_factory=list)
    quorum: int = 1


class _Step(ActionInput):
    approvers: _Who = Field(default_factory=_Who)  # a $ref to $defs in the JSON Schema
    stages: list[_Who] = Field(default_factory=list)
    free: dict[str, Any] = Field(default_factory=dict)


@pytest.mark.parametrize(
    ("where", "source", "says"),
    [
        (
            ("approvers", "users", 0),
            "{{ inputs.hours }}",
            "field 'approvers.users[]' takes a string",
        ),
        (("approvers", "users"), "{{ inputs.name }}", "field 'approvers.users' takes a list"),
        (("approvers", "quorum"), "{{ inputs.name }}", "field 'approvers.quorum' takes an integer"),
        (("stages", 0, "quorum"), "{{ inputs.go }}", "field 'stages[].quorum' takes an integer"),
    ],
)
def test_a_value_inside_a_mapping_field_is_checked_at_any_depth(
    where: tuple[str | int, ...], source: str, says: str
) -> None:
    """Lint checked only a field and a list item; a value inside a mapping field (such as
    ``approvers.users``) was left to the run, which refused what lint had passed."""
    problems = type_checks.with_value_problems(_Step, where, infer(source))
    assert [p.severity for p in problems] == ["error"], problems
    assert says in problems[0].message


@pytest.mark.parametrize(
    ("where", "source"),
    [
        (("approvers", "users"), "{{ inputs.roles }}"),
        (("approvers", "users", 0), "{{ inputs.name }}"),
        (("stages", 0, "quorum"), "{{ inputs.hours }}"),
        (("free", "anything"), "{{ inputs.hours }}"),  # free-form: checked when it runs
        (("approvers", "nope"), "{{ inputs.hours }}"),  # not in the schema: the model says
    ],
)
def test_a_value_that_fits_inside_a_mapping_field_is_not_a_problem(
    where: tuple[str | int, ...], source: str
) -> None:
    assert type_checks.with_value_problems(_Step, where, infer(source)) == []


class Optional_(ActionInput):
    """Optional fields: each variant's facts must survive the none variant."""

    name: str | None = Field(None, pattern=r"^[a-z]+$")
    choice: Literal["info", "error"] | None = None
    names: list[str] | None = None


@pytest.mark.parametrize(
    ("source", "field", "severity", "says"),
    [
        ("{{ inputs.name }}", "name", "warning", "cannot be known statically"),
        ("{{ inputs.tag }}", "name", "error", "may be 'Not-ok', which does not match"),
        ("{{ inputs.level }}", "choice", "error", "may be 'warning'; field 'choice' takes one of"),
        ("{{ inputs.hours }}", "names[]", "error", "is an integer, but field 'names[]'"),
        ("{{ inputs.name }}", "choice", "warning", "which takes one of: info, error; whether"),
    ],
)
def test_an_optional_field_keeps_its_pattern_choices_and_item_type(
    source: str, field: str, severity: str, says: str
) -> None:
    target = type_checks.field_type(Optional_, field.removesuffix("[]"))
    assert target is not None
    if field.endswith("[]"):
        target = type_checks.item_field(target)
        assert target is not None
    problems = type_checks.check_field(infer(source), target)
    assert [p.severity for p in problems] == [severity], problems
    assert says in problems[0].message


def test_an_optional_field_takes_none_and_its_own_values() -> None:
    for source, field in [("{{ 'error' if inputs.go }}", "choice"), ("{{ 'error' }}", "choice")]:
        target = type_checks.field_type(Optional_, field)
        assert target is not None
        assert type_checks.check_field(infer(source), target) == [], source


@pytest.mark.parametrize(
    ("source", "field", "severity", "says"),
    [
        ("{{ inputs.level[1:] }}", "level", "warning", "a slice feeds field 'level', which must"),
        ("{{ 'info' | reverse }}", "level", "warning", "| reverse feeds field 'level', which must"),
        ("{{ inputs.name | sort }}", "text", "error", "| sort is a list, but field 'text'"),
    ],
)
def test_an_operation_that_changes_a_value_forgets_its_enum_and_pattern(
    source: str, field: str, severity: str, says: str
) -> None:
    problems = check(source, field)
    assert [p.severity for p in problems] == [severity], problems
    assert says in problems[0].message


class Sub(ActionInput):
    rest_api_id: str
    stage_name: str


class Shaped(ActionInput):
    """Fields whose schema asks more than a kind: a date-time, a model of its own."""

    start: datetime | None = None
    target: Sub | None = None


@pytest.mark.parametrize(
    ("source", "field", "severities", "says"),
    [
        ("{{ inputs.name }}", "start", ["warning"], "which takes an ISO 8601 date and time"),
        ("{{ 'info' }}", "start", ["error"], "may be 'info', which is not an ISO 8601 date"),
        ("{{ '2026-12-06T07:00:00Z' }}", "start", [], ""),
        ("{{ inputs.extra }}", "target", ["warning"], "(rest_api_id, stage_name) cannot be"),
    ],
)
def test_a_format_or_the_keys_of_a_model_field_are_checked_or_warned(
    source: str, field: str, severities: list[str], says: str
) -> None:
    target = type_checks.field_type(Shaped, field)
    assert target is not None
    problems = type_checks.check_field(infer(source), target)
    assert [p.severity for p in problems] == severities, problems
    assert all(says in p.message for p in problems)


@pytest.mark.parametrize(
    ("source", "kinds"),
    [
        ("{{ -inputs.go }}", {"integer"}),  # -True == -1
        ("{{ inputs.go + 1 }}", {"integer"}),
        ("{{ inputs.maybe_n - inputs.hours }}", {"integer"}),  # none fails the step instead
        ("{{ inputs.maybe_n / 2 }}", {"number"}),
    ],
)
def test_arithmetic_on_booleans_and_optional_numbers_has_a_type(
    source: str, kinds: set[str]
) -> None:
    specs = {**INPUTS, "maybe_n": InputSpec(type="integer")}
    found = types.infer(source, types.Scope(specs, outputs))
    assert found.kinds == frozenset(kinds)


@pytest.mark.parametrize(
    ("source", "fails"),
    [
        ("{{ -inputs.name }}", "- of input 'name' fails: it is a string, not a number"),
        ("{{ inputs.go[0] }}", "reading an item of input 'go' fails: it is true or false"),
        ("{{ run.drill.x }}", "reading .x of run.drill fails"),
        ("{{ inputs.hours | max }}", "| max of input 'hours' fails: it is an integer"),
        ("{{ inputs.name | items }}", "| items of input 'name' fails: it is a string"),
        ("{{ inputs.name | abs }}", "| abs of input 'name' fails"),
        ("{{ 3 + inputs.name }}", "+ fails for an integer and a string"),
        ("{{ run.id['users'] }}", "reading ['users'] of run.id fails: it is a string"),
        ("{{ inputs.hours[1:] }}", "reading a slice of input 'hours' fails"),
        ("{{ inputs.name * 2 }}", ""),
        ("{{ inputs.name % inputs.hours }}", ""),
        ("{{ inputs.extra['x'] }}", ""),
        ("{{ inputs.roles[0] }}", ""),
        ("{{ -inputs.go }}", ""),  # -True is -1
        ("{{ inputs.maybe | length }}", ""),  # a string when given: it may work
        ("{{ steps.up.outputs.blob | max }}", ""),  # unknown: nothing is certain
        ("{{ inputs.hours | length if inputs.hours is string else 0 }}", ""),  # guarded
        ("{{ inputs.go and inputs.go[0] }}", ""),  # not evaluated when go is false
        ("{{ inputs.hours | default(inputs.go[0]) }}", ""),  # a fallback is not followed
    ],
)
def test_an_operation_that_fails_for_every_value_is_reported(source: str, fails: str) -> None:
    node = types.expression_node(source)
    assert node is not None
    found = types.certain_failures(node, types.Scope(INPUTS, outputs))
    assert len(found) == (1 if fails else 0), found
    assert all(fails in f for f in found), found


@pytest.mark.parametrize(
    ("source", "errors"),
    [
        ("{{ [inputs.hours, 2] }}", ["an item of a list: the expression is an integer"]),
        ("{{ [inputs.maybe] }}", ["an item of a list: input 'maybe' is optional"]),
        ("{{ [inputs.name, 'b'] }}", []),
        ("{{ inputs.roles }}", []),  # an array input declares no item type
    ],
)
def test_the_items_of_a_list_expression_are_checked(source: str, errors: list[str]) -> None:
    found = [p for p in check(source, "items") if p.severity == "error"]
    assert len(found) == len(errors), found
    assert all(e in p.message for e, p in zip(errors, found, strict=True)), found
