"""``aws.secrets.rotate_secret``: give a Secrets Manager secret a new value now.

* A secret with rotation turned on and a rotation Lambda: ``RotateSecret``;
  Secrets Manager runs the Lambda, which changes the credential in the protected
  system too (method ``lambda``). Managed secrets (``OwningService``, e.g. RDS
  master passwords) rotate the same way through their service (method ``managed``).
* Any other secret: a new random value from ``GetRandomPassword`` goes in with
  ``PutSecretValue`` and becomes ``AWSCURRENT``; the old one becomes
  ``AWSPREVIOUS`` (method ``put_secret_value``). If the current value is a JSON
  object, only its ``"password"`` field is replaced; every other field is kept.

The new version's id (``ClientRequestToken``) is derived from the run id, the
step id and the secret's ARN, so a second run of the same step finds its own
version and changes nothing, and Secrets Manager itself rejects a duplicate.

Secret values live only in local variables of :meth:`RotateSecret._put_new_value`,
:meth:`RotateSecret.describe` and ``_current_document``: they never reach a log, an
output, an undo record, a preview line or the ledger. botocore logs request and
response bodies at DEBUG; :mod:`clampdown_aws.base` blanks those that carry a
secret value.

``describe`` (``clampdown plan --live``) makes the same reads and checks as
``apply`` (DescribeSecret and, for ``put_secret_value``, GetSecretValue to check
the current value's shape; the value is looked at, never shown) and lists what
``apply`` would change. A secret ``apply`` refuses makes ``describe`` raise the
same error.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import Field

from clampdown.core.actions import ActionContext, ActionInput, ActionOutput, Intent
from clampdown_aws.base import Aws, AwsAction, AwsActionError, arn_resources, changing

PASSWORD_FIELD = "password"
_TOKEN_NAMESPACE = uuid.UUID("5f0c7f0e-3a52-4d3b-9c1e-8d2b6a1c4e70")


class SecretRotationRefused(AwsActionError):
    """The secret's shape or configuration leaves no safe way to rotate it here."""


