"""``aws.iam.rotate_access_key``: a service user's new key, kept in Secrets Manager."""

# No __future__ annotations: pydantic then reads each field's type as written instead of
# compiling its text at class creation (a ForwardRef per field; lint imports this module).

import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import Field, field_validator

from clampdown.core.actions import ActionContext, ActionInput, ActionOutput
from clampdown_aws.base import Aws, AwsAction, AwsActionError, arn_resources, changing
from clampdown_aws.iam._common import (
    ACCESS_KEY_ID,
    error_code,
    list_access_keys,
    parse_principal_arn,
    resolve_user,
    set_key_status,
)

# --- aws.iam.rotate_access_key --------------------------------------------------------------

_ROTATION_NAMESPACE = uuid.UUID("6f1c7d2e-1b1a-4c55-9a61-2c0d3a8f1e42")


def _stored_key_id(sm: Any, secret_id: str, version_id: str) -> str | None:
    """The AccessKeyId in one version of the secret; the secret itself is dropped at once."""
    text = sm.get_secret_value(SecretId=secret_id, VersionId=version_id).get("SecretString")
    key_id: str | None = None
    try:
        value = json.loads(text) if text else None
        if isinstance(value, dict) and isinstance(value.get("AccessKeyId"), str):
            key_id = value["AccessKeyId"]
    except ValueError:
        key_id = None
    finally:
        text = value = None  # drop the secret as soon as possible
    return key_id


@dataclass
class _Rotation:
    """What a rotation found before changing anything."""

    user: str
    keys: list[dict[str, Any]]
    status: dict[str, str | None]  # access key id -> Active / Inactive
    version_id: str  # the secret version this rotation writes (from its rotation token)
    secret: dict[str, Any] | None  # DescribeSecret; None: the secret does not exist yet
    current_version: str | None
    current_key: str | None  # the access key id the secret's current version holds
    done_key: str | None  # the new key already in place (this rotation ran); None: create one

    @property
    def secret_arn(self) -> str:
        return str((self.secret or {}).get("ARN", ""))


def _keys_to_deactivate(
    status: dict[str, str | None], old: str | None, new_id: str | None
) -> list[str]:
    """The active keys a rotation retires: ``old``, or every key but the new one."""
    targets = [old] if old is not None else [k for k in status if k != new_id]
    return [k for k in targets if k != new_id and status.get(k) == "Active"]


