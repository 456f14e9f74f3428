"""The command line: run, plan, schema and actions, as a responder uses them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import pytest
import yaml
from typer.testing import CliRunner

from clampdown.app.cli import app
from clampdown.core.actions import Action, ActionContext, ActionInput, registry
from clampdown.core.ledger import verify_file
from tests.paths import REPO

runner = CliRunner()

PLAN_RUNBOOK = r"""
apiVersion: clampdown/v1
kind: Runbook
metadata: {name: plan-me, title: Plan me, severity: critical}
inputs:
  principal_arn: {type: string, required: true, pattern: '^arn:aws:iam::\d{12}:(user|role)/.+$'}
  api_key: {type: string, default: "k-123456", secret: true}
  hours: {type: integer, default: 24}
steps:
  - {id: first, uses: test.tripwire, with: {note: "revoke {{ inputs.principal_arn }}"}}
  - {id: second, uses: core.log, with: {message: "key {{ inputs.api_key }}"}}
  - id: third
    uses: core.set_output
    needs: [first, second]
    with: {window: "{{ inputs.hours * 60 }}", from_first: "{{ steps.first.outputs }}"}
"""


class Tripwire(Action):
    """Records every call: plan must never call run()."""

    name = "test.tripwire"
    iam_actions = ("iam:UpdateAccessKey", "iam:PutUserPolicy")
    destructive = True
    called: ClassVar[list[str]] = []

    class Input(ActionInput):
        note: str

    def run(self, params: Input, ctx: ActionContext) -> None:
        self.called.append(params.note)


registry().register(Tripwire)


def test_plan_shows_stages_resolved_values_iam_and_has_no_side_effects(write_runbook):
    path = write_runbook(PLAN_RUNBOOK)
    result = runner.invoke(
        app, ["plan", str(path), "-i", "principal_arn=arn:aws:iam::123456789012:user/mallory"]
    )
    assert result.exit_code == 0, result.output
    out = result.output
    assert "Stage 1 — 2 steps in parallel" in out and "Stage 2" in out
    assert 'with.note = "revoke arn:aws:iam::123456789012:user/mallory"' in out
    assert "with.window = 1440" in out
    assert "(known at run time)" in out
    assert "DESTRUCTIVE" in out and "iam:UpdateAccessKey" in out
    assert "k-123456" not in out, "secret inputs are masked in plans"
    assert "no approval gate upstream" in out  # lint warning printed, plan still shown
    assert Tripwire.called == []


def test_plan_json_and_missing_inputs(write_runbook):
    path = write_runbook(PLAN_RUNBOOK)
    result = runner.invoke(app, ["plan", str(path), "--format", "json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["missing_inputs"] == ["principal_arn"]
    assert [[s["id"] for s in stage] for stage in plan["stages"]] == [
        ["first", "second"],
        ["third"],
    ]
    assert plan["stages"][0][0]["with"]["note"].endswith("(known at run time)")
    assert plan["iam_actions"] == ["iam:PutUserPolicy", "iam:UpdateAccessKey"]


def test_plan_rejects_bad_inputs_with_exit_2(write_runbook):
    path = write_runbook(PLAN_RUNBOOK)
    result = runner.invoke(app, ["plan", str(path), "-i", "hours=lots", "-i", "nope"])
    assert result.exit_code == 2
    assert "--input 'nope' is not key=value" in result.output


def test_unknown_runbook_name_suggests_the_closest(tmp_path: Path):
    result = runner.invoke(app, ["plan", "engine-self-chek", "--library", str(REPO / "runbooks")])
    assert result.exit_code == 1
    assert "no runbook named 'engine-self-chek'" in result.output
    assert "did you mean 'engine-self-check'" in result.output


def test_invalid_runbook_is_refused_with_positions_and_exit_2(write_runbook):
    path = write_runbook("""apiVersion: clampdown/v1
kind: Runbook
metadata: {name: broken, title: Broken}
steps:
  - {id: a, uses: core.wiat, with: {duration: 1s}}
