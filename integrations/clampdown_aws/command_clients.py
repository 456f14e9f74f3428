"""boto3 clients for a command (``verify``, ``report``, ``export``), made or refused clearly.

Making a boto3 client fails before any call when ``AWS_PROFILE`` names no profile (or the
config files cannot be read) or, for a regional service, when no region is configured. A
command that made its client outside its error handling printed botocore's traceback
there; these are the user's settings to fix, so they get an ``error:`` that names the
setting. (A run's clients are :mod:`clampdown_aws.clients`: kept per run.)
"""

from __future__ import annotations

from typing import Any

from clampdown.core.diagnostics import ClampdownError


def command_client(service: str, purpose: str) -> Any:
    """A boto3 client of ``service``; ``purpose`` says what the command needs it for."""
    import boto3
    from botocore.exceptions import BotoCoreError, NoRegionError

    try:
        return boto3.client(service)
    except BotoCoreError as exc:
        raise ClampdownError(
            f"cannot make an AWS {service} client to {purpose}: {exc}",
            "set AWS_REGION (or AWS_DEFAULT_REGION)"
            if isinstance(exc, NoRegionError)
            else "check AWS_PROFILE and the AWS config files (~/.aws/config, AWS_CONFIG_FILE)",
        ) from None
