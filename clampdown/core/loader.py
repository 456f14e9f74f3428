"""Load runbook files into models, turning every validation error into a positioned diagnostic."""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import Any

from pydantic import BaseModel, ValidationError

from clampdown.core.diagnostics import ClampdownError, Diagnostic, InvalidFileError, did_you_mean
from clampdown.core.models import API_VERSION, Runbook
from clampdown.core.yamlsource import Path, Source, parse

KINDS: dict[str, type[BaseModel]] = {"Runbook": Runbook}


@dataclass(frozen=True)
class Loaded:
    """A validated document and the source it came from (for positions)."""

    model: Any
    source: Source

    @property
    def path(self) -> str:
        return self.source.path


_once: ContextVar[dict[tuple[str, str], Source | Loaded | InvalidFileError] | None] = ContextVar(
    "clampdown_read_once", default=None
)


@contextmanager
def reading_once() -> Iterator[None]:
    """Within the block, each file is read, parsed and validated once.

    One ``clampdown lint`` of a library meets a runbook up to three times: as a file of
    the folder, as the runbook a trigger names, and as the one a drill plays. Inside the
    block :func:`read` and :func:`load` remember what they returned (or raised) per path
    as written; outside it (``serve``, ``run``) every call reads the file afresh, so an
    edited runbook is never served stale.
    """
    token = _once.set({})
    try:
        yield
    finally:
        _once.reset(token)


def _remembered(kind: str, path: str | FsPath, make: Callable[[], Any]) -> Any:
    memo = _once.get()
    if memo is None:
        return make()
    key = (kind, str(path))
    if key not in memo:
        try:
            memo[key] = make()
        except InvalidFileError as exc:
            memo[key] = exc
    found = memo[key]
    if isinstance(found, InvalidFileError):
        raise InvalidFileError(found.diagnostics)
    return found


def read(path: str | FsPath) -> Source:
    """Parse a YAML file; unreadable files become diagnostics too."""
    return typing.cast(Source, _remembered("read", path, lambda: _read(path)))


def _read(path: str | FsPath) -> Source:
    name = str(path)
    try:
        text = FsPath(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidFileError(
            [
                Diagnostic(
                    name,
                    1,
                    1,
                    f"cannot read the file: {exc}",
                    "check the path and permissions",
                    "io",
                )
            ]
        ) from None
    return parse(text, name)


def load(path: str | FsPath) -> Loaded:
    """Load and schema-validate one document of a known ``kind``."""
    return typing.cast(Loaded, _remembered("load", path, lambda: validate(read(path))))


def validate(source: Source) -> Loaded:
    data = source.data
    if not isinstance(data, dict):
        raise InvalidFileError(
            [
                source.diagnostic(
                    (),
                    "a clampdown document must be a mapping",
                    f"start with 'apiVersion: {API_VERSION}'",
                )
            ]
        )
    kind = data.get("kind")
    if kind not in KINDS:
        hint = did_you_mean(str(kind), KINDS) or f"use one of: {', '.join(KINDS)}"
        loc: Path = ("kind",) if "kind" in data else ()
        message = f"unknown kind '{kind}'" if "kind" in data else "missing key 'kind'"
        raise InvalidFileError([source.diagnostic(loc, message, hint, code="schema")])
    model = KINDS[kind]
    try:
        return Loaded(model.model_validate(data), source)
    except ValidationError as exc:
        raise InvalidFileError(_diagnostics(exc, model, source)) from None


def _diagnostics(exc: ValidationError, model: type[BaseModel], source: Source) -> list[Diagnostic]:
    found: list[Diagnostic] = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        kind, msg = err["type"], err["msg"].removeprefix("Value error, ")
        if loc and loc[-1] == "[key]":  # a mapping key failed validation: point at the key
            found.append(source.diagnostic(loc[:-1], msg, "", code="schema", key=True))
            continue
        if kind == "extra_forbidden":
            key = str(loc[-1])
            allowed = _allowed_keys(model, loc[:-1])
            hint = did_you_mean(key, allowed) or f"allowed keys here: {', '.join(sorted(allowed))}"
            found.append(
                source.diagnostic(loc, f"unknown key '{key}'", hint, code="unknown-key", key=True)
            )
        elif kind == "missing":
            key = str(loc[-1])
            found.append(
                source.diagnostic(
                    loc[:-1],
                    f"missing required key '{key}'",
                    f"add '{key}:' here",
                    code="missing-key",
                    key=True,
                )
            )
        else:
            where = ".".join(str(p) for p in loc) or "document"
            hint = ""
            if kind == "literal_error" and isinstance(err.get("input"), str):
                expected = err.get("ctx", {}).get("expected", "")
                choices = [c.strip(" '") for c in expected.replace(" or ", ", ").split(",")]
                hint = did_you_mean(err["input"], choices)
            found.append(source.diagnostic(loc, f"{where}: {msg}", hint, code="schema"))
    found.sort(key=lambda d: (d.line, d.column))
    return found


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys a mapping at ``loc`` accepts, found by walking the model's annotations."""
    current: Any = model
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = next((f for n, f in current.model_fields.items() if part in (n, f.alias)), None)
            current = field.annotation if field else None
        elif typing.get_origin(current) in (list, dict):
            current = typing.get_args(current)[-1]
        else:
            return []
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [f.alias or n for n, f in current.model_fields.items()]
    return []


def _unwrap(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else annotation
    return annotation


def library_names(library: str | FsPath) -> dict[str, FsPath]:
    """Runbooks of a library folder by name (file stem), sorted; ``triggers.yaml`` is not one.

    The one listing of a library: ``run``, lint, triggers, serve and Slack all use it.
    A folder that does not exist lists nothing; callers that must have one say so.
    """
    names: dict[str, FsPath] = {}
    for file in sorted(FsPath(library).glob("*.y*ml")):
        if file.suffix in (".yaml", ".yml") and file.stem != "triggers":
            names.setdefault(file.stem, file)
    return names


def resolve(ref: str, library: str | FsPath) -> FsPath:
    """A runbook path from a path or a name in the library folder."""
    candidate = FsPath(ref)
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        if not candidate.is_file():
            raise ClampdownError(f"runbook file '{ref}' does not exist", "check the path")
        return candidate
    lib = FsPath(library)
    if not lib.is_dir():
        raise ClampdownError(
            f"runbook library '{lib}' is not a folder",
            "set --library or CLAMPDOWN_LIBRARY to your runbooks folder",
        )
    names = library_names(lib)
    if ref in names:
        return names[ref]
    raise ClampdownError(
        f"no runbook named '{ref}' in {lib}",
        did_you_mean(ref, names) or "run 'clampdown lint' on the library to list it",
    )
