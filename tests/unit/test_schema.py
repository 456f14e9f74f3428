"""The generated JSON Schema: an enum of installed actions, per-action with: schemas,
booleans as booleans, the if: trap refused, and a short description for uses."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
from typer.testing import CliRunner

from clampdown.app.cli import app
from clampdown.core.actions import registry
from clampdown.core.schema import runbook_schema


def schema() -> dict[str, Any]:
    """Built when asked: other test modules register test actions in the same registry."""
    return runbook_schema(registry())


def doc(*steps: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "clampdown/v1",
        "kind": "Runbook",
        "metadata": {"name": "schema-test", "title": "Schema test"},
        "steps": list(steps),
    }


def errors(*steps: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema())
    return [e.message for e in validator.iter_errors(doc(*steps))]


REVOKE = {"id": "revoke", "uses": "aws.iam.revoke_credentials"}
ARN = "arn:aws:iam::123456789012:user/mallory"


def test_uses_is_an_enum_of_the_installed_actions_with_a_short_description() -> None:
    uses = schema()["$defs"]["Step"]["properties"]["uses"]
    assert uses["enum"] == [a.name for a in registry().load_all()[0]]
    assert "aws.iam.revoke_credentials" in uses["enum"]
    assert "examples" not in uses and len(uses["description"]) < 80
    assert errors({"id": "a", "uses": "aws.iam.revoke_credential"}) != []


@pytest.mark.parametrize(
    ("value", "valid"),
    [(True, True), (False, True), ("yes", False), ("true", False), ("{{ inputs.b }}", True)],
)
def test_a_boolean_field_takes_a_boolean_or_an_expression(value: Any, valid: bool) -> None:
    step = {**REVOKE, "with": {"principal_arn": ARN, "block_assume": value}}
    assert (errors(step) == []) is valid


def test_an_action_with_required_fields_requires_with() -> None:
    assert errors({"id": "w", "uses": "core.wait"}) != []
    assert errors({"id": "w", "uses": "core.wait", "with": {"duration": "1s"}}) == []
    assert errors({"id": "l", "uses": "core.set_output"}) == []  # nothing required


@pytest.mark.parametrize(
    ("condition", "valid"),
    [
        ("{{ inputs.go and inputs.freeze }}", True),
        ("  {{ inputs.go }}\n", True),
        ("inputs.go and not inputs.freeze", True),
        ("always()", True),
        (True, True),
        ("{{ inputs.go }} and {{ inputs.freeze }}", False),
        ("{{ inputs.mode }} == 'contain'", False),
        ("run {{ inputs.go }}", False),
        (1, False),
    ],
)
def test_if_is_one_expression(condition: Any, valid: bool) -> None:
    step = {"id": "n", "uses": "core.log", "if": condition, "with": {"message": "m"}}
    assert (errors(step) == []) is valid


def test_document_fields_are_strict_like_the_loader() -> None:
    base = {"id": "n", "uses": "core.log", "with": {"message": "m"}}
    assert errors({**base, "retries": "2"}) != []
    assert errors({**base, "retries": 2}) == []


def test_clampdown_schema_prints_the_same_schema() -> None:
    result = CliRunner().invoke(app, ["schema"])
    assert result.exit_code == 0
    assert json.loads(result.stdout) == json.loads(json.dumps(schema()))
