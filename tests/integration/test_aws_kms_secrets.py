"""aws.kms.rotate_key and aws.secrets.rotate_secret against moto, in-process and as a server.

moto 5.2 implements every call these actions make (RotateKeyOnDemand and
ListKeyRotations included), so no test needs botocore's Stubber. Faults
(throttling, AccessDenied with AWS's real message text) come from moto itself: the
test makes moto's handler for one operation raise the AWS error, so the answer
travels back like a real one and botocore's standard retry handler decides.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from clampdown.core.actions import ActionContext
from clampdown.core.settings import settings
from clampdown_aws import base
from clampdown_aws.base import AwsAccessDenied, AwsActionError
from clampdown_aws.kms import ROTATED_BY_RUN_TAG, RotateKey
from clampdown_aws.secrets import RotateSecret, SecretRotationRefused, version_token
from tests.integration.moto_kms_keys import one_rsa_key_for_symmetric_keys  # noqa: F401 - autouse
from tests.integration.shared_models import shared_service_models  # noqa: F401 - autouse

ACCOUNT = "123456789012"
REGION = "us-east-1"
PRINCIPAL = f"arn:aws:sts::{ACCOUNT}:assumed-role/clampdown-responder/clampdown-testrun0001"


# --- fixtures and helpers ------------------------------------------------------------------


@pytest.fixture(params=["in_process", "moto_server"])
def aws(request: pytest.FixtureRequest) -> str:
    """Run the test against moto in-process (mock_aws) and against the moto HTTP server."""
    request.getfixturevalue("mocked_aws" if request.param == "in_process" else "aws_endpoint")
    return request.param


class Wire:
    """Records every AWS operation the actions call (a ``before-send`` hook on the clients
    they create, so each retry attempt counts) and makes moto answer chosen calls with an
    error, as AWS would: the error crosses the wire (or moto's in-process transport) and
    botocore's retry handler sees it exactly like a real one."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[str] = []
        self._monkeypatch = monkeypatch

    def before_send(self, request: Any, event_name: str, **_: Any) -> None:
        _, service, operation = event_name.split(".")
        self.calls.append(f"{service.replace('-', '')}:{operation}")

    def fail(self, action: str, code: str, message: str, times: int = 1) -> None:
        """Answer the next ``times`` calls of ``action`` (e.g. "kms:DescribeKey") with an error;
        moto's handler raises before it changes anything."""
        from moto.core.exceptions import JsonRESTError
        from moto.kms.responses import KmsResponse
        from moto.secretsmanager.responses import SecretsManagerResponse

        service, operation = action.split(":")
        responses = {"kms": KmsResponse, "secretsmanager": SecretsManagerResponse}[service]
        method = re.sub(r"(?<!^)(?=[A-Z])", "_", operation).lower()
        real = getattr(responses, method)
        left = [times]

        def failing(self_: Any) -> str:
            if left[0] > 0:
                left[0] -= 1
                raise JsonRESTError(code, message)
            return real(self_)

        self._monkeypatch.setattr(responses, method, failing)

    def count(self, action: str) -> int:
        return self.calls.count(action)


@pytest.fixture
def wire(monkeypatch: pytest.MonkeyPatch) -> Wire:
    tap = Wire(monkeypatch)
    make_client = base.Aws.client

    def client(self: base.Aws, service: str) -> Any:
        made = make_client(self, service)
        # a run's client is reused by its steps: tapped once, however often it is asked for
        made.meta.events.register_first("before-send", tap.before_send, unique_id="wire-tap")
        return made

    monkeypatch.setattr(base.Aws, "client", client)
    return tap


def rollback(action: Any, ctx: ActionContext) -> None:
    for record in reversed(ctx.undo):
        action.rollback({k: v for k, v in record.items() if k != "description"}, ctx)


_clients: dict[str, Any] = {}


@pytest.fixture(autouse=True)
def _fresh_clients() -> Any:
    """The test's own clients, made once per test (after the moto fixtures are set up)."""
    _clients.clear()
    yield
    _clients.clear()


def kms_client() -> Any:
    if "kms" not in _clients:
        _clients["kms"] = boto3.client("kms", region_name=REGION)
    return _clients["kms"]


def sm_client() -> Any:
    if "sm" not in _clients:
        _clients["sm"] = boto3.client("secretsmanager", region_name=REGION)
    return _clients["sm"]


def key_tags(key_id: str) -> dict[str, str]:
    return {
        t["TagKey"]: t["TagValue"] for t in kms_client().list_resource_tags(KeyId=key_id)["Tags"]
    }


def on_demand_rotations(key_id: str) -> int:
    rotations = kms_client().list_key_rotations(KeyId=key_id)["Rotations"]
    return sum(1 for r in rotations if r["RotationType"] == "ON_DEMAND")


def new_key(alias: str | None = None, **kwargs: Any) -> dict[str, Any]:
    meta = kms_client().create_key(**kwargs)["KeyMetadata"]
    if alias:
        kms_client().create_alias(AliasName=alias, TargetKeyId=meta["KeyId"])
    return meta


def value(secret: str, **version: str) -> str:
    # Ask for AWSCURRENT explicitly: moto's default ignores UpdateSecretVersionStage moves.
    version = version or {"VersionStage": "AWSCURRENT"}
    return sm_client().get_secret_value(SecretId=secret, **version)["SecretString"]


def stages(secret: str) -> dict[str, list[str]]:
    return sm_client().describe_secret(SecretId=secret)["VersionIdsToStages"]


def current_version(secret: str) -> str:
    return next(v for v, labels in stages(secret).items() if "AWSCURRENT" in labels)


def denied(action: str, resource: str) -> str:
    """AWS's own AccessDenied message text."""
    return (
        f"User: {PRINCIPAL} is not authorized to perform: {action} on resource: {resource} "
        f"because no identity-based policy allows the {action} action"
    )


# --- aws.kms.rotate_key ----------------------------------------------------------------------


def test_rotate_key_rotates_now_enables_yearly_rotation_and_second_run_changes_nothing(
    aws: str, action_ctx: ActionContext
) -> None:
    key = new_key(alias="alias/model-weights")
    action = RotateKey()

    out = action.run(RotateKey.Input(key_id="alias/model-weights"), action_ctx)

    assert out.model_dump() == {
        "key_arn": key["Arn"],
        "rotated_on_demand": True,
        "yearly_rotation_enabled": True,
        "disabled": False,
        "changed": True,
    }
    assert on_demand_rotations(key["KeyId"]) == 1
    assert kms_client().get_key_rotation_status(KeyId=key["KeyId"])["KeyRotationEnabled"]
    assert key_tags(key["KeyId"]) == {ROTATED_BY_RUN_TAG: "testrun0001"}
    assert [r["op"] for r in action_ctx.undo] == ["restore_tag", "disable_key_rotation"]

    again = action.run(RotateKey.Input(key_id=key["Arn"]), action_ctx)

    assert again.model_dump() == {
        "key_arn": key["Arn"],
        "rotated_on_demand": False,
        "yearly_rotation_enabled": False,
        "disabled": False,
        "changed": False,
    }
    assert on_demand_rotations(key["KeyId"]) == 1  # AWS caps on-demand rotations per key
    assert len(action_ctx.undo) == 2


def test_rotate_key_rollback_turns_yearly_rotation_off_and_removes_the_marker(
    aws: str, action_ctx: ActionContext
) -> None:
    key = new_key()
    action = RotateKey()
    action.run(RotateKey.Input(key_id=key["KeyId"]), action_ctx)
    undo_text = " ".join(r["description"] for r in action_ctx.undo)
    assert "cannot be undone" in undo_text and "still decrypts" in undo_text

    rollback(action, action_ctx)

    assert not kms_client().get_key_rotation_status(KeyId=key["KeyId"])["KeyRotationEnabled"]
    assert key_tags(key["KeyId"]) == {}
    assert on_demand_rotations(key["KeyId"]) == 1  # the rotation itself stays
    rollback(action, action_ctx)  # undo is idempotent
    assert key_tags(key["KeyId"]) == {}
    assert kms_client().describe_key(KeyId=key["KeyId"])["KeyMetadata"]["KeyState"] == "Enabled"


def test_rotate_key_keeps_yearly_rotation_it_did_not_turn_on(
    mocked_aws: None, action_ctx: ActionContext
) -> None:
    key = new_key()
    kms_client().enable_key_rotation(KeyId=key["KeyId"])
    action = RotateKey()

    out = action.run(RotateKey.Input(key_id=key["KeyId"]), action_ctx)
    rollback(action, action_ctx)

    assert out.rotated_on_demand and not out.yearly_rotation_enabled
    assert [r["op"] for r in action_ctx.undo] == ["restore_tag"]
    assert kms_client().get_key_rotation_status(KeyId=key["KeyId"])["KeyRotationEnabled"]


def test_rotate_key_without_yearly_rotation(mocked_aws: None, action_ctx: ActionContext) -> None:
    key = new_key()

    out = RotateKey().run(
        RotateKey.Input(key_id=key["KeyId"], enable_yearly_rotation=False), action_ctx
    )

    assert out.rotated_on_demand and not out.yearly_rotation_enabled
    assert not kms_client().get_key_rotation_status(KeyId=key["KeyId"])["KeyRotationEnabled"]


def test_rotate_key_rotates_again_for_a_new_run_and_rollback_restores_the_old_marker(
    aws: str, action_ctx: ActionContext
) -> None:
    key = new_key(Tags=[{"TagKey": ROTATED_BY_RUN_TAG, "TagValue": "earlier-run"}])
    action = RotateKey()

    out = action.run(RotateKey.Input(key_id=key["KeyId"]), action_ctx)

    assert out.rotated_on_demand
    assert on_demand_rotations(key["KeyId"]) == 1
    assert key_tags(key["KeyId"])[ROTATED_BY_RUN_TAG] == "testrun0001"
    rollback(action, action_ctx)
    assert key_tags(key["KeyId"])[ROTATED_BY_RUN_TAG] == "earlier-run"


def test_disable_key_then_second_run_then_rollback_enables_it(
    aws: str, action_ctx: ActionContext
) -> None:
    key = new_key(alias="alias/inference")
    action = RotateKey()

    out = action.run(RotateKey.Input(key_id="alias/inference", disable=True), action_ctx)

    assert out.model_dump() == {
        "key_arn": key["Arn"],
        "rotated_on_demand": False,
        "yearly_rotation_enabled": False,
        "disabled": True,
        "changed": True,
    }
    assert kms_client().describe_key(KeyId=key["KeyId"])["KeyMetadata"]["KeyState"] == "Disabled"
    assert on_demand_rotations(key["KeyId"]) == 0
    assert not kms_client().get_key_rotation_status(KeyId=key["KeyId"])["KeyRotationEnabled"]

    again = action.run(RotateKey.Input(key_id="alias/inference", disable=True), action_ctx)
    assert not again.disabled and not again.changed
    assert [r["op"] for r in action_ctx.undo] == ["enable_key"]

    rollback(action, action_ctx)
    assert kms_client().describe_key(KeyId=key["KeyId"])["KeyMetadata"]["KeyState"] == "Enabled"
    rollback(action, action_ctx)  # idempotent
    assert kms_client().describe_key(KeyId=key["KeyId"])["KeyMetadata"]["KeyState"] == "Enabled"


def test_disable_leaves_an_already_disabled_key_alone(
    mocked_aws: None, action_ctx: ActionContext
) -> None:
    key = new_key()
    kms_client().disable_key(KeyId=key["KeyId"])

    out = RotateKey().run(RotateKey.Input(key_id=key["KeyId"], disable=True), action_ctx)

    assert not out.changed and action_ctx.undo == []
    assert kms_client().describe_key(KeyId=key["KeyId"])["KeyMetadata"]["KeyState"] == "Disabled"


def test_disable_counts_a_key_pending_deletion_as_already_unusable(
    mocked_aws: None, action_ctx: ActionContext
) -> None:
    key = new_key()
    kms_client().schedule_key_deletion(KeyId=key["KeyId"], PendingWindowInDays=7)

    out = RotateKey().run(RotateKey.Input(key_id=key["KeyId"], disable=True), action_ctx)

    assert not out.changed and action_ctx.undo == []
    state = kms_client().describe_key(KeyId=key["KeyId"])["KeyMetadata"]["KeyState"]
    assert state == "PendingDeletion"


def test_rotate_key_in_another_account_through_the_steps_role(
    aws: str, action_ctx: ActionContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    role = boto3.client("iam").create_role(
        RoleName="clampdown-responder", AssumeRolePolicyDocument="{}"
    )["Role"]["Arn"]
    monkeypatch.setattr(base, "_assumed", {})  # no credentials cached by earlier tests
    key = new_key()
    action_ctx.account = role
    action = RotateKey()

    out = action.run(RotateKey.Input(key_id=key["KeyId"], disable=True), action_ctx)
    assert kms_client().describe_key(KeyId=key["KeyId"])["KeyMetadata"]["KeyState"] == "Disabled"
    rollback(action, action_ctx)

    assert out.disabled
    assert list(base._assumed) == [(role, "testrun0001")]  # the step's role was assumed
    assert kms_client().describe_key(KeyId=key["KeyId"])["KeyMetadata"]["KeyState"] == "Enabled"


@pytest.mark.parametrize("disable", [False, True], ids=["rotate", "disable"])
def test_aws_managed_key_is_refused(aws: str, action_ctx: ActionContext, disable: bool) -> None:
    from moto.kms.models import kms_backends

    key = new_key()
    # moto marks every key CUSTOMER (even alias/aws/*), so mark this one as AWS managed.
    kms_backends[ACCOUNT][REGION].keys[key["KeyId"]].key_manager = "AWS"

    with pytest.raises(AwsActionError, match="is an AWS managed key") as err:
        RotateKey().run(RotateKey.Input(key_id=key["KeyId"], disable=disable), action_ctx)

    assert key["Arn"] in str(err.value)
    assert on_demand_rotations(key["KeyId"]) == 0
    assert kms_client().describe_key(KeyId=key["KeyId"])["KeyMetadata"]["KeyState"] == "Enabled"
    assert action_ctx.undo == []


def test_rotating_an_asymmetric_key_is_refused(mocked_aws: None, action_ctx: ActionContext) -> None:
    key = new_key(KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")

    with pytest.raises(AwsActionError, match="rotates only symmetric encryption keys"):
        RotateKey().run(RotateKey.Input(key_id=key["KeyId"]), action_ctx)


def test_rotating_a_disabled_key_is_refused(mocked_aws: None, action_ctx: ActionContext) -> None:
    key = new_key()
    kms_client().disable_key(KeyId=key["KeyId"])

    with pytest.raises(AwsActionError, match="Disabled; KMS rotates only Enabled keys"):
        RotateKey().run(RotateKey.Input(key_id=key["KeyId"]), action_ctx)
    assert on_demand_rotations(key["KeyId"]) == 0


def test_unknown_key_error_names_the_call(mocked_aws: None, action_ctx: ActionContext) -> None:
    with pytest.raises(AwsActionError, match=r"DescribeKey failed: NotFoundException"):
        RotateKey().run(RotateKey.Input(key_id="alias/does-not-exist"), action_ctx)


def test_rotate_key_access_denied_names_action_and_principal(
    aws: str, action_ctx: ActionContext, wire: Wire
) -> None:
    key = new_key()
    wire.fail(
        "kms:RotateKeyOnDemand",
        "AccessDeniedException",
        denied("kms:RotateKeyOnDemand", key["Arn"]),
    )

    with pytest.raises(AwsAccessDenied) as err:
        RotateKey().run(RotateKey.Input(key_id=key["KeyId"]), action_ctx)

    assert "kms:RotateKeyOnDemand" in str(err.value)
    assert PRINCIPAL in str(err.value)
    assert wire.count("kms:RotateKeyOnDemand") == 1  # AccessDenied is not retried
    assert on_demand_rotations(key["KeyId"]) == 0 and key_tags(key["KeyId"]) == {}


def test_rollback_access_denied_names_action_and_principal(
    mocked_aws: None, action_ctx: ActionContext, wire: Wire
) -> None:
    key = new_key()
    action = RotateKey()
    action.run(RotateKey.Input(key_id=key["KeyId"], disable=True), action_ctx)
    wire.fail("kms:EnableKey", "AccessDeniedException", denied("kms:EnableKey", key["Arn"]))

    with pytest.raises(AwsAccessDenied, match=r"may not call kms:EnableKey") as err:
        rollback(action, action_ctx)
    assert PRINCIPAL in str(err.value)


def test_rotate_key_retries_throttling(
    aws: str, action_ctx: ActionContext, wire: Wire, no_backoff: None
) -> None:
    key = new_key()
    wire.fail("kms:DescribeKey", "ThrottlingException", "Rate exceeded")
    wire.fail("kms:RotateKeyOnDemand", "ThrottlingException", "Rate exceeded", times=2)

    out = RotateKey().run(RotateKey.Input(key_id=key["KeyId"]), action_ctx)

    assert out.rotated_on_demand
    assert wire.count("kms:DescribeKey") == 2
    assert wire.count("kms:RotateKeyOnDemand") == 3
    assert on_demand_rotations(key["KeyId"]) == 1


def test_rotate_key_declares_exactly_the_calls_it_makes(
    mocked_aws: None, action_ctx: ActionContext, wire: Wire
) -> None:
    action = RotateKey()
    action.run(RotateKey.Input(key_id=new_key()["KeyId"]), action_ctx)
    action.run(RotateKey.Input(key_id=new_key()["KeyId"], disable=True), action_ctx)
    rollback(action, action_ctx)

    assert set(wire.calls) == set(RotateKey.iam_actions)


# --- aws.secrets.rotate_secret ---------------------------------------------------------------

OLD = "old-Secret-Value-0123456789-abcdefghij"


def test_rotate_plain_secret_puts_a_new_current_value_and_second_run_changes_nothing(
    aws: str, action_ctx: ActionContext
) -> None:
    arn = sm_client().create_secret(Name="model/api-token", SecretString=OLD)["ARN"]
    old_version = current_version(arn)
    action = RotateSecret()

    out = action.run(RotateSecret.Input(secret_id="model/api-token"), action_ctx)

    assert out.model_dump() == {
        "secret_arn": arn,
        "new_version_id": version_token("testrun0001", "step", arn),
        "method": "put_secret_value",
        "changed": True,
    }
    new = value(arn)
    assert new != OLD and len(new) == 40
    assert current_version(arn) == out.new_version_id
    assert value(arn, VersionStage="AWSPREVIOUS") == OLD
    assert stages(arn)[old_version] == ["AWSPREVIOUS"]

    again = action.run(RotateSecret.Input(secret_id=arn), action_ctx)

    assert again.model_dump() == {**out.model_dump(), "changed": False}
    assert value(arn) == new
    assert len(stages(arn)) == 2
    assert len(action_ctx.undo) == 1


def test_rotate_json_secret_replaces_only_the_password(aws: str, action_ctx: ActionContext) -> None:
    document = {"username": "svc-inference", "password": OLD, "host": "db.internal", "port": 5432}
    sm_client().create_secret(Name="db/inference", SecretString=json.dumps(document))

    RotateSecret().run(RotateSecret.Input(secret_id="db/inference", length=32), action_ctx)

    rotated = json.loads(value("db/inference"))
    assert list(rotated) == ["username", "password", "host", "port"]
    assert {k: v for k, v in rotated.items() if k != "password"} == {
        "username": "svc-inference",
        "host": "db.internal",
        "port": 5432,
    }
    assert rotated["password"] != OLD and len(rotated["password"]) == 32
    assert json.loads(value("db/inference", VersionStage="AWSPREVIOUS")) == document


def test_generated_value_honours_exclude_characters(
    mocked_aws: None, action_ctx: ActionContext
) -> None:
    sm_client().create_secret(Name="s", SecretString=OLD)
    excluded = "/@\"' \\abcdefghij"

    RotateSecret().run(RotateSecret.Input(secret_id="s", exclude_characters=excluded), action_ctx)

    assert not set(value("s")) & set(excluded)


def test_rollback_moves_awscurrent_back_to_the_old_version(
    aws: str, action_ctx: ActionContext
) -> None:
    arn = sm_client().create_secret(Name="s", SecretString=OLD)["ARN"]
    old_version = current_version(arn)
    action = RotateSecret()
    out = action.run(RotateSecret.Input(secret_id="s"), action_ctx)
    (record,) = action_ctx.undo
    assert {k: v for k, v in record.items() if k != "description"} == {
        "op": "restore_current",
        "secret_arn": arn,
        "previous_version_id": old_version,
        "new_version_id": out.new_version_id,
        "method": "put_secret_value",
    }

    rollback(action, action_ctx)

    assert current_version(arn) == old_version and value(arn) == OLD
    assert stages(arn)[out.new_version_id] == ["AWSPREVIOUS"]
    rollback(action, action_ctx)  # idempotent
    assert current_version(arn) == old_version


def test_rollback_refuses_to_overwrite_a_newer_rotation(
    mocked_aws: None, action_ctx: ActionContext
) -> None:
    sm_client().create_secret(Name="s", SecretString=OLD)
    action = RotateSecret()
    action.run(RotateSecret.Input(secret_id="s"), action_ctx)
    later = sm_client().put_secret_value(SecretId="s", SecretString="rotated-by-someone-else")

    with pytest.raises(AwsActionError, match="rotated again since") as err:
        rollback(action, action_ctx)

    assert later["VersionId"] in str(err.value)
    assert "update-secret-version-stage" in str(err.value)
    assert value("s") == "rotated-by-someone-else"


def test_secret_values_never_reach_outputs_undo_or_logs(
    aws: str, action_ctx: ActionContext, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # botocore logs request and response bodies at DEBUG
    document = {"username": "svc", "password": OLD}
    sm_client().create_secret(Name="db/main", SecretString=json.dumps(document))
    action = RotateSecret()

    out = action.run(RotateSecret.Input(secret_id="db/main"), action_ctx)
    action.run(RotateSecret.Input(secret_id="db/main"), action_ctx)
    rollback(action, action_ctx)
    caplog.set_level(logging.WARNING)
    new_password = json.loads(value("db/main", VersionId=out.new_version_id))["password"]

    assert "redacted by clampdown" in caplog.text  # botocore's DEBUG bodies were captured
    exposed = [out.model_dump_json(), json.dumps(action_ctx.undo), caplog.text]
    exposed += [str(r.args) for r in caplog.records]
    for text in exposed:
        assert OLD not in text
        assert new_password not in text


def test_aws_deduplicates_the_version_token(aws: str) -> None:
    """What the action relies on: PutSecretValue with a used ClientRequestToken never makes a
    second version (moto behaves as AWS documents it)."""
    sm_client().create_secret(Name="s", SecretString=OLD)
    token = version_token("run", "step", "arn")

    first = sm_client().put_secret_value(SecretId="s", SecretString="v1", ClientRequestToken=token)
    same = sm_client().put_secret_value(SecretId="s", SecretString="v1", ClientRequestToken=token)
    with pytest.raises(ClientError) as err:
        sm_client().put_secret_value(SecretId="s", SecretString="v2", ClientRequestToken=token)

    assert first["VersionId"] == same["VersionId"] == token
    assert err.value.response["Error"]["Code"] == "ResourceExistsException"
    assert len(stages("s")) == 2 and value("s") == "v1"


def test_second_run_after_aws_hid_the_superseded_version_changes_nothing(
    mocked_aws: None, action_ctx: ActionContext, wire: Wire
) -> None:
    """AWS's DescribeSecret lists only versions that still have a stage (moto lists all):
    the second run then meets ResourceExistsException from the token, which means done."""
    sm_client().create_secret(Name="s", SecretString=OLD)
    action = RotateSecret()
    action.run(RotateSecret.Input(secret_id="s"), action_ctx)
    sm_client().put_secret_value(SecretId="s", SecretString="later-1")
    sm_client().put_secret_value(SecretId="s", SecretString="later-2")  # ours has no stage now

    def hide_unstaged(parsed: dict[str, Any], **_: Any) -> None:
        table = parsed.get("VersionIdsToStages", {})
        for version in [v for v, labels in table.items() if not labels]:
            del table[version]

    make_client = base.Aws.client

    def client(self: base.Aws, service: str) -> Any:
        made = make_client(self, service)
        made.meta.events.register("after-call.secrets-manager.DescribeSecret", hide_unstaged)
        return made

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(base.Aws, "client", client)
        out = action.run(RotateSecret.Input(secret_id="s"), action_ctx)

    assert not out.changed
    assert wire.count("secretsmanager:PutSecretValue") == 2
    assert value("s") == "later-2"
    assert len(action_ctx.undo) == 1


@pytest.fixture
def rotation_lambda(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], str]:
    """A secret with rotation on and a rotation Lambda (moto's docker-free Lambda stand-in)."""
    from moto.core.config import default_user_config

    monkeypatch.setitem(default_user_config, "lambda", {"use_docker": False})

    def make(name: str) -> str:
        role = boto3.client("iam").create_role(RoleName="rotator", AssumeRolePolicyDocument="{}")
        fn = boto3.client("lambda", region_name=REGION).create_function(
            FunctionName="rotate-db",
            Runtime="python3.12",
            Role=role["Role"]["Arn"],
            Handler="rotate.handler",
            Code={"ZipFile": b"stand-in"},
        )["FunctionArn"]
        arn = sm_client().create_secret(Name=name, SecretString=OLD)["ARN"]
        sm_client().rotate_secret(
            SecretId=name,
            RotationLambdaARN=fn,
            RotationRules={"AutomaticallyAfterDays": 30},
            RotateImmediately=False,
        )
        return arn

    return make


def test_secret_with_rotation_lambda_rotates_through_it(
    aws: str, action_ctx: ActionContext, rotation_lambda: Callable[[str], str], wire: Wire
) -> None:
    arn = rotation_lambda("db/lambda-rotated")
    old_version = current_version(arn)
    action = RotateSecret()

    out = action.run(RotateSecret.Input(secret_id=arn), action_ctx)

    assert out.method == "lambda" and out.changed
    assert out.new_version_id == version_token("testrun0001", "step", arn)
    assert wire.count("secretsmanager:RotateSecret") == 1
    assert wire.count("secretsmanager:PutSecretValue") == 0
    assert wire.count("secretsmanager:GetSecretValue") == 0  # the Lambda handles the value
    assert current_version(arn) == out.new_version_id  # moto finishes the rotation at once
    assert "protected system" in action_ctx.undo[0]["description"]

    again = action.run(RotateSecret.Input(secret_id=arn), action_ctx)
    assert not again.changed and wire.count("secretsmanager:RotateSecret") == 1

    rollback(action, action_ctx)
    assert current_version(arn) == old_version


def test_secret_with_rotation_lambda_turned_off_is_refused(
    mocked_aws: None, action_ctx: ActionContext, rotation_lambda: Callable[[str], str]
) -> None:
    arn = rotation_lambda("db/rotation-off")
    sm_client().cancel_rotate_secret(SecretId=arn)
    versions_before = stages(arn)

    with pytest.raises(SecretRotationRefused, match="rotation is turned off") as err:
        RotateSecret().run(RotateSecret.Input(secret_id=arn), action_ctx)

    assert "rotate-db" in str(err.value)
    assert stages(arn) == versions_before


def test_json_secret_without_password_field_is_refused(
    mocked_aws: None, action_ctx: ActionContext
) -> None:
    sm_client().create_secret(Name="s", SecretString=json.dumps({"api_key": OLD}))

    with pytest.raises(SecretRotationRefused, match="without a string 'password' field") as err:
        RotateSecret().run(RotateSecret.Input(secret_id="s"), action_ctx)

    assert OLD not in str(err.value)
    assert len(stages("s")) == 1 and action_ctx.undo == []


def test_binary_secret_is_refused(mocked_aws: None, action_ctx: ActionContext) -> None:
    sm_client().create_secret(Name="s", SecretBinary=b"\x00\x01binary")

    with pytest.raises(SecretRotationRefused, match="binary value"):
        RotateSecret().run(RotateSecret.Input(secret_id="s"), action_ctx)
    assert len(stages("s")) == 1


def test_generated_length_below_16_is_an_input_error() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="greater than or equal to 16"):
        RotateSecret.Input(secret_id="s", length=8)


def test_rotate_secret_access_denied_names_action_and_principal(
    aws: str, action_ctx: ActionContext, wire: Wire
) -> None:
    arn = sm_client().create_secret(Name="s", SecretString=OLD)["ARN"]
    wire.fail(
        "secretsmanager:PutSecretValue",
        "AccessDeniedException",
        denied("secretsmanager:PutSecretValue", arn),
    )

    with pytest.raises(AwsAccessDenied) as err:
        RotateSecret().run(RotateSecret.Input(secret_id="s"), action_ctx)

    assert "secretsmanager:PutSecretValue" in str(err.value)
    assert PRINCIPAL in str(err.value)
    assert value("s") == OLD and action_ctx.undo == []


def test_rotate_secret_retries_throttling_without_a_second_version(
    aws: str, action_ctx: ActionContext, wire: Wire, no_backoff: None
) -> None:
    sm_client().create_secret(Name="s", SecretString=OLD)
    wire.fail("secretsmanager:PutSecretValue", "ThrottlingException", "Rate exceeded")

    out = RotateSecret().run(RotateSecret.Input(secret_id="s"), action_ctx)

    assert out.changed and wire.count("secretsmanager:PutSecretValue") == 2
    assert len(stages("s")) == 2 and value("s") != OLD


def test_rotate_secret_declares_exactly_the_calls_it_makes(
    mocked_aws: None, action_ctx: ActionContext, rotation_lambda: Callable[[str], str], wire: Wire
) -> None:
    action = RotateSecret()
    sm_client().create_secret(Name="plain", SecretString=OLD)
    action.run(RotateSecret.Input(secret_id="plain"), action_ctx)
    action.run(RotateSecret.Input(secret_id=rotation_lambda("with-lambda")), action_ctx)
    rollback(action, action_ctx)

    # lambda:InvokeFunction is AWS invoking the rotation function on the caller's behalf.
    assert set(wire.calls) | {"lambda:InvokeFunction"} == set(RotateSecret.iam_actions)


# --- describe (clampdown plan --live) ------------------------------------------------------


def kms_state(key_id: str) -> dict[str, Any]:
    kms = kms_client()
    return {
        "meta": kms.describe_key(KeyId=key_id)["KeyMetadata"],
        "tags": key_tags(key_id),
        "yearly": {
            k: v
            for k, v in kms.get_key_rotation_status(KeyId=key_id).items()
            if k != "ResponseMetadata"
        },
        "rotations": kms.list_key_rotations(KeyId=key_id)["Rotations"],
    }


def secret_state(secret: str) -> dict[str, Any]:
    desc = sm_client().describe_secret(SecretId=secret)
    for volatile in ("LastAccessedDate", "ResponseMetadata"):  # reads stamp LastAccessedDate
        desc.pop(volatile, None)
    versions = {
        v: sm_client().get_secret_value(SecretId=secret, VersionId=v).get("SecretString")
        for v in desc["VersionIdsToStages"]
    }
    return {"describe": desc, "values": versions}


def preview(action: Any, params: Any, ctx: ActionContext) -> list[str]:
    """What ``plan --live`` calls: ``describe`` with clients that refuse mutating calls."""
    changes = action.preview(params, ctx)
    assert changes is not None, "the action does not implement describe"
    return changes


READ_ONLY = ("Get", "List", "Describe", "Head")


def test_describe_rotate_key_lists_rotation_and_yearly_then_nothing_after_apply(
    aws: str, action_ctx: ActionContext, wire: Wire
) -> None:
    key = new_key(alias="alias/model-weights")
    params = RotateKey.Input(key_id="alias/model-weights")
    action = RotateKey()
    before = kms_state(key["KeyId"])

    changes = preview(action, params, action_ctx)

    assert len(changes) == 2
    assert changes[0].startswith(f"rotate the key material of KMS key {key['Arn']} now")
    assert f"{ROTATED_BY_RUN_TAG}=<run id>" in changes[0] and "replacing" not in changes[0]
    assert changes[1] == f"turn on automatic rotation of KMS key {key['Arn']} every 365 days"
    assert kms_state(key["KeyId"]) == before
    assert action_ctx.undo == []
    assert wire.calls and all(c.split(":")[1].startswith(READ_ONLY) for c in wire.calls)
    assert set(wire.calls) <= set(RotateKey.iam_actions)  # plan's IAM list covers the preview

    action.run(params, action_ctx)
    after = kms_state(key["KeyId"])

    assert preview(action, params, action_ctx) == []
    assert kms_state(key["KeyId"]) == after


def test_describe_rotate_key_lists_only_what_is_missing(
    mocked_aws: None, action_ctx: ActionContext
) -> None:
    key = new_key(Tags=[{"TagKey": ROTATED_BY_RUN_TAG, "TagValue": "earlier-run"}])
    kms_client().enable_key_rotation(KeyId=key["KeyId"])
    action = RotateKey()

    (line,) = preview(action, RotateKey.Input(key_id=key["KeyId"]), action_ctx)
    assert line.startswith("rotate the key material") and "replacing 'earlier-run'" in line

    plain = new_key()
    (line,) = preview(
        action, RotateKey.Input(key_id=plain["KeyId"], enable_yearly_rotation=False), action_ctx
    )
    assert line.startswith(f"rotate the key material of KMS key {plain['Arn']}")


def test_describe_rotate_key_for_a_later_run_lists_the_rotation_again(
    mocked_aws: None, action_ctx: ActionContext
) -> None:
    key = new_key()
    RotateKey().run(RotateKey.Input(key_id=key["KeyId"]), action_ctx)
    later = ActionContext(
        run_id="testrun0002",
        step_id="step",
        runbook="test",
        home=settings().paths,
        region=REGION,
    )

    (line,) = preview(RotateKey(), RotateKey.Input(key_id=key["KeyId"]), later)

    assert "replacing 'testrun0001'" in line
    assert on_demand_rotations(key["KeyId"]) == 1


def test_describe_disable_key_then_nothing_after_apply(
    mocked_aws: None, action_ctx: ActionContext
) -> None:
    key = new_key(alias="alias/inference")
    params = RotateKey.Input(key_id="alias/inference", disable=True)
    action = RotateKey()
    before = kms_state(key["KeyId"])

    assert preview(action, params, action_ctx) == [
        f"disable KMS key {key['Arn']} (nothing can encrypt or decrypt with it until rollback "
        "enables it)"
    ]
    assert kms_state(key["KeyId"]) == before

    action.run(params, action_ctx)
    assert preview(action, params, action_ctx) == []
    assert kms_client().describe_key(KeyId=key["KeyId"])["KeyMetadata"]["KeyState"] == "Disabled"


def test_describe_disable_lists_nothing_for_a_key_pending_deletion(
    mocked_aws: None, action_ctx: ActionContext
) -> None:
    key = new_key()
    kms_client().schedule_key_deletion(KeyId=key["KeyId"], PendingWindowInDays=7)

    assert (
        preview(RotateKey(), RotateKey.Input(key_id=key["KeyId"], disable=True), action_ctx) == []
    )


@pytest.mark.parametrize(
    "make, disable, message",
    [
        (lambda: new_key(KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY"), False, "symmetric"),
        (lambda: new_key(Origin="EXTERNAL"), False, "imported key material"),
        (None, False, "is an AWS managed key"),
        (None, True, "is an AWS managed key"),
    ],
    ids=["asymmetric", "imported", "aws-managed-rotate", "aws-managed-disable"],
)
def test_describe_rotate_key_raises_what_apply_would_raise(
    mocked_aws: None,
    action_ctx: ActionContext,
    make: Callable[[], dict[str, Any]] | None,
    disable: bool,
    message: str,
) -> None:
    from moto.kms.models import kms_backends

    key = make() if make else new_key()
    if make is None:
        kms_backends[ACCOUNT][REGION].keys[key["KeyId"]].key_manager = "AWS"
    params = RotateKey.Input(key_id=key["KeyId"], disable=disable)

    with pytest.raises(AwsActionError, match=message) as previewed:
        preview(RotateKey(), params, action_ctx)
    with pytest.raises(AwsActionError, match=message) as applied:
        RotateKey().run(params, action_ctx)

    assert str(previewed.value) == str(applied.value)


def test_describe_rotate_key_access_denied_names_the_read_action(
    mocked_aws: None, action_ctx: ActionContext, wire: Wire
) -> None:
    key = new_key()
    wire.fail(
        "kms:GetKeyRotationStatus",
        "AccessDeniedException",
        denied("kms:GetKeyRotationStatus", key["Arn"]),
    )

    with pytest.raises(AwsAccessDenied, match=r"may not call kms:GetKeyRotationStatus"):
        preview(RotateKey(), RotateKey.Input(key_id=key["KeyId"]), action_ctx)


def test_describe_rotate_secret_plain_value_then_nothing_after_apply(
    aws: str, action_ctx: ActionContext, wire: Wire
) -> None:
    arn = sm_client().create_secret(Name="model/api-token", SecretString=OLD)["ARN"]
    old_version = current_version(arn)
    params = RotateSecret.Input(secret_id="model/api-token", length=48)
    action = RotateSecret()
    before = secret_state(arn)

    changes = preview(action, params, action_ctx)

    assert changes == [
        f"put a new random 48-character value in secret {arn} as AWSCURRENT; "
        f"version {old_version} becomes AWSPREVIOUS"
    ]
    assert secret_state(arn) == before and action_ctx.undo == []
    assert wire.calls and all(c.split(":")[1].startswith(READ_ONLY) for c in wire.calls)
    assert set(wire.calls) <= set(RotateSecret.iam_actions)

    action.run(params, action_ctx)
    after = secret_state(arn)

    assert preview(action, params, action_ctx) == []
    assert secret_state(arn) == after


def test_describe_rotate_secret_json_value_never_shows_it(
    mocked_aws: None, action_ctx: ActionContext, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    document = {"username": "svc-inference", "password": OLD, "host": "db.internal"}
    arn = sm_client().create_secret(Name="db/inference", SecretString=json.dumps(document))["ARN"]
    before = secret_state(arn)

    (line,) = preview(RotateSecret(), RotateSecret.Input(secret_id="db/inference"), action_ctx)

    assert line.startswith(
        "put a new value whose JSON 'password' field is a new random 40-character string "
        f"(2 other field(s) kept) in secret {arn} as AWSCURRENT"
    )
    assert OLD not in line and OLD not in caplog.text
    assert secret_state(arn) == before


def test_describe_rotate_secret_through_its_lambda_then_nothing_after_apply(
    mocked_aws: None, action_ctx: ActionContext, rotation_lambda: Callable[[str], str], wire: Wire
) -> None:
    arn = rotation_lambda("db/lambda-rotated")
    params = RotateSecret.Input(secret_id=arn)
    action = RotateSecret()
    before = secret_state(arn)

    (line,) = preview(action, params, action_ctx)

    assert line.startswith(f"rotate secret {arn} now through its rotation Lambda ")
    assert "rotate-db" in line and "shows only when it runs" in line
    assert f"version {current_version(arn)} becomes AWSPREVIOUS" in line
    assert secret_state(arn) == before
    assert wire.count("secretsmanager:GetSecretValue") == 0  # the Lambda handles the value

    action.run(params, action_ctx)
    assert preview(action, params, action_ctx) == []


@pytest.mark.parametrize("shape", ["json-without-password", "binary", "deleted"])
def test_describe_rotate_secret_raises_what_apply_would_raise(
    mocked_aws: None, action_ctx: ActionContext, shape: str
) -> None:
    if shape == "binary":
        sm_client().create_secret(Name="s", SecretBinary=b"\x00\x01binary")
    else:
        sm_client().create_secret(Name="s", SecretString=json.dumps({"api_key": OLD}))
    if shape == "deleted":
        sm_client().delete_secret(SecretId="s", RecoveryWindowInDays=7)
    before = secret_state("s") if shape != "deleted" else None
    params = RotateSecret.Input(secret_id="s")

    with pytest.raises(SecretRotationRefused) as previewed:
        preview(RotateSecret(), params, action_ctx)
    with pytest.raises(SecretRotationRefused) as applied:
        RotateSecret().run(params, action_ctx)

    assert str(previewed.value) == str(applied.value) and OLD not in str(previewed.value)
    if before is not None:
        assert secret_state("s") == before


LIVE_RUNBOOK = """apiVersion: clampdown/v1
kind: Runbook
metadata: {name: live-kms-secrets, title: Live preview}
steps:
  - {id: rotate_key, uses: aws.kms.rotate_key, with: {key_id: alias/model-weights}}
  - {id: disable_key, uses: aws.kms.rotate_key, with: {key_id: alias/old, disable: true}}
  - {id: rotate_secret, uses: aws.secrets.rotate_secret, with: {secret_id: model/api-token}}
"""


def test_plan_live_previews_both_actions_against_the_moto_server(
    aws_endpoint: str, write_runbook: Callable[..., Any]
) -> None:
    from typer.testing import CliRunner

    from clampdown.app.cli import app

    key = new_key(alias="alias/model-weights")
    old = new_key(alias="alias/old")
    kms_client().disable_key(KeyId=old["KeyId"])
    arn = sm_client().create_secret(Name="model/api-token", SecretString=OLD)["ARN"]
    kms_before, secret_before = kms_state(key["KeyId"]), secret_state(arn)

    result = CliRunner().invoke(
        app, ["plan", str(write_runbook(LIVE_RUNBOOK)), "--live", "--format", "json"]
    )

    assert result.exit_code == 0, result.output
    # stdout only: the runbook linter's warnings (no approval gate) go to stderr
    steps = {s["id"]: s for stage in json.loads(result.stdout)["stages"] for s in stage}
    assert [c.split(" now")[0] for c in steps["rotate_key"]["changes"]] == [
        f"rotate the key material of KMS key {key['Arn']}",
        f"turn on automatic rotation of KMS key {key['Arn']} every 365 days",
    ]
    assert steps["disable_key"]["changes"] == []  # already disabled
    assert steps["rotate_secret"]["changes"] == [
        f"put a new random 40-character value in secret {arn} as AWSCURRENT; "
        f"version {current_version(arn)} becomes AWSPREVIOUS"
    ]
    assert OLD not in result.output
    assert kms_state(key["KeyId"]) == kms_before and secret_state(arn) == secret_before
