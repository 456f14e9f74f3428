"""Lint reads action models through views that compile patterns with Python's re
(clampdown.core.model_views): same JSON Schema, same answers for values that meet no
pattern, and the model itself for a literal that meets one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, Field, ValidationError

from clampdown.core import model_views
from clampdown.core.actions import Action, ActionInput, Registry, registry
from clampdown.core.lint import lint_paths

ACTIONS, BROKEN = registry().load_all()
MODELS = [
    (a.name, kind, m) for a in ACTIONS for kind, m in (("Input", a.Input), ("Output", a.Output))
]


def test_every_action_loads() -> None:
    assert ACTIONS and not BROKEN


@pytest.mark.parametrize(("name", "kind", "model"), MODELS, ids=[f"{n}.{k}" for n, k, _ in MODELS])
def test_a_view_has_the_models_json_schema(name: str, kind: str, model: type[BaseModel]) -> None:
    view = model_views.view(model)
    assert view is not model, f"{name}.{kind} is read without a view"
    assert view.model_config.get("regex_engine") == "python-re"
    for mode in ("validation", "serialization"):
        assert view.model_json_schema(mode=mode) == model.model_json_schema(mode=mode)


def _errors(model: type[BaseModel], data: dict[str, Any]) -> list[tuple[Any, ...]]:
    try:
        model.model_validate(data, strict=True)
    except ValidationError as exc:
        return [(e["type"], e["loc"], e["msg"]) for e in exc.errors(include_url=False)]
    return []


@pytest.mark.parametrize("action", ACTIONS, ids=[a.name for a in ACTIONS])
def test_a_view_validates_values_that_meet_no_pattern_as_the_model_does(action: Any) -> None:
    """Nothing, one wrong value per field, and an unknown key: the same errors."""
    model = action.Input
    patterned = model_views._patterned(model)
    cases: list[dict[str, Any]] = [{}, {"no_such_field": 1}]
    cases += [{name: object()} for name in model.model_fields if name not in patterned]
    cases += [{name: 12345} for name in model.model_fields if name not in patterned]
    for data in cases:
        assert model_views.checker(model, data) is model_views.view(model)
        assert _errors(model_views.view(model), data) == _errors(model, data), data


class _Named(ActionInput):
    name: str = Field(pattern=r"^[a-z]+$")
    count: int = 1
    tags: list[str] = Field(default_factory=list)


def test_a_literal_that_meets_a_pattern_is_checked_by_the_model_itself() -> None:
    assert model_views.checker(_Named, {"name": "x"}) is _Named
    assert model_views.checker(_Named, {"count": 2, "tags": []}) is model_views.view(_Named)
    # the two engines differ: Python's $ also matches before a final newline
    assert _errors(model_views.view(_Named), {"name": "abc\n"}) == []
    assert _errors(_Named, {"name": "abc\n"})[0][0] == "string_pattern_mismatch"


def test_lint_checks_a_literal_against_the_actions_own_pattern(tmp_path: Path) -> None:
    path = tmp_path / "scope.yaml"
    path.write_text(
        "apiVersion: clampdown/v1\nkind: Runbook\n"
        "metadata: {name: scope, title: Scope}\n"
        "steps:\n"
        "  - id: scope\n"
        "    uses: aws.forensics.scope_exfiltration\n"
        '    with: {principal: "not a principal!", lookback_hours: 0}\n',
        encoding="utf-8",
    )
    found = [(d.line, d.column, d.message) for d in lint_paths([path])]
    assert (7, 23, "with.principal = 'not a principal!': must match the pattern") in [
        (line, col, msg.split(" ^")[0]) for line, col, msg in found
    ], found
    assert any("lookback_hours = 0: must be at least 1" in m for _, _, m in found), found


class _NamedAction(Action):
    name = "test.named"
    Input = _Named


def test_lint_applies_the_rust_regex_to_a_literal(tmp_path: Path) -> None:
    """'abc\\n' passes Python's ^[a-z]+$ but not the run's: lint says what the run says."""
    actions = Registry({})
    actions.register(_NamedAction)
    path = tmp_path / "named.yaml"
    path.write_text(
        "apiVersion: clampdown/v1\nkind: Runbook\n"
        "metadata: {name: named, title: Named}\n"
        "steps:\n"
        "  - id: a\n"
        "    uses: test.named\n"
        '    with: {name: "abc\\n", count: "{{ 2 }}"}\n',
        encoding="utf-8",
    )
    (d,) = lint_paths([path], actions)
    assert d.message == "with.name = 'abc\\n': must match the pattern ^[a-z]+$"
