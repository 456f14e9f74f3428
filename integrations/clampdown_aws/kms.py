"""``aws.kms.rotate_key``: rotate (or disable) a customer managed KMS key.

Default: rotate the key material now (``kms:RotateKeyOnDemand``) and make sure
automatic rotation is on, every 365 days (``kms:EnableKeyRotation``). With
``disable: true`` the key is disabled instead (``kms:DisableKey``), so nothing
can encrypt or decrypt with it until rollback enables it again.

On-demand rotation cannot be undone, and need not be: KMS keeps every earlier
key material, so data encrypted before the rotation still decrypts. What the
rotation buys is that new encryptions use material the suspect never had access
to. AWS caps on-demand rotations per key (10 when the API launched), so the
action rotates at most once per run: after rotating, it tags the key
``clampdown:rotated-by-run=<run id>`` and skips the rotation while that tag names
the current run. ``kms:ListKeyRotations`` cannot serve as that marker: it lists
dates and types of rotations, not who asked for them.

``describe`` (``clampdown plan --live``) makes the same reads and checks as
``apply`` (DescribeKey, ListResourceTags, GetKeyRotationStatus) and lists what
``apply`` would change. A key ``apply`` refuses (AWS managed, not rotatable, in a
state KMS cannot disable) makes ``describe`` raise the same error.
"""

# No __future__ annotations: pydantic then reads each field's type as written instead of
# compiling its text at class creation (a ForwardRef per field; lint imports this module).

from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import Field

from clampdown.core.actions import ActionContext, ActionInput, ActionOutput
from clampdown_aws.base import Aws, AwsAction, AwsActionError, arn_resources, changing

ROTATED_BY_RUN_TAG = "clampdown:rotated-by-run"
ROTATION_PERIOD_DAYS = 365
# Key stores whose material KMS cannot rotate itself.
_CUSTOM_KEY_STORE_ORIGINS = frozenset({"AWS_CLOUDHSM", "EXTERNAL_KEY_STORE"})