class RotateSecret(AwsAction):
    """Rotate a Secrets Manager secret: its rotation Lambda, or a new random value."""

    name = "aws.secrets.rotate_secret"
    summary = "Rotate a Secrets Manager secret (rotation Lambda, or a new random value)"
    destructive = True
    reversible: ClassVar[bool] = True  # partly: see the undo record's description
    iam_actions = (
        "secretsmanager:DescribeSecret",
        "secretsmanager:GetSecretValue",
        "secretsmanager:GetRandomPassword",
        "secretsmanager:PutSecretValue",
        "secretsmanager:RotateSecret",
        # AWS checks it against the caller of RotateSecret, for the rotation function.
        "lambda:InvokeFunction",
        "secretsmanager:UpdateSecretVersionStage",
    )

    @classmethod
    def iam_resources(cls, with_: Mapping[str, Any]) -> dict[str, list[str]]:
        return arn_resources(cls.iam_actions, with_.get("secret_id"), ":secret:", "secretsmanager")

    class Input(ActionInput):
        secret_id: str = Field(min_length=1, description="secret name or ARN")
        length: int = Field(
            40, ge=16, le=4096, description="length of a generated value (put_secret_value)"
        )
        exclude_characters: str = Field(
            "", description="characters a generated value must not contain"
        )

    class Output(ActionOutput):
        secret_arn: str
        new_version_id: str | None = Field(description="the version this run created")
        method: Literal["lambda", "managed", "put_secret_value"]
        changed: bool

    def apply(self, params: Input, aws: Aws, ctx: ActionContext) -> Output:
        sm = aws.client("secretsmanager")
        target = _target(sm, params.secret_id, ctx)
        arn, method, token, previous = target.arn, target.method, target.token, target.previous
        if target.done:
            ctx.logger.info(
                "secret %s already has version %s from this run (now %s); not rotating again",
                arn,
                token,
                ",".join(target.stages[token]) or "no stage",
            )
            return self.Output(secret_arn=arn, new_version_id=token, method=method, changed=False)

        if method == "put_secret_value":
            created = self._put_new_value(sm, target, params, ctx)
            if not created:
                return self.Output(
                    secret_arn=arn, new_version_id=token, method=method, changed=False
                )
        else:
            with _declared(ctx, target):
                sm.rotate_secret(SecretId=arn, ClientRequestToken=token)
        ctx.logger.info("rotated secret %s (%s): new version %s", arn, method, token)
        if previous is None:
            ctx.logger.warning(
                "secret %s had no AWSCURRENT version before this run; rollback cannot "
                "restore an earlier value",
                arn,
            )
        return self.Output(secret_arn=arn, new_version_id=token, method=method, changed=True)

    def _put_new_value(self, sm: Any, target: _Target, params: Input, ctx: ActionContext) -> bool:
        """Generate and store the new value; False if this run's version already exists."""
        from botocore.exceptions import ClientError

        arn, previous, token = target.arn, target.previous, target.token
        document = _current_document(sm, arn, previous)
        password = sm.get_random_password(
            PasswordLength=params.length,
            ExcludeCharacters=params.exclude_characters,
            RequireEachIncludedType=True,
        )["RandomPassword"]
        if document is not None:
            document[PASSWORD_FIELD] = password
            new_value = json.dumps(document, ensure_ascii=False)
        else:
            new_value = password
        with _declared(ctx, target) as change:
            try:
                sm.put_secret_value(SecretId=arn, SecretString=new_value, ClientRequestToken=token)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "ResourceExistsException":
                    raise
                # This run's version exists but lost its stages (a later rotation superseded
                # it): nothing changed now.
                if change is not None:
                    change.not_made()
                return False
        return True

    def describe(self, params: Input, aws: Aws, ctx: ActionContext) -> list[str]:
        sm = aws.client("secretsmanager")
        target = _target(sm, params.secret_id, ctx)
        if target.done:
            return []
        # (AWS hides versions left without a stage: if a later rotation superseded this run's
        # version, the line below lists a change that apply would find already made.)
        arn, previous = target.arn, target.previous
        after = (
            f"version {previous} becomes AWSPREVIOUS"
            if previous is not None
            else "it has no AWSCURRENT version now, so rollback could not restore one"
        )
        if target.method == "lambda":
            return [
                f"rotate secret {arn} now through its rotation Lambda "
                f"{target.desc['RotationLambdaARN']} (RotateSecret), which also changes the "
                f"credential in the protected system; {after}. Whether the Lambda succeeds "
                "shows only when it runs"
            ]
        if target.method == "managed":
            return [
                f"rotate secret {arn} now through {target.desc['OwningService']}, which "
                f"manages it (RotateSecret), changing the credential there too; {after}"
            ]
        document = _current_document(sm, arn, previous)
        if document is None:
            what = f"a new random {params.length}-character value"
        else:
            kept = len(document) - 1
            what = (
                f"a new value whose JSON {PASSWORD_FIELD!r} field is a new random "
                f"{params.length}-character string ({kept} other field(s) kept)"
            )
        return [f"put {what} in secret {arn} as AWSCURRENT; {after}"]

    def undo(self, how: dict[str, Any], aws: Aws, ctx: ActionContext) -> None:
        """Move AWSCURRENT back; already at the previous version (the rotation never
        happened, or was put back already) is left as it is."""
        if how["op"] != "restore_current":
            raise AwsActionError(f"{self.name} cannot undo unknown operation {how['op']!r}")
        sm = aws.client("secretsmanager")
        arn, previous, new = how["secret_arn"], how["previous_version_id"], how["new_version_id"]
        stages = sm.describe_secret(SecretId=arn).get("VersionIdsToStages") or {}
        current = _current_version(stages)
        if current == previous:
            ctx.logger.info("AWSCURRENT of secret %s is already version %s", arn, previous)
            return
        if current != new:
            raise AwsActionError(
                f"AWSCURRENT of secret {arn} is version {current}, not version {new} that run "
                f"{ctx.run_id} created: the secret was rotated again since, and rollback does "
                "not overwrite a newer rotation. To restore anyway: aws secretsmanager "
                f"update-secret-version-stage --secret-id {arn} --version-stage AWSCURRENT "
                f"--move-to-version-id {previous} --remove-from-version-id {current}"
            )
        sm.update_secret_version_stage(
            SecretId=arn,
            VersionStage="AWSCURRENT",
            MoveToVersionId=previous,
            RemoveFromVersionId=new,
        )
        ctx.logger.info("moved AWSCURRENT of secret %s back to version %s", arn, previous)


# --- what needs doing (shared by apply and describe; read-only calls only) ----------------


@dataclass
class _Target:
    """A secret as this run's rotation finds it."""

    desc: dict[str, Any]
    arn: str
    method: Literal["lambda", "managed", "put_secret_value"]
    token: str  # the version this run creates
    stages: dict[str, list[str]]
    previous: str | None  # AWSCURRENT now

    @property
    def done(self) -> bool:
        """This run's version exists already (as far as DescribeSecret shows)."""
        return self.token in self.stages


