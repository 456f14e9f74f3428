"""YAML that remembers where every value came from.

PyYAML's composer gives nodes with marks; we build plain Python values from them
and keep a map from each value's path (``("steps", 2, "with", "text")``) to its
line and column, so later stages can say *where* a problem is. Duplicate keys,
which plain YAML loaders silently accept, are reported: in a runbook a second
``with:`` silently replacing the first is a containment bug.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from clampdown.core.diagnostics import Diagnostic, InvalidFileError

try:  # the C parser is several times faster; lint must stay instant
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover - libyaml missing
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

Path = tuple[str | int, ...]


@dataclass
class Source:
    """A parsed YAML document and the positions of its values and keys."""

    path: str
    data: Any
    values: dict[Path, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Path, tuple[int, int]] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    block_scalars: dict[Path, str] = field(default_factory=dict)  # '|' or '>': text starts below

    def position(self, loc: Path, *, key: bool = False) -> tuple[int, int]:
        """Line and column (1-based) of ``loc``, or of its nearest known parent."""
        loc = tuple(loc)
        while loc:
            table = self.keys if key else self.values
            if loc in table:
                return table[loc]
            if loc in self.values:
                return self.values[loc]
            loc = loc[:-1]
        return self.values.get((), (1, 1))

    def diagnostic(
        self,
        loc: Path,
        message: str,
        hint: str = "",
        *,
        code: str = "invalid",
        severity: str = "error",
        key: bool = False,
    ) -> Diagnostic:
        line, column = self.position(loc, key=key)
        return Diagnostic(self.path, line, column, message, hint, code, severity)  # type: ignore[arg-type]


def parse(text: str, path: str) -> Source:
    """Parse one YAML document; raise :class:`InvalidFileError` with positions."""
    loader = _Loader(text)
    source = Source(path=path, data=None, lines=text.splitlines())
    try:
        node = loader.get_single_node()
        if node is None:
            raise InvalidFileError(
                [Diagnostic(path, 1, 1, "the file is empty", "write a runbook document")]
            )
        problems: list[Diagnostic] = []
        source.data = _build(loader, node, (), source, problems)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        what = " ".join(p for p in (exc.context, exc.problem) if p) or "invalid YAML"
        raise InvalidFileError(
            [
                Diagnostic(
                    path,
                    line,
                    col,
                    f"YAML syntax error: {what}",
                    "check indentation, quoting and the ':' after keys",
                    "yaml",
                )
            ]
        ) from None
    finally:
        loader.dispose()
    if problems:
        raise InvalidFileError(problems)
    return source


def _build(loader: Any, node: yaml.Node, loc: Path, src: Source, problems: list[Diagnostic]) -> Any:
    src.values[loc] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        return _build_mapping(loader, node, loc, src, problems)
    if isinstance(node, yaml.SequenceNode):
        return [_build(loader, item, (*loc, i), src, problems) for i, item in enumerate(node.value)]
    if isinstance(node, yaml.ScalarNode) and node.style in ("|", ">"):
        src.block_scalars[loc] = node.style
    return _scalar(loader, node)


_STR = "tag:yaml.org,2002:str"


def _scalar(loader: Any, node: yaml.Node) -> Any:
    """A string as PyYAML's safe constructor makes it (the node's text), without its
    per-node bookkeeping; every other tag (int, bool, null, timestamp…) through it."""
    if node.tag == _STR and isinstance(node, yaml.ScalarNode):
        return node.value
    return loader.construct_object(node, deep=True)


def _build_mapping(
    loader: Any, node: yaml.MappingNode, loc: Path, src: Source, problems: list[Diagnostic]
) -> dict[Any, Any]:
    """Build a mapping; keys written here override keys merged in with ``<<``."""
    own = sum(1 for key_node, _ in node.value if key_node.tag != "tag:yaml.org,2002:merge")
    loader.flatten_mapping(node)  # merged pairs come first, then the mapping's own
    merged_count = len(node.value) - own
    result: dict[Any, Any] = {}
    merged: set[Any] = set()
    for index, (key_node, value_node) in enumerate(node.value):
        key = _scalar(loader, key_node)
        if not isinstance(key, str | int | bool | float) or key is None:
            key = str(key)
        where = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
        from_merge = index < merged_count
        if key in result:
            if from_merge:  # an earlier merged mapping wins over a later one
                continue
            if key not in merged:
                first = src.keys[(*loc, key)]
                problems.append(
                    Diagnostic(
                        src.path,
                        *where,
                        f"duplicate key '{key}' (first at line {first[0]})",
                        "remove one of them: YAML keeps only the last",
                        "duplicate-key",
                    )
                )
                continue
            merged.discard(key)
        if from_merge:
            merged.add(key)
        src.keys[(*loc, key)] = where
        result[key] = _build(loader, value_node, (*loc, key), src, problems)
    return result
