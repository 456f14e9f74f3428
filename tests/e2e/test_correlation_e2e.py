"""The must-show of issue 11: an attacker who turns logging off first is still contained.

A real `clampdown serve` (local mode, its runs on the test session's Prefect API) with the
shipped runbook library and the shipped triggers.yaml, moto server for AWS, the Slack
stand-in for Slack (its security-oncall group holds the approver). Over HTTP, as
EventBridge sends them (bearer token):

1. the suspect's own CloudTrail ``StopLogging`` call (``/alerts/eventbridge``): the
   ``cloudtrail-stop-logging`` trigger starts ``preserve-evidence`` (evidence only);
2. the GuardDuty finding about the same IAM user a moment later (``/alerts/guardduty``):
   it correlates with the evidence run, but that run does not contain anyone, so the
   ``guardduty-iam-user`` trigger starts ``contain-iam-user`` instead of joining it.

The finding must find the evidence run still in progress (a run that has ended is not
linked) and its Slack thread posted (serve replies in an existing thread only): the test
waits for the thread (``slack.posted``) and holds the evidence run's CloudTrail calls
(tests/aws_hold.py) until the finding is answered, rather than counting on the trail
step's retries outlasting the finding's triage on a loaded machine.

Then the on-call approver approves with `clampdown approve` (own SSH key; the command runs
in this process, as does the rollback: their process is not what is tested). Both runs
finish; the user's keys are inactive on moto; both ledgers hold ``alert.correlated``
naming the other run, and both Slack threads say so; the finding sent again is
deduplicated to the containment run (not to the evidence run, which cannot act); and
rollback of the containment run puts the user back.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from clampdown.core.ledger import read, verify_file
from tests.approver_keys import approver_keys
from tests.aws_hold import AwsHold, aws_hold, cloudtrail
from tests.e2e.test_serve_restart import CLI, cli_in_process, wait_for
from tests.paths import FIXTURES, REPO
from tests.pg import free_port

ACCOUNT = "123456789012"
TOKEN = "correlation-bearer-token-0123456789"
USER = "correlated-suspect"
ARN = f"arn:aws:iam::{ACCOUNT}:user/{USER}"
APPROVER = "U0ONCALL1"
CHANNEL = "C0INCIDENT"
BUCKET = "evidence-correlation"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def stop_logging_event() -> dict[str, Any]:
    """EventBridge's "AWS API Call via CloudTrail" event for the suspect's StopLogging."""
    event = json.loads((FIXTURES / "alerts" / "cloudtrail_api_call.json").read_text())
    event["id"], event["time"], event["source"] = str(uuid.uuid4()), _now(), "aws.cloudtrail"
    detail = event["detail"]
    detail.update(
        eventName="StopLogging",
        eventSource="cloudtrail.amazonaws.com",
        eventTime=_now(),
        eventID=str(uuid.uuid4()),
        requestParameters={"name": "management-events"},
        resources=[],
    )
    detail["userIdentity"] = {
        "type": "IAMUser",
        "principalId": "AIDACKCEVSQ6C2EXAMPLE",
        "arn": ARN,
        "accountId": ACCOUNT,
        "accessKeyId": "AKIAIOSFODNN7EXAMPLE",
        "userName": USER,
    }
    return event


def guardduty_event(finding_id: str) -> dict[str, Any]:
    """A GuardDuty finding about the user's keys, as EventBridge delivers each (new event id)."""
    event = copy.deepcopy(json.loads((FIXTURES / "alerts" / "guardduty_finding.json").read_text()))
    event["id"], event["time"], event["account"] = str(uuid.uuid4()), _now(), ACCOUNT
    detail = event["detail"]
    detail.update(
        id=finding_id,
        accountId=ACCOUNT,
        type="CredentialAccess:IAMUser/AnomalousBehavior",
        title=f"Anomalous credential access by {USER}",
        updatedAt=_now(),
    )
    detail["resource"]["accessKeyDetails"].update(userName=USER, userType="IAMUser")
    return event


