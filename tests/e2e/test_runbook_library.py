"""The shipped runbook library: lints clean, plans, and runs end to end on moto server
with a real approval decision (Slack stand-in for the security-oncall group; CloudTrail
LookupEvents, which moto does not implement, answered as a drill answers it)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import boto3
import pytest
from typer.testing import CliRunner

from clampdown.app.cli import app
from clampdown.core.ledger import new_run_id, read
from clampdown.core.settings import settings
from clampdown_aws.testing.simulated import SimulatedAws
from tests.approver_keys import approver_keys
from tests.paths import REPO

LIBRARY = sorted(
    p for p in (REPO / "runbooks").glob("*.yaml") if p.stem not in ("triggers", "engine-self-check")
)
runner = CliRunner()
ATLAS = ("AML.T0024", "AML.T0024.002", "AML.T0025", "AML.T0035", "AML.T0048.004")
PLAN_INPUTS = {
    "preserve-evidence": ["principal_arn=arn:aws:iam::123456789012:user/mallory"],
    "contain-iam-user": ["principal_arn=arn:aws:iam::123456789012:user/mallory"],
    "contain-role-session": ["role_arn=arn:aws:iam::123456789012:role/ci", "block_assume=true"],
    "lock-model-artifacts": [
        "bucket=models",
        "prefix=models/fraud-v3/",
        'allow_principals=["arn:aws:iam::123456789012:role/serving"]',
    ],
    "contain-inference-extraction": ["endpoint_name=fraud", "api_key_id=abc123", "freeze=true"],
    "rotate-model-secrets": ["kms_key_id=alias/model-weights", "secret_id=prod/inference"],
    "contain-model-theft": ["principal_arn=arn:aws:iam::123456789012:user/mallory"],
    "release-containment": ["run_id=0123456789ab", "reason=INC-7 closed"],
}


def test_the_library_has_every_runbook_and_lints_clean():
    assert {p.stem for p in LIBRARY} == set(PLAN_INPUTS)
    result = runner.invoke(app, ["lint", "--strict", *map(str, LIBRARY)])
    assert result.exit_code == 0, result.output
    assert "warning" not in result.output


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: p.stem)
def test_header_names_atlas_ids_and_gates(path):
    text = path.read_text()
    header = text.split("apiVersion:")[0]
    assert "MITRE ATLAS" in header and any(i in header for i in ATLAS)
    assert "Approval gates" in header
    assert '"atlas:' in text


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: p.stem)
def test_plan_shows_the_gates(path):
    args = [x for pair in PLAN_INPUTS[path.stem] for x in ("-i", pair)]
    result = runner.invoke(app, ["plan", str(path), *args])
    assert result.exit_code == 0, result.output
    if path.stem != "preserve-evidence":
        assert "APPROVAL GATE" in result.output
    else:
        assert "APPROVAL GATE" not in result.output and "DESTRUCTIVE" not in result.output


# --- end to end ----------------------------------------------------------------------


@pytest.fixture
def oncall(aws_endpoint, prefect_server, tmp_path, monkeypatch):
    """The Slack stand-in with the security-oncall group; a run started by U_STARTER.
    U_APPROVER decides from the terminal, signing with an SSH key listed for U_APPROVER."""
    from clampdown_slack.testing.standin import SlackStandIn

    keys = approver_keys(tmp_path, monkeypatch, "U_APPROVER")
    monkeypatch.setenv("CLAMPDOWN_APPROVER_KEY", str(keys["U_APPROVER"]))
    with SlackStandIn(token="xoxb-test", usergroups={"security-oncall": ["U_APPROVER"]}) as slack:
        monkeypatch.setenv("CLAMPDOWN_SLACK_API_URL", slack.url)
        monkeypatch.setenv("CLAMPDOWN_SLACK_BOT_TOKEN", "xoxb-test")
        monkeypatch.setenv("CLAMPDOWN_SLACK_CHANNEL", "#incident-response")
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
        monkeypatch.setenv("CLAMPDOWN_EVIDENCE_BUCKET", "evidence")
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="evidence")
        yield slack


@pytest.fixture
def trail_lookups(aws_endpoint: str) -> Iterator[SimulatedAws]:
    """CloudTrail LookupEvents answered (no events), as a drill answers it: moto 5.2 answers
    HTTP 500, and the runbooks' trail and scope steps then spent their retries (2, 2 s
    apart: ~4 s a run, its end waiting on them) on what moto cannot do. Only this process's
    botocore sessions are hooked (the runs are in it), and only for the test."""
    with SimulatedAws(aws_endpoint) as simulated:
        yield simulated


def run_with_approval(runbook: str, inputs: dict, approvals: list[str], decision="approve"):
    """Start the run in a thread (started by U_STARTER); U_APPROVER decides each gate.

    The run and the decisions share this process's wake-up registry, as serve's runs and
    its Slack clicks do (:mod:`clampdown_flows.decision_wakeup`): once a decision has
    resumed the flow run, the gate looks at once instead of at its next poll (5 s apart
    for these 15-30 minute gates). The decision meets the same checks either way."""
    from clampdown_flows.approval_store import request_file
    from clampdown_flows.decision_wakeup import Wakeups
    from clampdown_flows.decisions import submit_decision
    from clampdown_flows.respond import run_in_process

    run_id = new_run_id()
    box: dict = {}
    wakeups = Wakeups()

    def go() -> None:
        with wakeups.serving():
            box["state"] = run_in_process(
                runbook, inputs, run_id=run_id, trigger={"type": "manual", "user": "U_STARTER"}
            )

    thread = threading.Thread(target=go)
    thread.start()
    for step in approvals:
        deadline = time.monotonic() + 180  # a loaded machine; stops early if the run ended
        while not request_file(run_id, step).is_file() and time.monotonic() < deadline:
            if not thread.is_alive():
                break
            time.sleep(0.2)
        verdict = submit_decision(
            run_id,
            step,
            "U_APPROVER",
            decision,
            reason="drill" if decision == "deny" else "",
            wakeups=wakeups,
        )
        assert verdict.accepted, verdict.reason
    thread.join(120)
    assert not thread.is_alive()
    return run_id, read(settings().ledger_path(run_id))


def ends(ledger) -> dict:
    return {r["step"]: r for r in ledger if r["type"] in ("step.end", "step.skip", "step.cancel")}


def seed_endpoint():
    iam = boto3.client("iam", region_name="us-east-1")
    sm = boto3.client("sagemaker", region_name="us-east-1")
    trust = json.dumps({"Version": "2012-10-17", "Statement": []})
    role = iam.create_role(RoleName="sm-exec", AssumeRolePolicyDocument=trust)["Role"]["Arn"]
    sm.create_model(
        ModelName="m", ExecutionRoleArn=role, PrimaryContainer={"Image": "1.dkr.ecr/m:1"}
    )
    sm.create_endpoint_config(
        EndpointConfigName="c",
        ProductionVariants=[
            {
                "VariantName": "v",
                "ModelName": "m",
                "InitialInstanceCount": 1,
                "InstanceType": "ml.m5.large",
            }
        ],
    )
    sm.create_endpoint(EndpointName="fraud", EndpointConfigName="c")


def test_inference_extraction_then_release(oncall, trail_lookups):
    apigw = boto3.client("apigateway", region_name="us-east-1")
    iam = boto3.client("iam", region_name="us-east-1")
    seed_endpoint()
    key = apigw.create_api_key(name="suspect", enabled=True)["id"]
    plan = apigw.create_usage_plan(name="p", throttle={"rateLimit": 100.0, "burstLimit": 200})["id"]
    apigw.create_usage_plan_key(usagePlanId=plan, keyId=key, keyType="API_KEY")
    user = iam.create_user(UserName="mallory")["User"]["Arn"]

    run_id, ledger = run_with_approval(
        "contain-inference-extraction",
        {"endpoint_name": "fraud", "api_key_id": key, "suspect_principals": [user]},
        ["approve_containment"],
    )
    steps = ends(ledger)
    assert steps["disable_key"]["status"] == "succeeded", steps
    assert steps["freeze"]["type"] == "step.skip"  # freeze=false: no second approval asked
    assert apigw.get_api_key(apiKey=key)["enabled"] is False
    assert apigw.get_usage_plan(usagePlanId=plan)["throttle"]["rateLimit"] == 1
    assert iam.list_user_policies(UserName="mallory")["PolicyNames"] == [
        "clampdown-deny-invoke-fraud"
    ]

    _, release = run_with_approval(
        "release-containment", {"run_id": run_id, "reason": "INC-1 closed"}, ["approve_release"]
    )
    outputs = ends(release)["rollback"]["outputs"]
    assert outputs["rolled_back_run"] == run_id and len(outputs["restored"]) == 3
    assert apigw.get_api_key(apiKey=key)["enabled"] is True
    assert apigw.get_usage_plan(usagePlanId=plan)["throttle"]["rateLimit"] == 100
    assert iam.list_user_policies(UserName="mallory")["PolicyNames"] == []

    # Releasing it again is refused, and at once: asking again cannot change that answer,
    # so the approved step's retries (APPROVED_RETRIES, 5 s apart) are not spent on it.
    _, again = run_with_approval(
        "release-containment", {"run_id": run_id, "reason": "again"}, ["approve_release"]
    )
    assert "already rolled back" in ends(again)["rollback"]["error"]
    tries = [r for r in again if r["type"] == "step.attempt_failed" and r["step"] == "rollback"]
    assert len(tries) == 1, tries


def test_contain_iam_user_denied_changes_nothing(oncall, trail_lookups):
    iam = boto3.client("iam", region_name="us-east-1")
    iam.create_user(UserName="mallory")
    iam.create_access_key(UserName="mallory")
    _, ledger = run_with_approval(
        "contain-iam-user",
        {"principal_arn": "arn:aws:iam::123456789012:user/mallory", "lookback_hours": 1},
        ["approve_revoke"],
        decision="deny",
    )
    assert ends(ledger)["revoke"]["type"] == "step.skip"
    keys = iam.list_access_keys(UserName="mallory")["AccessKeyMetadata"]
    assert [k["Status"] for k in keys] == ["Active"]
    assert ends(ledger)["snapshot_config"]["status"] == "succeeded"  # evidence never waits


def test_contain_model_theft_composite(oncall, trail_lookups):
    iam = boto3.client("iam", region_name="us-east-1")
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="models")
    s3.put_object(Bucket="models", Key="models/fraud-v3/w.bin", Body=b"w")
    iam.create_user(UserName="mallory")
    iam.create_access_key(UserName="mallory")
    _, ledger = run_with_approval(
        "contain-model-theft",
        {
            "principal_arn": "arn:aws:iam::123456789012:user/mallory",
            "bucket": "models",
            "prefix": "models/fraud-v3/",
            "allow_principals": ["arn:aws:iam::123456789012:role/serving"],
            "lookback_hours": 1,
        },
        ["approve_containment"],
    )
    steps = ends(ledger)
    assert (
        steps["revoke"]["status"] == "succeeded"
        and steps["lock_artifacts"]["status"] == "succeeded"
    )
    assert steps["disable_key"]["type"] == "step.skip"  # no api_key_id given
    keys = iam.list_access_keys(UserName="mallory")["AccessKeyMetadata"]
    assert [k["Status"] for k in keys] == ["Inactive"]
    assert "Deny" in s3.get_bucket_policy(Bucket="models")["Policy"]
