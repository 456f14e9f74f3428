"""The ``kind: Drill`` model and its lint: positions, unknown names, inject timing, placeholders."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from clampdown.app.cli_drill import register
from clampdown.core.diagnostics import ClampdownError, InvalidFileError
from clampdown.core.drill_library import (
    DEFAULT_DRILL,
    drill_files,
    load_drill,
    resolve_drill,
    runbook_names,
)
from clampdown.core.drill_lint import lint_drills, load_checked
from clampdown.core.drill_placeholders import PlaceholderError, fill_placeholders
from tests.paths import REPO

LIBRARY = REPO / "runbooks"

GOOD = """\
apiVersion: clampdown/v1
kind: Drill
metadata: {name: tiny, title: Tiny drill, family: model-theft}
runbook: contain-iam-user
time_limit: 60s
roles:
  incident_lead: {name: Lee, slack_user: U0LEAD0001}
  approver: {name: Ann, slack_user: U0APPROVE1}
seed:
  users: [{name: ci-user, access_keys: 1}]
  roles: [{name: serving, service: sagemaker.amazonaws.com}]
  buckets: [{name: models, objects: {m/model.tar.gz: 64}}]
  endpoints: [{name: ep, model_data: s3://models/m/model.tar.gz, role: serving}]
alert:
  source: guardduty
  payload: {detail: {key: "${seed.users.ci-user.access_keys.0}", at: "${drill.alert_time}"}}
injects:
  - {type: approve, by: approver, after: 5s}
objectives:
  - {id: keys_dead, kind: no_active_keys, user: ci-user}
"""


def write(tmp_path: Path, text: str, name: str = "tiny.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def lint(tmp_path: Path, text: str) -> list[str]:
    return [str(d) for d in lint_drills([write(tmp_path, text)], LIBRARY)]


def test_shipped_drills_lint_clean_and_cover_four_families():
    files = drill_files(LIBRARY)
    assert DEFAULT_DRILL in files
    problems = lint_drills(files.values(), LIBRARY)
    assert problems == [], "\n".join(map(str, problems))
    families = {load_drill(p)[0].metadata.family for p in files.values()}
    assert {
        "model-theft",
        "inference-extraction",
        "role-session-theft",
        "slack-outage",
        "artifact-exfiltration",
        "recovery",
    } <= families


def test_shipped_drills_start_runbooks_that_exist():
    names = runbook_names(LIBRARY)
    for path in drill_files(LIBRARY).values():
        drill, _ = load_drill(path)
        assert drill.runbook in names, path


def test_good_drill_loads(tmp_path: Path):
    drill, warnings = load_checked(write(tmp_path, GOOD), LIBRARY)
    assert drill.time_limit == 60 and drill.injects[0].after == 5
    assert warnings == []


def test_unknown_runbook_is_reported_at_its_line(tmp_path: Path):
    found = lint(tmp_path, GOOD.replace("runbook: contain-iam-user", "runbook: contain-iam-usr"))
    assert found == [
        f"{tmp_path / 'tiny.yaml'}:4:10: error: unknown runbook 'contain-iam-usr' — "
        "did you mean 'contain-iam-user'?"
    ]


def test_unknown_objective_kind_suggests_the_right_one(tmp_path: Path):
    text = GOOD.replace("kind: no_active_keys", "kind: no_active_key")
    with pytest.raises(InvalidFileError) as exc:
        load_drill(write(tmp_path, text))
    (d,) = exc.value.diagnostics
    assert (d.line, d.column) == (20, 27)
    assert d.message == "unknown objective kind 'no_active_key'"
    assert d.hint == "did you mean 'no_active_keys'?"


def test_unknown_inject_type_lists_the_types(tmp_path: Path):
    text = GOOD.replace("type: approve,", "type: approval,")
    with pytest.raises(InvalidFileError) as exc:
        load_drill(write(tmp_path, text))
    assert "unknown inject type 'approval'" in str(exc.value)
    assert "did you mean 'approve'?" in str(exc.value)


def test_inject_after_the_time_limit_is_an_error(tmp_path: Path):
    text = GOOD.replace(
        "  - {type: approve, by: approver, after: 5s}",
        "  - {type: approve, by: approver, after: 90s}\n"
        "  - {type: attacker_creates_key, at: 2m, user: ci-user}",
    )
    found = lint(tmp_path, text)
    assert any(
        ":18:" in f and "decision after 90s cannot happen within the drill's time_limit (60s)" in f
        for f in found
    ), found
    assert any(
        ":19:" in f and "inject at T+120s comes after the drill's time_limit" in f for f in found
    )


def test_names_must_exist_in_the_seed_and_roles(tmp_path: Path):
    text = (
        GOOD.replace("by: approver", "by: approvr")
        .replace("user: ci-user}", "user: ci-usr}")
        .replace("role: serving}", "role: servin}")
    )
    found = "\n".join(lint(tmp_path, text))
    assert "unknown role 'approvr' — did you mean 'approver'?" in found
    assert "unknown seed user 'ci-usr' — did you mean 'ci-user'?" in found
    assert "unknown seed role 'servin' — did you mean 'serving'?" in found


def test_too_many_keys_and_missing_deny_reason(tmp_path: Path):
    text = GOOD.replace("access_keys: 1", "access_keys: 2").replace(
        "  - {type: approve, by: approver, after: 5s}",
        "  - {type: deny, by: approver}\n  - {type: attacker_creates_key, at: 2s, user: ci-user}",
    )
    found = "\n".join(lint(tmp_path, text))
    assert "a deny inject needs a 'reason'" in found
    assert "user 'ci-user' would have 3 access keys; IAM allows 2" in found


def test_placeholders_are_checked_against_the_seed(tmp_path: Path):
    text = GOOD.replace("${seed.users.ci-user.access_keys.0}", "${seed.users.ci-usr.arn}").replace(
        "${drill.alert_time}", "${inputs.x}"
    )
    found = "\n".join(lint(tmp_path, text))
    assert (
        "placeholder ${seed.users.ci-usr.arn}: no seed user 'ci-usr'; did you mean 'ci-user'?"
        in found
    )
    assert "placeholder ${inputs.x}: unknown name 'inputs'" in found


def test_a_placeholder_problem_is_reported_where_the_placeholder_is_written(tmp_path: Path):
    """A payload string over several lines: the position is that of its bad ``${…}``."""
    text = GOOD.replace(
        '  payload: {detail: {key: "${seed.users.ci-user.access_keys.0}", at: "${drill.alert_time}"}}',
        "  payload:\n"
        '    detail: {key: "${seed.users.ci-user.access_keys.0}", at: "${drill.alert_time}"}\n'
        "    note: >-\n      one ${drill.name}\n      two ${seed.buckets.modls}",
    )
    assert text != GOOD
    found = lint(tmp_path, text)
    assert any(
        d.startswith(f"{tmp_path / 'tiny.yaml'}:20:11: error: placeholder ${{seed.buckets.modls}}")
        for d in found
    ), found


def test_expect_names_objectives_and_ids_are_unique(tmp_path: Path):
    text = GOOD.replace(
        "  - {id: keys_dead, kind: no_active_keys, user: ci-user}",
        "  - {id: keys_dead, kind: no_active_keys, user: ci-user}\n"
        "  - {id: keys_dead, kind: contained_within, seconds: 60}\nexpect: {missed: [contained]}",
    )
    found = "\n".join(lint(tmp_path, text))
    assert "duplicate objective id 'keys_dead'" in found
    assert "unknown objective 'contained'" in found


def test_slash_commands_are_checked(tmp_path: Path):
    text = GOOD.replace(
        "  - {type: approve, by: approver, after: 5s}",
        "  - {type: approve, by: approver, after: 5s}\n"
        "  - {type: slash_command, by: incident_led, text: run release-containmnt x=1}\n"
        "  - {type: slash_command, by: incident_lead, text: launch it}\n"
        "  - {type: slash_command, by: incident_lead, after: 2m, text: 'status ${run.idd}'}",
    )
    found = "\n".join(lint(tmp_path, text))
    assert "unknown role 'incident_led' — did you mean 'incident_lead'?" in found
    assert (
        "'/clampdown run' names unknown runbook 'release-containmnt' — "
        "did you mean 'release-containment'?" in found
    )
    assert "'/clampdown launch it' is not a clampdown command" in found
    assert "a command 120s after the run ended cannot happen within the drill's time_limit" in found
    assert "placeholder ${run.idd}: run has only id" in found


def test_run_id_placeholder_only_in_slash_commands(tmp_path: Path):
    good = GOOD.replace(
        "  - {type: approve, by: approver, after: 5s}",
        "  - {type: approve, by: approver, after: 5s}\n"
        "  - {type: slash_command, by: incident_lead, text: 'run release-containment "
        "run_id=${run.id} reason=ok'}",
    )
    assert lint(tmp_path, good) == []
    bad = GOOD.replace('"${drill.alert_time}"', '"${run.id}"')
    assert any("${run.id} exists only in a slash command" in f for f in lint(tmp_path, bad))


def test_new_objective_kinds_check_their_names(tmp_path: Path):
    text = GOOD.replace(
        "  users: [{name: ci-user, access_keys: 1}]",
        "  users: [{name: ci-user, access_keys: 1}]\n"
        "  kms_keys: [{alias: weights}]\n"
        "  secrets: [{name: api-token, value: {password: x}}]",
    ).replace(
        "  - {id: keys_dead, kind: no_active_keys, user: ci-user}",
        "  - {id: keys_dead, kind: no_active_keys, user: ci-user}\n"
        "  - {id: a, kind: kms_key_rotated, key: weight}\n"
        "  - {id: b, kind: secret_rotated, secret: api-tokn}\n"
        "  - {id: c, kind: access_restored, user: ci-usr}\n"
        "  - {id: d, kind: runbook_completed, runbook: release-containmnt}\n"
        "  - {id: e, kind: contained_within, seconds: 9, runbook: preserve-evidenc}\n"
        "  - {id: f, kind: kms_key_rotated, key: weights}",
    )
    found = "\n".join(lint(tmp_path, text))
    assert "unknown seed kms_key 'weight' — did you mean 'weights'?" in found
    assert "unknown seed secret 'api-tokn' — did you mean 'api-token'?" in found
    assert "unknown seed user 'ci-usr'" in found
    assert "unknown runbook 'release-containmnt' — did you mean 'release-containment'?" in found
    assert "unknown runbook 'preserve-evidenc' — did you mean 'preserve-evidence'?" in found
    assert "'weights'" not in found.replace("did you mean 'weights'", "")


def test_file_name_must_match_the_drill_name(tmp_path: Path):
    path = write(tmp_path, GOOD, "other.yaml")
    (warning,) = lint_drills([path], LIBRARY)
    assert warning.severity == "warning" and "rename it to 'tiny.yaml'" in warning.hint


def test_fill_placeholders_keeps_types_and_refuses_unknown_paths():
    context = {"seed": {"users": {"u": {"access_keys": ["AKIA1"]}}, "account": "123"}}
    value = {"a": ["${seed.users.u.access_keys}"], "b": "arn:${seed.account}:x", "c": 3}
    assert fill_placeholders(value, context) == {"a": [["AKIA1"]], "b": "arn:123:x", "c": 3}
    with pytest.raises(PlaceholderError, match=r"\$\{seed.users.v.arn\} names nothing"):
        fill_placeholders("${seed.users.v.arn}", context)


def test_resolve_drill_by_name_default_and_unknown():
    assert resolve_drill(None, LIBRARY).stem == DEFAULT_DRILL
    with pytest.raises(ClampdownError) as exc:
        resolve_drill("model-thef", LIBRARY)
    assert exc.value.hint == "did you mean 'model-theft'?"


def cli() -> typer.Typer:
    app = typer.Typer()
    register(app)

    @app.command("other")
    def other() -> None:  # a second command keeps `drill` a subcommand, as in clampdown's CLI
        pass

    return app


def test_cli_lists_drills():
    result = CliRunner().invoke(cli(), ["drill", "--list"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "model-theft (default)" in result.output
    assert "role-session-theft" in result.output and "contain-role-session" in result.output


def test_cli_unknown_drill_is_a_clear_error():
    result = CliRunner().invoke(cli(), ["drill", "nope"])
    assert result.exit_code == 1
    assert "no drill named 'nope'" in result.output


def test_cli_broken_drill_prints_positions(tmp_path: Path):
    path = write(tmp_path, GOOD.replace("kind: no_active_keys", "kind: nope"))
    result = CliRunner().invoke(cli(), ["drill", str(path)])
    assert result.exit_code == 2
    assert f"{path}:20:27: error: unknown objective kind 'nope'" in result.output
