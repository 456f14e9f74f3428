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

Its parameter schema (``Flow.parameters``, the OpenAPI description of the function's
parameters) is built when first read, not when the flow is defined. Prefect's
``Flow.__init__`` builds it at once: it imports ``pydantic.v1`` to look for v1 models among
the annotations and builds a pydantic model per parameter, about 50 ms of CPU on the
reference machine, in every process that imports the flow. A run never reads it; only a
deployment does, and Prefect 3.9's deployment paths (``prefect deploy``, ``to_deployment``,
``serve``, ``deploy``) compute it again from the function anyway. So while Prefect's
``__init__`` runs, the function shows it an empty signature (its ``__signature__``, which
:func:`inspect.signature` honours), and the attribute is then left to a property that asks
Prefect's own ``parameter_schema`` on first read: the same schema, built by the same code.
Everything else ``__init__`` derives from the function (name, docstring, version hash,
async-ness, entrypoint) is Prefect's, from the function itself. A flow that validates its
parameters is built as Prefect builds it (its validator is made from the signature at
definition).

``with_options`` on such a flow gives Prefect's own ``Flow`` (Prefect builds it), which
serializes as Prefect always does: slower to start, the same parameters.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

from prefect.flows import Flow
from prefect.utilities.callables import (
    ParameterSchema,
    parameter_schema,
    raise_for_reserved_arguments,
)

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


# the arguments Prefect's Flow.__init__ refuses as parameter names (flows.py, 3.9)
_RESERVED = ("return_state", "wait_for")


@contextmanager
def _shown_without_parameters(fn: Callable[..., Any]) -> Iterator[None]:
    """``fn`` with an empty ``__signature__`` inside the block; as it was after it."""
    missing = object()
    kept = fn.__dict__.get("__signature__", missing)
    fn.__signature__ = inspect.Signature()  # type: ignore[attr-defined]
    try:
        yield
    finally:
        if kept is missing:
            del fn.__signature__  # type: ignore[attr-defined]
        else:
            fn.__signature__ = kept  # type: ignore[attr-defined]


class PlainJsonFlow(Flow[P, R]):
    """A Prefect ``Flow`` whose plain-JSON parameters skip FastAPI's encoder, and whose
    parameter schema is built when first read (see the module's docstring)."""

    def __init__(self, fn: Callable[P, R], **options: Any) -> None:
        if options.get("validate_parameters", True):
            super().__init__(fn, **options)
            return
        raise_for_reserved_arguments(fn, _RESERVED)  # Prefect's check sees no parameters
        with _shown_without_parameters(fn):
            super().__init__(fn, **options)
        # update_wrapper copied the function's __dict__, the empty signature with it: gone,
        # so inspect.signature(flow) (a deployment's schema) follows __wrapped__ to fn's
        self.__dict__.pop("__signature__", None)
        self.__dict__.pop("_parameter_schema", None)  # the empty one: built on first read

    @property
    def parameters(self) -> ParameterSchema:  # type: ignore[override]
        """The function's parameter schema, as Prefect builds it (on first read)."""
        schema = self.__dict__.get("_parameter_schema")
        if schema is None:
            schema = self.__dict__["_parameter_schema"] = parameter_schema(self.fn)
        return schema

    @parameters.setter
    def parameters(self, schema: ParameterSchema) -> None:
        self.__dict__["_parameter_schema"] = schema

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
