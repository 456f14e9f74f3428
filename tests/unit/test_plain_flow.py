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


# --- the parameter schema, built when first read ----------------------------------------


async def _async_fn(runbook: str, inputs: dict[str, Any] | None = None, drill: bool = False) -> int:
    """An async flow function.

    Args:
        runbook: the runbook's path
        drill: whether it is a drill
    """
    return 1


def _built(fn: Any, cls: type = PlainJsonFlow, **options: Any) -> Flow:
    return cls(fn, name="f", validate_parameters=False, **options)


@pytest.mark.parametrize("fn", [_fn, _async_fn])
def test_the_schema_is_prefects_own_built_on_first_read(fn: Any) -> None:
    ours, stock = _built(fn), _built(fn, Flow)
    assert "_parameter_schema" not in ours.__dict__  # nothing built at definition
    assert ours.parameters == stock.parameters
    assert ours.parameters.model_dump_for_openapi() == stock.parameters.model_dump_for_openapi()
    assert ours.parameters is ours.parameters  # built once


@pytest.mark.parametrize("fn", [_fn, _async_fn])
def test_everything_else_prefect_derives_from_the_function_is_as_stock(fn: Any) -> None:
    import inspect

    ours, stock = _built(fn), _built(fn, Flow)
    for attribute in ("name", "description", "version", "isasync", "isgenerator", "_entrypoint"):
        assert getattr(ours, attribute) == getattr(stock, attribute), attribute
    assert ours.__wrapped__ is fn and ours.fn is fn
    # the empty signature shown to Flow.__init__ is gone from the function and the flow
    assert "__signature__" not in fn.__dict__ and "__signature__" not in ours.__dict__
    assert inspect.signature(ours) == inspect.signature(fn) == inspect.signature(stock)
    assert list(inspect.signature(ours).parameters)[:2] == ["runbook", "inputs"]


def test_a_signature_the_function_had_is_put_back() -> None:
    import inspect

    def fn(a: int, b: int = 2) -> None:
        pass

    own = inspect.Signature([inspect.Parameter("a", inspect.Parameter.POSITIONAL_OR_KEYWORD)])
    fn.__signature__ = own  # type: ignore[attr-defined]
    flow = _built(fn)
    assert fn.__signature__ is own  # type: ignore[attr-defined]
    assert flow.parameters == _built(fn, Flow).parameters


def test_reserved_parameter_names_are_still_refused() -> None:
    from prefect.exceptions import ReservedArgumentError

    def fn(runbook: str, wait_for: Any = None) -> None:
        pass

    with pytest.raises(ReservedArgumentError, match="wait_for"):
        _built(fn)
    with pytest.raises(ReservedArgumentError):  # what Prefect does
        _built(fn, Flow)
    assert "__signature__" not in fn.__dict__


def test_a_validating_flow_is_built_as_prefect_builds_it() -> None:
    """validate_parameters=True: Prefect builds its validator from the signature at
    definition, so the schema is built then too, as Prefect does."""
    ours = PlainJsonFlow(_fn, name="v")
    assert ours.__dict__["_parameter_schema"] == Flow(_fn, name="v").parameters


def test_the_deployments_schema_is_the_one_prefect_makes() -> None:
    """What `clampdown deploy` (`prefect deploy` of prefect.yaml) and `to_deployment` send
    as the deployment's parameter_openapi_schema: the schema of a stock Prefect Flow of the
    same function, with respond's parameters."""
    import yaml
    from prefect.flows import load_flow_from_entrypoint
    from prefect.utilities.callables import parameter_schema

    from tests.paths import REPO

    project = yaml.safe_load((REPO / "prefect.yaml").read_text())
    (entry,) = {d["entrypoint"] for d in project["deployments"]}
    for entrypoint in (entry, "clampdown_flows.rollback:rollback"):
        ours = load_flow_from_entrypoint(entrypoint)
        assert isinstance(ours, PlainJsonFlow)
        stock = _built(ours.fn, Flow).parameters.model_dump_for_openapi()
        assert parameter_schema(ours).model_dump_for_openapi() == stock  # prefect deploy
        sent = ours.to_deployment(name="x")._parameter_openapi_schema
        assert sent.model_dump_for_openapi() == stock
        assert ours.parameters.model_dump_for_openapi() == stock
    respond = load_flow_from_entrypoint(entry).parameters.model_dump_for_openapi()
    assert list(respond["properties"]) == [
        *("runbook", "inputs", "run_id", "trigger", "drill", "library", "resume")
    ]
    assert respond["required"] == ["runbook"]
    assert respond["properties"]["drill"] == {
        "default": False,
        "position": 4,
        "title": "drill",
        "type": "boolean",
    }
