"""YAML that remembers where every value came from.

PyYAML's composer gives nodes with marks; we build plain Python values from them
and keep a map from each value's path (``("steps", 2, "with", "text")``) to its
line and column, so later stages can say *where* a problem is; for a problem in
part of a string (an expression inside a folded block), :func:`scalar_char_position`
tells, on demand, where each of its characters is written. Duplicate keys,
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

    def value_position(self, loc: Path, offset: int, value: str | None = None) -> tuple[int, int]:
        """Line and column (1-based) where character ``offset`` of the string at ``loc``
        is written, or, when that cannot be told for sure, where the string starts.

        Why on demand: lint needs it only for the diagnostics it emits, so no scalar's
        layout is worked out (or kept) while the document is read. ``value``, when given,
        is the text the offset counts in; it must be the string at ``loc``.
        """
        loc = tuple(loc)
        start = self.values.get(loc)
        if start is None:
            return self.position(loc)
        found = self.value_at(loc)
        if not isinstance(found, str) or (value is not None and value != found):
            return start
        return scalar_char_position(self.lines, start, found, offset) or start

    def value_at(self, loc: Path) -> Any:
        """The value built at ``loc`` (None when the path leads nowhere)."""
        value = self.data
        for part in loc:
            if not isinstance(value, dict | list):
                return None
            try:
                value = value[part]  # type: ignore[index]
            except (KeyError, IndexError, TypeError):
                return None
        return value

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


# --- where each character of a scalar is written ----------------------------------------------

Spot = tuple[int, int]
"""A line and column, 1-based, as diagnostics give them."""
_Chars = list[tuple[str, Spot]]  # a value's characters, each with where it is written

_ESCAPES = {
    "0": "\0",
    "a": "\a",
    "b": "\b",
    "t": "\t",
    "\t": "\t",
    "n": "\n",
    "v": "\v",
    "f": "\f",
    "r": "\r",
    "e": "\x1b",
    " ": " ",
    '"': '"',
    "/": "/",
    "\\": "\\",
    "N": "\x85",
    "_": "\xa0",
    "L": "\u2028",
    "P": "\u2029",
}
_HEX_ESCAPES = {"x": 2, "u": 4, "U": 8}
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def scalar_char_position(lines: list[str], start: Spot, value: str, offset: int) -> Spot | None:
    """Where character ``offset`` of the string ``value`` is written in ``lines``, the
    document's lines; ``start`` is where its scalar starts (the node's mark).

    The scalar's text is read again in its style, plain, single- or double-quoted, literal
    (``|``) or folded (``>``), as YAML turns it into the value: folding, chomping, escapes,
    indentation. The answer counts only if the text so rebuilt is exactly ``value``;
    otherwise (a layout this reading does not know) None, so that a caller falls back to
    the scalar's start and is never sent to a wrong line. A line break that the value keeps
    (or folds into a space) is placed at the end of the line it ends; an escape sequence at
    its backslash.
    """
    if not 0 <= offset < len(value) or not 1 <= start[0] <= len(lines) or start[1] < 1:
        return None
    if lines[0].startswith("\ufeff"):  # the parser counts no column for a byte-order mark
        lines = [lines[0][1:], *lines[1:]]
    row, line = start[0] - 1, lines[start[0] - 1]
    col = _after_properties(line, start[1] - 1)
    verbatim = _verbatim(line, col, value)
    if verbatim is not None:  # most values: no need to read them character by character
        return start[0], verbatim + offset + 1
    chars = _scalar_chars(lines, row, col, value)
    if chars is None or len(chars) != len(value) or "".join(c for c, _ in chars) != value:
        return None
    return chars[offset][1]


def _after_properties(line: str, col: int) -> int:
    """Where the scalar itself starts: after a tag (``!!str``) or an anchor (``&a``)."""
    while col < len(line) and line[col] in "!&":
        while col < len(line) and line[col] not in " \t":
            col += 1
        while col < len(line) and line[col] in " \t":
            col += 1
    return col


def _verbatim(line: str, col: int, value: str) -> int | None:
    """The column (0-based) where ``value`` starts if it is written as it is on this line:
    plain, or quoted with no quote (nor, in double quotes, a backslash) inside, so that
    nothing was folded, doubled or escaped; else None."""
    quote = line[col : col + 1]
    if quote in ("'", '"'):
        inside = "'" if quote == "'" else '"\\'
        if any(c in value for c in inside):
            return None
        return col + 1 if line.startswith(value + quote, col + 1) else None
    return col if quote not in ("", "|", ">") and line.startswith(value, col) else None


def _scalar_chars(lines: list[str], row: int, col: int, value: str) -> _Chars | None:
    line = lines[row]
    indicator = line[col : col + 1]
    if not indicator:
        return None
    if indicator in "|>":
        return _block_chars(lines, row, indicator == ">", value)
    if indicator in "'\"":
        return _quoted_chars(lines, row, col, indicator == '"')
    return _plain_chars(lines, row, col, value)


def _plain_chars(lines: list[str], row: int, col: int, value: str) -> _Chars | None:
    """A plain scalar: continuation lines lose their indentation and trailing blanks, one
    line break folds into a space, n+1 line breaks into n newlines. Its end is where
    ``value`` ends (a comment or a flow indicator may follow on the last line)."""
    line = lines[row]
    body = line[col:].rstrip(" \t")
    chars: _Chars = [(ch, (row + 1, col + i + 1)) for i, ch in enumerate(body)]
    built, blanks, spot, row = body, [], (row + 1, len(line) + 1), row + 1
    while len(built) < len(value) and row < len(lines):
        text = lines[row]
        stripped = text.strip(" \t")
        if not stripped:
            blanks.append(("\n", (row + 1, len(text) + 1)))
            row += 1
            continue
        joint = blanks or [(" ", spot)]
        head = built + "".join(c for c, _ in joint)
        if value.startswith(head + stripped):
            part = stripped
        elif stripped.startswith(value[len(head) :]) and value.startswith(head):
            part = value[len(head) :]  # the scalar ends on this line
        else:
            return None
        lead = len(text) - len(text.lstrip(" \t"))
        chars += joint + [(ch, (row + 1, lead + i + 1)) for i, ch in enumerate(part)]
        built, blanks, spot, row = head + part, [], (row + 1, len(text) + 1), row + 1
    return chars


def _quoted_chars(lines: list[str], row: int, col: int, double: bool) -> _Chars | None:
    """A quoted scalar up to its closing quote: folded like a plain one, ``''`` is one
    quote in single quotes, escapes (and an escaped line break) in double quotes."""
    quote = '"' if double else "'"
    chars: _Chars = []
    line, col = lines[row], col + 1
    while True:
        if col < len(line) and line[col] in " \t":
            end = col
            while end < len(line) and line[end] in " \t":
                end += 1
            if end < len(line):
                chars += [(line[i], (row + 1, i + 1)) for i in range(col, end)]
            col = end  # blanks before a line break are dropped
            continue
        escaped_break = double and col == len(line) - 1 and line[col] == "\\"
        if col >= len(line) or escaped_break:  # a space (none if escaped), or blank lines
            spot = (row + 1, len(line) + 1)
            row, blanks = _blank_lines(lines, row + 1)
            if row < 0:
                return None
            chars += blanks or ([] if escaped_break else [(" ", spot)])
            line = lines[row]
            col = len(line) - len(line.lstrip(" \t"))
            continue
        ch, spot = line[col], (row + 1, col + 1)
        if ch == quote:
            if double or not line.startswith("''", col):
                return chars
            chars.append(("'", spot))
            col += 2
        elif double and ch == "\\":
            escaped = _escape(line, col)
            if escaped is None:
                return None
            chars.append((escaped[0], spot))
            col += escaped[1]
        else:
            chars.append((ch, spot))
            col += 1


def _escape(line: str, col: int) -> tuple[str, int] | None:
    """The character the escape at ``line[col]`` (a backslash) stands for, and its length."""
    code = line[col + 1]
    if code in _ESCAPES:
        return _ESCAPES[code], 2
    width = _HEX_ESCAPES.get(code, 0)
    digits = line[col + 2 : col + 2 + width]
    if not width or len(digits) != width or not set(digits) <= _HEX_DIGITS:
        return None
    point = int(digits, 16)
    return (chr(point), 2 + width) if point <= 0x10FFFF else None


def _blank_lines(lines: list[str], row: int) -> tuple[int, _Chars]:
    """From ``row``: the first line with text (-1 if none) and a newline per blank line."""
    blanks: _Chars = []
    while row < len(lines) and not lines[row].strip(" \t"):
        blanks.append(("\n", (row + 1, len(lines[row]) + 1)))
        row += 1
    return (row if row < len(lines) else -1), blanks


def _block_chars(lines: list[str], row: int, folded: bool, value: str) -> _Chars | None:
    """A block scalar whose indicator is on line ``row``: its text starts on the next line,
    at an indentation that the first line with text shows, unless an indentation indicator
    sets a smaller one; each candidate is tried, the one that rebuilds ``value`` wins."""
    first = next((r for r in range(row + 1, len(lines)) if lines[r].strip(" ")), None)
    if first is None:
        return None
    top = len(lines[first]) - len(lines[first].lstrip(" "))
    for indent in range(top, 0, -1):
        chars = _block_at(lines, row + 1, indent, folded, value)
        if chars is not None and "".join(c for c, _ in chars) == value:
            return chars
    return None


def _block_at(lines: list[str], row: int, indent: int, folded: bool, value: str) -> _Chars | None:
    """The block scalar's characters read at ``indent``, as PyYAML's scanner reads them:
    in ``>`` a line break between two lines that start with text folds into a space (or
    vanishes before blank lines); the trailing line breaks are kept as far as ``value``
    keeps them (its chomping)."""
    chars: _Chars = []
    row, blanks = _block_blanks(lines, row, indent)
    spot: Spot | None = None
    while row < len(lines) and _block_text(lines[row], indent):
        chars += blanks
        text = lines[row]
        starts_with_text = text[indent] not in " \t"
        chars += [(text[i], (row + 1, i + 1)) for i in range(indent, len(text))]
        spot = (row + 1, len(text) + 1)
        row, blanks = _block_blanks(lines, row + 1, indent)
        if len(chars) > len(value) or not (row < len(lines) and _block_text(lines[row], indent)):
            break
        if not (folded and starts_with_text and lines[row][indent] not in " \t"):
            chars.append(("\n", spot))
        elif not blanks:
            chars.append((" ", spot))
    tail = ([("\n", spot)] if spot is not None else []) + blanks
    extra = len(value) - len(chars)
    return chars + tail[:extra] if 0 <= extra <= len(tail) else None


def _block_blanks(lines: list[str], row: int, indent: int) -> tuple[int, _Chars]:
    """Lines with nothing but up to ``indent`` spaces: each is a line break of the text."""
    blanks: _Chars = []
    while row < len(lines) and len(lines[row]) <= indent and not lines[row].strip(" "):
        blanks.append(("\n", (row + 1, len(lines[row]) + 1)))
        row += 1
    return row, blanks


def _block_text(text: str, indent: int) -> bool:
    """Whether a line belongs to a block scalar indented by ``indent``."""
    return len(text) > indent and not text[:indent].strip(" ")
