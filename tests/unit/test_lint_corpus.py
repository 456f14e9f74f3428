"""Lint, the JSON Schema and plan agree on a corpus of runbooks with known mistakes.

``tests/fixtures/lint_corpus/bad`` holds runbooks with one known mistake each (the
issue's traps among them); ``good`` holds their fixes, and the shipped library is
good too. Each bad file says what it expects in comments:

* ``# expect: <message fragment> @<column> [hint: <fragment>]`` on the line lint must
  report (the format of ``tests/fixtures/broken``, see test_lint.py);
* ``# schema: rejects`` or ``# schema: accepts (<what the schema cannot see>)``;
* optionally ``# plan-inputs: {json}`` and ``# plan: refuses <fragment>`` for mistakes
  that only the values of a run reveal.

"Agree" means, for every file:

1. lint reports exactly the expected diagnostics (line, column, message, hint), and
   no other error;
2. plan refuses a file exactly when lint reports an error, with the same diagnostics;
   a file lint passes (a warning at most) is refused by plan with the inputs it names,
   and says so in the expected words: lint or plan catches every bad file before a run;
3. the schema rejects a file marked ``rejects``, with an error on a line lint reports,
   and accepts a file marked ``accepts``: what a schema cannot see (an expression's type
   or content, the DAG, references, an action's own validators) is lint's alone, never
   the other way round (the schema never rejects what lint accepts);
4. good files: lint --strict clean, the schema accepts them, plan with their inputs
   refuses nothing.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from clampdown.core import plan as planner
from clampdown.core.actions import registry
from clampdown.core.diagnostics import InvalidFileError
from clampdown.core.lint import lint_paths, load_runbook
from clampdown.core.schema import runbook_schema
from clampdown.core.yamlsource import parse
from tests.paths import FIXTURES, REPO
from tests.unit.test_lint import check_fixture, parse_expectations

CORPUS = FIXTURES / "lint_corpus"
BAD = sorted((CORPUS / "bad").glob("*.yaml"))
GOOD = sorted((CORPUS / "good").glob("*.yaml")) + sorted(
    f for f in (REPO / "runbooks").glob("*.yaml") if f.stem != "triggers"
)
_HEADER = re.compile(r"^#\s*(?P<key>schema|plan-inputs|plan):\s*(?P<value>.*)$")


def header(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if match := _HEADER.match(line.strip()):
            found[match["key"]] = match["value"].strip()
    return found


@cache
def validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(runbook_schema(registry()))


def schema_errors(path: Path) -> list[tuple[str, set[int]]]:
    """The schema's errors, each with the lines it covers: the failing value's and those
    of its own keys (an object missing a key or holding an unknown one)."""
    text = path.read_text(encoding="utf-8")
    source = parse(text, str(path))
    found = []
    for error in validator().iter_errors(yaml.safe_load(text)):
        where = tuple(error.absolute_path)
        lines = {source.position(where)[0]}
        if isinstance(error.instance, dict):
            lines |= {source.position((*where, k), key=True)[0] for k in error.instance}
        found.append((error.message, lines))
    return found


def plan_problems(path: Path, given: dict[str, Any]) -> list[str]:
    loaded, _ = load_runbook(path)
    return planner.build(loaded.model, given, registry()).problems


# --- the corpus itself -----------------------------------------------------------------------


def test_the_corpus_has_thirty_bad_runbooks_each_with_positions_and_a_schema_verdict() -> None:
    assert len(BAD) >= 30
    for path in BAD:
        expectations = parse_expectations(path.read_text(encoding="utf-8"))
        meta = header(path)
        verdict = meta.get("schema", "")
        assert expectations or "plan" in meta, f"{path.name}: neither # expect: nor # plan:"
        assert all(e.column for e in expectations), f"{path.name}: an expectation has no @column"
        assert verdict == "rejects" or verdict.startswith("accepts ("), f"{path.name}: {verdict!r}"


def test_the_corpus_holds_the_issues_traps() -> None:
    names = {p.stem for p in BAD}
    assert {
        "if_trap_two_expressions",
        "string_into_list",
        "empty_default_into_min_one",
        "boolean_as_yes",
        "unknown_uses",
        "deep_nesting",
    } <= names


# --- agreement, file by file -----------------------------------------------------------------


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_lint_schema_and_plan_agree_on_a_bad_runbook(path: Path) -> None:
    meta = header(path)
    found = lint_paths([path])
    problems = check_fixture(path, found)
    assert not problems, "\n".join(problems) + "\n--- lint said:\n" + "\n".join(map(str, found))

    errors = [d for d in found if d.severity == "error"]
    if errors:  # plan refuses it, with lint's own words and positions
        with pytest.raises(InvalidFileError) as refused:
            load_runbook(path)
        assert set(refused.value.diagnostics) == set(errors)
        assert "plan" not in meta, "lint already refuses it: plan never gets to the values"
    else:  # lint cannot know: plan, with the values of a run, must refuse it
        assert "plan" in meta and "plan-inputs" in meta, "a bad file nobody refuses"
        expected = meta["plan"].removeprefix("refuses").strip()
        said = plan_problems(path, json.loads(meta["plan-inputs"]))
        assert any(expected in p for p in said), said

    schema = schema_errors(path)
    if meta["schema"] == "rejects":
        lines = {d.line for d in errors}
        assert schema, "the schema accepts what lint rejects, though it could see it"
        assert any(covered & lines for _, covered in schema), (schema, lines)
    else:
        assert schema == [], f"the schema rejects what it says it cannot see: {schema}"


@pytest.mark.parametrize("path", GOOD, ids=[p.stem for p in GOOD])
def test_lint_schema_and_plan_accept_a_good_runbook(path: Path) -> None:
    found = lint_paths([path], strict=True)
    assert found == [], "\n".join(map(str, found))
    assert schema_errors(path) == []
    given = json.loads(header(path).get("plan-inputs", "{}"))
    assert plan_problems(path, given) == []