""")
    result = runner.invoke(app, ["run", str(path)])
    assert result.exit_code == 2
    assert f"{path}:5:19: error: unknown action 'core.wiat'" in result.output
    assert "did you mean 'core.wait'" in result.output


def test_run_bad_inputs_exit_2_without_starting_prefect():
    """The real console script, in a fresh process: no traceback, exit 2, Prefect untouched."""
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from clampdown.app.cli import main; main(); ",
            "run",
            "engine-self-check",
            "-i",
            "settle_time=forever",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert "input 'settle_time' = 'forever': does not match the pattern" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.usefixtures("prefect_server")
def test_run_the_library_runbook_end_to_end(clampdown_home: Path):
    result = runner.invoke(app, ["run", "engine-self-check", "-i", "responder=alice"])
    assert result.exit_code == 0, result.output
    assert 'verdict = "ready"' in result.output
    assert "waited_seconds = 0.4" in result.output
    ledger = Path(result.output.split("ledger: ")[1].split()[0])
    assert ledger.is_relative_to(clampdown_home)
    assert verify_file(ledger).complete


@pytest.mark.usefixtures("prefect_server")
def test_run_says_it_runs_here_when_execution_is_deployment(
    clampdown_home: Path, monkeypatch: pytest.MonkeyPatch
):
    """CLAMPDOWN_EXECUTION=deployment is serve's: run still executes here, and says so."""
    monkeypatch.setenv("CLAMPDOWN_EXECUTION", "deployment")
    result = runner.invoke(
        app, ["run", "engine-self-check", "-i", "responder=alice", "-i", "settle_time=1ms"]
    )
    assert result.exit_code == 0, result.output
    assert "CLAMPDOWN_EXECUTION=deployment is for `clampdown serve`" in result.output
    assert "executes in this process" in result.output
    assert list((clampdown_home / "runs").glob("*/ledger.jsonl"))  # it ran here


@pytest.mark.usefixtures("prefect_server")
def test_run_exit_1_when_a_step_aborts(write_runbook):
    path = write_runbook("""apiVersion: clampdown/v1
kind: Runbook
metadata: {name: fails, title: Fails}
steps:
  - {id: boom, uses: core.fail, with: {message: deliberate}}
""")
    result = runner.invoke(app, ["run", str(path)])
    assert result.exit_code == 1
    assert "failed" in result.output and "deliberate" in result.output


def test_schema_validates_the_library_and_catches_a_bad_with():
    import jsonschema

    result = runner.invoke(app, ["schema"])
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    validator = jsonschema.Draft202012Validator(schema)
    good = yaml.safe_load((REPO / "runbooks" / "engine-self-check.yaml").read_text())
    assert list(validator.iter_errors(good)) == []
    bad = {**good, "steps": [{"id": "w", "uses": "core.wait", "with": {"duraton": "1s"}}]}
    messages = [e.message for e in validator.iter_errors(bad)]
    assert any("duraton" in m for m in messages), messages


def test_actions_lists_core_actions_with_inputs():
    result = runner.invoke(app, ["actions", "--format", "json"])
    assert result.exit_code == 0
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert {"core.wait", "core.set_output", "core.log", "core.fail"} <= set(rows)
    assert rows["core.wait"]["inputs"] == ["duration: duration"]
    assert rows["core.wait"]["outputs"] == ["waited_seconds"]


def test_schema_agrees_with_the_loader_on_edge_cases():
    import jsonschema

    schema = json.loads(runner.invoke(app, ["schema"]).stdout)
    validator = jsonschema.Draft202012Validator(schema)
    base = yaml.safe_load((REPO / "runbooks" / "engine-self-check.yaml").read_text())

    def errors(**step: object) -> list[str]:
        doc = {**base, "steps": [{"id": "a", "uses": "core.log", "with": {"message": "m"}}, step]}
        return [e.message for e in validator.iter_errors(doc)]

    assert (
        errors(id="b", uses="core.log", needs="a", timeout="1h 30m", with_={}) != []
    )  # with_ is not a key
    assert (
        errors(id="b", uses="core.log", needs="a", timeout="1h 30m", **{"with": {"message": "x"}})
        == []
    )
    assert errors(id="b", uses="core.log", timeout=0, **{"with": {"message": "x"}}) != []
    assert errors(id="Bad-Id", uses="core.log", **{"with": {"message": "x"}}) != []


def test_text_that_looks_like_console_markup_is_printed_as_is(write_runbook):
    path = write_runbook("""apiVersion: clampdown/v1
kind: Runbook
metadata: {name: markup, title: "Markup [/bold] title for arn:aws:secretsmanager:secret:db"}
inputs:
  who: {type: string, default: "[/red] x"}
steps:
  - {id: one, uses: core.log, if: "inputs['who'] != ''", with: {message: "{{ inputs.who }}"}}
""")
    result = runner.invoke(app, ["plan", str(path)])
    assert result.exit_code == 0, result.output
    assert "Markup [/bold] title for arn:aws:secretsmanager:secret:db" in result.output
    assert "who='[/red] x'" in result.output and "if: inputs['who'] != ''" in result.output