class RotateAccessKey(AwsAction):
    """Give a service user a new access key, stored in Secrets Manager, and retire the old.

    A rotation is identified by ``rotation_token`` (default: run id + step id). Running the
    same rotation again finishes it if it was interrupted and otherwise changes nothing.
    With ``old_access_key_id``, a run also changes nothing when the secret already holds
    another active key of the user and the old key is inactive.
    """

    name = "aws.iam.rotate_access_key"
    summary = "Rotate an IAM user's access key into a Secrets Manager secret (reversible)"
    destructive = True
    reversible = True
    iam_actions = (
        "iam:GetUser",
        "iam:ListAccessKeys",
        "iam:CreateAccessKey",
        "iam:UpdateAccessKey",
        "iam:DeleteAccessKey",
        "secretsmanager:DescribeSecret",
        "secretsmanager:GetSecretValue",
        "secretsmanager:CreateSecret",
        "secretsmanager:PutSecretValue",
        "secretsmanager:UpdateSecretVersionStage",
    )

    @classmethod
    def iam_resources(cls, with_: Mapping[str, Any]) -> dict[str, list[str]]:
        return arn_resources(cls.iam_actions, with_.get("user_name"), ":user/", "iam")

    class Input(ActionInput):
        user_name: str = Field(
            description="IAM user name, or its ARN (then the account and path are checked too)"
        )
        secret_id: str = Field(
            min_length=1,
            max_length=2048,
            description="Secrets Manager secret name or ARN; a name that does not exist is created",
        )
        old_access_key_id: str | None = Field(
            None, description="the key to retire; default: every other active key of the user"
        )
        rotation_token: str | None = Field(
            None,
            min_length=1,
            max_length=256,
            description="identifies this rotation for idempotency; default: run id + step id",
        )
        delete_inactive_key: bool = Field(
            False,
            description="when the user already has 2 keys, delete an inactive one (not "
            "old_access_key_id) to make room; cannot be undone",
        )

        @field_validator("user_name")
        @classmethod
        def _valid_user(cls, value: str) -> str:
            value = value.strip()
            if value.startswith("arn:"):
                if parse_principal_arn(value)["kind"] != "user":
                    raise ValueError(f"'{value}' is a role; access keys belong to IAM users")
            elif not re.fullmatch(r"[\w+=,.@-]{1,64}", value):
                raise ValueError(f"'{value}' is not an IAM user name or user ARN")
            return value

        @field_validator("old_access_key_id")
        @classmethod
        def _valid_key_id(cls, value: str | None) -> str | None:
            if value is not None and not ACCESS_KEY_ID.match(value):
                raise ValueError(f"'{value}' is not an access key id (like AKIA...)")
            return value

    class Output(ActionOutput):
        new_access_key_id: str
        secret_arn: str
        deactivated_keys: list[str] = Field(default_factory=list)
        deleted_keys: list[str] = Field(default_factory=list)
        changed: bool = False

    def apply(self, params: Input, aws: Aws, ctx: ActionContext) -> Output:
        iam, sm = aws.client("iam"), aws.client("secretsmanager")
        found = self._assess(iam, sm, params, ctx)
        user = found.user
        out_deleted: list[str] = []
        if found.done_key is not None:  # this rotation, or an earlier one away from `old`
            new_id, secret_arn = found.done_key, found.secret_arn
        else:
            victim = self._room_to_make(user, found.keys, params)
            if victim is not None:
                iam.delete_access_key(UserName=user, AccessKeyId=victim)
                out_deleted.append(victim)
                ctx.logger.warning(
                    "deleted inactive access key %s of user %s to make room "
                    "(delete_inactive_key); this cannot be undone",
                    victim,
                    user,
                )
            new_id, secret_arn = self._new_key(iam, sm, params, found, ctx)

        deactivated: list[str] = []
        for key_id in _keys_to_deactivate(found.status, params.old_access_key_id, new_id):
            with changing(
                ctx,
                f"Re-activate the old access key {key_id} of user {user}",
                op="activate_access_key",
                user_name=user,
                access_key_id=key_id,
            ):
                iam.update_access_key(UserName=user, AccessKeyId=key_id, Status="Inactive")
            deactivated.append(key_id)
            ctx.logger.info("deactivated old access key %s of user %s", key_id, user)
        return self.Output(
            new_access_key_id=new_id,
            secret_arn=secret_arn,
            deactivated_keys=deactivated,
            deleted_keys=out_deleted,
            changed=bool(deactivated or out_deleted or new_id not in found.status),
        )

    def _new_key(
        self, iam: Any, sm: Any, params: Input, found: _Rotation, ctx: ActionContext
    ) -> tuple[str, str]:
        """Create the new key and store it in the secret, each undo declared first.

        The new key's id is known only once it exists, so its intent names the secret
        version this rotation writes (``deactivate_rotated_key``): rollback reads the key
        id from that version and deactivates the key. If the run stopped before the
        version was stored, there is no key of this rotation anyone could use (a key
        created and never stored has a secret nobody knows): rollback deactivates
        nothing and names the user's keys that were not there before the rotation, to be
        deleted by hand. Once stored, the confirmed undo names the key itself.
        """
        user = found.user
        key = ctx.intend_undo(
            f"Deactivate (not delete) the new access key of user {user} that this rotation "
            f"stores in version {found.version_id} of secret {params.secret_id}",
            op="deactivate_rotated_key",
            user_name=user,
            secret_id=params.secret_id,
            version_id=found.version_id,
            keys_before=sorted(found.status),
        )
        secret = None
        if found.current_version is not None:  # the secret exists: its ARN is known
            secret = ctx.intend_undo(
                f"Point the secret {found.secret_arn} back at its previous version "
                f"{found.current_version} (the key it held is re-activated too); the new "
                "version is kept",
                op="restore_secret_current",
                secret_arn=found.secret_arn,
                version_id=found.version_id,
                previous_version_id=found.current_version,
            )
        new_id, secret_arn = self._create_and_store(
            iam, sm, user, params.secret_id, found.secret, found.version_id, ctx
        )
        key.confirm(
            f"Deactivate (not delete) the new access key {new_id} of user {user}",
            op="deactivate_access_key",
            user_name=user,
            access_key_id=new_id,
        )
        if secret is not None:
            secret.confirm()
        return new_id, secret_arn

    def describe(self, params: Input, aws: Aws, ctx: ActionContext) -> list[str]:
        """What ``apply`` would change now, in the order it would change it.

        It reads the secret's current version (GetSecretValue) to learn which key it holds,
        as ``apply`` does, and drops the value at once. Without ``rotation_token`` a preview
        stands for a new run, which rotates again (the token defaults to the run id).
        """
        iam, sm = aws.client("iam"), aws.client("secretsmanager")
        found = self._assess(iam, sm, params, ctx)
        user = found.user
        changes: list[str] = []
        if found.done_key is None:
            victim = self._room_to_make(user, found.keys, params)
            if victim is not None:
                changes.append(
                    f"delete inactive access key {victim} of user {user} to make room for the "
                    "new one (delete_inactive_key; cannot be undone)"
                )
            changes.append(
                f"create a new access key for user {user} (its id is known only once created)"
            )
            if found.secret is None:
                changes.append(f"create secret {params.secret_id} holding the new key")
            else:
                held = (
                    f" (the version holding key {found.current_key} becomes AWSPREVIOUS)"
                    if found.current_key
                    else ""
                )
                changes.append(
                    f"store the new key as the current version of secret {found.secret_arn}{held}"
                )
        changes += [
            f"deactivate (not delete) old access key {key_id} of user {user}"
            for key_id in _keys_to_deactivate(
                found.status, params.old_access_key_id, found.done_key
            )
        ]
        return changes

    def _assess(self, iam: Any, sm: Any, params: Input, ctx: ActionContext) -> _Rotation:
        """Everything a rotation needs to know, read before anything changes (Get/List/
        Describe only); raises when the rotation cannot go ahead."""
        user = params.user_name
        if user.startswith("arn:"):
            user = parse_principal_arn(params.user_name)["name"]
            resolve_user(iam, params.user_name, user)
        try:
            keys = list_access_keys(iam, user)
        except Exception as exc:
            if error_code(exc) != "NoSuchEntity":
                raise
            raise AwsActionError(
                f"no IAM user named '{user}' in the account this step runs in"
            ) from None
        status = {k["AccessKeyId"]: k.get("Status") for k in keys}
        old = params.old_access_key_id
        if old is not None and old not in status:
            raise AwsActionError(
                f"access key {old} is not a key of user {user} (its keys: "
                f"{_describe_keys(keys) or 'none'}); check old_access_key_id"
            )

        token = params.rotation_token or f"{ctx.run_id}/{ctx.step_id}"
        version_id = str(uuid.uuid5(_ROTATION_NAMESPACE, f"{user}\n{params.secret_id}\n{token}"))
        secret = self._describe_secret(sm, params.secret_id)
        stages: dict[str, list[str]] = (secret or {}).get("VersionIdsToStages") or {}
        current_version = next((v for v, s in stages.items() if "AWSCURRENT" in s), None)
        current_key = None
        if current_version is not None:
            current_key = _stored_key_id(sm, secret["ARN"], current_version)
            if current_key is None:
                raise AwsActionError(
                    f"secret {params.secret_id} holds something other than an access key "
                    "(expected JSON with AccessKeyId and SecretAccessKey); clampdown will not "
                    "overwrite it: choose another secret_id"
                )
        found = _Rotation(
            user, keys, status, version_id, secret, current_version, current_key, None
        )

        if version_id in stages:  # this rotation stored its key already: finish it
            new_id = (
                current_key
                if current_version == version_id
                else _stored_key_id(sm, secret["ARN"], version_id)
            )
            if current_version != version_id or status.get(new_id) != "Active":
                raise AwsActionError(
                    f"rotation '{token}' of user {user} already ran and was since rolled back or "
                    f"superseded (key {new_id} is {status.get(new_id, 'deleted')}, the secret's "
                    f"current version is {current_version}); pass a new rotation_token to rotate "
                    "again"
                )
            found.done_key = new_id
        elif (
            old is not None
            and current_key not in (None, old)
            and status.get(current_key) == ("Active")
        ):
            found.done_key = current_key  # already rotated away from `old`
        return found

    @staticmethod
    def _describe_secret(sm: Any, secret_id: str) -> dict[str, Any] | None:
        try:
            secret = sm.describe_secret(SecretId=secret_id)
        except Exception as exc:
            if error_code(exc) != "ResourceNotFoundException":
                raise
            if secret_id.startswith("arn:"):
                raise AwsActionError(
                    f"secret {secret_id} does not exist; give a secret name (not an ARN) to "
                    "have it created"
                ) from None
            return None
        if secret.get("DeletedDate"):
            raise AwsActionError(
                f"secret {secret_id} is scheduled for deletion; restore it first "
                f"(aws secretsmanager restore-secret --secret-id {secret_id}) or choose another"
            )
        return secret

    @staticmethod
    def _room_to_make(user: str, keys: list[dict[str, Any]], params: Input) -> str | None:
        """IAM allows 2 keys per user: the inactive key to delete (only when asked to), or
        None when there is room; raises when there is none."""
        if len(keys) < 2:
            return None
        candidates = sorted(
            (
                k
                for k in keys
                if k.get("Status") == "Inactive" and k["AccessKeyId"] != params.old_access_key_id
            ),
            key=lambda k: str(k.get("CreateDate", "")),
        )
        if not (params.delete_inactive_key and candidates):
            hint = (
                f"delete the inactive key you no longer need (aws iam delete-access-key "
                f"--user-name {user} --access-key-id {candidates[0]['AccessKeyId']}) or set "
                "delete_inactive_key: true, then run again"
                if candidates
                else f"deactivate and delete a key you no longer need (aws iam update-access-key "
                f"--status Inactive, then aws iam delete-access-key --user-name {user} "
                "--access-key-id ...), then run again"
            )
            raise AwsActionError(
                f"user {user} already has 2 access keys ({_describe_keys(keys)}), the most IAM "
                f"allows, so no new key can be created; clampdown does not delete keys on its "
                f"own: {hint}"
            )
        return str(candidates[0]["AccessKeyId"])

    @staticmethod
    def _create_and_store(
        iam: Any,
        sm: Any,
        user: str,
        secret_id: str,
        secret: dict[str, Any] | None,
        version_id: str,
        ctx: ActionContext,
    ) -> tuple[str, str]:
        created = iam.create_access_key(UserName=user)["AccessKey"]
        new_id = created["AccessKeyId"]
        payload = json.dumps(
            {"AccessKeyId": new_id, "SecretAccessKey": created.pop("SecretAccessKey")}
        )
        created = None
        try:
            if secret is None:
                secret_arn = sm.create_secret(
                    Name=secret_id,
                    SecretString=payload,
                    ClientRequestToken=version_id,
                    Description=f"AWS access key of IAM user {user} (rotated by clampdown)",
                )["ARN"]
            else:
                secret_arn = secret["ARN"]
                sm.put_secret_value(
                    SecretId=secret_arn, SecretString=payload, ClientRequestToken=version_id
                )
        except BaseException:
            payload = ""
            if _version_exists(sm, secret_id, version_id):
                # Stored after all (only the answer was lost): keep the key, a re-run of
                # this rotation finds the version and finishes.
                raise
            # Nobody else ever saw this key's secret: remove it so no live credential
            # exists outside the secret store.
            try:
                iam.delete_access_key(UserName=user, AccessKeyId=new_id)
                ctx.logger.warning(
                    "could not store new access key %s of user %s; deleted it again", new_id, user
                )
            except Exception:
                ctx.logger.error(
                    "could not store new access key %s of user %s, nor delete it: delete it "
                    "by hand (aws iam delete-access-key --user-name %s --access-key-id %s)",
                    new_id,
                    user,
                    user,
                    new_id,
                )
            raise
        payload = ""
        ctx.logger.info(
            "created access key %s for user %s and stored it in %s", new_id, user, secret_arn
        )
        return new_id, secret_arn

    def undo(self, how: dict[str, Any], aws: Aws, ctx: ActionContext) -> None:
        """Put one change back; one that never happened or was put back already is left as
        it is (a key already in the wanted state or deleted, a secret already current at
        its previous version, a rotation whose key was never stored)."""
        op = how.get("op")
        if op == "activate_access_key":
            set_key_status(aws.client("iam"), how, "Active", ctx)
        elif op == "deactivate_access_key":
            set_key_status(aws.client("iam"), how, "Inactive", ctx)
        elif op == "deactivate_rotated_key":
            _deactivate_rotated_key(aws.client("iam"), aws.client("secretsmanager"), how, ctx)
        elif op == "restore_secret_current":
            self._restore_secret_current(aws.client("secretsmanager"), how, ctx)
        else:
            raise AwsActionError(f"{self.name} cannot undo unknown operation {op!r}")

    @staticmethod
    def _restore_secret_current(sm: Any, how: dict[str, Any], ctx: ActionContext) -> None:
        secret_arn, ours, previous = (
            how["secret_arn"],
            how["version_id"],
            how["previous_version_id"],
        )
        stages = sm.describe_secret(SecretId=secret_arn).get("VersionIdsToStages") or {}
        if "AWSCURRENT" not in stages.get(ours, []):
            if "AWSCURRENT" not in stages.get(previous, []):
                ctx.logger.warning(
                    "secret %s has moved on since the rotation (its current version is neither "
                    "the rotated nor the previous one); left as it is",
                    secret_arn,
                )
            return
        if previous not in stages:
            ctx.logger.warning(
                "secret %s no longer has version %s; it keeps the rotated key", secret_arn, previous
            )
            return
        sm.update_secret_version_stage(
            SecretId=secret_arn,
            VersionStage="AWSCURRENT",
            MoveToVersionId=previous,
            RemoveFromVersionId=ours,
        )
        ctx.logger.info("rollback: secret %s points at version %s again", secret_arn, previous)


