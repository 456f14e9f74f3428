"""Loading: YAML with positions, duplicate keys, document shape, kinds, and finding runbooks."""

from __future__ import annotations

from pathlib import Path

import pytest

from clampdown.core.diagnostics import ClampdownError, InvalidFileError
from clampdown.core.loader import load, read, resolve, validate
from clampdown.core.yamlsource import parse

DOC = """\
apiVersion: clampdown/v1
kind: Runbook
metadata:
  name: load-me
  title: Load me
steps:
  - id: announce
    uses: core.log
    with: {message: hi}
"""


def _diagnostics(text: str, path: str = "doc.yaml") -> list:
    with pytest.raises(InvalidFileError) as info:
        validate(parse(text, path))
    return info.value.diagnostics


# --- positions ------------------------------------------------------------------------------


def test_positions_of_values_and_keys() -> None:
    text = "name: x\nlist:\n  - first\n  - {k: v, n: 2}\nnested:\n  deep:\n    flag: true\n"
    src = parse(text, "p.yaml")
    assert src.data == {
        "name": "x",
        "list": ["first", {"k": "v", "n": 2}],
        "nested": {"deep": {"flag": True}},
    }
    assert src.values[()] == (1, 1)
    assert src.values[("name",)] == (1, 7)
    assert src.keys[("name",)] == (1, 1)
    assert src.keys[("list",)] == (2, 1)
    assert src.values[("list", 0)] == (3, 5)
    assert src.values[("list", 1)] == (4, 5)
    assert src.keys[("list", 1, "n")] == (4, 12)
    assert src.values[("list", 1, "n")] == (4, 15)
    assert src.keys[("nested", "deep", "flag")] == (7, 5)
    assert src.values[("nested", "deep", "flag")] == (7, 11)


def test_position_falls_back_to_the_nearest_known_parent() -> None:
    src = parse("a:\n  b: {c: 1}\n", "p.yaml")
    assert src.position(("a", "b", "missing", 3)) == (2, 6)  # the {c: 1} mapping
    assert src.position(("a", "b"), key=True) == (2, 3)
    assert src.position(("a", "b")) == (2, 6)
    assert src.position(("nope",)) == (1, 1)
    d = src.diagnostic(("a", "b", "c"), "bad c", "fix it", code="x")
    assert (d.path, d.line, d.column, d.message, d.hint, d.code) == (
        "p.yaml",
        2,
        10,
        "bad c",
        "fix it",
        "x",
    )


def test_columns_count_characters_not_bytes() -> None:
    src = parse('a: {t: "éé", u: 1}\n', "p.yaml")
    assert src.keys[("a", "u")] == (1, 14)
    assert src.values[("a", "u")] == (1, 17)


def test_non_string_keys_are_kept_or_stringified() -> None:
    src = parse("2: two\n~: nothing\ntrue: yes\n", "p.yaml")
    assert src.data == {2: "two", "None": "nothing", True: True}


# --- duplicate keys, syntax, empty and odd documents -----------------------------------------


def test_duplicate_key_names_the_first_line() -> None:
    text = "a: 1\nb:\n  c: 1\n  d: 2\n  c: 3\na: 4\n"
    with pytest.raises(InvalidFileError) as info:
        parse(text, "dup.yaml")
    found = [(d.line, d.column, d.message, d.code) for d in info.value.diagnostics]
    assert found == [
        (5, 3, "duplicate key 'c' (first at line 3)", "duplicate-key"),
        (6, 1, "duplicate key 'a' (first at line 1)", "duplicate-key"),
    ]
    assert info.value.diagnostics[0].hint == "remove one of them: YAML keeps only the last"
    assert str(info.value).splitlines()[0].startswith("dup.yaml:5:3: error: duplicate key 'c'")


def test_duplicate_key_inside_a_list_item() -> None:
    with pytest.raises(InvalidFileError) as info:
        parse("steps:\n  - id: a\n    uses: x\n    id: b\n", "dup.yaml")
    (d,) = info.value.diagnostics
    assert (d.line, d.column, d.message) == (4, 5, "duplicate key 'id' (first at line 2)")


def test_yaml_syntax_error_has_a_position() -> None:
    with pytest.raises(InvalidFileError) as info:
        parse("a: 1\nb: [1, 2\nc: 3\n", "bad.yaml")
    (d,) = info.value.diagnostics
    assert d.code == "yaml"
    assert d.message.startswith("YAML syntax error: ")
    assert d.line == 3
    assert "indentation" in d.hint


def test_two_documents_in_one_file_are_an_error() -> None:
    with pytest.raises(InvalidFileError) as info:
        parse("a: 1\n---\nb: 2\n", "two.yaml")
    (d,) = info.value.diagnostics
    assert (d.line, d.column, d.code) == (2, 1, "yaml")
    assert "another document" in d.message


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_empty_file(text: str) -> None:
    with pytest.raises(InvalidFileError) as info:
        parse(text, "empty.yaml")
    (d,) = info.value.diagnostics
    assert (d.path, d.line, d.column, d.message) == ("empty.yaml", 1, 1, "the file is empty")


def test_empty_file_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("", encoding="utf-8")
    with pytest.raises(InvalidFileError) as info:
        load(path)
    assert [d.message for d in info.value.diagnostics] == ["the file is empty"]


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_non_mapping_document(text: str) -> None:
    (d,) = _diagnostics(text)
    assert (d.line, d.column) == (1, 1)
    assert d.message == "a clampdown document must be a mapping"
    assert d.hint == "start with 'apiVersion: clampdown/v1'"


