"""Where a character of a YAML string is written (``Source.value_position``), in every
scalar style lint meets: plain, single- and double-quoted, literal and folded, on one
line and on several.

Each case marks one character of the value (``@``, or the value's last character) and
asserts the exact line:column where the file has it. The cases are built so that a
reading that ignored the style would answer something else: a fold, a chomped or kept
line break, an escape, a doubled quote or an indentation indicator comes before the
mark. Where the reading cannot be sure, the answer is the scalar's start (the node's
mark, as every diagnostic had before), never another line.
"""

from __future__ import annotations

import pytest

from clampdown.core.yamlsource import Source, parse, scalar_char_position

LOC = ("a", "m")


def source(text: str) -> Source:
    return parse(text, "t.yaml")


def where(text: str, mark: str = "@", *, last: bool = False) -> tuple[int, int]:
    """(line, column) of the value's first ``mark`` (or of its last character)."""
    src = source(text)
    value = src.value_at(LOC)
    offset = len(value) - 1 if last else value.index(mark)
    return src.value_position(LOC, offset)


def written(text: str, at: tuple[int, int]) -> str:
    """The character the file has at ``at`` (a line break: the end of its line)."""
    line = text.splitlines()[at[0] - 1]
    return line[at[1] - 1] if at[1] <= len(line) else "\n"


CASES = {
    # name: (document, expected line:column of the first "@")
    "plain, one line": ("a:\n  m: say @here # a comment\n", (2, 10)),
    "plain, three lines folded": (
        "a:\n  m: first line\n    second\n\n      third @x\n  n: 1\n",
        (5, 13),
    ),
    "plain, ended by a comment on its last line": (
        "a:\n  m: one\n   two @x # note\n",
        (3, 8),
    ),
    "plain in a flow mapping, two lines": ("a: {m: one two\n  three @x, n: 1}\n", (2, 9)),
    "single-quoted, a doubled quote before the mark": ("a:\n  m: 'it''s @'\n", (2, 13)),
    "single-quoted, folded over a blank line": (
        "a:\n  m: 'one   \n     two\n\n   ''three'' @'\n",
        (5, 14),
    ),
    "double-quoted, escapes before the mark": (
        'a:\n  m: "\\t\\u00e9\\\\ \\x41 @"\n',
        (2, 23),
    ),
    "double-quoted, an escaped line break then a fold": (
        'a:\n  m: "one \\\n      two\n    three @"\n',
        (4, 11),
    ),
    "double-quoted in a flow mapping": ('a: {m: "p\n    q @"}\n', (2, 7)),
    "literal, a leading blank line and a more-indented line": (
        "a:\n  m: |\n\n    one\n      two @\n  n: 1\n",
        (5, 11),
    ),
    "literal keep, after blank lines": ("a:\n  m: |+\n    one\n\n\n    two @\n", (6, 9)),
    "literal strip": ("a:\n  m: |-\n    x\n    y @\n  n: 1\n", (4, 7)),
    "literal with an indentation indicator": (
        "a:\n  m: |2\n      one\n    two @\n  n: 1\n",
        (4, 9),
    ),
    "folded, lines joined": (
        "a:\n  m: >\n    first {{ a }}\n    second {{ b }}\n    third @\n",
        (5, 11),
    ),
    "folded, a blank line and a more-indented line": (
        "a:\n  m: >\n    one\n\n    two\n      three\n    four @\n  n: 1\n",
        (7, 10),
    ),
    "folded strip, after a tag and an anchor": (
        "a:\n  m: !!str &x >-\n    one\n    two @\n",
        (4, 9),
    ),
    "folded keep, with a comment after the indicator": (
        "a:\n  m: >+ # note\n\n    one\n    two @\n\n",
        (5, 9),
    ),
    "folded, Windows line ends": ("a:\r\n  m: >\r\n    one\r\n    two @\r\n", (4, 9)),
    "a byte-order mark before the first line": ("\ufeffa: {m: 'x @'}\n", (1, 11)),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_a_marked_character_is_placed_where_it_is_written(case: str) -> None:
    text, expected = CASES[case]
    at = where(text)
    assert at == expected
    assert written(text.removeprefix("\ufeff"), at) == "@"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # clip: the last character is the line break that ends 'two'
        ("a:\n  m: |\n    one\n    two\n\n\n  n: 1\n", (4, 8)),
        # keep: the last is the break of the second blank line after 'two'
        ("a:\n  m: |+\n    one\n    two\n\n\n  n: 1\n", (6, 1)),
        ("a:\n  m: >+\n    one\n    two\n\n  n: 1\n", (5, 1)),
        # strip: the last is 'o' of 'two'
        ("a:\n  m: >-\n    one\n    two\n\n  n: 1\n", (4, 7)),
    ],
    ids=["literal clip", "literal keep", "folded keep", "folded strip"],
)
def test_the_line_breaks_a_block_keeps_are_placed_at_the_end_of_their_lines(
    text: str, expected: tuple[int, int]
) -> None:
    assert where(text, last=True) == expected


