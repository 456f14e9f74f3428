"""Runbook inputs: parse ``key=value`` from the command line, then check types and constraints.

Inputs are checked before a run starts and again inside the flow (a deployment
can be started from the Prefect UI, bypassing the CLI), with the same code.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import SecretStr

from clampdown.core.diagnostics import InputError, did_you_mean
from clampdown.core.models import InputSpec

SECRET_MASK = "***"


_ARTICLE = {
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "array": "a list",
    "object": "a mapping",
    "string": "a string",
}


class InputProblem(ValueError):
    """One input value does not satisfy its spec."""


def check_value(name: str, spec: InputSpec, value: Any, *, from_text: bool = True) -> Any:
    """The value coerced to the spec's type, or :class:`InputProblem`.

    ``from_text`` accepts strings that parse as the type (``--input hours=24``);
    a default written in YAML must already have its type (``24``, not ``"24"``).
    """
    if not from_text and isinstance(value, str) and spec.type != "string":
        raise InputProblem(f"must be {_ARTICLE[spec.type]}, got the string {value!r}")
    value = _coerce(spec.type, value)
    if spec.enum is not None and value not in spec.enum:
        choices = ", ".join(map(str, spec.enum))
        hint = did_you_mean(str(value), [str(e) for e in spec.enum])
        raise InputProblem(f"must be one of: {choices}" + (f" ({hint})" if hint else ""))
    if spec.pattern is not None and isinstance(value, str) and not re.search(spec.pattern, value):
        raise InputProblem(f"does not match the pattern {spec.pattern}")
    if isinstance(value, list) and spec.min_items and len(value) < spec.min_items:
        raise InputProblem(f"must have at least {spec.min_items} item(s), got {len(value)}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if spec.minimum is not None and value < spec.minimum:
            raise InputProblem(f"must be at least {spec.minimum:g}")
        if spec.maximum is not None and value > spec.maximum:
            raise InputProblem(f"must be at most {spec.maximum:g}")
    return value


def _coerce(kind: str, value: Any) -> Any:
    """Accept the native type, or a string from the command line that parses as it."""
    text = value.strip() if isinstance(value, str) else None
    coerce = _COERCE.get(kind)
    if coerce is not None:
        return coerce(value, text)
    return _coerce_container(list if kind == "array" else dict, value, text)


def _coerce_string(value: Any, text: str | None) -> str:
    if isinstance(value, str):
        return value
    raise InputProblem(f"must be a string, got {type(value).__name__}")


def _coerce_boolean(value: Any, text: str | None) -> bool:
    if isinstance(value, bool):
        return value
    if text is not None and text.lower() in ("true", "false", "yes", "no"):
        return text.lower() in ("true", "yes")
    raise InputProblem("must be true or false")


def _coerce_integer(value: Any, text: str | None) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if text is not None and re.fullmatch(r"[+-]?\d+", text):
        return int(text)
    raise InputProblem(f"must be a whole number, got {value!r}")


def _coerce_number(value: Any, text: str | None) -> int | float:
    number = value if isinstance(value, int | float) and not isinstance(value, bool) else None
    if number is None and text is not None:
        with contextlib.suppress(ValueError):
            number = float(text)
    if number is None or not math.isfinite(number):
        raise InputProblem(f"must be a finite number, got {value!r}")
    return number


def _coerce_container(container: type, value: Any, text: str | None) -> Any:
    if isinstance(value, container):
        return value
    if text is not None:
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError:
            parsed = None
        if isinstance(parsed, container):
            return parsed
    raise InputProblem(
        f"must be {'a list' if container is list else 'a mapping'} (JSON on the command line)"
    )


_COERCE: dict[str, Callable[[Any, str | None], Any]] = {
    "string": _coerce_string,
    "boolean": _coerce_boolean,
    "integer": _coerce_integer,
    "number": _coerce_number,
}


def validate(specs: Mapping[str, InputSpec], given: Mapping[str, Any]) -> dict[str, Any]:
    """Inputs with defaults applied, or one :class:`InputError` listing every problem."""
    problems: list[str] = []
    result: dict[str, Any] = {}
    for name in given:
        if name not in specs:
            hint = did_you_mean(name, specs)
            problems.append(
                f"unknown input '{name}'"
                + (
                    f": {hint}"
                    if hint
                    else f" (this runbook takes: {', '.join(specs) or 'no inputs'})"
                )
            )
    for name, spec in specs.items():
        if name in given and given[name] is not None:
            try:
                result[name] = check_value(name, spec, given[name])
            except InputProblem as exc:
                shown = SECRET_MASK if spec.secret else repr(given[name])
                problems.append(f"input '{name}' = {shown}: {exc}")
        elif spec.default is not None:
            result[name] = spec.default
        elif spec.required:
            problems.append(f"missing required input '{name}' ({spec.type})")
        else:
            result[name] = None
    if problems:
        raise InputError(
            "invalid inputs:\n  " + "\n  ".join(problems),
            "pass them as --input name=value or in --inputs-file",
        )
    return result


def secret_values(specs: Mapping[str, InputSpec], values: Mapping[str, Any]) -> list[Any]:
    """The values of secret inputs, for the ledger and logs to mask."""
    return [v for k, v in values.items() if k in specs and specs[k].secret and v is not None]


def protect(specs: Mapping[str, InputSpec], values: Mapping[str, Any]) -> dict[str, Any]:
    """Wrap secret inputs in :class:`SecretStr` before they become flow parameters.

    Prefect stores a flow run's parameters in its database and shows them in its
    UI; a ``SecretStr`` is stored as ``**********`` while the flow, called in the
    same process, still receives the value.
    """
    return {
        k: SecretStr(str(v)) if k in specs and specs[k].secret and v is not None else v
        for k, v in values.items()
    }


def reveal(values: Mapping[str, Any]) -> dict[str, Any]:
    """Unwrap :func:`protect`."""
    return {k: v.get_secret_value() if isinstance(v, SecretStr) else v for k, v in values.items()}


def masked(specs: Mapping[str, InputSpec], values: Mapping[str, Any]) -> dict[str, Any]:
    """Inputs safe to write down: secret ones replaced by a mask."""
    return {
        k: (SECRET_MASK if k in specs and specs[k].secret and v is not None else v)
        for k, v in values.items()
    }


def parse_pairs(pairs: Iterable[str], inputs_file: Path | None = None) -> dict[str, Any]:
    """``--inputs-file`` (YAML or JSON mapping) overlaid by ``--input k=v`` pairs."""
    values: dict[str, Any] = {}
    if inputs_file is not None:
        try:
            loaded = yaml.safe_load(inputs_file.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise InputError(
                f"cannot read inputs file {inputs_file}: {exc}",
                "give a YAML or JSON mapping of input names to values",
            ) from None
        if not isinstance(loaded, dict):
            raise InputError(
                f"inputs file {inputs_file} must hold a mapping",
                "write lines like 'principal_arn: arn:aws:iam::…'",
            )
        values.update(loaded)
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise InputError(f"--input '{pair}' is not key=value", "write --input name=value")
        values[name.strip()] = value
    return values
