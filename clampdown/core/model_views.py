"""Action models as lint reads them: their JSON Schema and literal checks, without Rust regexes.

pydantic-core compiles each ``pattern`` of a model with the Rust ``regex`` crate when it
builds the model's validator. A Unicode class under a counted repeat, such as the AWS
name patterns' ``[\\w+=,.@-]{1,64}``, takes that crate 30-60 ms to compile: more than
lint spends on a whole runbook, and lint needs the compiled pattern only to check a
literal ``with:`` value against it.

So lint reads an action's models through a *view* (:func:`view`): a subclass that
differs from the model only in compiling its patterns with Python's ``re`` (micro-
seconds). Its JSON Schema is the model's own, and it validates every value that meets
none of its patterns exactly as the model does. A literal value that meets a pattern
is checked by the model itself (:func:`checker`), so lint applies the very regex the
run applies. A model a view cannot stand in for (one with subclass hooks, a generic
one, one whose pattern Python cannot compile) is used as it is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import cache
from typing import Any

from pydantic import BaseModel, ConfigDict


@cache
def view(model: type[BaseModel]) -> type[BaseModel]:
    """``model`` with its patterns compiled by Python's ``re``, or ``model`` itself."""
    if model.model_config.get("regex_engine") or not _plain(model):
        return model
    namespace = {
        "__module__": model.__module__,
        "__qualname__": model.__qualname__,
        "__doc__": model.__doc__,  # the schema's description
        "model_config": ConfigDict(regex_engine="python-re", defer_build=False),
    }
    try:
        return type(model.__name__, (model,), namespace)
    except Exception:  # a pattern only the Rust engine reads: the model answers itself
        return model


def _plain(model: type[BaseModel]) -> bool:
    """No hook runs when the model is subclassed, and it is not generic."""
    if model.__pydantic_generic_metadata__.get("parameters"):
        return False
    return not any(
        "__init_subclass__" in vars(cls) or "__pydantic_init_subclass__" in vars(cls)
        for cls in model.__mro__
        if cls.__module__.split(".")[0] not in ("pydantic", "builtins")
    )


@cache
def schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON Schema (validation mode), built once per model, from its view.

    A third-party model pydantic cannot describe (a field of an arbitrary Python type)
    gives an empty schema: its fields are then of unknown type, not a crash."""
    try:
        return view(model).model_json_schema(mode="validation")
    except Exception:  # PydanticInvalidForJsonSchema and friends
        return {}


@cache
def _patterned(model: type[BaseModel]) -> frozenset[str]:
    """Fields (by name and alias) whose values meet a pattern anywhere inside, as far as
    the JSON Schema shows; everything when the schema cannot be read."""
    described = schema(model)
    properties = described.get("properties")
    if not isinstance(properties, dict):
        return frozenset({"*"})
    defs = described.get("$defs", {})
    found = {name for name, prop in properties.items() if _has_pattern(prop, defs, set())}
    for name, info in model.model_fields.items():  # a key written by name, not by alias
        if name in found or info.alias in found:
            found |= {name, *(a for a in (info.alias,) if a)}
    return frozenset(found)


def _has_pattern(node: Any, defs: Mapping[str, Any], seen: set[str]) -> bool:
    if isinstance(node, list):
        return any(_has_pattern(item, defs, seen) for item in node)
    if not isinstance(node, dict):
        return False
    if "pattern" in node:
        return True
    ref = node.get("$ref")
    if isinstance(ref, str) and ref not in seen:
        seen.add(ref)
        if _has_pattern(defs.get(ref.rsplit("/", 1)[-1]), defs, seen):
            return True
    return any(_has_pattern(value, defs, seen) for value in node.values())


def checker(model: type[BaseModel], keys: Iterable[str]) -> type[BaseModel]:
    """What validates literal values given under ``keys``: the view, or the model itself
    when one of them meets a pattern (or the view is not the model's to stand in for)."""
    patterned = _patterned(model)
    if "*" in patterned or not patterned.isdisjoint(keys):
        return model
    return view(model)
