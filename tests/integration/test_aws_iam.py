"""aws.iam.revoke_credentials and aws.iam.rotate_access_key on moto (in-process and server).

Every test checks AWS end states, not just outputs. Faults: a throttled first call
(injected at botocore's ``before-send``, inside the standard retry loop), a real
AccessDenied from moto's IAM policy evaluation, an injected AccessDenied on
Secrets Manager, and an invalid ARN.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from pydantic import ValidationError

from clampdown.core.actions import ActionContext
from clampdown.core.settings import settings
from clampdown_aws import base
from clampdown_aws.base import AwsAccessDenied, AwsActionError
from clampdown_aws.iam import (
    BLOCK_SID,
    REVOKE_POLICY,
    RevokeCredentials,
    RotateAccessKey,
    block_assume_statement,
    quarantine_document,
)
from tests.integration.shared_models import shared_service_models  # noqa: F401 - autouse

ACCOUNT = "123456789012"
TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "ec2.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ],
}
APP_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}],
}


@pytest.fixture(params=["in_process", "moto_server"])
def aws(request: pytest.FixtureRequest) -> str:
    """Run the test against moto in-process and against the moto HTTP server."""
    request.getfixturevalue("mocked_aws" if request.param == "in_process" else "aws_endpoint")
    return request.param


# Error paths run in-process only (they do not depend on the transport); the main flows,
# faults and cross-account run against both.
IN_PROCESS_ONLY = pytest.mark.parametrize("aws", ["in_process"], indirect=True)


@pytest.fixture
def iam(aws: str) -> Any:
    return boto3.client("iam", region_name="us-east-1")


@pytest.fixture
def sm(aws: str) -> Any:
    return boto3.client("secretsmanager", region_name="us-east-1")


def new_ctx(run_id: str = "testrun0001", **kw: Any) -> ActionContext:
    return ActionContext(
        run_id=run_id,
        step_id="step",
        runbook="test",
        home=settings().paths,
        region="us-east-1",
        **kw,
    )


def rollback(action: Any, ctx: ActionContext, run_ctx: ActionContext) -> None:
    for record in reversed(run_ctx.undo):
        action.rollback(record, ctx)


def key_statuses(iam: Any, user: str) -> dict[str, str]:
    keys = iam.list_access_keys(UserName=user)["AccessKeyMetadata"]
    return {k["AccessKeyId"]: k["Status"] for k in keys}


def has_login_profile(iam: Any, user: str) -> bool:
    try:
        iam.get_login_profile(UserName=user)
    except iam.exceptions.NoSuchEntityException:
        return False
    return True


def user_policies(iam: Any, user: str) -> dict[str, Any]:
    names = iam.list_user_policies(UserName=user)["PolicyNames"]
    return {n: iam.get_user_policy(UserName=user, PolicyName=n)["PolicyDocument"] for n in names}


def role_policies(iam: Any, role: str) -> dict[str, Any]:
    names = iam.list_role_policies(RoleName=role)["PolicyNames"]
    return {n: iam.get_role_policy(RoleName=role, PolicyName=n)["PolicyDocument"] for n in names}


def trust_of(iam: Any, role: str) -> dict[str, Any]:
    return iam.get_role(RoleName=role)["Role"]["AssumeRolePolicyDocument"]


def seed_user(iam: Any, name: str = "alice", path: str = "/ml/") -> tuple[str, str, str]:
    """A user with an active and an inactive key, a console password and an app policy."""
    arn = iam.create_user(UserName=name, Path=path)["User"]["Arn"]
    active = iam.create_access_key(UserName=name)["AccessKey"]["AccessKeyId"]
    inactive = iam.create_access_key(UserName=name)["AccessKey"]["AccessKeyId"]
    iam.update_access_key(UserName=name, AccessKeyId=inactive, Status="Inactive")
    iam.create_login_profile(UserName=name, Password="Old-Passw0rd!", PasswordResetRequired=False)
    iam.put_user_policy(UserName=name, PolicyName="app", PolicyDocument=json.dumps(APP_POLICY))
    return arn, active, inactive


def seed_role(iam: Any, name: str = "trainer") -> str:
    arn = iam.create_role(RoleName=name, Path="/svc/", AssumeRolePolicyDocument=json.dumps(TRUST))
    iam.put_role_policy(RoleName=name, PolicyName="app", PolicyDocument=json.dumps(APP_POLICY))
    return arn["Role"]["Arn"]


class _Raw:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_: Any):
        yield self.body


def inject(
    monkeypatch: pytest.MonkeyPatch,
    service: str,
    operation: str,
    status: int,
    body: str,
    times: int = 1,
) -> list[str]:
    """Answer the first ``times`` sends of one operation with an error, on every client the
    action makes through ``Aws.client`` (so its retry configuration is the one in use).

    The answer replaces the whole ``before-send`` emit of that client: in-process moto
    answers from a ``before-send`` handler too, and botocore calls every handler, so a
    plain extra handler would let moto apply the change behind the injected error.
    """
    calls: list[str] = []
    original = base.Aws.client

    def client(self: base.Aws, name: str) -> Any:
        made = original(self, name)
        event = f"before-send.{made.meta.service_model.service_id.hyphenize()}.{operation}"
        emitter = made.meta.events
        emit = emitter.emit

        def emit_with_fault(event_name: str, **kwargs: Any) -> Any:
            if event_name == event:
                calls.append(operation)
                if len(calls) <= times:
                    raw = _Raw(body.encode())
                    response = AWSResponse(
                        kwargs["request"].url, status, {"x-amzn-requestid": "r1"}, raw
                    )
                    return [(None, response)]
            return emit(event_name, **kwargs)

        emitter.emit = emit_with_fault
        return made

    monkeypatch.setattr(base.Aws, "client", client)
    return calls


def spy(monkeypatch: pytest.MonkeyPatch, service: str, operation: str) -> list[dict[str, Any]]:
    """The parameters of every call of one operation the action makes."""
    seen: list[dict[str, Any]] = []
    original = base.Aws.client

    def client(self: base.Aws, name: str) -> Any:
        made = original(self, name)
        if name == service:
            made.meta.events.register(
                f"provide-client-params.{made.meta.service_model.service_id.hyphenize()}.{operation}",
                lambda params, **_: seen.append(dict(params)),
            )
        return made

    monkeypatch.setattr(base.Aws, "client", client)
    return seen


def iam_error(code: str, message: str) -> str:
    return (
        '<ErrorResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/"><Error><Type>Sender'
        f"</Type><Code>{code}</Code><Message>{message}</Message></Error>"
        "<RequestId>r1</RequestId></ErrorResponse>"
    )


# --- revoke_credentials: users ---------------------------------------------------------------


def test_revoke_user_end_state_second_run_and_rollback(iam: Any, monkeypatch: pytest.MonkeyPatch):
    arn, active, inactive = seed_user(iam)
    created_profiles = spy(monkeypatch, "iam", "CreateLoginProfile")
    action, ctx = RevokeCredentials(), new_ctx()

    out = action.run(RevokeCredentials.Input(principal_arn=arn), ctx)

    assert out.principal_type == "user" and out.changed is True
    assert out.deactivated_keys == [active]  # the already inactive key is not listed
    assert out.login_profile_deleted is True
    assert out.policies_attached == ["clampdown-quarantine"]
    assert out.trust_policy_changed is False and out.sessions_revoked_before is None
    assert key_statuses(iam, "alice") == {active: "Inactive", inactive: "Inactive"}
    assert not has_login_profile(iam, "alice")
    assert user_policies(iam, "alice") == {
        "app": APP_POLICY,
        "clampdown-quarantine": quarantine_document(),
    }
    assert [r["op"] for r in ctx.undo] == [
        "delete_user_policy",
        "activate_access_key",
        "recreate_login_profile",
    ]
    assert "password cannot be restored" in ctx.undo[2]["description"].replace(
        "old password", "password"
    )

    # Second run: nothing to do, nothing recorded, nothing changed.
    again = new_ctx()
    out2 = action.run(RevokeCredentials.Input(principal_arn=arn), again)
    assert out2.model_dump() == {
        "principal_type": "user",
        "deactivated_keys": [],
        "login_profile_deleted": False,
        "policies_attached": [],
        "trust_policy_changed": False,
        "sessions_revoked_before": None,
        "changed": False,
    }
    assert again.undo == []
    assert key_statuses(iam, "alice") == {active: "Inactive", inactive: "Inactive"}

    # Rollback (twice: undo is idempotent) restores the start state.
    for _ in range(2):
        rollback(action, new_ctx(), ctx)
        assert key_statuses(iam, "alice") == {active: "Active", inactive: "Inactive"}
        assert user_policies(iam, "alice") == {"app": APP_POLICY}
        assert has_login_profile(iam, "alice")
    # moto 5.2.5 ignores PasswordResetRequired on CreateLoginProfile: check what was sent.
    assert created_profiles[0]["PasswordResetRequired"] is True
    assert (
        len(created_profiles[0]["Password"]) == 128
        and created_profiles[0]["Password"] != "Old-Passw0rd!"
    )


@IN_PROCESS_ONLY
def test_recreated_password_never_reaches_logs_or_undo(
    iam: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
):
    from clampdown_aws.iam import revoke as revoke_module

    arn, _, _ = seed_user(iam)
    marker = "Zq9!" + "x" * 60 + "MARKER-PASSWORD"
    monkeypatch.setattr(revoke_module, "random_password", lambda: marker)
    caplog.set_level(logging.DEBUG)
    action, ctx = RevokeCredentials(), new_ctx()
    action.run(RevokeCredentials.Input(principal_arn=arn), ctx)
    rollback(action, new_ctx(), ctx)
    assert has_login_profile(iam, "alice")
    assert "CreateLoginProfile" in caplog.text  # botocore debug logging was on
    assert marker not in caplog.text and marker not in json.dumps(ctx.undo)
    assert "Old-Passw0rd!" not in caplog.text


@IN_PROCESS_ONLY
def test_revoke_user_replaces_and_restores_a_different_quarantine_policy(iam: Any):
    arn, _, _ = seed_user(iam)
    iam.put_user_policy(UserName="alice", PolicyName="hold", PolicyDocument=json.dumps(APP_POLICY))
    action, ctx = RevokeCredentials(), new_ctx()
    out = action.run(RevokeCredentials.Input(principal_arn=arn, quarantine_policy_name="hold"), ctx)
    assert out.policies_attached == ["hold"]
    assert user_policies(iam, "alice")["hold"] == quarantine_document()
    assert (
        ctx.undo[0]["op"] == "restore_user_policy"
        and ctx.undo[0]["previous_document"] == APP_POLICY
    )
    rollback(action, new_ctx(), ctx)
    assert user_policies(iam, "alice") == {"app": APP_POLICY, "hold": APP_POLICY}


@IN_PROCESS_ONLY
def test_revoke_user_without_keys_or_password_only_quarantines(iam: Any):
    arn = iam.create_user(UserName="bob")["User"]["Arn"]
    ctx = new_ctx()
    out = RevokeCredentials().run(
        RevokeCredentials.Input(principal_arn=arn, block_assume=True), ctx
    )
    assert (out.deactivated_keys, out.login_profile_deleted, out.trust_policy_changed) == (
        [],
        False,
        False,
    )
    assert out.policies_attached == ["clampdown-quarantine"] and len(ctx.undo) == 1


# --- revoke_credentials: roles ---------------------------------------------------------------


def test_revoke_role_blocks_assume_revokes_sessions_and_rolls_back(iam: Any):
    arn = seed_role(iam)
    action, ctx = RevokeCredentials(), new_ctx()

    out = action.run(RevokeCredentials.Input(principal_arn=arn, block_assume=True), ctx)

    assert out.principal_type == "role" and out.changed is True and out.trust_policy_changed is True
    assert out.policies_attached == [REVOKE_POLICY] and out.deactivated_keys == []
    policy = role_policies(iam, "trainer")[REVOKE_POLICY]
    (statement,) = policy["Statement"]
    assert (
        statement["Effect"] == "Deny"
        and statement["Action"] == "*"
        and statement["Resource"] == "*"
    )
    assert statement["Condition"] == {
        "DateLessThan": {"aws:TokenIssueTime": out.sessions_revoked_before}
    }
    assert out.sessions_revoked_before.endswith("Z") and "T" in out.sessions_revoked_before
    trust = trust_of(iam, "trainer")
    assert trust["Statement"][0] == TRUST["Statement"][0]
    assert trust["Statement"][1] == {
        "Sid": BLOCK_SID,
        "Effect": "Deny",
        "Principal": "*",
        "Action": ["sts:AssumeRole", "sts:AssumeRoleWithSAML", "sts:AssumeRoleWithWebIdentity"],
    }
    assert [r["op"] for r in ctx.undo] == ["restore_trust_policy", "delete_role_policy"]
    assert ctx.undo[0]["previous_document"] == TRUST

    # Second run: the cutoff moves forward (sessions issued since are revoked too), but
    # nothing else changes and no undo is recorded.
    again = new_ctx()
    out2 = action.run(RevokeCredentials.Input(principal_arn=arn, block_assume=True), again)
    assert again.undo == [] and out2.changed is False
    assert (out2.policies_attached, out2.trust_policy_changed) == ([], False)
    assert out2.sessions_revoked_before >= out.sessions_revoked_before
    assert trust_of(iam, "trainer") == trust
    assert set(role_policies(iam, "trainer")) == {"app", REVOKE_POLICY}

    for _ in range(2):
        rollback(action, new_ctx(), ctx)
        assert trust_of(iam, "trainer") == TRUST
        assert role_policies(iam, "trainer") == {"app": APP_POLICY}


@IN_PROCESS_ONLY
def test_revoke_role_without_block_assume_leaves_trust_policy(iam: Any):
    arn = seed_role(iam)
    ctx = new_ctx()
    out = RevokeCredentials().run(RevokeCredentials.Input(principal_arn=arn), ctx)
    assert out.trust_policy_changed is False and trust_of(iam, "trainer") == TRUST
    assert [r["op"] for r in ctx.undo] == ["delete_role_policy"]


@IN_PROCESS_ONLY
def test_revoke_role_restores_a_foreign_policy_of_the_same_name(iam: Any):
    arn = seed_role(iam)
    iam.put_role_policy(
        RoleName="trainer", PolicyName=REVOKE_POLICY, PolicyDocument=json.dumps(APP_POLICY)
    )
    action, ctx = RevokeCredentials(), new_ctx()
    out = action.run(RevokeCredentials.Input(principal_arn=arn), ctx)
    assert out.policies_attached == [REVOKE_POLICY]
    assert ctx.undo == [
        {
            "description": ctx.undo[0]["description"],
            "op": "restore_role_policy",
            "role_name": "trainer",
            "policy_name": REVOKE_POLICY,
            "previous_document": APP_POLICY,
        }
    ]
    rollback(action, new_ctx(), ctx)
    assert role_policies(iam, "trainer") == {"app": APP_POLICY, REVOKE_POLICY: APP_POLICY}


@IN_PROCESS_ONLY
def test_trust_policy_rollback_keeps_edits_made_after_the_block(iam: Any):
    arn = seed_role(iam)
    action, ctx = RevokeCredentials(), new_ctx()
    action.run(RevokeCredentials.Input(principal_arn=arn, block_assume=True), ctx)
    # During the incident someone also drops the EC2 trust and trusts a break-glass role.
    edited = trust_of(iam, "trainer")
    edited["Statement"][0] = {
        "Effect": "Allow",
        "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:role/breakglass"},
        "Action": "sts:AssumeRole",
    }
    iam.update_assume_role_policy(RoleName="trainer", PolicyDocument=json.dumps(edited))
    rollback(action, new_ctx(), ctx)
    assert trust_of(iam, "trainer")["Statement"] == [edited["Statement"][0]]


# --- revoke_credentials: errors --------------------------------------------------------------


@pytest.mark.parametrize(
    ("arn", "message"),
    [
        ("alice", "is not an IAM user or role ARN"),
        ("arn:aws:iam::1234:user/alice", "is not an IAM user or role ARN"),
        ("arn:aws:iam::123456789012:group/admins", "is not an IAM user or role ARN"),
        ("arn:aws:iam::123456789012:user/", "is not an IAM user or role ARN"),
        (
            "arn:aws:sts::123456789012:assumed-role/trainer/i-0abc",
            "pass the role's ARN instead: arn:aws:iam::123456789012:role/trainer",
        ),
        ("arn:aws:iam::123456789012:root", "is an account root user"),
    ],
)
def test_invalid_principal_arn_is_rejected_with_a_clear_message(arn: str, message: str):
    with pytest.raises(ValidationError, match="principal_arn") as err:
        RevokeCredentials.Input(principal_arn=arn)
    assert message in str(err.value)


@IN_PROCESS_ONLY
def test_unknown_principal_and_wrong_account_are_clear_errors(iam: Any):
    iam.create_user(UserName="alice")
    with pytest.raises(AwsActionError, match="no IAM user named 'ghost'"):
        RevokeCredentials().run(
            RevokeCredentials.Input(principal_arn=f"arn:aws:iam::{ACCOUNT}:user/ghost"), new_ctx()
        )
    ctx = new_ctx()
    with pytest.raises(AwsActionError) as err:
        RevokeCredentials().run(
            RevokeCredentials.Input(principal_arn="arn:aws:iam::111111111111:user/alice"), ctx
        )
    assert "is in account 111111111111" in str(
        err.value
    ) and f"credentials are for account {ACCOUNT}" in str(err.value)
    assert "`account:`" in str(err.value)
    with pytest.raises(AwsActionError, match="check the ARN"):
        RevokeCredentials().run(
            RevokeCredentials.Input(principal_arn=f"arn:aws:iam::{ACCOUNT}:user/other/alice"), ctx
        )
    linked = iam.create_service_linked_role(AWSServiceName="elasticbeanstalk.amazonaws.com")["Role"]
    with pytest.raises(AwsActionError, match="is a service-linked role"):
        RevokeCredentials().run(RevokeCredentials.Input(principal_arn=linked["Arn"]), ctx)
    assert ctx.undo == [] and user_policies(iam, "alice") == {}
    assert role_policies(iam, linked["RoleName"]) == {}


def test_cross_account_step_revokes_in_the_target_account(aws: str):
    """`account:` on the step: the action works on the assumed role's account."""
    target = "111111111111"
    creds = boto3.client("sts", region_name="us-east-1").assume_role(
        RoleArn=f"arn:aws:iam::{target}:role/seed", RoleSessionName="seed"
    )["Credentials"]
    remote = boto3.client(
        "iam",
        region_name="us-east-1",
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
    )
    arn = remote.create_user(UserName="mallory")["User"]["Arn"]
    key = remote.create_access_key(UserName="mallory")["AccessKey"]["AccessKeyId"]
    ctx = new_ctx(run_id=f"xacct-{aws}", account=f"arn:aws:iam::{target}:role/clampdown-responder")
    out = RevokeCredentials().run(RevokeCredentials.Input(principal_arn=arn), ctx)
    assert out.deactivated_keys == [key]
    assert key_statuses(remote, "mallory") == {key: "Inactive"}
    assert "mallory" not in [u["UserName"] for u in boto3.client("iam").list_users()["Users"]]


