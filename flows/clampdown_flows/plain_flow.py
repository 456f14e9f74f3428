"""A Prefect flow that sends JSON parameters to the API as they are, without FastAPI.

Before it creates a flow run, Prefect's ``Flow.serialize_parameters`` passes every
parameter through FastAPI's ``jsonable_encoder``, and importing that brings all of
FastAPI and Starlette into the client process: about 0.12 CPU-s on the 2-core reference
machine, for a client that uses nothing else of them (the API server runs in its own
process). ``respond`` takes JSON parameters only (a path, names, an inputs dict, flags),
and for a value that is already JSON — dicts with string keys, lists, strings, numbers,
booleans, None — ``jsonable_encoder`` returns an equal copy. So :class:`PlainJsonFlow`
copies such values itself and hands every other value (a ``SecretStr`` input, a model,
a date) to Prefect's own serialization, which imports FastAPI only then.

``with_options`` on such a flow gives Prefect's own ``Flow`` (Prefect builds it), which
serializes as Prefect always does: slower to start, the same parameters.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from prefect.flows import Flow

P = ParamSpec("P")
R = TypeVar("R")

# exact types: a subclass of str or int (an Enum member, say) may encode differently
_SCALARS = (str, int, float, bool, type(None))


class _NotPlain(Exception):
    """A value ``jsonable_encoder`` may change: Prefect serializes it."""


def plain_copy(value: Any) -> Any:
    """A copy of ``value`` if it is plain JSON (what ``jsonable_encoder`` would return for
    it); raises :class:`_NotPlain` for anything else."""
    kind = type(value)
    if kind in _SCALARS:
        return value
    if kind is dict:
        if not all(type(key) is str for key in value):
            raise _NotPlain
        return {key: plain_copy(item) for key, item in value.items()}
    if kind is list:
        return [plain_copy(item) for item in value]
    raise _NotPlain


class PlainJsonFlow(Flow[P, R]):
    """A Prefect ``Flow`` whose plain-JSON parameters skip FastAPI's encoder."""

    def serialize_parameters(self, parameters: dict[str, Any]) -> dict[str, Any]:
        """Plain JSON values copied as they are; the others as Prefect serializes them."""
        serialized: dict[str, Any] = {}
        others: dict[str, Any] = {}
        for key, value in parameters.items():
            try:
                serialized[key] = plain_copy(value)
            except _NotPlain:
                others[key] = value
        if others:
            serialized.update(super().serialize_parameters(others))
        return {key: serialized[key] for key in parameters if key in serialized}


def plain_json_flow(**options: Any) -> Callable[[Callable[P, R]], PlainJsonFlow[P, R]]:
    """Prefect's ``@flow(**options)``, building a :class:`PlainJsonFlow`."""

    def decorate(fn: Callable[P, R]) -> PlainJsonFlow[P, R]:
        return PlainJsonFlow(fn, **options)

    return decorate
