"""A process killed in the middle of a containment call: rollback still puts things back.

The real engine (scheduler, the hook that writes ``undo.intent``) runs the real AWS actions
against moto in-process. The process "dies" at a botocore event: a ``Killed`` exception
(not an ``Exception``: nothing catches it) and, from that moment, a ledger that writes
nothing more, as a SIGKILLed process writes nothing. The run is then ended the way the
process that finds it ends or resumes it (``run.end``), and ``rollback_run`` (the code path
of ``clampdown rollback``) undoes through each action's real undo.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import boto3
import pytest
from typer.testing import CliRunner

from clampdown.app.cli import app
from clampdown.core.actions import ActionContext
from clampdown.core.engine.gate_policy import GatePolicy
from clampdown.core.engine.scheduler import Attempt, Limits, Produced, schedule
from clampdown.core.engine.state import new_state
from clampdown.core.home import Home
from clampdown.core.inputs import validate
from clampdown.core.ledger import Ledger, read
from clampdown.core.lint import load_runbook
from clampdown.core.models import Step
from clampdown.core.undo import describe, rollback_run, undo_items
from clampdown_aws import base
from clampdown_aws.iam import RotateAccessKey
from tests.integration.shared_models import shared_service_models  # noqa: F401 - autouse

pytestmark = pytest.mark.usefixtures("mocked_aws")

APP_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}],
}


class Killed(BaseException):
    """The process dies here: no handler runs, no record is written after it."""


class ProcessLedger(Ledger):
    """The run's ledger as its process sees it: once the process is dead, nothing is written."""

    dead = False

    def append(self, type_: str, **fields: Any) -> dict[str, Any]:
        if self.dead:
            raise Killed("a dead process writes nothing")
        return super().append(type_, **fields)


def kill_at(monkeypatch: pytest.MonkeyPatch, event: str, operation: str, ledger: Any) -> None:
    """Kill the process at ``event`` (``before-call``: the request is never sent;
    ``after-call``: AWS has made the change) of the first ``operation`` call; a process
    started later is not killed."""
    original = base.Aws.client
    fired: list[str] = []

    def client(self: base.Aws, name: str) -> Any:
        made = original(self, name)
        service = made.meta.service_model.service_id.hyphenize()

        def die(**_: Any) -> None:
            if not fired:
                fired.append(operation)
                ledger.dead = True
                raise Killed(f"{event} {operation}")

        made.meta.events.register(f"{event}.{service}.{operation}", die)
        return made

    monkeypatch.setattr(base.Aws, "client", client)


class Runner:
    async def run_action(self, step: Step, attempt: Attempt, limits: Limits) -> Produced:
        return await attempt(logging.getLogger("test"))

    async def request_approval(self, step: Step, params: Any) -> dict[str, Any]:
        raise AssertionError("no approval in these runbooks")


def engine_run(home: Home, tmp_path: Path, run_id: str, uses: str, with_: dict) -> Path:
    """One step of ``uses`` run by the engine into ``run_id``'s ledger (appended to, as a
    resumed run does); returns the ledger's path. A Killed process propagates."""
    path = tmp_path / f"{run_id}-{len(list(tmp_path.glob('*.yaml')))}.yaml"
    path.write_text(
        "apiVersion: clampdown/v1\nkind: Runbook\n"
        "metadata: {name: contain, title: Contain, severity: high}\n"
        f"steps:\n  - id: contain\n    uses: {uses}\n    with: {json.dumps(with_)}\n",
        encoding="utf-8",
    )
    rb = load_runbook(path)[0].model
    ledger = KILLABLE.setdefault(run_id, ProcessLedger(home.run(run_id).ledger))
    if not read_or_empty(ledger.path):
        ledger.append("run.start", run={"id": run_id, "runbook": "contain"})
    info = {"id": run_id, "runbook": "contain", "trigger": {"type": "manual"}}
    state = new_state(run_id, rb, validate(rb.inputs, {}), ledger, info, home.run(run_id))
    state.gate = GatePolicy(state, lambda: (["U0LEAD"], []))
    asyncio.run(schedule(state, Runner()))
    return ledger.path


KILLABLE: dict[str, ProcessLedger] = {}


