"""Ledger heads signed by an AWS KMS asymmetric key: the ``clampdown.ledger_signers`` plug-in.

The private key never leaves KMS, so nobody who can write ``CLAMPDOWN_HOME`` (or read
the engine's disk) can sign a rewritten ledger; only a principal allowed
``kms:Sign`` on the key can. Configured by ``CLAMPDOWN_LEDGER_KMS_KEY_ID`` (key id,
ARN or alias) for an ``ECC_NIST_P256`` key with usage ``SIGN_VERIFY``; the engine
needs ``kms:Sign``, a verifier ``kms:GetPublicKey``. Signatures are ECDSA_SHA_256
over the head message (a few hundred bytes, sent RAW), checked locally against the
public key fetched once, so verifying a long ledger costs one KMS call.
"""

from __future__ import annotations

from typing import Any

from clampdown.core.diagnostics import ClampdownError
from clampdown.core.settings import Settings

ALGORITHM = "ECDSA_SHA_256"


class KmsSigner:
    """Signs with ``kms:Sign``; checks with the key's public half (``kms:GetPublicKey``)."""

    algorithm = ALGORITHM

    def __init__(self, kms: Any, key_id: str) -> None:
        self.kms = kms
        self._configured = key_id
        self._public: Any = None
        self.key_id = self._describe(key_id)

    def _describe(self, key_id: str) -> str:
        """The key's ARN (what the ledger names), checked to be a signing key now."""
        try:
            meta = self.kms.describe_key(KeyId=key_id)["KeyMetadata"]
        except Exception as exc:
            raise ClampdownError(
                f"CLAMPDOWN_LEDGER_KMS_KEY_ID {key_id}: cannot describe the key: {exc}",
                "check the key id and that this principal may kms:DescribeKey it",
            ) from None
        if meta.get("KeyUsage") != "SIGN_VERIFY" or ALGORITHM not in meta.get(
            "SigningAlgorithms", []
        ):
            raise ClampdownError(
                f"CLAMPDOWN_LEDGER_KMS_KEY_ID {key_id} is not an ECC_NIST_P256 signing key "
                f"(usage {meta.get('KeyUsage')}, spec {meta.get('KeySpec')})",
                "create one with --key-usage SIGN_VERIFY --key-spec ECC_NIST_P256",
            )
        return str(meta["Arn"])

    def sign(self, message: bytes) -> bytes:
        response = self.kms.sign(
            KeyId=self.key_id, Message=message, MessageType="RAW", SigningAlgorithm=ALGORITHM
        )
        return bytes(response["Signature"])

    def verify(self, message: bytes, signature: bytes) -> bool:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec

        if self._public is None:
            from cryptography.hazmat.primitives.serialization import load_der_public_key

            try:
                der = self.kms.get_public_key(KeyId=self.key_id)["PublicKey"]
            except Exception as exc:  # denied, unreachable: no verdict can be given
                raise ClampdownError(
                    f"CLAMPDOWN_LEDGER_KMS_KEY_ID {self._configured}: cannot get the key's "
                    f"public half: {exc}",
                    "check that this principal may kms:GetPublicKey the key",
                ) from None
            self._public = load_der_public_key(der)
        try:
            self._public.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError):
            return False
        return True


def kms_signer(settings: Settings) -> KmsSigner | None:
    """The ``clampdown.ledger_signers`` factory: None without CLAMPDOWN_LEDGER_KMS_KEY_ID."""
    if not settings.ledger_kms_key_id:
        return None
    return KmsSigner(kms_client(settings.ledger_kms_key_id), settings.ledger_kms_key_id)


def kms_client(key_id: str) -> Any:
    """A KMS client for the key, or a user error: making one fails before any call when no
    AWS region is configured or ``AWS_PROFILE`` names no profile, and that must read as
    what to fix (every command that reads the key: run, resume, rollback, verify, serve's
    runs), not as botocore's traceback."""
    import boto3
    from botocore.exceptions import BotoCoreError, NoRegionError

    try:
        return boto3.client("kms")
    except BotoCoreError as exc:  # NoRegionError, ProfileNotFound, a bad config file
        raise ClampdownError(
            f"CLAMPDOWN_LEDGER_KMS_KEY_ID {key_id}: cannot make a KMS client: {exc}",
            "set AWS_REGION (or AWS_DEFAULT_REGION) to the key's region"
            if isinstance(exc, NoRegionError)
            else "check AWS_PROFILE and the AWS config files (~/.aws/config, AWS_CONFIG_FILE)",
        ) from None