def test_a_folded_line_break_is_placed_at_the_end_of_the_line_it_ends() -> None:
    text = "a:\n  m: >\n    one\n    two\n"
    src = source(text)
    assert src.value_at(LOC) == "one two\n"
    assert src.value_position(LOC, 3) == (3, 8)  # the space that was the break after 'one'


def test_a_tab_is_one_column_as_the_parser_counts_it() -> None:
    text = 'a:\n  m: "\tx\t\n\t  y @"\n'
    assert where(text) == (3, 6)
    assert written(text, (3, 6)) == "@"


@pytest.mark.parametrize(
    "text",
    [
        # a line separator inside a plain scalar is kept as itself, not folded: not read
        "a:\n  m: one\u2028    two @\n",
        # a line separator ends a folded line: kept as itself, not read
        "a:\n  m: >\n    one\u2028    two @\n",
    ],
    ids=["plain with U+2028", "folded with U+2028"],
)
def test_what_cannot_be_read_for_sure_answers_the_scalars_start(text: str) -> None:
    assert where(text) == source(text).position(LOC)


def test_an_offset_outside_the_value_or_another_text_answers_the_start() -> None:
    src = source("a:\n  m: >\n    one\n    two @\n")
    start = src.position(LOC)
    assert start == (2, 6)
    assert src.value_position(LOC, 99) == start
    assert src.value_position(LOC, -1) == start
    assert src.value_position(LOC, 4, "not the value") == start
    assert src.value_position(("a", "nope"), 0) == src.position(("a",))
    assert src.value_position(("a",), 0) == src.position(("a",))  # not a string


def test_every_character_of_a_mixed_document_is_where_the_file_has_it() -> None:
    """Beyond the marked cases: every non-space character of every string value, in
    each style, maps to a place in the file that holds that very character."""
    text = (
        "s:\n"
        "  plain: alpha beta\n    gamma\n\n    delta\n"
        "  single: 'it''s\n    here'\n"
        '  double: "tab\\there \\\n    joined\n    folded"\n'
        "  literal: |\n    one\n      two\n\n    three\n"
        "  folded: >-\n    four\n    five\n\n      six\n    seven\n"
    )
    src = source(text)
    lines = text.splitlines()
    for key, value in src.data["s"].items():
        for offset, char in enumerate(value):
            if char.isspace():
                continue
            line, col = src.value_position(("s", key), offset)
            assert lines[line - 1][col - 1] == char, (key, offset, char, line, col)
    assert src.value_position(("s", "double"), src.data["s"]["double"].index("\t")) == (8, 15)


def test_the_function_alone_needs_the_lines_and_the_start() -> None:
    lines = ["k: >", "  x", "  y"]
    assert scalar_char_position(lines, (1, 4), "x y\n", 2) == (3, 3)
    assert scalar_char_position(lines, (1, 4), "x z\n", 2) is None  # not what is written
    assert scalar_char_position(lines, (9, 1), "x y\n", 2) is None  # no such line


@pytest.mark.parametrize(
    ("lines", "start", "value"),
    [
        (["k: 'a b'"], (1, 4), "a bc"),
        (["k: a", "  b"], (1, 4), "a  b"),
        (['k: "a\\tb"'], (1, 4), "a b"),
    ],
    ids=["single-quoted", "plain", "double-quoted"],
)
def test_a_value_other_than_the_text_read_is_never_placed(
    lines: list[str], start: tuple[int, int], value: str
) -> None:
    """The reading counts only when it rebuilds the value exactly: a value it does not
    rebuild (a layout it does not know) gets None, and its caller the scalar's start."""
    assert scalar_char_position(lines, start, value, len(value) - 1) is None
