"""``PlainJsonFlow`` (clampdown_flows.plain_flow): the flow-run parameters Prefect would
send, without importing FastAPI for plain JSON values (that FastAPI stays out is checked in
a fresh interpreter: tests/integration/test_import_probes.py)."""

from __future__ import annotations

import enum
from typing import Any

import pytest
from prefect.flows import Flow
from pydantic import SecretStr

from clampdown_flows.plain_flow import PlainJsonFlow, plain_json_flow


def _fn(runbook: str, inputs: Any = None, flag: bool = False, extra: Any = None) -> None:
    """A flow function with the parameters the tests hand it."""


class Colour(enum.StrEnum):
    RED = "red"


@pytest.mark.parametrize(
    "parameters",
    [
        {"runbook": "contain.yaml", "inputs": {"user": "alice", "n": 3, "f": 1.5}, "flag": True},
        {"runbook": "r", "inputs": None, "flag": False, "extra": [1, "two", None, {"k": []}]},
        {"runbook": "r", "inputs": {"token": SecretStr("hunter2"), "user": "bob"}},
        {"runbook": "r", "inputs": {1: "int key"}, "extra": (1, 2)},
        {"runbook": Colour.RED, "extra": {"when": __import__("datetime").date(2026, 12, 5)}},
    ],
)
def test_parameters_are_serialized_as_prefect_serializes_them(parameters: dict) -> None:
    ours = PlainJsonFlow(_fn, name="ours").serialize_parameters(parameters)
    stock = Flow(_fn, name="stock").serialize_parameters(parameters)
    assert ours == stock
    assert list(ours) == list(stock)
    assert "hunter2" not in repr(ours)


def test_plain_values_are_copied_not_shared() -> None:
    inputs = {"users": ["alice"]}
    sent = PlainJsonFlow(_fn, name="ours").serialize_parameters({"runbook": "r", "inputs": inputs})
    assert sent["inputs"] == inputs and sent["inputs"] is not inputs
    assert sent["inputs"]["users"] is not inputs["users"]


def test_the_decorator_builds_one() -> None:
    built = plain_json_flow(name="decorated", log_prints=False)(_fn)
    assert isinstance(built, PlainJsonFlow) and built.name == "decorated"


def test_the_rollback_flow_is_one_too() -> None:
    """`clampdown rollback` sends plain-JSON parameters too (run ids, a flag)."""
    from clampdown_flows.rollback import rollback

    assert isinstance(rollback, PlainJsonFlow) and rollback.name == "rollback"