def _deactivate_rotated_key(iam: Any, sm: Any, how: dict[str, Any], ctx: ActionContext) -> None:
    """Undo of a new key whose id was not confirmed: the key the rotation's version holds."""
    user = how["user_name"]
    try:
        key_id = _stored_key_id(sm, how["secret_id"], how["version_id"])
    except Exception as exc:
        if error_code(exc) != "ResourceNotFoundException":
            raise
        key_id = None
    if key_id is not None:
        set_key_status(iam, {"user_name": user, "access_key_id": key_id}, "Inactive", ctx)
        return
    before = set(how.get("keys_before") or ())
    try:
        unknown = [k["AccessKeyId"] for k in list_access_keys(iam, user)]
    except Exception as exc:
        if error_code(exc) != "NoSuchEntity":
            raise
        unknown = []
    unknown = [k for k in unknown if k not in before]
    if not unknown:
        ctx.logger.info(
            "rotation of user %s stored no key and left none behind; nothing to deactivate", user
        )
        return
    ctx.logger.warning(
        "rotation of user %s stored no key in version %s of %s, and access key(s) %s were not "
        "there before it: one may be the rotation's own, created but never stored (nobody "
        "has its secret). Check and delete it (aws iam delete-access-key --user-name %s "
        "--access-key-id ...)",
        user,
        how["version_id"],
        how["secret_id"],
        ", ".join(unknown),
        user,
    )


def _version_exists(sm: Any, secret_id: str, version_id: str) -> bool:
    try:
        stages = sm.describe_secret(SecretId=secret_id).get("VersionIdsToStages") or {}
    except Exception:
        return False
    return version_id in stages


def _describe_keys(keys: list[dict[str, Any]]) -> str:
    return ", ".join(f"{k['AccessKeyId']} {k.get('Status', '?')}" for k in keys)
