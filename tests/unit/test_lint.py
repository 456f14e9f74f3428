"""Lint: every broken-runbook fixture reports exactly the problems it declares, where it declares them.

Each file in ``tests/fixtures/broken`` describes its own expectations in trailing
comments on the line where a diagnostic must be reported::

    retires: 3  # expect: unknown key 'retires' @5 hint: did you mean 'retries'?

``<message substring> [@<column>] [hint: <hint substring>]``; several ``# expect:``
may share a line. A file whose first lines hold ``# xfail: <reason>`` documents a
known production bug: it is run as ``xfail(strict=True)``, so fixing the bug makes
the test pass and the marker must then go. Inside a ``|`` or ``>`` block scalar
the marker is part of the text (harmless: it holds no ``{{``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clampdown.app.cli import app
from clampdown.core.actions import Action, ActionInput, ActionOutput, Registry
from clampdown.core.diagnostics import Diagnostic, InvalidFileError
from clampdown.core.lint import lint_paths, load_runbook
from tests.paths import FIXTURES, REPO

BROKEN = FIXTURES / "broken"
LIBRARY = REPO / "runbooks"

_EXPECT = re.compile(r"#\s*expect:\s*(?P<body>.*?)\s*(?=#\s*expect:|$)")
_BODY = re.compile(r"^(?P<message>.*?)(?:\s+@(?P<column>\d+))?(?:\s+hint:\s*(?P<hint>.*))?$")
_XFAIL = re.compile(r"^#\s*xfail:\s*(?P<reason>.+)$")


@dataclass(frozen=True)
class Expectation:
    line: int
    message: str
    column: int | None = None
    hint: str | None = None

    def matches(self, d: Diagnostic) -> bool:
        return (
            d.line == self.line
            and self.message in d.message
            and (self.column is None or d.column == self.column)
            and (self.hint is None or self.hint in d.hint)
        )

    def __str__(self) -> str:
        where = f"{self.line}" + (f":{self.column}" if self.column else "")
        return f"{where}: {self.message!r}" + (f" (hint {self.hint!r})" if self.hint else "")


def parse_expectations(text: str) -> list[Expectation]:
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        for match in _EXPECT.finditer(line):
            body = _BODY.match(match["body"])
            assert body and body["message"], f"line {number}: empty expectation"
            column = int(body["column"]) if body["column"] else None
            found.append(Expectation(number, body["message"], column, body["hint"]))
    return found


def xfail_reason(text: str) -> str | None:
    for line in text.splitlines()[:3]:
        if match := _XFAIL.match(line.strip()):
            return match["reason"]
    return None


def _params() -> list:
    params = []
    for path in sorted(BROKEN.glob("*.yaml")):
        reason = xfail_reason(path.read_text(encoding="utf-8"))
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        params.append(pytest.param(path, marks=marks, id=path.stem))
    return params


def check_fixture(path: Path, diagnostics: list[Diagnostic]) -> list[str]:
    """Problems with ``diagnostics`` against the file's expectations (empty: all good)."""
    expectations = parse_expectations(path.read_text(encoding="utf-8"))
    unused = list(diagnostics)
    problems = []
    # the most constrained expectations pick first, so a loose one cannot steal their match
    for exp in sorted(expectations, key=lambda e: (e.column is None, e.hint is None)):
        match = next((d for d in unused if exp.matches(d)), None)
        if match is None:
            problems.append(f"expected at {exp}, not reported")
        else:
            unused.remove(match)
    problems += [f"unexpected: {d}" for d in unused if d.severity == "error"]
    return problems


@pytest.mark.parametrize("path", _params())
def test_broken_fixture_reports_exactly_its_expectations(path: Path) -> None:
    found = lint_paths([path])
    problems = check_fixture(path, found)
    shown = "\n".join(str(d) for d in found) or "(no diagnostics)"
    assert not problems, "\n".join(problems) + f"\n--- lint said:\n{shown}"


def test_every_broken_fixture_declares_an_expectation() -> None:
    files = sorted(BROKEN.glob("*.yaml"))
    assert len(files) >= 30
    empty = [f.name for f in files if not parse_expectations(f.read_text(encoding="utf-8"))]
    assert empty == []