def test_unreadable_files_are_diagnostics(tmp_path: Path) -> None:
    with pytest.raises(InvalidFileError) as info:
        read(tmp_path / "missing.yaml")
    (d,) = info.value.diagnostics
    assert d.message.startswith("cannot read the file: ")
    assert (d.line, d.column, d.code) == (1, 1, "io")
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"a: \xff\xfe\n")
    with pytest.raises(InvalidFileError) as info:
        read(binary)
    assert info.value.diagnostics[0].message.startswith("cannot read the file: ")


# --- kinds and validation -------------------------------------------------------------------


def test_unknown_kind_with_did_you_mean() -> None:
    (d,) = _diagnostics(DOC.replace("kind: Runbook", "kind: Runbok"))
    assert (d.line, d.column, d.code) == (2, 7, "schema")
    assert d.message == "unknown kind 'Runbok'"
    assert d.hint == "did you mean 'Runbook'?"


def test_unknown_kind_far_from_any_lists_the_kinds() -> None:
    (d,) = _diagnostics(DOC.replace("kind: Runbook", "kind: Deployment"))
    assert d.hint == "use one of: Runbook"


def test_missing_kind() -> None:
    (d,) = _diagnostics(DOC.replace("kind: Runbook\n", ""))
    assert (d.line, d.column, d.message) == (1, 1, "missing key 'kind'")


def test_all_schema_errors_are_reported_at_once_in_file_order() -> None:
    text = DOC.replace("  title: Load me\n", "  title: Load me\n  severity: huge\n").replace(
        "    uses: core.log\n", "    uses: core.log\n    retires: 2\n"
    )
    found = [(d.line, d.code) for d in _diagnostics(text)]
    assert found == [(6, "schema"), (10, "unknown-key")]


def test_load_builds_the_model(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text(
        DOC.replace(
            "    with: {message: hi}\n",
            "    needs: other\n    if: always()\n    with: {message: hi}\n",
        ),
        encoding="utf-8",
    )
    loaded = load(path)
    step = loaded.model.steps[0]
    assert (step.id, step.uses, step.needs, step.if_, step.with_) == (
        "announce",
        "core.log",
        ["other"],
        "always()",
        {"message": "hi"},
    )
    assert loaded.path == str(path)
    assert loaded.source.keys[("steps", 0, "needs")] == (9, 5)


# --- merge keys -----------------------------------------------------------------------------


def test_merge_keys_work() -> None:
    text = DOC + (
        "  - <<: &common {uses: core.log, retries: 2}\n"
        "    id: second\n"
        "    with: {message: two}\n"
        "  - <<: *common\n"
        "    id: third\n"
        "    with: {message: three}\n"
    )
    src = parse(text, "merge.yaml")
    assert src.data["steps"][1] == {
        "uses": "core.log",
        "retries": 2,
        "id": "second",
        "with": {"message": "two"},
    }
    assert src.data["steps"][2] == {
        "uses": "core.log",
        "retries": 2,
        "id": "third",
        "with": {"message": "three"},
    }
    # a merged value is located where it was written
    assert src.values[("steps", 2, "uses")] == (10, 24)
    loaded = validate(src)
    assert [(s.id, s.uses, s.retries) for s in loaded.model.steps] == [
        ("announce", "core.log", None),
        ("second", "core.log", 2),
        ("third", "core.log", 2),
    ]


def test_merge_key_can_be_overridden() -> None:
    text = DOC.replace("  - id: announce\n", "  - &base\n    id: announce\n")
    text += "  - <<: *base\n    id: again\n"
    src = parse(text, "override.yaml")
    assert src.data["steps"][1]["id"] == "again"
    assert src.data["steps"][1]["uses"] == "core.log"


# --- resolve ------------------------------------------------------------------------------


@pytest.fixture
def library(tmp_path: Path) -> Path:
    lib = tmp_path / "library"
    lib.mkdir()
    (lib / "contain-model-exfiltration.yaml").write_text(DOC, encoding="utf-8")
    (lib / "rotate-keys.yml").write_text(DOC, encoding="utf-8")
    (lib / "notes.txt").write_text("not a runbook", encoding="utf-8")
    return lib


def test_resolve_by_name(library: Path) -> None:
    assert (
        resolve("contain-model-exfiltration", library)
        == library / "contain-model-exfiltration.yaml"
    )
    assert resolve("rotate-keys", library) == library / "rotate-keys.yml"


def test_resolve_by_path(library: Path) -> None:
    path = library / "rotate-keys.yml"
    assert resolve(str(path), "/nonexistent-library") == path


def test_resolve_near_name_suggests(library: Path) -> None:
    with pytest.raises(ClampdownError) as info:
        resolve("contain-model-exfiltraton", library)
    assert info.value.message == f"no runbook named 'contain-model-exfiltraton' in {library}"
    assert info.value.hint == "did you mean 'contain-model-exfiltration'?"


def test_resolve_unknown_name_without_a_near_match(library: Path) -> None:
    with pytest.raises(ClampdownError) as info:
        resolve("notes", library)
    assert info.value.message == f"no runbook named 'notes' in {library}"
    assert "clampdown lint" in info.value.hint


def test_resolve_missing_path(tmp_path: Path, library: Path) -> None:
    missing = tmp_path / "gone.yaml"
    with pytest.raises(ClampdownError) as info:
        resolve(str(missing), library)
    assert info.value.message == f"runbook file '{missing}' does not exist"


def test_resolve_library_not_a_folder(tmp_path: Path) -> None:
    with pytest.raises(ClampdownError) as info:
        resolve("anything", tmp_path / "no-library")
    assert info.value.message == f"runbook library '{tmp_path / 'no-library'}' is not a folder"
    assert "CLAMPDOWN_LIBRARY" in info.value.hint
