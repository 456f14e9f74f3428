"""The drills' seeded thefts are scoped exactly: the scoping objective on real drill runs
(moto server, Slack stand-in, serve, real Prefect), and the objective itself failing, with
a message naming what, on a scope that missed an object, added one or got bytes wrong."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from clampdown.app.drill.runner import DrillResult
from clampdown.core.ledger import read
from clampdown.core.report import StepSpan
from tests.paths import REPO

LIBRARY = REPO / "runbooks"
MODEL = "models/fraud-detector-v3/"
WEIGHTS = 262144  # the seeded model.tar.gz


def scope_outputs(result: DrillResult, runbook: str, step: str = "scope") -> dict:
    for path in sorted((result.workspace / "runs").glob("*/ledger.jsonl")):
        records = read(path)
        if records[0]["run"]["runbook"] == runbook:
            ends = [r for r in records if r["type"] == "step.end" and r["step"] == step]
            assert ends and ends[0]["status"] == "succeeded", ends
            return ends[0]["outputs"]
    raise AssertionError(f"no run of {runbook}")


def objects_of(outputs: dict) -> dict[tuple[str, str | None], int]:
    return {(o["key"], o["version_id"]): o["bytes_out"] for o in outputs["objects"]}


@pytest.mark.drills("model-theft")
def test_model_theft_drill_scores_the_scope_of_the_stolen_key(drill):
    result = drill("model-theft")
    scored = {o.id: o for o in result.report.objectives}
    assert scored["scoped"].met, scored["scoped"].reason
    assert scored["scoped"].measured == "3 object(s), 3137557 bytes"
    outputs = scope_outputs(result, "contain-model-theft")
    # the story: 11 reads of the weights, one of an older version, the tokenizer; the
    # serving role's reads of the weights and metrics are not the thief's
    assert objects_of(outputs) == {
        (MODEL + "model.tar.gz", None): 11 * WEIGHTS,
        (MODEL + "model.tar.gz", "3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY"): 253952,
        (MODEL + "tokenizer.json", None): len('{"vocab_size": 32000}'),
    }
    assert outputs["totals"]["bytes_out"] == 11 * WEIGHTS + 253952 + 21
    # data events on for the bucket, a file every half hour, and the trail logging since
    # before the story (the drill's GetTrailStatus): no blind spot, full confidence
    assert outputs["blind_spots"] == []
    assert outputs["confidence"] == "high", outputs["confidence_reason"]
    assert outputs["models"][0]["bucket"] == "acme-model-artifacts"
    # the after-action report scores it; the run's incident report names what was taken
    assert "The scope names exactly the files the CI key took" in result.html.read_text()
    from clampdown.core.incident_report import load_incident_report
    from clampdown.core.incident_report_render import to_markdown

    ledger = result.workspace / "runs" / str(result.report.run_id) / "ledger.jsonl"
    text = to_markdown(load_incident_report(ledger))
    assert MODEL + "tokenizer.json" in text and "3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY" in text


@pytest.mark.drills("artifact-exfiltration")
def test_artifact_exfiltration_drill_scopes_the_contractor_in_preserve_evidence(drill):
    result = drill("artifact-exfiltration")
    scored = {o.id: o for o in result.report.objectives}
    assert scored["scoped"].met, scored["scoped"].reason
    outputs = scope_outputs(result, "preserve-evidence")
    assert objects_of(outputs) == {(MODEL + "model.tar.gz", None): 8 * WEIGHTS}
    assert outputs["blind_spots"] == []


# --- the objective against wrong scopes -------------------------------------------------

STORY = """
apiVersion: clampdown/v1
kind: Drill
metadata: {name: scoped-check, title: Scoped check, family: model-theft}
runbook: contain-model-theft
roles:
  incident_lead: {name: Lead, slack_user: U0LEAD0001}
  approver: {name: Approver, slack_user: U0APPROVE1}
seed:
  users: [{name: thief, access_keys: 1}]
  roles: [{name: serving, sessions: 1}]
  buckets:
    - name: models
      objects: {m/weights.bin: 1000, m/vocab.txt: "abc", m/card.md: "x"}
  trail:
    name: drill-trail
    bucket: trail-logs
    data_events: [models]
    events:
      - {ago: 10m, user: thief, source: s3.amazonaws.com, event: GetObject, repeat: 2, request: {bucketName: models, key: m/weights.bin}}
      - {ago: 9m, user: thief, source: s3.amazonaws.com, event: GetObject, request: {bucketName: models, key: m/vocab.txt}}
      - {ago: 8m, role: serving, source: s3.amazonaws.com, event: GetObject, request: {bucketName: models, key: m/card.md}}
