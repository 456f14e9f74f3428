"""JSON Schema of ``clampdown/v1`` for editors (VS Code's YAML extension and others).

The document schema comes from the pydantic models lint validates with; on top of
it, ``uses`` is an enum of the installed actions and each adds an
``if uses == X then with: <X's input schema>`` rule, so an editor completes and
checks ``with:`` fields per action exactly as lint checks literal values (a
boolean field takes ``true``/``false``, not ``"yes"``). A ``with`` value may
instead be an expression; its type is checked by lint (:mod:`expression_types`),
which a schema cannot do. ``if:`` refuses the text trap (several ``{{ }}``, or text
around one) as lint does.
"""

from __future__ import annotations

from typing import Any

from clampdown.core.actions import Registry
from clampdown.core.models import Runbook

SCHEMA_ID = "https://clampdown.dev/schema/clampdown-v1.json"
# Any with: value may be an expression; lint checks its type, the schema cannot.
EXPRESSION = {"type": "string", "pattern": r"\{\{", "description": "a {{ … }} expression"}
# if: is bare (no {{ at all) or exactly one {{ … }} with nothing but spaces around it
CONDITION = {
    "type": "string",
    "pattern": r"^(?![\s\S]*\{\{)[\s\S]*$|^\s*\{\{(?:(?!\}\})[\s\S])*\}\}\s*$",
    "description": "one expression, bare (steps.x.outputs.ok) or as {{ … }}; "
    "several {{ }} or text around one would always be true",
}


def runbook_schema(actions: Registry) -> dict[str, Any]:
    """The schema of a runbook document with the actions installed in ``actions``."""
    schema = Runbook.model_json_schema(by_alias=True, mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = SCHEMA_ID
    schema["title"] = "clampdown runbook (clampdown/v1)"
    step = schema["$defs"]["Step"]
    loaded = actions.load_all()[0]  # broken plugins are reported by the CLI
    step["properties"]["uses"] = {
        "type": "string",
        "enum": [action.name for action in loaded],
        "description": "an installed action ('clampdown actions' lists them)",
    }
    step["properties"]["if"] = {"anyOf": [CONDITION, {"type": "boolean"}, {"type": "null"}]}
    rules = []
    for action in loaded:
        try:
            input_schema = action.Input.model_json_schema(
                ref_template="#/$defs/" + action.name + ".{model}"
            )
        except Exception:  # a model pydantic cannot describe: its with: is left open
            continue
        for name, sub in input_schema.pop("$defs", {}).items():
            schema["$defs"][f"{action.name}.{name}"] = sub
        input_schema["description"] = action.summary
        for name, prop in input_schema.get("properties", {}).items():
            input_schema["properties"][name] = {"anyOf": [prop, EXPRESSION]}
        then: dict[str, Any] = {"properties": {"with": input_schema}}
        if input_schema.get("required"):
            then["required"] = ["with"]  # lint: "missing with field"
        rules.append(
            {
                "if": {"properties": {"uses": {"const": action.name}}, "required": ["uses"]},
                "then": then,
            }
        )
    step["allOf"] = rules
    return schema