class RotateKey(AwsAction):
    """Rotate a customer managed KMS key now and keep it rotating yearly, or disable it."""

    name = "aws.kms.rotate_key"
    summary = "Rotate a customer managed KMS key (or disable it)"
    destructive = True
    reversible: ClassVar[bool] = True
    iam_actions = (
        "kms:DescribeKey",
        "kms:ListResourceTags",
        "kms:RotateKeyOnDemand",
        "kms:TagResource",
        "kms:UntagResource",
        "kms:GetKeyRotationStatus",
        "kms:EnableKeyRotation",
        "kms:DisableKeyRotation",
        "kms:DisableKey",
        "kms:EnableKey",
    )

    @classmethod
    def iam_resources(cls, with_: Mapping[str, Any]) -> dict[str, list[str]]:
        return arn_resources(cls.iam_actions, with_.get("key_id"), ":key/", "kms")

    class Input(ActionInput):
        key_id: str = Field(
            min_length=1,
            description="key id, key ARN, alias name (alias/...) or alias ARN",
        )
        disable: bool = Field(
            False, description="disable the key instead of rotating it (rollback enables it)"
        )
        enable_yearly_rotation: bool = Field(
            True, description="also turn on automatic rotation every 365 days if it is off"
        )

    class Output(ActionOutput):
        key_arn: str
        rotated_on_demand: bool = Field(description="this run rotated the key material now")
        yearly_rotation_enabled: bool = Field(
            description="this run turned automatic yearly rotation on"
        )
        disabled: bool = Field(description="this run disabled the key")
        changed: bool

    def apply(self, params: Input, aws: Aws, ctx: ActionContext) -> Output:
        kms = aws.client("kms")
        meta = _customer_managed_key(kms, params.key_id)
        key_arn, key_id = meta["Arn"], meta["KeyId"]
        if params.disable:
            disabled = self._disable(kms, meta, ctx)
            return self.Output(
                key_arn=key_arn,
                rotated_on_demand=False,
                yearly_rotation_enabled=False,
                disabled=disabled,
                changed=disabled,
            )

        _check_rotatable(meta)
        rotated = self._rotate_on_demand(kms, key_id, key_arn, ctx)
        enabled = False
        if params.enable_yearly_rotation:
            enabled = self._enable_yearly(kms, key_id, key_arn, ctx)
        return self.Output(
            key_arn=key_arn,
            rotated_on_demand=rotated,
            yearly_rotation_enabled=enabled,
            disabled=False,
            changed=rotated or enabled,
        )

    # --- preview -------------------------------------------------------------------------

    def describe(self, params: Input, aws: Aws, ctx: ActionContext) -> list[str]:
        kms = aws.client("kms")
        meta = _customer_managed_key(kms, params.key_id)
        key_arn, key_id = meta["Arn"], meta["KeyId"]
        if params.disable:
            if not _needs_disabling(meta):
                return []
            return [
                f"disable KMS key {key_arn} (nothing can encrypt or decrypt with it until "
                "rollback enables it)"
            ]
        _check_rotatable(meta)
        changes = []
        needed, previous = _rotation_needed(kms, key_id, ctx.run_id)
        if needed:
            replacing = f", replacing {previous!r}" if previous else ""
            changes.append(
                f"rotate the key material of KMS key {key_arn} now, on demand, and tag it "
                f"{ROTATED_BY_RUN_TAG}=<run id>{replacing} (AWS caps on-demand rotations per "
                "key; whether one is left shows only when rotating)"
            )
        if params.enable_yearly_rotation and _yearly_rotation_off(kms, key_id):
            changes.append(
                f"turn on automatic rotation of KMS key {key_arn} every {ROTATION_PERIOD_DAYS} days"
            )
        return changes

    # --- disable -------------------------------------------------------------------------

    def _disable(self, kms: Any, meta: dict[str, Any], ctx: ActionContext) -> bool:
        key_arn, key_id, state = meta["Arn"], meta["KeyId"], meta.get("KeyState")
        if not _needs_disabling(meta):
            ctx.logger.info("KMS key %s is already %s; nothing to disable", key_arn, state)
            return False
        with changing(
            ctx,
            f"Enable KMS key {key_arn} again (this run disabled it)",
            op="enable_key",
            key_id=key_id,
            key_arn=key_arn,
        ):
            kms.disable_key(KeyId=key_id)
        ctx.logger.info("disabled KMS key %s", key_arn)
        return True

    # --- rotate --------------------------------------------------------------------------

    def _rotate_on_demand(self, kms: Any, key_id: str, key_arn: str, ctx: ActionContext) -> bool:
        needed, previous = _rotation_needed(kms, key_id, ctx.run_id)
        if not needed:
            ctx.logger.info(
                "KMS key %s was already rotated on demand by run %s; not rotating again "
                "(AWS limits on-demand rotations per key)",
                key_arn,
                ctx.run_id,
            )
            return False
        kms.rotate_key_on_demand(KeyId=key_id)
        ctx.logger.info("rotated KMS key %s on demand", key_arn)
        # Rotate first, tag second: if tagging fails, a retry rotates once more (costs one
        # of the key's on-demand rotations) rather than wrongly skipping the rotation. The
        # rotation itself records no undo (it has none); the tag's undo is declared first.
        with changing(
            ctx,
            f"Put back tag {ROTATED_BY_RUN_TAG} on KMS key {key_arn} "
            f"({'remove it' if previous is None else f'restore {previous!r}'}). The on-demand "
            "rotation itself cannot be undone and need not be: KMS keeps the earlier key "
            "material, so data encrypted before the rotation still decrypts",
            op="restore_tag",
            key_id=key_id,
            key_arn=key_arn,
            tag_key=ROTATED_BY_RUN_TAG,
            run_value=ctx.run_id,
            previous_value=previous,
        ):
            kms.tag_resource(
                KeyId=key_id, Tags=[{"TagKey": ROTATED_BY_RUN_TAG, "TagValue": ctx.run_id}]
            )
        return True

    def _enable_yearly(self, kms: Any, key_id: str, key_arn: str, ctx: ActionContext) -> bool:
        if not _yearly_rotation_off(kms, key_id):
            ctx.logger.info("automatic rotation of KMS key %s is already on", key_arn)
            return False
        with changing(
            ctx,
            f"Turn automatic rotation of KMS key {key_arn} off again (this run turned it on)",
            op="disable_key_rotation",
            key_id=key_id,
            key_arn=key_arn,
        ):
            kms.enable_key_rotation(KeyId=key_id, RotationPeriodInDays=ROTATION_PERIOD_DAYS)
        ctx.logger.info(
            "turned on automatic rotation of KMS key %s every %d days",
            key_arn,
            ROTATION_PERIOD_DAYS,
        )
        return True

    # --- undo ----------------------------------------------------------------------------

    def undo(self, how: dict[str, Any], aws: Aws, ctx: ActionContext) -> None:
        """Put one change back; each op is a no-op on a key already as it was (the change
        never happened, or was put back already)."""
        kms = aws.client("kms")
        op, key_id = how["op"], how["key_id"]
        if op == "enable_key":
            kms.enable_key(KeyId=key_id)  # no-op on an Enabled key
        elif op == "disable_key_rotation":
            kms.disable_key_rotation(KeyId=key_id)  # no-op when already off
        elif op == "restore_tag":
            tag_key = how["tag_key"]
            current = _tag_value(kms, key_id, tag_key)
            if current != how["run_value"]:
                # Already restored, or a later run rotated the key and owns the tag now.
                return
            previous = how.get("previous_value")
            if previous is None:
                kms.untag_resource(KeyId=key_id, TagKeys=[tag_key])
            else:
                kms.tag_resource(KeyId=key_id, Tags=[{"TagKey": tag_key, "TagValue": previous}])
        else:
            raise AwsActionError(f"{self.name} cannot undo unknown operation {op!r}")