@pytest.fixture(autouse=True)
def _processes() -> Any:
    KILLABLE.clear()
    yield
    for ledger in KILLABLE.values():
        ledger.dead = False
        ledger.close()


def read_or_empty(path: Path) -> list[dict[str, Any]]:
    return read(path) if path.exists() else []


def new_process(home: Home, run_id: str) -> ProcessLedger:
    """Another process opens the run's ledger (the dead one's file stays as it was)."""
    dead = KILLABLE.pop(run_id, None)
    if dead is not None:
        dead.close()
    KILLABLE[run_id] = ledger = ProcessLedger(home.run(run_id).ledger)
    return ledger


def end_run(home: Home, run_id: str) -> None:
    """What the process that finds the dead run writes when it ends it."""
    ledger = Ledger(home.run(run_id).ledger)
    ledger.append("run.end", status="failed", reason="the process running it died")
    ledger.close()


def seed_user(iam: Any) -> tuple[str, list[str]]:
    """alice: two active keys, a console password, an app policy."""
    arn = iam.create_user(UserName="alice", Path="/ml/")["User"]["Arn"]
    keys = [iam.create_access_key(UserName="alice")["AccessKey"]["AccessKeyId"] for _ in "ab"]
    iam.create_login_profile(UserName="alice", Password="Old-Passw0rd!")
    iam.put_user_policy(UserName="alice", PolicyName="app", PolicyDocument=json.dumps(APP_POLICY))
    return arn, keys


def user_state(iam: Any) -> dict[str, Any]:
    keys = iam.list_access_keys(UserName="alice")["AccessKeyMetadata"]
    names = iam.list_user_policies(UserName="alice")["PolicyNames"]
    try:
        iam.get_login_profile(UserName="alice")
        profile = True
    except iam.exceptions.NoSuchEntityException:
        profile = False
    return {
        "keys": {k["AccessKeyId"]: k["Status"] for k in keys},
        "policies": sorted(names),
        "login_profile": profile,
    }