def _declared(ctx: ActionContext, target: _Target) -> AbstractContextManager[Intent | None]:
    """Around the call that makes the new version: its undo is on record before it (a run
    killed right after the call still leaves rollback able to move AWSCURRENT back). A
    secret without a current version has nothing to go back to: no undo (None)."""
    if target.previous is None:
        return nullcontext()
    description, how = _undo_of(target)
    return changing(ctx, description, **how)


def _undo_of(target: _Target) -> tuple[str, dict[str, Any]]:
    """The undo of rotating ``target`` (which has a current version): description and how."""
    caveat = (
        " The rotation already changed the credential in the protected system; "
        "the old value works again only if that system still accepts it "
        "(e.g. the alternating-users rotation strategy)."
        if target.method != "put_secret_value"
        else " Whatever uses the secret must still accept the old value."
    )
    return (
        f"Move AWSCURRENT of secret {target.arn} back from version {target.token} (made by this "
        f"run) to version {target.previous}.{caveat}",
        {
            "op": "restore_current",
            "secret_arn": target.arn,
            "previous_version_id": target.previous,
            "new_version_id": target.token,
            "method": target.method,
        },
    )


def _target(sm: Any, secret_id: str, ctx: ActionContext) -> _Target:
    desc = sm.describe_secret(SecretId=secret_id)
    arn = desc["ARN"]
    if desc.get("DeletedDate"):
        raise SecretRotationRefused(
            f"secret {arn} is scheduled for deletion; restore it "
            "(secretsmanager:RestoreSecret) before rotating it, or let the deletion stand"
        )
    method = _method(desc)
    stages: dict[str, list[str]] = desc.get("VersionIdsToStages") or {}
    return _Target(
        desc=desc,
        arn=arn,
        method=method,
        token=version_token(ctx.run_id, ctx.step_id, arn),
        stages=stages,
        previous=_current_version(stages),
    )


def _current_document(sm: Any, arn: str, previous: str | None) -> dict[str, Any] | None:
    """The current value as a JSON object to keep all but its password field, or None when
    the whole value is replaced; refuses values clampdown cannot rotate. The value itself
    stays in this function's locals and the returned document."""
    if previous is None:
        return None
    current = sm.get_secret_value(SecretId=arn, VersionId=previous)
    if current.get("SecretString") is None:
        raise SecretRotationRefused(
            f"secret {arn} holds a binary value; clampdown generates text values "
            "only. Configure a rotation Lambda for it, or rotate it by hand"
        )
    document = _json_object(current["SecretString"])
    if document is not None and not isinstance(document.get(PASSWORD_FIELD), str):
        raise SecretRotationRefused(
            f"secret {arn} holds a JSON object without a string "
            f"{PASSWORD_FIELD!r} field, so clampdown cannot tell which field is the "
            "credential. Configure a rotation Lambda for it, or rotate it by hand"
        )
    return document


def version_token(run_id: str, step_id: str, secret_arn: str) -> str:
    """The ClientRequestToken (= new VersionId) of this run's rotation of this secret."""
    return str(uuid.uuid5(_TOKEN_NAMESPACE, f"{run_id}\n{step_id}\n{secret_arn}"))


def _method(desc: dict[str, Any]) -> Literal["lambda", "managed", "put_secret_value"]:
    arn = desc["ARN"]
    enabled = bool(desc.get("RotationEnabled"))
    if desc.get("OwningService"):
        if not enabled:
            raise SecretRotationRefused(
                f"secret {arn} is managed by {desc['OwningService']} and its rotation is off; "
                "turn managed rotation on in that service, then run the step again"
            )
        return "managed"
    if desc.get("RotationLambdaARN"):
        if not enabled:
            raise SecretRotationRefused(
                f"secret {arn} has a rotation Lambda ({desc['RotationLambdaARN']}) but rotation "
                "is turned off. A new value written here would not reach the system the Lambda "
                "updates, and RotateSecret would turn the schedule back on. Turn rotation on "
                "(or remove the Lambda) and run the step again"
            )
        return "lambda"
    return "put_secret_value"


def _current_version(stages: dict[str, list[str]]) -> str | None:
    return next((vid for vid, labels in stages.items() if "AWSCURRENT" in labels), None)


def _json_object(text: str) -> dict[str, Any] | None:
    """The value as a JSON object, or None when it is anything else (a plain string)."""
    try:
        parsed = json.loads(text)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None