def test_required_error_kinds_have_a_fixture() -> None:
    required = {
        "yaml_syntax_error",
        "duplicate_yaml_key",
        "unknown_key_top_level",
        "unknown_key_metadata",
        "unknown_key_step",
        "missing_required_key",
        "bad_step_id",
        "bad_runbook_name",
        "wrong_severity",
        "duplicate_step_id",
        "needs_unknown_step",
        "needs_itself",
        "needs_cycle",
        "unknown_action",
        "with_missing_field",
        "with_unknown_field",
        "with_wrong_type",
        "expression_syntax_error",
        "sandbox_escape",
        "ref_not_upstream",
        "ref_unknown_step",
        "ref_bad_step_part",
        "ref_undeclared_input",
        "output_never_set",
        "input_default_invalid",
        "status_function_outside_if",
    }
    assert required - {f.stem for f in BROKEN.glob("*.yaml")} == set()


def test_expectation_comments_are_parsed() -> None:
    text = (
        "a: 1\n"
        "b: 2  # expect: unknown key 'b' @1 hint: did you mean 'a'?\n"
        "c: [x]  # expect: first thing # expect: second @4\n"
    )
    assert parse_expectations(text) == [
        Expectation(2, "unknown key 'b'", 1, "did you mean 'a'?"),
        Expectation(3, "first thing"),
        Expectation(3, "second", 4),
    ]
    assert xfail_reason("# xfail: known bug\napiVersion: x\n") == "known bug"
    assert xfail_reason("apiVersion: x\n") is None


def test_fixture_checker_rejects_wrong_line_column_and_extras(tmp_path: Path) -> None:
    path = tmp_path / "f.yaml"
    path.write_text("a: 1\nb: 2  # expect: bad b @4\n", encoding="utf-8")
    right = Diagnostic(str(path), 2, 4, "bad b here")
    assert check_fixture(path, [right]) == []
    assert check_fixture(path, [Diagnostic(str(path), 2, 1, "bad b here")]) != []
    assert check_fixture(path, [Diagnostic(str(path), 1, 4, "bad b here")]) != []
    extra = Diagnostic(str(path), 1, 1, "other")
    assert check_fixture(path, [right, extra]) == [f"unexpected: {extra}"]
    # warnings nobody expected are tolerated; errors are not
    warning = Diagnostic(str(path), 1, 1, "meh", severity="warning")
    assert check_fixture(path, [right, warning]) == []


def test_diagnostic_text_names_file_line_column_severity_and_hint() -> None:
    path = BROKEN / "unknown_action.yaml"
    (d,) = lint_paths([path])
    assert str(d) == (f"{path}:8:11: error: unknown action 'core.wiat' — did you mean 'core.wait'?")
    assert d.code == "unknown-action"