@pytest.fixture
def world(
    tmp_path: Path, aws_endpoint: str, prefect_server: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, Any]]:
    """serve's environment (shipped library and triggers), the Slack stand-in, the user."""
    from prefect.settings import PREFECT_API_AUTH_STRING

    from clampdown_slack.testing.standin import SlackStandIn

    keys = approver_keys(tmp_path, monkeypatch, APPROVER)
    iam = boto3.client("iam", region_name="us-east-1")
    iam.create_user(UserName=USER)
    iam.create_access_key(UserName=USER)
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket=BUCKET, ObjectLockEnabledForBucket=True)
    with (
        SlackStandIn(usergroups={"security-oncall": [APPROVER, "U0ONCALL2"]}) as slack,
        aws_hold(aws_endpoint, cloudtrail) as hold,
    ):
        env = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(("CLAMPDOWN_", "PREFECT_API", "PREFECT_SERVER"))
        }
        env |= {
            "CLAMPDOWN_HOME": str(tmp_path / "home"),
            "CLAMPDOWN_LIBRARY": str(REPO / "runbooks"),  # the shipped runbooks and triggers
            "CLAMPDOWN_ALERT_TOKEN": TOKEN,
            "CLAMPDOWN_ALLOWED_SIGNERS": str(keys.allowed_signers),
            "CLAMPDOWN_EVIDENCE_BUCKET": BUCKET,
            "CLAMPDOWN_EVIDENCE_LOCK_MODE": "GOVERNANCE",  # moto's buckets are shared
            "AWS_ENDPOINT_URL": hold.url,  # moto, CloudTrail held until the test says
            "CLAMPDOWN_SLACK_API_URL": slack.url,
            "CLAMPDOWN_SLACK_BOT_TOKEN": slack.token,
            "CLAMPDOWN_SLACK_SIGNING_SECRET": "correlation-slack-signing-secret",
            "CLAMPDOWN_SLACK_CHANNEL": CHANNEL,
            # moto answers CloudTrail's LookupEvents with HTTP 500: with the SDK's 8
            # attempts and back-off each try of the trail steps took 3-7 s (three tries of
            # contain-iam-user's snapshot_trail held its run.end 7 s past the revoke); two
            # attempts fail the same way, the steps' own retries still run
            "AWS_MAX_ATTEMPTS": "2",
            "PREFECT_API_URL": prefect_server,  # the session's API: no server start per serve
            "PREFECT_API_AUTH_STRING": str(PREFECT_API_AUTH_STRING.value() or ""),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }
        yield {
            "env": env,
            "home": tmp_path / "home",
            "iam": iam,
            "slack": slack,
            "hold": hold,
            "key": keys[APPROVER],
            "root": tmp_path,
        }


@contextlib.contextmanager
def serve(world: dict[str, Any]) -> Iterator[str]:
    port = free_port()
    log = world["root"] / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [CLI, "serve", "--port", str(port)],
            env=world["env"],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            lambda: httpx.get(f"{url}/healthz", timeout=2).status_code == 200,
            "serve to answer /healthz",
            proc,
            log,
        )
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def post(url: str, path: str, event: dict[str, Any]) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    answer = httpx.post(f"{url}{path}", content=json.dumps(event), headers=headers, timeout=60)
    assert answer.status_code in (200, 202), answer.text
    [alert] = answer.json()["alerts"]
    return dict(alert)


def ledger(world: dict[str, Any], run_id: str) -> list[dict[str, Any]]:
    path = world["home"] / "runs" / run_id / "ledger.jsonl"
    return read(path) if path.is_file() else []


def ended(world: dict[str, Any], run_id: str) -> dict[str, Any]:
    return wait_for(
        lambda: (end := [r for r in ledger(world, run_id) if r["type"] == "run.end"]) and end[0],
        f"run {run_id} to end",
        log=world["root"] / "serve.log",
    )


