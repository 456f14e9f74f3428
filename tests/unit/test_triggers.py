"""TriggerSet files: model, lint with file:line:col, matching, and `clampdown triggers test`."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from typer.testing import CliRunner

from clampdown.app.cli_triggers import register
from clampdown.core.alert import Alert
from clampdown.core.inputs import validate
from clampdown.core.loader import load
from clampdown.core.trigger_files import lint_triggerset, load_document, load_triggerset
from clampdown.core.triggers import DEFAULT_DEDUP_KEY, TriggerError, explain, match_alert
from tests.paths import REPO

LIBRARY = REPO / "runbooks"
USER = "arn:aws:iam::111122223333:user/mallory"

HEADER = "apiVersion: clampdown/v1\nkind: TriggerSet\ntriggers:\n"
GOOD = (
    HEADER
    + """\
  - name: iam-user
    match: alert.source == 'guardduty' and 'IAMUser/' in alert.type
    severity_at_least: high
    runbook: contain-iam-user
    inputs:
      principal_arn: "{{ alert.principal }}"
      lookback_hours: "{{ 48 if alert.severity == 'critical' else 12 }}"
    correlate_by: "{{ alert.principal }}"
  - name: anything-with-a-user
    match: "{{ alert.principal and ':user/' in alert.principal }}"
    runbook: contain-iam-user
    inputs: {principal_arn: "{{ alert.principal }}"}
    dedup_key: "user:{{ alert.principal }}"
    dedup_window: 1h
"""
)


def alert(**kw: Any) -> Alert:
    base: dict[str, Any] = {
        "source": "guardduty",
        "id": "f-1",
        "type": "UnauthorizedAccess:IAMUser/MaliciousIPCaller",
        "title": "API called from a known malicious IP",
        "severity": "high",
        "principal": USER,
        "observed_at": datetime(2025, 1, 1, tzinfo=UTC),
    }
    return Alert(**{**base, **kw})


@pytest.fixture
def write(tmp_path: Path):
    def write(text: str, name: str = "triggers.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write


def lint(path: Path) -> list[str]:
    return [str(d) for d in lint_triggerset(path, LIBRARY)]


# --- model -----------------------------------------------------------------------------------


def test_load_applies_defaults(write) -> None:
    model = load_triggerset(write(GOOD), LIBRARY)
    first, second = model.triggers
    assert first.dedup_key == DEFAULT_DEDUP_KEY
    assert first.dedup_window == 900 and first.correlation_window == 900
    assert first.max_concurrent_runs == 5
    assert second.dedup_window == 3600 and second.correlation_window == 3600
    assert second.correlate_by is None


def test_good_file_lints_clean(write) -> None:
    assert lint(write(GOOD)) == []


# --- lint: schema ----------------------------------------------------------------------------


def test_schema_errors_have_positions(write) -> None:
    path = write(
        HEADER
        + """\
  - name: Bad Name
    matchh: "true"
    runbook: contain-iam-user
    dedup_window: soon
    max_concurrent_runs: 0
"""
    )
    found = lint(path)
    assert any(
        f"{path}:4:11: error: triggers.0.name: trigger name 'Bad Name' is not snake_case" in d
        and "write 'bad-name'" in d
        for d in found
    ), found
    assert f"{path}:5:5: error: unknown key 'matchh' — did you mean 'match'?" in found
    assert any(d.startswith(f"{path}:7:19: error: triggers.0.dedup_window:") for d in found), found
    assert any(
        d.startswith(f"{path}:8:26: error: triggers.0.max_concurrent_runs:") for d in found
    ), found


def test_wrong_kind_and_yaml_errors(write) -> None:
    path = write("apiVersion: clampdown/v1\nkind: Runbook\ntriggers: []\n")
    [d] = lint(path)
    assert d.startswith(f"{path}:2:7: error: a trigger file needs kind: TriggerSet")
    bad = write("kind: TriggerSet\ntriggers: [\n", "bad.yaml")
    [d] = lint(bad)
    assert d.startswith(f"{bad}:3:1: error: YAML syntax error")


# --- lint: meaning ---------------------------------------------------------------------------


def test_semantic_errors_have_positions_and_hints(write) -> None:
    path = write(
        HEADER
        + """\
  - name: one
    match: alert.principle != none
    runbook: contain-iam-usr
  - name: one
    match: "{{ inputs.x }}"
    runbook: contain-iam-user
    inputs:
      principal: "{{ alert.principal }}"
      lookback_hours: "many"
    dedup_key: "{{ alert.id "
    correlate_by: "{{ steps.a.outputs.b }}"