def test_killed_after_the_call_then_resumed_rollback_restores_everything(
    clampdown_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    home, iam = Home(clampdown_home), boto3.client("iam", region_name="us-east-1")
    arn, (key1, key2) = seed_user(iam)
    before = user_state(iam)

    # serve is killed right after AWS deactivated the first key
    ledger = KILLABLE["run1"] = ProcessLedger(home.run("run1").ledger)
    kill_at(monkeypatch, "after-call", "UpdateAccessKey", ledger)
    with pytest.raises(Killed):
        engine_run(home, tmp_path, "run1", "aws.iam.revoke_credentials", {"principal_arn": arn})
    records = read(home.run("run1").ledger)
    assert [r["type"] for r in records][-3:] == ["step.start", "undo.intent", "undo.intent"]
    assert records[-1]["how"] == {
        "op": "activate_access_key",
        "user_name": "alice",
        "access_key_id": key1,
    }
    assert user_state(iam)["keys"] == {key1: "Inactive", key2: "Active"}
    assert "clampdown-quarantine" in user_state(iam)["policies"]  # changed, never confirmed

    # another process re-runs the step (resume): the policy and key1 are as wanted already,
    # so it records no undo for them; it deactivates key2 and deletes the password
    new_process(home, "run1")
    engine_run(home, tmp_path, "run1", "aws.iam.revoke_credentials", {"principal_arn": arn})
    (end,) = [r for r in read(home.run("run1").ledger) if r["type"] == "step.end"]
    assert [u["op"] for u in end["undo"]] == ["activate_access_key", "recreate_login_profile"]
    assert end["undo"][0]["access_key_id"] == key2
    end_run(home, "run1")

    items = undo_items(home.run("run1").ledger)
    assert [(i.how["op"], i.how.get("access_key_id"), i.confirmed) for i in items] == [
        ("recreate_login_profile", None, True),
        ("activate_access_key", key2, True),
        ("activate_access_key", key1, False),  # the crashed attempt's intents
        ("delete_user_policy", None, False),
    ]
    assert "may have been applied: the run stopped before confirming it" in describe(items[2])

    result = rollback_run("run1", "rb1", home)
    assert result.still_in_place == [] and len(result.restored) == 4
    assert user_state(iam) == before  # both keys Active, quarantine gone, password back


def test_killed_before_the_call_rollback_succeeds_and_changes_nothing(
    clampdown_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    home, iam = Home(clampdown_home), boto3.client("iam", region_name="us-east-1")
    arn, _ = seed_user(iam)
    before = user_state(iam)
    ledger = KILLABLE["run2"] = ProcessLedger(home.run("run2").ledger)
    kill_at(monkeypatch, "before-call", "PutUserPolicy", ledger)  # the request is never sent
    with pytest.raises(Killed):
        engine_run(home, tmp_path, "run2", "aws.iam.revoke_credentials", {"principal_arn": arn})
    assert read(home.run("run2").ledger)[-1]["type"] == "undo.intent"
    assert user_state(iam) == before
    end_run(home, "run2")

    (item,) = undo_items(home.run("run2").ledger)
    assert item.how["op"] == "delete_user_policy" and not item.confirmed
    planned = CliRunner().invoke(app, ["rollback", "run2", "--plan"])
    assert planned.exit_code == 0, planned.output
    assert "1 change(s) to undo" in planned.output
    assert (
        "may have been applied: the run stopped before confirming it (undoing it is safe "
        "either way)" in planned.output
    )
    result = rollback_run("run2", "rb2", home)
    assert result.still_in_place == [] and result.restored == [item.description]
    assert user_state(iam) == before
    assert read(result.ledger)[-1]["status"] == "succeeded"


def test_a_call_aws_refused_at_once_is_not_left_to_rollback(
    clampdown_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A 4xx answer to a request that was not retried changed nothing: ``not_made``."""
    home, iam = Home(clampdown_home), boto3.client("iam", region_name="us-east-1")
    arn, _ = seed_user(iam)
    original = base.Aws.client

    def client(self: base.Aws, name: str) -> Any:
        made = original(self, name)
        made.meta.events.register("before-call.iam.PutUserPolicy", _refuse)
        return made

    monkeypatch.setattr(base.Aws, "client", client)
    new_process(home, "run3")
    engine_run(home, tmp_path, "run3", "aws.iam.revoke_credentials", {"principal_arn": arn})
    end_run(home, "run3")
    records = read(home.run("run3").ledger)
    (intent,) = [r for r in records if r["type"] == "undo.intent"]
    (failed,) = [r for r in records if r["type"] == "step.attempt_failed"]
    assert failed["not_made"] == [intent["intent"]]
    assert undo_items(home.run("run3").ledger) == []


def _refuse(model: Any, **_: Any) -> tuple[int, dict[str, Any]]:
    """A before-call answer: botocore skips the request and raises this as a ClientError."""
    from botocore.awsrequest import AWSResponse

    del model
    error = {"Error": {"Code": "LimitExceeded", "Message": "too many policies"}}
    return AWSResponse("https://iam", 409, {}, None), {  # type: ignore[return-value]
        **error,
        "ResponseMetadata": {"HTTPStatusCode": 409, "RetryAttempts": 0},
    }


def test_rotate_killed_after_storing_the_new_key_rollback_finds_it_by_its_version(
    clampdown_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """The new key's id is known only after CreateAccessKey: the intent names the secret
    version instead, and rollback deactivates the key that version holds."""
    home = Home(clampdown_home)
    iam = boto3.client("iam", region_name="us-east-1")
    sm = boto3.client("secretsmanager", region_name="us-east-1")
    iam.create_user(UserName="svc")
    old = iam.create_access_key(UserName="svc")["AccessKey"]["AccessKeyId"]
    ledger = KILLABLE["run4"] = ProcessLedger(home.run("run4").ledger)
    kill_at(monkeypatch, "after-call", "CreateSecret", ledger)
    with pytest.raises(Killed):
        engine_run(
            home, tmp_path, "run4", RotateAccessKey.name, {"user_name": "svc", "secret_id": "k"}
        )
    keys = {k["AccessKeyId"]: k["Status"] for k in iam.list_access_keys(UserName="svc")[
        "AccessKeyMetadata"]}  # fmt: skip
    (new,) = set(keys) - {old}
    assert keys == {old: "Active", new: "Active"}
    assert json.loads(sm.get_secret_value(SecretId="k")["SecretString"])["AccessKeyId"] == new
    end_run(home, "run4")

    (item,) = undo_items(home.run("run4").ledger)
    assert item.how["op"] == "deactivate_rotated_key" and not item.confirmed
    result = rollback_run("run4", "rb4", home)
    assert result.still_in_place == []
    keys = {k["AccessKeyId"]: k["Status"] for k in iam.list_access_keys(UserName="svc")[
        "AccessKeyMetadata"]}  # fmt: skip
    assert keys == {old: "Active", new: "Inactive"}


def test_rotate_killed_before_storing_rollback_deactivates_nothing_and_says_why(
    clampdown_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
):
    home = Home(clampdown_home)
    iam = boto3.client("iam", region_name="us-east-1")
    iam.create_user(UserName="svc")
    old = iam.create_access_key(UserName="svc")["AccessKey"]["AccessKeyId"]
    ledger = KILLABLE["run5"] = ProcessLedger(home.run("run5").ledger)
    kill_at(monkeypatch, "after-call", "CreateAccessKey", ledger)  # made, never stored
    with pytest.raises(Killed):
        engine_run(
            home, tmp_path, "run5", RotateAccessKey.name, {"user_name": "svc", "secret_id": "k"}
        )
    end_run(home, "run5")
    caplog.set_level(logging.INFO)
    result = rollback_run("run5", "rb5", home)
    assert result.still_in_place == []
    statuses = {k["AccessKeyId"]: k["Status"] for k in iam.list_access_keys(UserName="svc")[
        "AccessKeyMetadata"]}  # fmt: skip
    (orphan,) = set(statuses) - {old}
    assert statuses == {old: "Active", orphan: "Active"}  # nothing guessed at
    assert f"access key(s) {orphan} were not there before it" in caplog.text


# --- every undo op: a change that never happened, or was already put back -------------------


def _intents_of_a_real_run(action: Any, params: Any, home: Home) -> tuple[ActionContext, list]:
    intents: list[Any] = []
    ctx = ActionContext(
        run_id="run6", step_id="s", runbook="rb", home=home, region="us-east-1",
        intent_hook=intents.append,
    )  # fmt: skip
    action.run(action.Input.model_validate(params), ctx)
    return ctx, intents


@pytest.mark.parametrize(
    "case",
    [
        "revoke_user",
        "revoke_role",
        "rotate_access_key",
        "block_assume_role",
        "kms_disable",
        "kms_rotate",
        "rotate_secret",
        "lock_model_artifacts",
        "disable_api_key",
        "throttle_usage_plan",
        "deny_invoke",
        "freeze_endpoint",
    ],
)
def test_every_intent_undone_again_after_rollback_changes_nothing(case: str, clampdown_home: Path):
    """Run for real, roll back the confirmed records, then undo every intent once more as a
    rollback of unconfirmed intents would: each succeeds and the state stays restored."""
    from clampdown.core.actions import registry

    home = Home(clampdown_home)
    name, params, snapshot = CASES[case]()
    action = registry().get(name)()
    start = snapshot()
    ctx, intents = _intents_of_a_real_run(action, params, home)
    assert intents and snapshot() != start
    assert len(ctx.confirmed) == len(intents)
    rb = ActionContext(run_id="rb6", step_id="s", runbook="rollback", home=home)
    for record in reversed(ctx.undo):
        action.rollback({k: v for k, v in record.items() if k != "description"}, rb)
    assert snapshot() == start
    for intent in reversed(intents):
        action.rollback(intent.how, rb)
    assert snapshot() == start


def _revoke_user() -> tuple[str, dict, Any]:
    iam = boto3.client("iam", region_name="us-east-1")
    arn, _ = seed_user(iam)
    return "aws.iam.revoke_credentials", {"principal_arn": arn}, lambda: user_state(iam)


def _role(iam: Any) -> str:
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"},
             "Action": "sts:AssumeRole"}
        ],
    }  # fmt: skip
    return iam.create_role(RoleName="app", AssumeRolePolicyDocument=json.dumps(trust))["Role"][
        "Arn"
    ]


def _role_state(iam: Any) -> dict[str, Any]:
    role = iam.get_role(RoleName="app")["Role"]
    return {
        "trust": role["AssumeRolePolicyDocument"],
        "policies": iam.list_role_policies(RoleName="app")["PolicyNames"],
    }


def _revoke_role() -> tuple[str, dict, Any]:
    iam = boto3.client("iam", region_name="us-east-1")
    arn = _role(iam)
    params = {"principal_arn": arn, "block_assume": True}
    return "aws.iam.revoke_credentials", params, lambda: _role_state(iam)


def _block_assume() -> tuple[str, dict, Any]:
    iam = boto3.client("iam", region_name="us-east-1")
    arn = _role(iam)
    return "aws.iam.block_assume_role", {"role_arn": arn}, lambda: _role_state(iam)


def _rotate() -> tuple[str, dict, Any]:
    iam = boto3.client("iam", region_name="us-east-1")
    sm = boto3.client("secretsmanager", region_name="us-east-1")
    iam.create_user(UserName="svc")
    old = iam.create_access_key(UserName="svc")["AccessKey"]["AccessKeyId"]
    sm.create_secret(
        Name="svc-key", SecretString=json.dumps({"AccessKeyId": old, "SecretAccessKey": "x"})
    )

    def snapshot() -> dict[str, Any]:
        keys = iam.list_access_keys(UserName="svc")["AccessKeyMetadata"]
        stages = sm.describe_secret(SecretId="svc-key")["VersionIdsToStages"]
        current = next(v for v, labels in stages.items() if "AWSCURRENT" in labels)
        active = sorted(k["AccessKeyId"] for k in keys if k["Status"] == "Active")
        return {"active": active, "current version": current}

    return "aws.iam.rotate_access_key", {"user_name": "svc", "secret_id": "svc-key"}, snapshot


def _kms_disable() -> tuple[str, dict, Any]:
    kms = boto3.client("kms", region_name="us-east-1")
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    return (
        "aws.kms.rotate_key",
        {"key_id": key, "disable": True},
        lambda: kms.describe_key(KeyId=key)["KeyMetadata"]["KeyState"],
    )


def _kms_rotate() -> tuple[str, dict, Any]:
    kms = boto3.client("kms", region_name="us-east-1")
    key = kms.create_key()["KeyMetadata"]["KeyId"]

    def snapshot() -> dict[str, Any]:
        return {
            "tags": kms.list_resource_tags(KeyId=key).get("Tags", []),
            "yearly": kms.get_key_rotation_status(KeyId=key)["KeyRotationEnabled"],
        }

    return "aws.kms.rotate_key", {"key_id": key}, snapshot


def _rotate_secret() -> tuple[str, dict, Any]:
    sm = boto3.client("secretsmanager", region_name="us-east-1")
    sm.create_secret(Name="db", SecretString=json.dumps({"user": "app", "password": "old"}))

    def snapshot() -> str:
        stages = sm.describe_secret(SecretId="db")["VersionIdsToStages"]
        return next(v for v, labels in stages.items() if "AWSCURRENT" in labels)

    return "aws.secrets.rotate_secret", {"secret_id": "db"}, snapshot


def _lock_model_artifacts() -> tuple[str, dict, Any]:
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="models", ObjectLockEnabledForBucket=True)
    for body in (b"v1", b"v2"):
        s3.put_object(Bucket="models", Key="fraud/model.bin", Body=body)

    def snapshot() -> dict[str, Any]:
        try:
            policy = s3.get_bucket_policy(Bucket="models")["Policy"]
        except s3.exceptions.ClientError:
            policy = None
        versions = s3.list_object_versions(Bucket="models", Prefix="fraud/")["Versions"]
        holds = {}
        for v in versions:
            try:
                held = s3.get_object_legal_hold(
                    Bucket="models", Key=v["Key"], VersionId=v["VersionId"]
                )["LegalHold"].get("Status")
            except s3.exceptions.ClientError:
                held = None
            holds[v["VersionId"]] = held in (None, "OFF")
        return {"policy": policy, "unheld": holds}

    params = {
        "bucket": "models",
        "prefix": "fraud/",
        "allow_principals": ["arn:aws:iam::123456789012:role/serving"],
        "legal_hold": True,
    }
    return "aws.s3.lock_model_artifacts", params, snapshot


def _api_key() -> tuple[Any, str, str]:
    apigw = boto3.client("apigateway", region_name="us-east-1")
    key = apigw.create_api_key(name="suspect", enabled=True)["id"]
    plan = apigw.create_usage_plan(name="partners", throttle={"rateLimit": 50, "burstLimit": 20})
    apigw.create_usage_plan_key(usagePlanId=plan["id"], keyId=key, keyType="API_KEY")
    return apigw, key, plan["id"]


def _disable_api_key() -> tuple[str, dict, Any]:
    apigw, key, _ = _api_key()
    return (
        "aws.apigateway.disable_api_key",
        {"api_key_id": key},
        lambda: apigw.get_api_key(apiKey=key)["enabled"],
    )


def _throttle_usage_plan() -> tuple[str, dict, Any]:
    apigw, _, plan = _api_key()
    return (
        "aws.apigateway.throttle_usage_plan",
        {"usage_plan_id": plan},
        lambda: apigw.get_usage_plan(usagePlanId=plan).get("throttle"),
    )


def _deny_invoke() -> tuple[str, dict, Any]:
    iam = boto3.client("iam", region_name="us-east-1")
    sm = boto3.client("sagemaker", region_name="us-east-1")
    role = iam.create_role(RoleName="sm-exec", AssumeRolePolicyDocument="{}")["Role"]
    sm.create_model(
        ModelName="fraud-v3",
        ExecutionRoleArn=role["Arn"],
        PrimaryContainer={"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/m:1"},
    )
    sm.create_endpoint_config(
        EndpointConfigName="fraud-config",
        ProductionVariants=[
            {
                "VariantName": "main",
                "ModelName": "fraud-v3",
                "InitialInstanceCount": 1,
                "InstanceType": "ml.m5.large",
            }
        ],
    )
    sm.create_endpoint(EndpointName="fraud", EndpointConfigName="fraud-config")
    arn, _ = seed_user(iam)
    return (
        "aws.sagemaker.deny_invoke",
        {"endpoint_name": "fraud", "principals": [arn]},
        lambda: user_state(iam)["policies"],
    )


def _freeze_endpoint() -> tuple[str, dict, Any]:
    """Drain: the role deny, the API Gateway stage throttle and the variant weights."""
    from tests.integration import test_aws_s3_sagemaker as sagemaker_tests

    c = sagemaker_tests._endpoint_setup()
    api, stage = sagemaker_tests._stage(c["apigw"])
    c["apigw"].update_stage(  # the team's own limits (moto cannot remove a method setting)
        restApiId=api,
        stageName=stage,
        patchOperations=[
            {"op": "replace", "path": "/*/*/throttling/rateLimit", "value": "100"},
            {"op": "replace", "path": "/*/*/throttling/burstLimit", "value": "50"},
        ],
    )

    def snapshot() -> dict[str, Any]:
        return {
            "roles": sagemaker_tests._inline(c["iam"], "fraud-scorer"),
            "weights": sagemaker_tests._variants(c["sm"]),
            "stage": sagemaker_tests._throttling(c["apigw"], api),
        }

    params = {
        "endpoint_name": sagemaker_tests.ENDPOINT,
        "caller_roles": [sagemaker_tests.APP_ROLE],
        "mode": "drain",
        "api_gateway": {"rest_api_id": api, "stage_name": stage},
    }
    return "aws.sagemaker.freeze_endpoint", params, snapshot


CASES = {
    "revoke_user": _revoke_user,
    "revoke_role": _revoke_role,
    "rotate_access_key": _rotate,
    "block_assume_role": _block_assume,
    "kms_disable": _kms_disable,
    "kms_rotate": _kms_rotate,
    "rotate_secret": _rotate_secret,
    "lock_model_artifacts": _lock_model_artifacts,
    "disable_api_key": _disable_api_key,
    "throttle_usage_plan": _throttle_usage_plan,
    "deny_invoke": _deny_invoke,
    "freeze_endpoint": _freeze_endpoint,
}