def slack_thread(world: dict[str, Any], run_id: str) -> list[str]:
    """The texts of the run's Slack thread (its parent is the message naming the run)."""
    slack = world["slack"]
    messages = slack.messages(CHANNEL)
    [parent] = [
        m for m in messages if "thread_ts" not in m and run_id in json.dumps(m)
    ]  # one status message per run
    return [json.dumps(m) for m in slack.thread(CHANNEL, parent["ts"])]


def key_statuses(world: dict[str, Any]) -> list[str]:
    keys = world["iam"].list_access_keys(UserName=USER)["AccessKeyMetadata"]
    return [k["Status"] for k in keys]


def test_stoplogging_then_guardduty_on_the_shipped_triggers_contains_the_user(
    world: dict[str, Any],
) -> None:
    with serve(world) as url:
        evidence = post(url, "/alerts/eventbridge", stop_logging_event())
        assert (evidence["status"], evidence["trigger"]) == ("started", "cloudtrail-stop-logging")
        hold: AwsHold = world["hold"]
        # the evidence run posted its Slack thread (serve replies in it only once it
        # exists) and is at its CloudTrail step, held there: it cannot end before the
        # finding is answered
        wait_for(
            lambda: any(r["type"] == "slack.posted" for r in ledger(world, evidence["run_id"])),
            "the evidence run's Slack thread",
        )
        assert hold.holding.wait(120), "the evidence run never reached its CloudTrail step"
        contain = post(url, "/alerts/guardduty", guardduty_event("gd-correlated-1"))
        hold.release()
        assert (contain["status"], contain["trigger"]) == ("started", "guardduty-iam-user"), contain
        assert contain["run_id"] != evidence["run_id"]
        assert f"related to run {evidence['run_id']} (preserve-evidence)" in contain["reason"]

        request = world["home"] / "runs" / contain["run_id"] / "approvals" / "approve_revoke.json"
        wait_for(lambda: json.loads(request.read_text())["status"] == "pending", "the approval")
        sent = cli_in_process(
            world["env"], "approve", contain["run_id"], "--as", APPROVER, "--key", str(world["key"])
        )
        assert sent.returncode == 0, sent.stdout + sent.stderr
        evidence_end, contain_end = (
            ended(world, evidence["run_id"]),
            ended(world, contain["run_id"]),
        )
        again = post(url, "/alerts/guardduty", guardduty_event("gd-correlated-1"))
        threads = {run: slack_thread(world, run) for run in (evidence["run_id"], contain["run_id"])}

    # preserve-evidence ran: the user's configuration went to the evidence bucket (moto
    # has no CloudTrail LookupEvents: the trail step fails there, and the run goes on)
    assert evidence_end["status"] == "succeeded", evidence_end
    assert evidence_end["steps"]["describe"] == "succeeded", evidence_end
    assert contain_end["status"] == "succeeded", contain_end
    assert contain_end["steps"]["revoke"] == "succeeded"
    assert key_statuses(world) == ["Inactive"]
    for run, other, runbook in (
        (evidence["run_id"], contain["run_id"], "contain-iam-user"),
        (contain["run_id"], evidence["run_id"], "preserve-evidence"),
    ):
        links = [r for r in ledger(world, run) if r["type"] == "alert.correlated"]
        assert [(r["related_run"], r["related_runbook"]) for r in links] == [(other, runbook)]
        assert verify_file(world["home"] / "runs" / run / "ledger.jsonl").ok
        assert any(other in text for text in threads[run]), (run, threads[run])
    # the finding re-sent (a new EventBridge event): the containment run, not the evidence run
    assert (again["status"], again["run_id"]) == ("deduplicated", contain["run_id"]), again

    undone = cli_in_process(world["env"], "rollback", contain["run_id"], "--yes")
    assert undone.returncode == 0, undone.stdout + undone.stderr
    assert key_statuses(world) == ["Active"]