"""
    )
    found = lint(path)
    expected = [
        f"{path}:5:12: error: alert has no field 'principle' — did you mean 'principal'?",
        f"{path}:6:14: error: no runbook named 'contain-iam-usr' in the library — "
        "did you mean 'contain-iam-user'?",
        f"{path}:7:11: error: duplicate trigger name 'one' (first at line 4) — "
        "trigger names must be unique in the file",
        f"{path}:8:13: error: 'inputs' is not defined in triggers — trigger expressions can "
        "read only alert (e.g. alert.principal); pass facts to the runbook through inputs",
        f"{path}:10:5: error: runbook 'contain-iam-user' requires input 'principal_arn'",
        f"{path}:11:7: error: runbook 'contain-iam-user' has no input 'principal' — "
        "did you mean 'principal_arn'?",
        f"{path}:12:23: error: input 'lookback_hours': must be an integer",
        f"{path}:14:20: error: 'steps' is not defined in triggers",
    ]
    for line in expected:
        assert any(d.startswith(line) for d in found), (line, found)
    assert any(d.startswith(f"{path}:13:17: error: expression syntax error") for d in found)


def test_expression_problems_are_reported_where_the_expression_is_written(write) -> None:
    """In every style: a bare match: folded over lines, an input in a | block, a
    double-quoted dedup_key over two lines, a plain correlate_by over two lines."""
    path = write(
        HEADER
        + """\
  - name: styles
    match: >-
      alert.source == 'guardduty'
      and alert.princpal != none
    runbook: contain-iam-user
    inputs:
      principal_arn: |
        {{ alert.principal }}
        {{ alert.__class__ }}
    dedup_key: "k:{{ alert.id }}
      {{ alert.severty }}"
    correlate_by: a {{ alert.principal }}
      {{ inputs.x }}
"""
    )
    found = [
        d.split(": error: ")[0].removeprefix(f"{path}:") + " " + d.split(": error: ")[1]
        for d in lint(path)
    ]
    expected = [
        "6:7 alert has no field 'princpal'",  # folded into one line: the condition's start
        "12:9 forbidden in expressions: the attribute '__class__'",
        "14:7 alert has no field 'severty'",
        "16:7 'inputs' is not defined in triggers",
    ]
    for line in expected:
        assert any(d.startswith(line) for d in found), (line, found)


def test_forbidden_expression_is_refused(write) -> None:
    path = write(
        HEADER
        + """\
  - name: sneaky
    match: "{{ alert.__class__ }}"
    runbook: contain-iam-user
    inputs: {principal_arn: "{{ alert.principal }}"}
"""
    )
    [d] = lint(path)
    assert d.startswith(f"{path}:5:13: error: forbidden in expressions: the attribute '__class__'")


def test_a_match_of_several_expressions_is_refused_where_it_is_written(write) -> None:
    """Text around {{ }} renders to a non-empty string: the trigger would hold for every
    alert. Refused as the same trap in if: is, with the one-expression fix."""
    path = write(
        HEADER
        + """\
  - name: always
    match: "{{ alert.type == 'x' }} and {{ alert.severity == 'high' }}"
    runbook: contain-iam-user
    inputs: {principal_arn: "{{ alert.principal }}"}
