"""JSON Schema of ``clampdown/v1`` for editors (VS Code's YAML extension and others).

The document schema comes from the pydantic models; on top of it, each known
action adds an ``if uses == X then with: <X's input schema>`` rule, so an editor
completes and checks ``with:`` fields per action.
"""

from __future__ import annotations

from typing import Any

from clampdown.core.actions import Registry
from clampdown.core.models import Runbook

SCHEMA_ID = "https://clampdown.dev/schema/clampdown-v1.json"
# Any with: value may be an expression; its type is checked when the run renders it.
EXPRESSION = {"type": "string", "pattern": r"\{\{", "description": "a {{ … }} expression"}


def runbook_schema(actions: Registry) -> dict[str, Any]:
    schema = Runbook.model_json_schema(by_alias=True, mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = SCHEMA_ID
    schema["title"] = "clampdown runbook (clampdown/v1)"
    step = schema["$defs"]["Step"]
    names = actions.names()
    step["properties"]["uses"]["examples"] = names
    rules = []
    for action in actions.load_all()[0]:  # broken plugins are reported by the CLI
        input_schema = action.Input.model_json_schema(
            ref_template="#/$defs/" + action.name + ".{model}"
        )
        for name, sub in input_schema.pop("$defs", {}).items():
            schema["$defs"][f"{action.name}.{name}"] = sub
        input_schema["description"] = action.summary
        for name, prop in input_schema.get("properties", {}).items():
            input_schema["properties"][name] = {"anyOf": [prop, EXPRESSION]}
        rules.append(
            {
                "if": {"properties": {"uses": {"const": action.name}}, "required": ["uses"]},
                "then": {"properties": {"with": input_schema}},
            }
        )
    step["allOf"] = rules
    return schema