def test_access_denied_names_the_iam_action_and_principal(
    iam: Any, monkeypatch: pytest.MonkeyPatch
):
    """A real AccessDenied from moto's IAM policy evaluation (engine lacks UpdateAccessKey)."""
    from moto.core.authorization import enable_iam_authentication

    arn, active, _ = seed_user(iam)
    iam.create_user(UserName="responder")
    iam.put_user_policy(
        UserName="responder",
        PolicyName="almost",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {"Effect": "Allow", "Action": "*", "Resource": "*"},
                    {"Effect": "Deny", "Action": "iam:UpdateAccessKey", "Resource": "*"},
                ],
            }
        ),
    )
    key = iam.create_access_key(UserName="responder")["AccessKey"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_SECURITY_TOKEN", raising=False)
    ctx = new_ctx()
    with enable_iam_authentication(), pytest.raises(AwsAccessDenied) as err:
        RevokeCredentials().run(RevokeCredentials.Input(principal_arn=arn), ctx)
    message = str(err.value)
    assert "iam:UpdateAccessKey" in message
    assert f"arn:aws:iam::{ACCOUNT}:user/responder" in message
    assert "clampdown iam-policy" in message
    # What did happen before the denial is recorded, so rollback can still undo it.
    assert [r["op"] for r in ctx.undo] == ["delete_user_policy"]
    assert key_statuses(iam, "alice")[active] == "Active"


def test_throttled_first_call_is_retried(
    iam: Any, monkeypatch: pytest.MonkeyPatch, no_backoff: None
):
    arn, active, _ = seed_user(iam)
    calls = inject(
        monkeypatch, "iam", "ListAccessKeys", 400, iam_error("Throttling", "Rate exceeded")
    )
    out = RevokeCredentials().run(RevokeCredentials.Input(principal_arn=arn), new_ctx())
    assert calls == ["ListAccessKeys", "ListAccessKeys"]  # throttled once, retried once
    assert out.deactivated_keys == [active]
    assert key_statuses(iam, "alice")[active] == "Inactive"


@IN_PROCESS_ONLY
def test_stubbed_access_denied_message_with_aws_wording(iam: Any, monkeypatch: pytest.MonkeyPatch):
    arn, _, _ = seed_user(iam)
    who = f"arn:aws:sts::{ACCOUNT}:assumed-role/clampdown-responder/clampdown-run1"
    text = (
        f"User: {who} is not authorized to perform: iam:DeleteLoginProfile on resource: user alice"
    )
    inject(monkeypatch, "iam", "DeleteLoginProfile", 403, iam_error("AccessDenied", text), times=99)
    with pytest.raises(AwsAccessDenied) as err:
        RevokeCredentials().run(RevokeCredentials.Input(principal_arn=arn), new_ctx())
    assert f"{who} may not call iam:DeleteLoginProfile" in str(err.value)
    assert has_login_profile(iam, "alice")


# --- rotate_access_key -----------------------------------------------------------------------


def secret_value(sm: Any, secret_id: str, stage: str = "AWSCURRENT") -> dict[str, str]:
    # By stage, always: moto 5.2.5's GetSecretValue without VersionStage answers with the
    # version that was current before UpdateSecretVersionStage moved AWSCURRENT.
    return json.loads(sm.get_secret_value(SecretId=secret_id, VersionStage=stage)["SecretString"])


def works(secret: dict[str, str]) -> str:
    """The ARN the stored key authenticates as (moto resolves IAM user keys)."""
    sts = boto3.client(
        "sts",
        region_name="us-east-1",
        aws_access_key_id=secret["AccessKeyId"],
        aws_secret_access_key=secret["SecretAccessKey"],
    )
    return sts.get_caller_identity()["Arn"]


def test_rotate_creates_stores_deactivates_and_never_leaks(
    iam: Any, sm: Any, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG)
    user_arn = iam.create_user(UserName="ci-deployer", Path="/svc/")["User"]["Arn"]
    old = iam.create_access_key(UserName="ci-deployer")["AccessKey"]["AccessKeyId"]
    action, ctx = RotateAccessKey(), new_ctx()
    params = RotateAccessKey.Input(user_name=user_arn, secret_id="ci/deployer/aws")

    out = action.run(params, ctx)

    stored = secret_value(sm, "ci/deployer/aws")
    assert set(stored) == {"AccessKeyId", "SecretAccessKey"}
    assert out.new_access_key_id == stored["AccessKeyId"] != old
    assert out.secret_arn == sm.describe_secret(SecretId="ci/deployer/aws")["ARN"]
    assert out.deactivated_keys == [old] and out.deleted_keys == [] and out.changed is True
    assert key_statuses(iam, "ci-deployer") == {old: "Inactive", out.new_access_key_id: "Active"}
    assert works(stored) == user_arn
    secret = stored["SecretAccessKey"]
    assert "CreateAccessKey" in caplog.text  # botocore debug logging was captured
    for text in (out.model_dump_json(), json.dumps(ctx.undo), caplog.text):
        assert secret not in text
    assert [r["op"] for r in ctx.undo] == ["deactivate_access_key", "activate_access_key"]

    # Same rotation again (a retry of the step): nothing changes.
    again = new_ctx()
    out2 = action.run(params, again)
    assert again.undo == [] and out2.changed is False and out2.deactivated_keys == []
    assert out2.new_access_key_id == out.new_access_key_id
    assert len(sm.list_secret_version_ids(SecretId="ci/deployer/aws")["Versions"]) == 1
    assert key_statuses(iam, "ci-deployer") == {old: "Inactive", out.new_access_key_id: "Active"}
    assert secret not in caplog.text

    # Rollback: old key back, new key deactivated (not deleted), secret kept.
    for _ in range(2):
        rollback(action, new_ctx(), ctx)
        assert key_statuses(iam, "ci-deployer") == {
            old: "Active",
            out.new_access_key_id: "Inactive",
        }
        assert secret_value(sm, "ci/deployer/aws")["AccessKeyId"] == out.new_access_key_id

    # Re-running the rolled-back rotation is refused with what to do instead.
    with pytest.raises(AwsActionError, match="pass a new rotation_token"):
        action.run(params, new_ctx())


def test_rotate_into_existing_secret_and_rollback_restores_its_current_version(iam: Any, sm: Any):
    iam.create_user(UserName="svc")
    first = iam.create_access_key(UserName="svc")["AccessKey"]
    old_value = {"AccessKeyId": first["AccessKeyId"], "SecretAccessKey": first["SecretAccessKey"]}
    old_version = sm.create_secret(Name="svc-key", SecretString=json.dumps(old_value))["VersionId"]
    action, ctx = RotateAccessKey(), new_ctx()

    out = action.run(
        RotateAccessKey.Input(
            user_name="svc", secret_id="svc-key", old_access_key_id=first["AccessKeyId"]
        ),
        ctx,
    )

    assert secret_value(sm, "svc-key")["AccessKeyId"] == out.new_access_key_id
    assert secret_value(sm, "svc-key", "AWSPREVIOUS") == old_value
    assert key_statuses(iam, "svc") == {
        first["AccessKeyId"]: "Inactive",
        out.new_access_key_id: "Active",
    }
    assert [r["op"] for r in ctx.undo] == [
        "deactivate_access_key",
        "restore_secret_current",
        "activate_access_key",
    ]
    assert ctx.undo[1]["previous_version_id"] == old_version

    # A later run (another run id) asked to retire the same old key: already done.
    later = new_ctx(run_id="testrun0002")
    out2 = action.run(
        RotateAccessKey.Input(
            user_name="svc", secret_id="svc-key", old_access_key_id=first["AccessKeyId"]
        ),
        later,
    )
    assert (
        later.undo == []
        and out2.changed is False
        and out2.new_access_key_id == out.new_access_key_id
    )

    for _ in range(2):
        rollback(action, new_ctx(), ctx)
        assert secret_value(sm, "svc-key") == old_value
        assert key_statuses(iam, "svc") == {
            first["AccessKeyId"]: "Active",
            out.new_access_key_id: "Inactive",
        }
        versions = sm.list_secret_version_ids(SecretId="svc-key")["Versions"]
        assert len(versions) == 2  # rollback never deletes secret versions


def test_rotate_refuses_when_user_has_two_keys(iam: Any, sm: Any):
    iam.create_user(UserName="svc")
    active = iam.create_access_key(UserName="svc")["AccessKey"]["AccessKeyId"]
    spare = iam.create_access_key(UserName="svc")["AccessKey"]["AccessKeyId"]
    iam.update_access_key(UserName="svc", AccessKeyId=spare, Status="Inactive")
    ctx = new_ctx()
    with pytest.raises(AwsActionError) as err:
        RotateAccessKey().run(RotateAccessKey.Input(user_name="svc", secret_id="s"), ctx)
    message = str(err.value)
    assert "already has 2 access keys" in message and f"{spare} Inactive" in message
    assert f"aws iam delete-access-key --user-name svc --access-key-id {spare}" in message
    assert "delete_inactive_key: true" in message
    assert key_statuses(iam, "svc") == {active: "Active", spare: "Inactive"} and ctx.undo == []
    assert sm.list_secrets()["SecretList"] == []

    out = RotateAccessKey().run(
        RotateAccessKey.Input(user_name="svc", secret_id="s", delete_inactive_key=True), ctx
    )
    assert out.deleted_keys == [spare] and out.deactivated_keys == [active]
    assert key_statuses(iam, "svc") == {active: "Inactive", out.new_access_key_id: "Active"}


@IN_PROCESS_ONLY
def test_rotate_refuses_two_active_keys_even_with_delete_inactive_key(iam: Any):
    iam.create_user(UserName="svc")
    keys = [iam.create_access_key(UserName="svc")["AccessKey"]["AccessKeyId"] for _ in range(2)]
    with pytest.raises(AwsActionError, match="deactivate and delete a key you no longer need"):
        RotateAccessKey().run(
            RotateAccessKey.Input(user_name="svc", secret_id="s", delete_inactive_key=True),
            new_ctx(),
        )
    assert key_statuses(iam, "svc") == dict.fromkeys(keys, "Active")


@IN_PROCESS_ONLY
def test_rotate_will_not_overwrite_an_unrelated_secret(iam: Any, sm: Any):
    iam.create_user(UserName="svc")
    old = iam.create_access_key(UserName="svc")["AccessKey"]["AccessKeyId"]
    sm.create_secret(Name="db-password", SecretString="hunter2-not-json")
    with pytest.raises(AwsActionError, match="holds something other than an access key") as err:
        RotateAccessKey().run(
            RotateAccessKey.Input(user_name="svc", secret_id="db-password"), new_ctx()
        )
    assert "hunter2" not in str(err.value)
    assert key_statuses(iam, "svc") == {old: "Active"}
    assert sm.get_secret_value(SecretId="db-password")["SecretString"] == "hunter2-not-json"


@IN_PROCESS_ONLY
def test_rotate_deletes_the_new_key_when_it_cannot_be_stored(
    iam: Any, monkeypatch: pytest.MonkeyPatch
):
    """Secrets Manager denies CreateSecret (stubbed at before-send): no orphan key is left."""
    iam.create_user(UserName="svc")
    old = iam.create_access_key(UserName="svc")["AccessKey"]["AccessKeyId"]
    who = f"arn:aws:sts::{ACCOUNT}:assumed-role/clampdown-responder/clampdown-run1"
    body = json.dumps(
        {
            "__type": "AccessDeniedException",
            "message": f"User: {who} is not authorized to perform: secretsmanager:CreateSecret "
            "on resource: s because no identity-based policy allows it",
        }
    )
    inject(monkeypatch, "secretsmanager", "CreateSecret", 400, body, times=99)
    ctx = new_ctx()
    with pytest.raises(AwsAccessDenied, match=f"{who} may not call secretsmanager:CreateSecret"):
        RotateAccessKey().run(RotateAccessKey.Input(user_name="svc", secret_id="s"), ctx)
    assert key_statuses(iam, "svc") == {old: "Active"} and ctx.undo == []


def test_rotate_throttled_create_access_key_is_retried(
    iam: Any, sm: Any, monkeypatch: pytest.MonkeyPatch, no_backoff: None
):
    iam.create_user(UserName="svc")
    old = iam.create_access_key(UserName="svc")["AccessKey"]["AccessKeyId"]
    calls = inject(
        monkeypatch, "iam", "CreateAccessKey", 400, iam_error("Throttling", "Rate exceeded")
    )
    out = RotateAccessKey().run(RotateAccessKey.Input(user_name="svc", secret_id="s"), new_ctx())
    assert calls == ["CreateAccessKey", "CreateAccessKey"]
    assert key_statuses(iam, "svc") == {old: "Inactive", out.new_access_key_id: "Active"}
    assert secret_value(sm, "s")["AccessKeyId"] == out.new_access_key_id


def test_rotate_input_errors():
    with pytest.raises(ValidationError, match="access keys belong to IAM users"):
        RotateAccessKey.Input(user_name=f"arn:aws:iam::{ACCOUNT}:role/x", secret_id="s")
    with pytest.raises(ValidationError, match="is not an access key id"):
        RotateAccessKey.Input(user_name="svc", secret_id="s", old_access_key_id="not-a-key")
    with pytest.raises(ValidationError, match="is not an IAM user name or user ARN"):
        RotateAccessKey.Input(user_name="svc user", secret_id="s")
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        RotateAccessKey.Input(user_name="svc", secret_id="s", secret_access_key="x")


@IN_PROCESS_ONLY
def test_rotate_lookup_errors(iam: Any):
    with pytest.raises(AwsActionError, match="no IAM user named 'ghost'"):
        RotateAccessKey().run(RotateAccessKey.Input(user_name="ghost", secret_id="s"), new_ctx())
    iam.create_user(UserName="svc")
    with pytest.raises(AwsActionError, match="AKIAXXXXXXXXXXXXXXXX is not a key of user svc"):
        RotateAccessKey().run(
            RotateAccessKey.Input(
                user_name="svc", secret_id="s", old_access_key_id="AKIAXXXXXXXXXXXXXXXX"
            ),
            new_ctx(),
        )
    with pytest.raises(AwsActionError, match="give a secret name"):
        RotateAccessKey().run(
            RotateAccessKey.Input(
                user_name="svc",
                secret_id=f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:gone-AbCdEf",
            ),
            new_ctx(),
        )
    assert key_statuses(iam, "svc") == {}


def test_actions_declare_what_they_call():
    assert RevokeCredentials.destructive and RevokeCredentials.reversible
    assert RotateAccessKey.destructive and RotateAccessKey.reversible
    assert "iam:UpdateAssumeRolePolicy" in RevokeCredentials.iam_actions
    assert "iam:CreateLoginProfile" in RevokeCredentials.iam_actions  # rollback's call
    assert {"iam:CreateAccessKey", "secretsmanager:PutSecretValue"} <= set(
        RotateAccessKey.iam_actions
    )


# --- describe: what `clampdown plan --live` shows -------------------------------------------
# Through ``preview`` (what the planner calls): its clients refuse any mutating call, so a
# describe that tried to change something would fail these tests with MutatingCallRefused.


def plan_ctx() -> ActionContext:
    return new_ctx(run_id="plan")


def iam_state(iam: Any) -> dict[str, Any]:
    """Everything the two actions read or change in IAM."""
    users = {
        u["UserName"]: (
            key_statuses(iam, u["UserName"]),
            has_login_profile(iam, u["UserName"]),
            user_policies(iam, u["UserName"]),
        )
        for u in iam.list_users()["Users"]
    }
    roles = {
        r["RoleName"]: (trust_of(iam, r["RoleName"]), role_policies(iam, r["RoleName"]))
        for r in iam.list_roles()["Roles"]
    }
    return {"users": users, "roles": roles}


def sm_state(sm: Any) -> dict[str, Any]:
    return {
        s["Name"]: sm.describe_secret(SecretId=s["ARN"]).get("VersionIdsToStages")
        for s in sm.list_secrets()["SecretList"]
    }


LOGIN_LINE = (
    "delete the console login profile of user {user} (rollback cannot restore the password: "
    "it recreates the profile with a new one)"
)
DENY_OLDER = (
    "deny everything to sessions issued before the step runs (aws:TokenIssueTime; the exact "
    "cutoff is known only then)"
)


def test_describe_revoke_user_changes_nothing_and_is_empty_after_apply(iam: Any):
    arn, active, inactive = seed_user(iam)
    params = RevokeCredentials.Input(principal_arn=arn)
    before = iam_state(iam)

    changes = RevokeCredentials().preview(params, plan_ctx())

    assert changes == [
        "attach inline deny-all policy clampdown-quarantine to user alice",
        f"deactivate (not delete) access key {active} of user alice",
        LOGIN_LINE.format(user="alice"),
    ]
    assert inactive not in " ".join(changes)
    assert iam_state(iam) == before

    out = RevokeCredentials().run(params, new_ctx())
    assert out.deactivated_keys == [active] and out.login_profile_deleted  # as described
    after = iam_state(iam)
    assert after != before
    assert RevokeCredentials().preview(params, plan_ctx()) == []
    assert iam_state(iam) == after


@IN_PROCESS_ONLY
def test_describe_revoke_user_replacing_a_policy_and_without_keys_or_password(iam: Any):
    arn = iam.create_user(UserName="bob")["User"]["Arn"]
    iam.put_user_policy(UserName="bob", PolicyName="hold", PolicyDocument=json.dumps(APP_POLICY))
    params = RevokeCredentials.Input(principal_arn=arn, quarantine_policy_name="hold")
    before = iam_state(iam)
    assert RevokeCredentials().preview(params, plan_ctx()) == [
        "replace the document of inline policy hold of user bob with deny-all (the current "
        "document is kept for rollback)"
    ]
    assert iam_state(iam) == before
    RevokeCredentials().run(params, new_ctx())
    assert user_policies(iam, "bob")["hold"] == quarantine_document()
    assert RevokeCredentials().preview(params, plan_ctx()) == []


@IN_PROCESS_ONLY
def test_describe_revoke_role_block_and_sessions_then_empty(iam: Any):
    arn = seed_role(iam)
    params = RevokeCredentials.Input(principal_arn=arn, block_assume=True)
    before = iam_state(iam)

    assert RevokeCredentials().preview(params, plan_ctx()) == [
        f"add statement {BLOCK_SID} (deny sts:AssumeRole* to every principal) in the trust "
        "policy of role trainer (1 statement(s) kept)",
        f"attach inline policy {REVOKE_POLICY} to role trainer: {DENY_OLDER}",
    ]
    # Without block_assume only the session revocation would happen.
    assert RevokeCredentials().preview(RevokeCredentials.Input(principal_arn=arn), plan_ctx()) == [
        f"attach inline policy {REVOKE_POLICY} to role trainer: {DENY_OLDER}"
    ]
    assert iam_state(iam) == before

    RevokeCredentials().run(params, new_ctx())
    after = iam_state(iam)
    # Already contained: a new run would only move the cutoff forward, not a change.
    assert RevokeCredentials().preview(params, plan_ctx()) == []
    assert iam_state(iam) == after


@IN_PROCESS_ONLY
def test_describe_revoke_role_replaces_a_foreign_policy_and_an_edited_block(iam: Any):
    arn = seed_role(iam)
    stale = {**block_assume_statement(), "Action": "sts:AssumeRole"}  # edited by hand
    trust = {**TRUST, "Statement": [*TRUST["Statement"], stale]}
    iam.update_assume_role_policy(RoleName="trainer", PolicyDocument=json.dumps(trust))
    iam.put_role_policy(
        RoleName="trainer", PolicyName=REVOKE_POLICY, PolicyDocument=json.dumps(APP_POLICY)
    )
    params = RevokeCredentials.Input(principal_arn=arn, block_assume=True)
    before = iam_state(iam)
    assert RevokeCredentials().preview(params, plan_ctx()) == [
        f"replace statement {BLOCK_SID} (deny sts:AssumeRole* to every principal) in the trust "
        "policy of role trainer (1 statement(s) kept)",
        f"replace inline policy {REVOKE_POLICY} of role trainer, which clampdown did not write "
        f"(its document is kept for rollback), with clampdown's: {DENY_OLDER}",
    ]
    assert iam_state(iam) == before
    RevokeCredentials().run(params, new_ctx())
    assert trust_of(iam, "trainer")["Statement"][-1] == block_assume_statement()
    assert RevokeCredentials().preview(params, plan_ctx()) == []


@IN_PROCESS_ONLY
def test_describe_revoke_fails_like_apply_would(iam: Any):
    linked = iam.create_service_linked_role(AWSServiceName="elasticbeanstalk.amazonaws.com")["Role"]
    with pytest.raises(AwsActionError, match="is a service-linked role"):
        RevokeCredentials().preview(
            RevokeCredentials.Input(principal_arn=linked["Arn"]), plan_ctx()
        )
    with pytest.raises(AwsActionError, match="no IAM user named 'ghost'"):
        RevokeCredentials().preview(
            RevokeCredentials.Input(principal_arn=f"arn:aws:iam::{ACCOUNT}:user/ghost"),
            plan_ctx(),
        )


@IN_PROCESS_ONLY
def test_describe_access_denied_names_the_read_permission(
    iam: Any, monkeypatch: pytest.MonkeyPatch
):
    arn, _, _ = seed_user(iam)
    who = f"arn:aws:sts::{ACCOUNT}:assumed-role/planner/clampdown-plan"
    text = f"User: {who} is not authorized to perform: iam:GetLoginProfile on resource: alice"
    inject(monkeypatch, "iam", "GetLoginProfile", 403, iam_error("AccessDenied", text), times=99)
    with pytest.raises(AwsAccessDenied, match=f"{who} may not call iam:GetLoginProfile"):
        RevokeCredentials().preview(RevokeCredentials.Input(principal_arn=arn), plan_ctx())


def test_describe_rotate_changes_nothing_and_is_empty_after_apply(iam: Any, sm: Any):
    iam.create_user(UserName="svc")
    old = iam.create_access_key(UserName="svc")["AccessKey"]["AccessKeyId"]
    params = RotateAccessKey.Input(user_name="svc", secret_id="svc/aws", rotation_token="inc-7")
    before = (iam_state(iam), sm_state(sm))

    assert RotateAccessKey().preview(params, plan_ctx()) == [
        "create a new access key for user svc (its id is known only once created)",
        "create secret svc/aws holding the new key",
        f"deactivate (not delete) old access key {old} of user svc",
    ]
    assert (iam_state(iam), sm_state(sm)) == before

    out = RotateAccessKey().run(params, new_ctx())
    assert out.deactivated_keys == [old]
    after = (iam_state(iam), sm_state(sm))
    assert after != before
    assert RotateAccessKey().preview(params, plan_ctx()) == []  # the same rotation: done
    by_old_key = RotateAccessKey.Input(user_name="svc", secret_id="svc/aws", old_access_key_id=old)
    assert RotateAccessKey().preview(by_old_key, plan_ctx()) == []  # `old` retired already
    assert (iam_state(iam), sm_state(sm)) == after


@IN_PROCESS_ONLY
def test_describe_rotate_into_existing_secret_making_room_never_shows_secrets(
    iam: Any, sm: Any, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG)
    iam.create_user(UserName="svc")
    first = iam.create_access_key(UserName="svc")["AccessKey"]
    spare = iam.create_access_key(UserName="svc")["AccessKey"]["AccessKeyId"]
    iam.update_access_key(UserName="svc", AccessKeyId=spare, Status="Inactive")
    value = {"AccessKeyId": first["AccessKeyId"], "SecretAccessKey": first["SecretAccessKey"]}
    secret_arn = sm.create_secret(Name="svc-key", SecretString=json.dumps(value))["ARN"]
    params = RotateAccessKey.Input(user_name="svc", secret_id="svc-key", delete_inactive_key=True)
    before = (iam_state(iam), sm_state(sm))
    caplog.clear()

    changes = RotateAccessKey().preview(params, plan_ctx())

    assert changes == [
        f"delete inactive access key {spare} of user svc to make room for the new one "
        "(delete_inactive_key; cannot be undone)",
        "create a new access key for user svc (its id is known only once created)",
        f"store the new key as the current version of secret {secret_arn} (the version "
        f"holding key {first['AccessKeyId']} becomes AWSPREVIOUS)",
        f"deactivate (not delete) old access key {first['AccessKeyId']} of user svc",
    ]
    assert "GetSecretValue" in caplog.text  # botocore debug logging was captured
    assert first["SecretAccessKey"] not in json.dumps(changes) + caplog.text
    assert (iam_state(iam), sm_state(sm)) == before

    # What apply then does matches the description.
    out = RotateAccessKey().run(params, new_ctx())
    assert out.deleted_keys == [spare] and out.deactivated_keys == [first["AccessKeyId"]]


@IN_PROCESS_ONLY
def test_describe_rotate_fails_like_apply_would(iam: Any, sm: Any):
    iam.create_user(UserName="svc")
    keys = [iam.create_access_key(UserName="svc")["AccessKey"]["AccessKeyId"] for _ in range(2)]
    iam.update_access_key(UserName="svc", AccessKeyId=keys[1], Status="Inactive")
    full = RotateAccessKey.Input(user_name="svc", secret_id="s")
    with pytest.raises(AwsActionError, match="already has 2 access keys"):
        RotateAccessKey().preview(full, plan_ctx())

    # A rotation that ran and was rolled back is refused by both, with what to do instead.
    iam.delete_access_key(UserName="svc", AccessKeyId=keys[1])
    params = RotateAccessKey.Input(user_name="svc", secret_id="s", rotation_token="inc-8")
    action, ctx = RotateAccessKey(), new_ctx()
    action.run(params, ctx)
    rollback(action, new_ctx(), ctx)
    before = (iam_state(iam), sm_state(sm))
    with pytest.raises(AwsActionError, match="pass a new rotation_token"):
        RotateAccessKey().preview(params, plan_ctx())
    assert (iam_state(iam), sm_state(sm)) == before
