"""Sealed secret inputs: Fernet-encrypted input values that travel through Prefect.

Prefect stores flow-run parameters in its database and shows them in its UI, so
in deployment mode secret inputs travel *sealed*: encrypted with a Fernet key
(``CLAMPDOWN_INPUTS_KEY``) that ``clampdown serve`` and the workers hold and the
Prefect server does not. :func:`seal_inputs` encrypts them on the serve side;
:func:`unseal_inputs` opens them on the worker (into :class:`SecretStr`).
Pure crypto (``cryptography``): no Prefect here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from clampdown.core.diagnostics import ClampdownError

SEALED = "clampdown_sealed"  # key of a sealed input value: {"clampdown_sealed": "<fernet token>"}
MAX_SEALED_CHARS = 64 * 1024


class InputsKeySettings(BaseSettings):
    """``CLAMPDOWN_INPUTS_KEY``: the Fernet key sealing secret inputs."""

    model_config = SettingsConfigDict(env_prefix="CLAMPDOWN_", extra="ignore")

    inputs_key: SecretStr | None = Field(
        None, description="Fernet key sealing secret inputs between serve and workers"
    )


def inputs_key_from_env() -> SecretStr | None:
    try:
        return InputsKeySettings().inputs_key
    except Exception as exc:  # pydantic ValidationError: name the variable, never the value
        raise ClampdownError(
            f"invalid scaled-mode setting: {exc.__class__.__name__}",
            "check CLAMPDOWN_DEPLOYMENT, CLAMPDOWN_WORK_POOL and CLAMPDOWN_INPUTS_KEY",
        ) from None


def _fernet(key: SecretStr | None) -> Any:
    from cryptography.fernet import Fernet

    if key is None:
        raise ClampdownError(
            "this runbook has secret inputs, and CLAMPDOWN_INPUTS_KEY is not set",
            "in deployment mode secret inputs travel encrypted: generate a key with "
            "`clampdown inputs-key` and set CLAMPDOWN_INPUTS_KEY on serve and on every worker",
        )
    try:
        return Fernet(key.get_secret_value().encode())
    except (ValueError, TypeError):
        raise ClampdownError(
            "CLAMPDOWN_INPUTS_KEY is not a Fernet key",
            "generate one with `clampdown inputs-key` (32 url-safe base64-encoded bytes)",
        ) from None


def seal_inputs(
    secret_names: set[str], values: Mapping[str, Any], key: SecretStr | None
) -> dict[str, Any]:
    """``values`` with each named secret replaced by ``{"clampdown_sealed": token}``."""
    present = {k for k in secret_names if values.get(k) is not None}
    if not present:
        return dict(values)
    fernet = _fernet(key)
    sealed = dict(values)
    for name in present:
        value = values[name]
        text = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
        sealed[name] = {SEALED: fernet.encrypt(text.encode()).decode()}
    return sealed


def is_sealed(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {SEALED} and isinstance(value[SEALED], str)


def unseal_inputs(values: Mapping[str, Any], key: SecretStr | None = None) -> dict[str, Any]:
    """Open sealed inputs into :class:`SecretStr` (the flow reveals them); others unchanged.

    Without ``key``, ``CLAMPDOWN_INPUTS_KEY`` is read from the environment.
    """
    if not any(is_sealed(v) for v in values.values()):
        return dict(values)
    from cryptography.fernet import InvalidToken

    fernet = _fernet(key if key is not None else inputs_key_from_env())
    opened: dict[str, Any] = {}
    for name, value in values.items():
        if not is_sealed(value):
            opened[name] = value
            continue
        token = value[SEALED]
        if len(token) > MAX_SEALED_CHARS:
            raise ClampdownError(f"sealed input '{name}' is too large", "seal values under 48 KB")
        try:
            opened[name] = SecretStr(fernet.decrypt(token.encode()).decode())
        except InvalidToken:
            raise ClampdownError(
                f"secret input '{name}' could not be unsealed",
                "CLAMPDOWN_INPUTS_KEY on this worker must equal the key of `clampdown serve`",
            ) from None
    return opened