# --- what needs doing (shared by apply and describe; read-only calls only) ----------------


def _customer_managed_key(kms: Any, key_id: str) -> dict[str, Any]:
    """The key's metadata; an AWS managed key is refused (nobody can rotate or disable it)."""
    meta: dict[str, Any] = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    if meta.get("KeyManager") == "AWS":
        raise AwsActionError(
            f"{meta['Arn']} is an AWS managed key: AWS rotates it every year and nobody can "
            "rotate, disable or tag it. Rotate or disable the customer managed key that "
            "protects the data instead (or move the data to one)"
        )
    return meta


def _needs_disabling(meta: dict[str, Any]) -> bool:
    """True for an Enabled key; False when it is already unusable; otherwise refused."""
    key_arn, state = meta["Arn"], meta.get("KeyState")
    if state in ("Disabled", "PendingDeletion", "PendingReplicaDeletion"):
        # Already unusable: cancelling a deletion leaves the key Disabled too.
        return False
    if state != "Enabled":
        raise AwsActionError(
            f"{key_arn} is in state {state}; KMS can disable only an Enabled key. "
            "Wait until it is Enabled (or investigate why it is not) and run the step again"
        )
    return True


def _check_rotatable(meta: dict[str, Any]) -> None:
    key_arn = meta["Arn"]
    state = meta.get("KeyState")
    if state != "Enabled":
        raise AwsActionError(
            f"{key_arn} is {state}; KMS rotates only Enabled keys. Enable it first, or "
            "use disable: true if the goal is to stop its use"
        )
    spec = meta.get("KeySpec") or meta.get("CustomerMasterKeySpec")
    if spec != "SYMMETRIC_DEFAULT" or meta.get("KeyUsage", "ENCRYPT_DECRYPT") != (
        "ENCRYPT_DECRYPT"
    ):
        raise AwsActionError(
            f"{key_arn} is a {spec} key; KMS rotates only symmetric encryption keys. "
            "Replace the key (create a new one and re-point its users), or use "
            "disable: true to stop its use"
        )
    origin = meta.get("Origin")
    if origin in _CUSTOM_KEY_STORE_ORIGINS:
        raise AwsActionError(
            f"{key_arn} lives in a custom key store ({origin}); KMS cannot rotate it. "
            "Rotate it in the key store, or use disable: true"
        )
    if origin == "EXTERNAL":
        raise AwsActionError(
            f"{key_arn} uses imported key material; rotating it needs new material "
            "imported first (kms:ImportKeyMaterial), which clampdown does not hold. "
            "Use disable: true to stop its use"
        )
    multi_region = meta.get("MultiRegionConfiguration") or {}
    if multi_region.get("MultiRegionKeyType") == "REPLICA":
        primary = (multi_region.get("PrimaryKey") or {}).get("Arn", "its primary key")
        raise AwsActionError(
            f"{key_arn} is a multi-Region replica; KMS rotates the primary key "
            f"({primary}) and its replicas with it. Run the step on the primary key"
        )


def _rotation_needed(kms: Any, key_id: str, run_id: str) -> tuple[bool, str | None]:
    """Whether run ``run_id`` still has to rotate the key, and the marker tag's value now."""
    previous = _tag_value(kms, key_id, ROTATED_BY_RUN_TAG)
    return previous != run_id, previous


def _yearly_rotation_off(kms: Any, key_id: str) -> bool:
    return not kms.get_key_rotation_status(KeyId=key_id).get("KeyRotationEnabled")


def _tag_value(kms: Any, key_id: str, tag_key: str) -> str | None:
    """The value of one tag on a key (None when absent)."""
    kwargs: dict[str, Any] = {"KeyId": key_id}
    while True:
        page = kms.list_resource_tags(**kwargs)
        for tag in page.get("Tags", []):
            if tag.get("TagKey") == tag_key:
                return str(tag.get("TagValue"))
        if not page.get("Truncated") or not page.get("NextMarker"):
            return None
        kwargs["Marker"] = page["NextMarker"]