def test_missing_path_is_a_diagnostic(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    (d,) = lint_paths([missing])
    assert (d.path, d.line, d.column, d.message, d.severity) == (
        str(missing),
        1,
        1,
        "no such file or folder",
        "error",
    )


CLEAN = """\
apiVersion: clampdown/v1
kind: Runbook
metadata:
  name: {name}
  title: A clean runbook
inputs:
  who: {{type: string, required: true}}
steps:
  - id: announce
    uses: core.log
    with: {{message: "hello {{{{ inputs.who }}}}"}}
  - id: pause
    uses: core.wait
    needs: [announce]
    with: {{duration: 1s}}
outputs:
  waited: "{{{{ steps.pause.outputs.waited_seconds }}}}"
"""


def test_clean_runbook_has_no_diagnostics(write_runbook) -> None:
    assert lint_paths([write_runbook(CLEAN.format(name="clean-one"))]) == []


def test_duplicate_runbook_names_in_a_folder(tmp_path: Path) -> None:
    (tmp_path / "same-name.yaml").write_text(CLEAN.format(name="same-name"), encoding="utf-8")
    (tmp_path / "t.yaml").write_text(CLEAN.format(name="same-name"), encoding="utf-8")
    found = lint_paths([tmp_path])
    assert [x.code for x in found] == ["duplicate-name", "file-name"]
    d = found[0]
    assert d.path == str(tmp_path / "t.yaml")
    assert (d.line, d.column, d.code) == (4, 9, "duplicate-name")
    assert d.message == f"runbook name 'same-name' is also used by {tmp_path / 'same-name.yaml'}"
    assert found[1].severity == "warning"
    assert found[1].message == "file name 't.yaml' does not match the runbook name 'same-name'"


def test_folder_lint_checks_triggers_and_drills_by_their_own_rules(tmp_path: Path) -> None:
    (tmp_path / "ok.yaml").write_text(CLEAN.format(name="ok"), encoding="utf-8")
    (tmp_path / "triggers.yaml").write_text(
        "apiVersion: clampdown/v1\nkind: TriggerSet\ntriggers:\n"
        "  - {name: t1, match: 'true', runbook: okk}\n",
        encoding="utf-8",
    )
    (tmp_path / "drills").mkdir()
    (tmp_path / "drills" / "d.yaml").write_text("also: not a drill\n", encoding="utf-8")
    (tmp_path / "nested").mkdir()
    (tmp_path / "nested" / "bad.yml").write_text("kind: Runbok\n", encoding="utf-8")
    found = {Path(d.path).name: d.message for d in lint_paths([tmp_path]) if d.severity == "error"}
    assert found.keys() == {"bad.yml", "triggers.yaml", "d.yaml"}, found
    assert found["bad.yml"] == "unknown kind 'Runbok'"
    assert "okk" in found["triggers.yaml"]  # the trigger's runbook is not in this library
    assert "ok.yaml" not in found


def test_load_runbook_raises_on_errors_and_returns_warnings(write_runbook) -> None:
    warn = CLEAN.format(name="warns").replace("required: true", "required: true, default: x")
    loaded, warnings = load_runbook(write_runbook(warn, "warn.yaml"))
    assert loaded.model.metadata.name == "warns"
    assert [(d.severity, d.line, d.code) for d in warnings] == [("warning", 7, "input-default")]
    assert "is required and has a default" in warnings[0].message
    with pytest.raises(InvalidFileError) as info:
        load_runbook(BROKEN / "unknown_action.yaml")
    assert [d.message for d in info.value.diagnostics] == ["unknown action 'core.wiat'"]


# --- the approval-gate rule, with actions that exist only in this test ----------------------


class PurgeWeights(Action):
    name = "test.purge_weights"
    summary = "Delete model weights (test only)"
    destructive = True

    class Input(ActionInput):
        bucket: str


class ApproveIt(Action):
    name = "test.approve"
    summary = "Ask a human (test only)"
    approval_gate = True

    class Output(ActionOutput):
        approved: bool


@pytest.fixture
def gated_registry() -> Registry:
    reg = Registry()
    reg.register(PurgeWeights)
    reg.register(ApproveIt)
    return reg


GATED = """\
apiVersion: clampdown/v1
kind: Runbook
metadata:
  name: gate-test
  title: Gate test
steps:
  - id: approve
    uses: test.approve
    needs: {approve_needs}
  - id: announce
    uses: core.log
    needs: {announce_needs}
    with: {{message: purging}}
  - id: purge
    uses: test.purge_weights
    needs: {purge_needs}
    with: {{bucket: weights}}
"""
PURGE_USES = (15, 11)


@pytest.mark.parametrize(
    ("approve", "announce", "purge", "gated"),
    [
        ("[]", "[]", "[]", False),  # a gate exists but runs in parallel
        ("[]", "[]", "[announce]", False),  # upstream, but not a gate
        ("[purge]", "[]", "[]", False),  # the gate comes after the destruction
        ("[]", "[]", "[approve]", True),  # directly behind the gate
        ("[]", "[approve]", "[announce]", True),  # transitively behind the gate
        ("[]", "[approve]", "[announce, approve]", True),
    ],
    ids=["parallel", "non-gate-upstream", "gate-downstream", "direct", "transitive", "both"],
)
def test_destructive_step_needs_an_approval_gate_upstream(
    write_runbook,
    gated_registry: Registry,
    approve: str,
    announce: str,
    purge: str,
    gated: bool,
) -> None:
    path = write_runbook(
        GATED.format(approve_needs=approve, announce_needs=announce, purge_needs=purge)
    )
    # a gate two hops up is also reported as indirect-gate (tests/unit/test_gate_binding.py)
    found = [d for d in lint_paths([path], gated_registry) if d.code != "indirect-gate"]
    if gated:
        assert found == []
        return
    (d,) = found
    assert (d.severity, d.code, (d.line, d.column)) == (
        "warning",
        "ungated-destructive",
        PURGE_USES,
    )
    assert d.message == "destructive action 'test.purge_weights' has no approval gate upstream"
    assert "approval.request" in d.hint


def test_ungated_destructive_is_an_error_with_strict(write_runbook, gated_registry) -> None:
    path = write_runbook(GATED.format(approve_needs="[]", announce_needs="[]", purge_needs="[]"))
    (d,) = lint_paths([path], gated_registry, strict=True)
    assert (d.severity, d.code, (d.line, d.column)) == ("error", "ungated-destructive", PURGE_USES)
    gated = write_runbook(
        GATED.format(approve_needs="[]", announce_needs="[]", purge_needs="[approve]"), "gated.yaml"
    )
    assert lint_paths([gated], gated_registry, strict=True) == []


def test_test_actions_are_not_in_the_default_registry(write_runbook, gated_registry) -> None:
    path = write_runbook(
        GATED.format(approve_needs="[]", announce_needs="[]", purge_needs="[approve]")
    )
    assert {d.message for d in lint_paths([path])} == {
        "unknown action 'test.approve'",
        "unknown action 'test.purge_weights'",
    }


# --- the shipped library, the CLI, and the import budget ------------------------------------


def test_shipped_library_is_clean() -> None:
    assert LIBRARY.is_dir()
    found = lint_paths([LIBRARY])
    assert found == [], "\n".join(map(str, found))


def test_cli_lint_clean_file_exits_zero(write_runbook) -> None:
    path = write_runbook(CLEAN.format(name="cli-clean"))
    result = CliRunner().invoke(app, ["lint", str(path)])
    assert result.exit_code == 0, result.output
    assert "lint: clean" in result.stdout


def test_cli_lint_broken_folder_exits_one() -> None:
    result = CliRunner().invoke(app, ["lint", str(BROKEN)])
    assert result.exit_code == 1, result.output
    assert (
        f"{BROKEN / 'unknown_action.yaml'}:8:11: error: unknown action 'core.wiat'" in result.stdout
    )
    assert f"{BROKEN / 'yaml_syntax_error.yaml'}:8:19: error: YAML syntax error" in result.stdout


def test_cli_lint_json_format() -> None:
    result = CliRunner().invoke(app, ["lint", str(BROKEN), "--format", "json"])
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    diagnostics = report["diagnostics"]
    assert report["errors"] == sum(d["severity"] == "error" for d in diagnostics) > 30
    assert report["warnings"] == len(diagnostics) - report["errors"]
    assert all(
        isinstance(d["line"], int) and d["line"] >= 1 and d["column"] >= 1 for d in diagnostics
    )
    by_file = [
        d
        for d in diagnostics
        if d["path"].endswith("unknown_action.yaml") and d["code"] != "file-name"
    ]  # fixture files are named after their error
    assert [(d["line"], d["column"], d["code"], d["hint"]) for d in by_file] == [
        (8, 11, "unknown-action", "did you mean 'core.wait'?")
    ]


def test_cli_lint_strict_turns_warnings_into_failure(write_runbook) -> None:
    text = CLEAN.format(name="cli-warn").replace("required: true", "required: true, default: x")
    path = write_runbook(text)
    relaxed = CliRunner().invoke(app, ["lint", str(path)])
    assert relaxed.exit_code == 0, relaxed.output
    assert "0 error(s), 1 warning(s)" in relaxed.stdout
    strict = CliRunner().invoke(app, ["lint", "--strict", str(path)])
    assert strict.exit_code == 1, strict.output
    assert "1 error(s), 0 warning(s)" in strict.stdout


def test_secret_inputs_must_be_strings(tmp_path: Path) -> None:
    path = tmp_path / "secret-list.yaml"
    path.write_text(
        CLEAN.format(name="secret-list").replace(
            "  who: {type: string, required: true}",
            "  who: {type: string, required: true}\n  keys: {type: array, secret: true}",
        ),
        encoding="utf-8",
    )
    (d,) = lint_paths([path])
    assert (d.line, d.column) == (8, 9)
    assert "a secret input must be of type string" in d.message


def test_a_bad_defaults_expression_is_reported_once(tmp_path: Path) -> None:
    path = tmp_path / "bad-defaults.yaml"
    path.write_text(
        CLEAN.format(name="bad-defaults").replace(
            "steps:\n", 'defaults: {region: "{{ inputs.regoin }}"}\nsteps:\n'
        ),
        encoding="utf-8",
    )
    found = lint_paths([path])
    assert [(d.line, d.message) for d in found] == [(8, "input 'regoin' is not declared")]


def test_a_preapproved_destructive_step_needs_no_gate_but_a_real_reason(
    write_runbook, gated_registry
) -> None:
    text = GATED.format(approve_needs="[]", announce_needs="[]", purge_needs="[]")
    waived = text.replace(
        "    with: {bucket: weights}",
        "    preapproved: IR policy 4.2, auto-containment of confirmed theft\n"
        "    with: {bucket: weights}",
    )
    assert lint_paths([write_runbook(waived)], gated_registry, strict=True) == []
    vague = text.replace(
        "    with: {bucket: weights}", "    preapproved: ok\n    with: {bucket: weights}"
    )
    (d,) = [
        x
        for x in lint_paths([write_runbook(vague, "vague.yaml")], gated_registry)
        if x.severity == "error"
    ]
    assert "steps.2.preapproved" in d.message and "at least 10 characters" in d.message


CORPUS_BAD = FIXTURES / "lint_corpus" / "bad"


@pytest.mark.parametrize(
    ("name", "code", "severity"),
    [
        ("if_trap_two_expressions", "if-text", "error"),
        ("string_into_list", "type", "error"),
        ("empty_default_into_min_one", "type", "error"),
        ("pattern_not_knowable", "type-unknown", "warning"),
    ],
)
def test_type_diagnostics_carry_their_code_in_json(name: str, code: str, severity: str) -> None:
    path = CORPUS_BAD / f"{name}.yaml"
    result = CliRunner().invoke(app, ["lint", str(path), "--format", "json"])
    report = json.loads(result.stdout)
    assert [(d["code"], d["severity"]) for d in report["diagnostics"]] == [(code, severity)]
    assert result.exit_code == (1 if severity == "error" else 0)
    if severity == "warning":  # what lint cannot know passes, unless --strict
        strict = CliRunner().invoke(app, ["lint", "--strict", str(path)])
        assert strict.exit_code == 1 and "cannot be known statically" in strict.output


# --- expression problems are reported where the expression is written ------------------------

POSITIONED = """\
apiVersion: clampdown/v1
kind: Runbook
metadata: {{name: positioned, title: Positioned}}
inputs:
  who: {{type: string}}
  roles: {{type: array, default: []}}
steps:
  - id: first
    uses: core.log
    with: {{message: hi}}
  - id: say
    uses: core.log
    needs: [first]
    with:
      message: {message}
"""


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        # the example of docs/runbooks.md §17, which used to be reported at the '>' (15:16)
        (
            ">\n        first line {{ inputs.who }}\n        second line {{ inputs.nope }}\n"
            "        third",
            (17, 21, "input 'nope' is not declared"),
        ),
        (
            ">-\n        one {{ inputs.who }}\n\n        two\n          {{ steps.nowhere.status }}",
            (19, 11, "steps.nowhere refers to an unknown step"),
        ),
        (
            "|\n        one {{ inputs.who }}\n        two {{ inputs.who | attr('x') }}",
            (17, 13, "forbidden in expressions: the filter 'attr'"),
        ),
        (
            "|\n        one {{ inputs.who }}\n\n        three {{ inputs.who | }}",
            (18, 15, "expression syntax error"),
        ),
        (
            "one {{ inputs.who }}\n        and {{ steps.first.outputs.nope }}\n\n"
            "        then {{ run.idd }}",
            (18, 14, "run has no field 'idd'"),
        ),
        (
            "one {{ inputs.who }}\n        and {{ steps.first.outputz }}",
            (16, 13, "steps.first.outputz does not exist"),
        ),
        (
            '"tab\\there {{ inputs.who }} \\\n        and {{ inputs.nope }}"',
            (16, 13, "input 'nope' is not declared"),
        ),
        (
            "'it''s {{ inputs.who }}\n\n        {{ alert.id }}'",
            (17, 9, "'alert' is only defined in triggers"),
        ),
        (
            ">\n\n        {{ inputs.roles\n          | length }}",
            (17, 9, "| length is an integer, but field 'message' takes a string"),
        ),
    ],
    ids=[
        "folded",
        "folded strip",
        "literal filter",
        "literal syntax",
        "plain",
        "plain one more",
        "double-quoted",
        "single-quoted",
        "folded type",
    ],
)
def test_an_expression_problem_is_reported_at_its_expression(
    tmp_path: Path, message: str, expected: tuple[int, int, str]
) -> None:
    path = tmp_path / "positioned.yaml"
    text = POSITIONED.format(message=message)
    path.write_text(text, encoding="utf-8")
    found = [(d.line, d.column, d.message) for d in lint_paths([path])]
    line, column, said = expected
    assert [(ln, col) for ln, col, msg in found if said in msg] == [(line, column)], found
    assert text.splitlines()[line - 1][column - 1 :].startswith("{{"), "a case's own mistake"