alert: {source: generic, payload: {id: x}}
objectives:
  - {id: scoped, kind: scoped_exactly, principal: thief}
"""


@pytest.fixture
def facts(mocked_aws, tmp_path):
    """The story seeded on moto; the scope step's outputs are set by each case."""
    import boto3

    from clampdown.app.drill.objectives import DrillFacts
    from clampdown.core.drill_library import load_drill
    from clampdown_aws.testing.seed import seed

    path = tmp_path / "scoped-check.yaml"
    path.write_text(STORY, encoding="utf-8")
    spec, _ = load_drill(path)
    client = boto3.session.Session(region_name="us-east-1").client
    seeded = seed(spec.seed, datetime.now(UTC), client)
    return DrillFacts(drill=spec, seeded=seeded, alert_epoch=time.time(), client=client)


def _verdict(facts, objects: list[dict], *, status: str = "succeeded") -> tuple:
    from clampdown.app.drill.objectives import score

    end = {"type": "step.end", "step": "scope", "status": status, "outputs": {"objects": objects}}
    facts.run_id, facts.runbook, facts.records = "r1", "contain-model-theft", [end]
    facts.steps = [StepSpan("scope", "aws.forensics.scope_exfiltration", status, 1.0, 2.0)]
    (result,) = score(facts)
    return result.met, result.reason


def _obj(key: str, size: int, version: str | None = None) -> dict:
    return {"bucket": "models", "key": key, "version_id": version, "bytes_out": size}


def test_scoped_exactly_is_met_only_by_the_exact_objects_and_bytes(facts):
    right = [_obj("m/weights.bin", 2000), _obj("m/vocab.txt", 3)]
    assert _verdict(facts, right) == (True, "exactly the 2 object(s) thief read, bytes right")

    met, reason = _verdict(facts, right[:1])
    assert not met and reason == "missed s3://models/m/vocab.txt (3 bytes)"

    met, reason = _verdict(facts, [*right, _obj("m/card.md", 1)])
    assert not met and reason == "not taken but reported s3://models/m/card.md (1 bytes)"

    met, reason = _verdict(facts, [_obj("m/weights.bin", 1000), right[1]])
    assert not met
    assert (
        reason == "wrong bytes for s3://models/m/weights.bin: reported 1000 bytes, 2000 were read"
    )

    met, reason = _verdict(facts, [_obj("m/weights.bin", 2000, "v1"), right[1]])
    assert not met and "missed s3://models/m/weights.bin (2000 bytes)" in reason
    assert "not taken but reported s3://models/m/weights.bin version v1" in reason

    met, reason = _verdict(facts, right, status="failed")
    assert not met and reason == "scoping step scope failed"


@pytest.mark.drills("inference-extraction")
def test_inference_extraction_drill_scopes_the_notebook_keys_burst(drill):
    result = drill("inference-extraction")
    outputs = scope_outputs(result, "contain-inference-extraction")
    callers = {c["api_key_id"]: c for c in outputs["callers"]}
    notebook, app = callers["notebookkey01"], callers["fraudapikey01"]
    # seeded: the notebook's key asked twice in the week before, then 900 times
    assert (notebook["requests"], notebook["baseline_requests"]) == (900, 2)
    assert notebook["multiple_of_baseline"] == 3150.0 and notebook["requests_over_baseline"] == 900
    assert notebook["bytes_out"] == 900 * 2048
    assert notebook["caller"].endswith(":assumed-role/analytics-notebook/i-0a1b2c3d4e5f60710")
    # the app's key at its usual 2 requests an hour
    assert (app["requests"], app["multiple_of_baseline"]) == (48, 1.0)
    assert [c["api_key_id"] for c in outputs["callers"]] == ["notebookkey01", "fraudapikey01"]
    # moto creates the log group at seed time, after the baseline starts: said, not hidden;
    # no endpoint invocation metric in the simulation: said too
    kinds = sorted(s["kind"] for s in outputs["blind_spots"])
    assert kinds == ["baseline_not_covered", "metrics_unavailable"], outputs["blind_spots"]
    assert outputs["confidence"] == "medium"
