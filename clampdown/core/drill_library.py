"""Finding and loading drill files: ``<library>/drills/*.yaml``, parsed with positions.

Kept apart from the models so that the document (:mod:`clampdown.core.drill_model`) reads
on its own, and apart from the lint (:mod:`clampdown.core.drill_lint`) because loading only
checks the schema; the cross-field rules need the whole library.
"""

from __future__ import annotations

from pathlib import Path as FsPath
from typing import Any

from pydantic import ValidationError

from clampdown.core.diagnostics import ClampdownError, Diagnostic, InvalidFileError, did_you_mean
from clampdown.core.drill_model import DRILL_KIND, INJECT_TYPES, OBJECTIVE_KINDS, Drill
from clampdown.core.loader import _diagnostics, read
from clampdown.core.yamlsource import Source

DEFAULT_DRILL = "model-theft"


def load_drill(path: str | FsPath) -> tuple[Drill, Source]:
    """Parse and validate a drill file; raise :class:`InvalidFileError` with positions."""
    source = read(path)
    data = source.data
    if not isinstance(data, dict):
        raise InvalidFileError(
            [source.diagnostic((), "a drill must be a mapping", "start with 'kind: Drill'")]
        )
    pre = _pre_validation(source)
    if pre:
        raise InvalidFileError(pre)
    try:
        return Drill.model_validate(data), source
    except ValidationError as exc:
        raise InvalidFileError(_diagnostics(exc, Drill, source)) from None


def _pre_validation(source: Source) -> list[Diagnostic]:
    """Unknown kinds with a did-you-mean (pydantic's union message names every tag)."""
    data: dict[str, Any] = source.data
    found: list[Diagnostic] = []
    if data.get("kind") != DRILL_KIND:
        found.append(
            source.diagnostic(
                ("kind",), f"kind must be '{DRILL_KIND}', not {data.get('kind')!r}", code="schema"
            )
        )
    for where, choices, key in (
        ("objectives", OBJECTIVE_KINDS, "kind"),
        ("injects", INJECT_TYPES, "type"),
    ):
        items = data.get(where)
        if not isinstance(items, list):
            continue
        for i, item in enumerate(items):
            if not isinstance(item, dict) or key not in item:
                continue
            value = item[key]
            if value not in choices:
                label = "objective kind" if where == "objectives" else "inject type"
                hint = did_you_mean(str(value), choices) or f"use one of: {', '.join(choices)}"
                found.append(source.diagnostic((where, i, key), f"unknown {label} '{value}'", hint))
    return found


def drills_dir(library: str | FsPath) -> FsPath:
    return FsPath(library) / "drills"


def drill_files(library: str | FsPath) -> dict[str, FsPath]:
    """Drill name (file stem) -> file, in the library's ``drills/`` folder."""
    folder = drills_dir(library)
    if not folder.is_dir():
        return {}
    return {f.stem: f for f in sorted(folder.glob("*.y*ml"))}


def runbook_names(library: str | FsPath) -> set[str]:
    lib = FsPath(library)
    return {f.stem for f in lib.glob("*.y*ml") if f.name != "triggers.yaml"}


def resolve_drill(ref: str | None, library: str | FsPath) -> FsPath:
    """A drill file from a path or a name in ``<library>/drills/`` (default: model-theft)."""
    ref = ref or DEFAULT_DRILL
    candidate = FsPath(ref)
    if candidate.suffix in (".yaml", ".yml"):
        if not candidate.is_file():
            raise ClampdownError(f"drill file '{ref}' does not exist", "check the path")
        return candidate
    files = drill_files(library)
    if ref in files:
        return files[ref]
    raise ClampdownError(
        f"no drill named '{ref}' in {drills_dir(library)}",
        did_you_mean(ref, files) or "run 'clampdown drill --list' to see the drills",
    )