def test_an_if_problem_is_reported_at_its_expression(tmp_path: Path) -> None:
    """A bare ``if:`` is compiled wrapped in ``{{ }}``: its problem is placed at its text."""
    path = tmp_path / "if.yaml"
    path.write_text(
        CLEAN.format(name="if-problems").replace(
            "    uses: core.wait\n",
            "    uses: core.wait\n    if: >-\n      steps.announce.status == 'ok'\n"
            "      and inputs.nope\n",
        ),
        encoding="utf-8",
    )
    found = [(d.line, d.column, d.message) for d in lint_paths([path])]
    assert found == [(15, 7, "input 'nope' is not declared")], found


def test_the_same_mistake_twice_is_reported_at_each_place(tmp_path: Path) -> None:
    """Jinja tells only the line of a lookup: each of two equal ones gets its own line."""
    path = tmp_path / "twice.yaml"
    text = POSITIONED.format(
        message="|\n        a {{ inputs.nope }}\n        b\n        c {{ inputs.nope }}"
    )
    path.write_text(text, encoding="utf-8")
    found = [(d.line, d.column) for d in lint_paths([path])]
    assert found == [(16, 11), (18, 11)], found


DECIDED_BY_THE_RUN = """\
apiVersion: clampdown/v1
kind: Runbook
metadata: {name: decided-by-the-run, title: Decided by the run}
inputs:
  who: {type: array, default: [U024BE7LH]}
  quorum: {type: integer, default: 1}
steps:
  - id: ask
    uses: approval.request
    with:
      summary: "Contain?"
      approvers: {users: "{{ inputs.who }}", groups: [security-oncall]}
      min_approvals: "{{ inputs.quorum }}"
      two_person_rule: true
  - id: written
    uses: approval.request
    with: {summary: "Again?", approvers: {users: [U024BE7LH]}, min_approvals: 2}
"""


def test_an_approval_whose_deciders_come_from_the_run_is_a_warning(write_runbook) -> None:
    """Approvers (or the quorum) computed from the run's inputs let whoever supplies them (a
    person starting the run, an alert's payload through a trigger) choose who decides."""
    path = write_runbook(DECIDED_BY_THE_RUN)
    found = [d for d in lint_paths([path]) if d.code == "gate-from-run"]
    assert [(d.severity, d.line) for d in found] == [("warning", 12), ("warning", 13)]
    assert "approval 'ask' takes 'approvers' from an expression" in found[0].message
    assert "approval 'ask' takes 'min_approvals' from an expression" in found[1].message
    result = CliRunner().invoke(app, ["lint", "--strict", str(path)])
    assert result.exit_code == 1, result.output