"""
    )
    [d] = lint(path)
    assert d.startswith(f"{path}:5:12: error: ")
    assert "match: has several {{ }} expressions or text around one" in d
    assert (
        "write one expression: match: \"{{ alert.type == 'x' and alert.severity == 'high' }}\"" in d
    )


def test_a_match_that_renders_text_reading_false_does_not_match(write) -> None:
    text = GOOD.replace(
        "match: alert.source == 'guardduty' and 'IAMUser/' in alert.type",
        "match: \"{{ 'false' }}\"",
    )
    model = load_triggerset(write(text), LIBRARY)
    verdicts = explain(model, alert())
    assert not verdicts[0].matched and "counts as true" in verdicts[0].reason


def test_warnings_unreachable_and_constant_keys(write) -> None:
    path = write(
        HEADER
        + """\
  - name: everything
    runbook: contain-iam-user
    inputs: {principal_arn: "{{ alert.principal }}"}
    dedup_key: all-the-same
  - name: never
    match: alert.source == 'sns'
    runbook: contain-iam-user
    inputs: {principal_arn: "{{ alert.principal }}"}
"""
    )
    found = lint(path)
    assert found == [
        f"{path}:7:16: warning: dedup_key has no expression: every alert this trigger matches "
        "is the same incident — include the alert's identity, e.g. "
        "{{ alert.source }}:{{ alert.id }}",
        f"{path}:8:11: warning: trigger 'never' can never match: trigger 'everything' above it "
        "matches every alert — the first matching trigger wins: move the general one to the end",
    ]


def test_shipped_triggers_lint_clean_apart_from_runbooks_not_written_yet() -> None:
    path = LIBRARY / "triggers.yaml"
    names = {t["runbook"] for t in yaml.safe_load(path.read_text())["triggers"]}
    missing = {n for n in names if not (LIBRARY / f"{n}.yaml").is_file()}
    found = lint_triggerset(path, LIBRARY)
    problems = [
        str(d)
        for d in found
        if not (d.code == "unknown-runbook" and any(f"'{m}'" in d.message for m in missing))
    ]
    assert problems == []


# The drills' alert payloads (runbooks/drills/*.yaml), parsed by the endpoints' parsers, must
# start the runbook each drill expects.
PLACEHOLDER = re.compile(r"\$\{([^}]+)\}")


def _fill(value: Any) -> Any:
    def one(m: re.Match[str]) -> str:
        path = m.group(1).split(".")
        if path[-1] == "account":
            return "111122223333"
        if path[-1] == "region":
            return "us-east-1"
        if path[-1] == "alert_time":
            return "2025-01-01T00:00:00Z"
        if path[-1] == "arn" and path[1] == "roles":
            return f"arn:aws:iam::111122223333:role/{path[2]}"
        return "AKIAEXAMPLE0000000000"

    if isinstance(value, str):
        return PLACEHOLDER.sub(one, value)
    if isinstance(value, dict):
        return {k: _fill(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v) for v in value]
    return value


@pytest.mark.parametrize("drill", sorted(p.stem for p in (LIBRARY / "drills").glob("*.yaml")))
def test_drill_alerts_start_the_runbook_the_drill_expects(drill: str) -> None:
    from clampdown.app.cli_triggers import _parse_raw

    doc = yaml.safe_load((LIBRARY / "drills" / f"{drill}.yaml").read_text())
    alerts = _parse_raw(_fill(doc["alert"]["payload"]), doc["alert"]["source"])
    trigger_set = load_document(LIBRARY / "triggers.yaml").model
    for parsed in alerts:
        match = match_alert(trigger_set, parsed)
        assert match is not None, explain(trigger_set, parsed)
        assert match.runbook == doc["runbook"]
        assert all(v not in (None, "") for v in match.inputs.values()), match.inputs
        runbook = load(LIBRARY / f"{match.runbook}.yaml").model
        validate(runbook.inputs, match.inputs)  # the runbook accepts what the trigger gives


# --- matching --------------------------------------------------------------------------------


def test_first_matching_trigger_wins_and_inputs_keep_types(write) -> None:
    model = load_triggerset(write(GOOD), LIBRARY)
    match = match_alert(model, alert(severity="critical"))
    assert match is not None and match.trigger.name == "iam-user"
    assert match.inputs == {"principal_arn": USER, "lookback_hours": 48}
    assert match.dedup_key == "guardduty:f-1"
    assert match.correlation_key == USER


def test_severity_and_match_decide(write) -> None:
    model = load_triggerset(write(GOOD), LIBRARY)
    low = match_alert(model, alert(severity="medium"))
    assert low is not None and low.trigger.name == "anything-with-a-user"
    assert low.dedup_key == f"user:{USER}" and low.correlation_key is None
    verdicts = explain(model, alert(severity="medium"))
    assert verdicts[0].reason == "severity medium is below high"
    assert match_alert(model, alert(principal=None, severity="medium")) is None


def test_a_match_that_fails_to_evaluate_does_not_match(write) -> None:
    text = GOOD.replace(
        "match: alert.source == 'guardduty' and 'IAMUser/' in alert.type",
        "match: alert.raw.detail.type == 'x'",
    )
    model = load_triggerset(write(text), LIBRARY)
    verdicts = explain(model, alert())
    assert not verdicts[0].matched and verdicts[0].reason.startswith("match failed:")
    assert verdicts[1].matched


def test_inputs_that_fail_raise_a_trigger_error(write) -> None:
    text = GOOD.replace("{{ 48 if alert.severity == 'critical' else 12 }}", "{{ alert.raw.n }}")
    model = load_triggerset(write(text), LIBRARY)
    with pytest.raises(TriggerError, match="trigger 'iam-user': inputs: expression"):
        match_alert(model, alert())


# --- `clampdown triggers test` ---------------------------------------------------------------


@pytest.fixture
def cli():
    app = typer.Typer()
    app.command("noop")(lambda: None)  # a group alone would become the app itself
    register(app)
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, ["triggers", "test", *args])

    return invoke


def test_cli_shows_trigger_runbook_inputs_and_keys(cli, write, tmp_path: Path) -> None:
    triggers = write(GOOD)
    alert_file = tmp_path / "alert.json"
    alert_file.write_text(alert(severity="critical").model_dump_json())
    result = cli(str(alert_file), "--triggers", str(triggers), "--library", str(LIBRARY))
    assert result.exit_code == 0, result.output
    out = result.output
    assert "✔ iam-user: match holds" in out
    assert "runbook:     contain-iam-user" in out
    assert f'principal_arn: "{USER}"' in out and "lookback_hours: 48" in out
    assert "dedup key:   guardduty:f-1 (window 900s)" in out
    assert f"correlation: {USER} (window 900s)" in out
    json_result = cli(str(alert_file), "-t", str(triggers), "-L", str(LIBRARY), "--format", "json")
    report = json.loads(json_result.output)
    assert report["alerts"][0]["match"]["inputs"] == {"principal_arn": USER, "lookback_hours": 48}


def test_cli_writes_no_state(cli, write, tmp_path: Path, clampdown_home: Path) -> None:
    alert_file = tmp_path / "alert.json"
    alert_file.write_text(alert().model_dump_json())
    result = cli(str(alert_file), "--triggers", str(write(GOOD)), "--library", str(LIBRARY))
    assert result.exit_code == 0
    assert not clampdown_home.exists() or not any(clampdown_home.rglob("*"))


def test_cli_no_match_exits_3(cli, write, tmp_path: Path) -> None:
    alert_file = tmp_path / "alert.json"
    alert_file.write_text(alert(principal=None, severity="low").model_dump_json())
    result = cli(str(alert_file), "--triggers", str(write(GOOD)), "--library", str(LIBRARY))
    assert result.exit_code == 3
    assert "no trigger matches: the alert would be ignored" in result.output


def test_cli_reports_bad_alert_files(cli, write, tmp_path: Path) -> None:
    triggers = write(GOOD)
    bad = tmp_path / "bad.json"
    bad.write_text('{"source": "guardduty"}')
    result = cli(str(bad), "--triggers", str(triggers), "--library", str(LIBRARY))
    assert result.exit_code == 1
    assert "is not a normalised alert: id: Field required" in result.output
    assert "--source guardduty" in result.output
    bad.write_text("{nope")
    result = cli(str(bad), "--triggers", str(triggers), "--library", str(LIBRARY))
    assert result.exit_code == 1 and "is not JSON" in result.output
    result = cli(str(tmp_path / "missing.json"), "--triggers", str(triggers))
    assert result.exit_code == 1 and "cannot read" in result.output


def test_cli_reports_an_invalid_trigger_file_with_positions(cli, write, tmp_path: Path) -> None:
    triggers = write(GOOD.replace("runbook: contain-iam-user", "runbook: contain-iam-usr", 1))
    alert_file = tmp_path / "alert.json"
    alert_file.write_text(alert().model_dump_json())
    result = cli(str(alert_file), "--triggers", str(triggers), "--library", str(LIBRARY))
    assert result.exit_code == 2
    assert f"{triggers}:7:14: error: no runbook named 'contain-iam-usr'" in result.output


def test_cli_parses_a_raw_guardduty_event(cli, tmp_path: Path) -> None:
    doc = yaml.safe_load((LIBRARY / "drills" / "slack-outage.yaml").read_text())
    raw = tmp_path / "finding.json"
    raw.write_text(json.dumps(_fill(doc["alert"]["payload"])))
    result = cli(str(raw), "--source", "guardduty", "--library", str(LIBRARY))
    assert result.exit_code == 0, result.output
    assert "trigger:     guardduty-iam-user" in result.output
    assert 'principal_arn: "arn:aws:iam::111122223333:user/partner-sync"' in result.output
    wrong = cli(str(raw), "--source", "alertmanager", "--library", str(LIBRARY))
    assert wrong.exit_code == 1 and "not a valid alertmanager payload" in wrong.output


def test_cloudwatch_invocation_alarm_starts_extraction_containment() -> None:
    from clampdown.app.cli_triggers import _parse_raw

    alarm = {
        "AlarmName": "fraud-detector-v3-Invocations-spike",
        "AlarmArn": "arn:aws:cloudwatch:us-east-1:111122223333:alarm:fraud-detector-v3-spike",
        "AWSAccountId": "111122223333",
        "NewStateValue": "ALARM",
        "NewStateReason": "Threshold Crossed: 1 datapoint [41200.0] was greater than 3000.0",
        "StateChangeTime": "2025-01-01T00:00:00.000+0000",
        "Trigger": {
            "MetricName": "Invocations",
            "Namespace": "AWS/SageMaker",
            "Dimensions": [
                {"value": "AllTraffic", "name": "VariantName"},
                {"value": "fraud-detector-v3", "name": "EndpointName"},
            ],
        },
    }
    [parsed] = _parse_raw(alarm, "sns")
    match = match_alert(load_document(LIBRARY / "triggers.yaml").model, parsed)
    assert match is not None and match.trigger.name == "cloudwatch-invocation-spike"
    assert match.inputs == {"endpoint_name": "fraud-detector-v3", "suspect_principals": []}
    assert match.correlation_key == "extraction:fraud-detector-v3"


def test_stoplogging_and_guardduty_share_a_correlation_but_not_a_response() -> None:
    """Correlation escalates: the keys the store keeps are scoped to the response asked for."""
    from clampdown.core.actions import registry
    from clampdown.core.triggers import response_key, response_of

    def response(name: str) -> str:
        model = load(LIBRARY / f"{name}.yaml").model
        return response_of(model, lambda uses: registry().get(uses).destructive)

    triggers = load_document(LIBRARY / "triggers.yaml").model
    stop = match_alert(triggers, alert(source="eventbridge", id="ct-1", type="StopLogging"))
    finding = match_alert(triggers, alert())
    paged = match_alert(triggers, alert(source="pagerduty", id="pd-1", type="incident"))
    assert stop is not None and finding is not None and paged is not None
    assert (stop.runbook, finding.runbook) == ("preserve-evidence", "contain-iam-user")
    assert stop.correlation_key == finding.correlation_key == paged.correlation_key == USER
    assert response("preserve-evidence") == "evidence"
    assert {response(n) for n in ("contain-iam-user", "contain-model-theft")} == {"containment"}
    assert response_key("evidence", USER) != response_key("containment", USER)
