"""What every AWS action shares: clients, cross-account roles, errors, undo.

Clients use botocore's ``standard`` retry mode (throttling and transient errors
are retried with back-off) and the standard credential chain. A step with
``account:`` (a role ARN) gets credentials from ``sts:AssumeRole`` with a
session name carrying the run id, so CloudTrail in the target account shows
which clampdown run made each change. Assumed credentials are cached per
(role, run) until five minutes before they expire. A run's clients are made once and
reused by its steps (:mod:`clampdown_aws.clients`), never by another run, and released
when the run ends (:meth:`AwsAction.release_run`).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

from clampdown.core.actions import Action, ActionContext, Intent
from clampdown_aws.clients import RunClients

RETRY_CONFIG = {"mode": "standard", "total_max_attempts": 8}
ACCESS_DENIED = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "UnauthorizedOperation",
        "AuthorizationError",
        "UnauthorizedAccess",
        "AccessDeniedError",
    }
)
_DENIED_TEXT = re.compile(
    r"(?:User|Principal):?\s*(?P<who>arn:\S+?)\s+is not authorized to perform:?"
    r"\s*(?P<action>[\w-]+:[\w*]+)"
)


# S3's AccessDenied text rarely names the action; the IAM action behind each S3 call we make.
_IAM_ACTION = {
    "ListObjectsV2": "s3:ListBucket",
    "ListObjectVersions": "s3:ListBucketVersions",
    "HeadObject": "s3:GetObject",
    "GetObject": "s3:GetObject",
    "PutObject": "s3:PutObject",
    "CreateMultipartUpload": "s3:PutObject",
    "UploadPart": "s3:PutObject",
    "CompleteMultipartUpload": "s3:PutObject",
    "GetObjectLockConfiguration": "s3:GetBucketObjectLockConfiguration",
    "PutObjectRetention": "s3:PutObjectRetention",
    "GetBucketPolicy": "s3:GetBucketPolicy",
    "PutBucketPolicy": "s3:PutBucketPolicy",
    "DeleteBucketPolicy": "s3:DeleteBucketPolicy",
    "PutObjectLegalHold": "s3:PutObjectLegalHold",
    "GetObjectLegalHold": "s3:GetObjectLegalHold",
}


class AwsAccessDenied(Exception):
    """The engine's principal lacks an IAM permission; the message names both."""


class AwsActionError(Exception):
    """An AWS call failed for a reason other than permissions."""


_SECRET_TEXT = re.compile(
    r"SecretString|SecretBinary|RandomPassword|SecretAccessKey|SessionToken|Plaintext|Password",
    re.IGNORECASE,
)
_BOTOCORE_BODY_LOGGERS = ("botocore.endpoint", "botocore.parsers", "botocore.awsrequest")


class RedactSecretBodies(logging.Filter):
    """Blank botocore DEBUG records (request parameters, response bodies) that carry a secret.

    botocore logs whole bodies at DEBUG; a responder who turns DEBUG on to chase
    a failure must not spill a rotated secret, a new access key or a password.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:  # a broken record is not ours to fix
            return True
        if _SECRET_TEXT.search(text):
            record.msg = "[redacted by clampdown: this botocore message carried a secret value]"
            record.args = ()
        return True


def install_redaction() -> None:
    for name in _BOTOCORE_BODY_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactSecretBodies) for f in logger.filters):
            logger.addFilter(RedactSecretBodies())


install_redaction()

_lock = threading.Lock()
_assumed: dict[tuple[str, str], tuple[dict[str, str], float]] = {}
_assuming: dict[tuple[str, str], threading.Lock] = {}  # one per (role, run) being assumed
CLIENTS = RunClients()
"""The runs' boto3 clients (:mod:`clampdown_aws.clients`): each run's reused by its steps."""


def _role_credentials(
    role_arn: str, run_id: str, region: str | None
) -> tuple[dict[str, str], float]:
    """This run's credentials for ``role_arn`` and when they expire (renewed 300 s before).

    ``sts:AssumeRole`` is asked under a lock of this (role, run) only: an STS call that is
    slow (throttled and retried, up to 8 attempts) holds up the steps that need the same
    credentials, not every other run's clients."""
    import boto3

    key = (role_arn, run_id)
    with _lock:
        assuming = _assuming.setdefault(key, threading.Lock())
    with assuming:
        cached = _assumed.get(key)
        if cached is None or cached[1] - time.time() < 300:
            sts = boto3.client("sts", region_name=region, config=_config())
            creds = sts.assume_role(
                RoleArn=role_arn, RoleSessionName=f"clampdown-{run_id}"[:64], DurationSeconds=3600
            )["Credentials"]
            cached = (
                {
                    "aws_access_key_id": creds["AccessKeyId"],
                    "aws_secret_access_key": creds["SecretAccessKey"],
                    "aws_session_token": creds["SessionToken"],
                },
                creds["Expiration"].timestamp(),
            )
            with _lock:
                _assumed[key] = cached
    return cached


def session(role_arn: str | None, run_id: str, region: str | None) -> Any:
    """A boto3 session: the default chain, or the assumed ``role_arn`` for this run."""
    import boto3

    if not role_arn:
        return _with_shared_models(boto3.session.Session(region_name=region))
    keys, _ = _role_credentials(role_arn, run_id, region)
    return _with_shared_models(boto3.session.Session(region_name=region, **keys))


def release_run(run_id: str) -> None:
    """The run ended in this process: close its clients, forget its assumed-role credentials."""
    for made in CLIENTS.release(run_id):
        close = getattr(made, "close", None)  # a client's HTTP connections; sessions have none
        if close is not None:
            with contextlib.suppress(Exception):  # a connection already gone is not an error
                close()
    with _lock:
        being_assumed = [(key, lock) for key, lock in _assuming.items() if key[1] == run_id]
    for key, assuming in being_assumed:  # an STS call of the run still going ends first
        with assuming, _lock:
            _assuming.pop(key, None)
    with _lock:
        for key in [key for key in _assumed if key[1] == run_id]:
            del _assumed[key]


def _environment() -> str:
    """A digest of the ``AWS_*`` variables: endpoints, credentials, retries (a client made
    under other values is not reused; the values themselves are not kept)."""
    found = sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_"))
    return hashlib.sha256(repr(found).encode()).hexdigest()


_loader: Any = None


def _with_shared_models(made: Any) -> Any:
    """Share one botocore data loader: reading the service models costs ~150 ms per session."""
    global _loader
    with _lock:
        if _loader is None:
            from botocore.loaders import create_loader

            _loader = create_loader()
    made._session.register_component("data_loader", _loader)
    return made


def _config() -> Any:
    """Standard retry mode; ``AWS_MAX_ATTEMPTS`` (the usual variable) overrides our default 8."""
    from botocore.config import Config

    attempts = os.environ.get("AWS_MAX_ATTEMPTS", "").strip()
    retries = (  # AWS_MAX_ATTEMPTS counts attempts in all, as in the AWS CLI and SDKs
        {"mode": "standard", "total_max_attempts": int(attempts)}
        if attempts.isdigit()
        else RETRY_CONFIG
    )
    return Config(retries=retries, user_agent_extra="clampdown")


READ_ONLY_PREFIXES = ("Get", "List", "Describe", "Head", "Lookup", "Search", "Filter", "Simulate")


class MutatingCallRefused(Exception):
    """A preview tried to call an API that changes something."""


def _refuse_mutations(model: Any, **_: Any) -> None:
    if not model.name.startswith(READ_ONLY_PREFIXES):
        raise MutatingCallRefused(
            f"preview refused to call {model.service_model.service_name}:{model.name}, "
            "which could change something"
        )


@dataclass
class Aws:
    """Clients for one step: its region and (optionally) its cross-account role.

    With ``read_only`` (what ``clampdown plan --live`` uses), every client refuses,
    before sending, any operation that is not a Get/List/Describe/Head/… call: a
    preview cannot change anything, whatever its code does.
    """

    ctx: ActionContext
    read_only: bool = False

    def client(self, service: str) -> Any:
        """The run's client for ``service`` here, made on the run's first ask
        (:mod:`clampdown_aws.clients`: kept per run, role, region, read-only or not,
        ``AWS_*`` variables and credential set)."""
        ctx = self.ctx
        run = (str(ctx.home.configured), ctx.run_id)  # a run id is unique within its home
        version = _role_credentials(ctx.account, ctx.run_id, ctx.region)[1] if ctx.account else None
        where = (ctx.account, ctx.region, _environment())
        return CLIENTS.get(
            run,
            ("client", *where, service, self.read_only),
            version,
            lambda: self._new_client(run, where, version, service),
        )

    def _new_client(
        self, run: tuple[str, str], where: tuple[Any, ...], version: float | None, service: str
    ) -> Any:
        """A client made from the run's session for ``where`` (made first if need be)."""
        ctx = self.ctx
        made = CLIENTS.get(
            run,
            ("session", *where),
            version,
            lambda: session(ctx.account, ctx.run_id, ctx.region),
        ).client(service, config=_config())
        if self.read_only:
            made.meta.events.register("before-call", _refuse_mutations)
        return made

    def principal(self) -> str:
        try:
            return str(self.client("sts").get_caller_identity()["Arn"])
        except Exception:  # identity is for the message only
            return "the engine's principal"


MAX_ERROR_TEXT = 240  # characters of an endpoint's error text kept in a message
_HTML = re.compile(r"<\s*(?:!doctype\s+html|html|head|body)\b", re.IGNORECASE)
_TITLE = re.compile(r"<(title|h1)[^>]*>(.*?)</\1\s*>", re.IGNORECASE | re.DOTALL)
_TAGS = re.compile(r"<[^>]*>")


def summarize_error_text(text: str, status: int | None = None, content_type: str = "") -> str:
    """An endpoint's error text as one short line, safe for progress output, logs and artifacts.

    Why: a proxy, a load balancer or a half-implemented endpoint (moto server answers an
    unimplemented operation with Werkzeug's HTML 500 page) can put a whole HTML page where
    AWS puts a one-line message; botocore passes it on as the error message. Pasted as is,
    it floods the step's progress line, the Prefect log and the run's artifact. An HTML page
    becomes its status and title; any other text its first line, cut at
    :data:`MAX_ERROR_TEXT` characters.
    """
    text = text or ""
    prefix = f"HTTP {status}" if status else ""
    if "html" in content_type.lower() or _HTML.search(text[:512]):
        found = _TITLE.search(text)
        title = " ".join(_TAGS.sub("", found[2]).split()) if found else ""
        page = f"an HTML error page titled '{_cut(title)}'" if title else "an HTML error page"
        return f"{prefix}: {page} (body not shown)" if prefix else f"{page} (body not shown)"
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    line = _cut(lines[0]) if lines else ""
    if len(lines) > 1 and not line.endswith("…"):
        line += " …"
    return f"{prefix}: {line}" if prefix and line else (line or prefix or "no error text")


def _cut(text: str) -> str:
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    return text if len(text) <= MAX_ERROR_TEXT else text[: MAX_ERROR_TEXT - 1].rstrip() + "…"


def translate(exc: Exception, aws: Aws) -> Exception:
    """An AWS error as an exception whose message tells the responder what to do.

    Every AWS action's errors pass through here (``AwsAction.run``, ``preview`` and
    ``rollback``), so an endpoint's error body is summarised in one place: an HTML page
    or a multi-line body never reaches the progress output, the Prefect log or the
    artifact (:func:`summarize_error_text`).
    """
    from botocore.exceptions import ClientError
    from botocore.parsers import ResponseParserError

    if isinstance(exc, ResponseParserError):  # the raw body is in botocore's message
        text = str(exc).split("received", 1)[-1].strip(" :.\n")
        return AwsActionError(
            f"AWS answered with a body botocore cannot parse: {summarize_error_text(text)}"
        )
    if not isinstance(exc, ClientError):
        return exc
    error = exc.response.get("Error", {})
    meta = exc.response.get("ResponseMetadata", {})
    status = meta.get("HTTPStatusCode")
    content_type = str(meta.get("HTTPHeaders", {}).get("content-type", ""))
    code, message = str(error.get("Code", "")), str(error.get("Message", ""))
    found = _DENIED_TEXT.search(message)
    # moto (with IAM auth) answers JSON services with an XML body: botocore sees "403"
    if code in ACCESS_DENIED or (code == "403" and found):
        who = found["who"] if found else aws.principal()
        action = (
            found["action"]
            if found
            else _IAM_ACTION.get(exc.operation_name, f"the permission behind {exc.operation_name}")
        )
        return AwsAccessDenied(
            f"AccessDenied: {who} may not call {action} — grant it to the engine's role "
            "(clampdown iam-policy prints the policy the runbook needs)"
        )
    if code.isdigit():  # no AWS error code: botocore puts the HTTP status there
        code, status = "", status or int(code)
    message = summarize_error_text(message, None if code else status, content_type)
    return AwsActionError(
        f"{exc.operation_name} failed: {code}: {message}"
        if code
        else f"{exc.operation_name} failed: {message}"
    )


def refused_at_once(exc: BaseException) -> bool:
    """AWS answered the one request it got with a client error: it changed nothing.

    Only a 4xx answer to a request that botocore did not retry says so: after a retry
    (throttling, a lost connection, a 5xx) an earlier try may have gone through.
    """
    response = getattr(exc, "response", None)
    if not isinstance(response, dict) or "Error" not in response:
        return False
    meta = response.get("ResponseMetadata") or {}
    status = meta.get("HTTPStatusCode") or 0
    return 400 <= int(status) < 500 and not meta.get("RetryAttempts")


@contextmanager
def changing(ctx: ActionContext, description: str, **how: Any) -> Iterator[Intent]:
    """Around one mutating AWS call: its undo is written before the call, confirmed after.

    :meth:`ActionContext.changing`, plus: a call AWS refused at once
    (:func:`refused_at_once`) changed nothing, so its intent is settled as not made and
    rollback leaves it alone. Any other failure (a timeout, a lost connection, a refusal
    after a retry) leaves the intent unsettled: rollback undoes it, idempotently.
    """
    with ctx.changing(description, **how) as intent:
        try:
            yield intent
        except Exception as exc:
            if intent.state is None and refused_at_once(exc):
                intent.not_made()
            raise


def arn_resources(
    actions: tuple[str, ...], value: Any, arn_marker: str, service: str
) -> dict[str, list[str]]:
    """Narrow the ``service:`` actions to ``value`` when it is a literal ARN containing
    ``arn_marker`` (for ``clampdown iam-policy``); otherwise leave them at ``"*"``."""
    if not (isinstance(value, str) and value.startswith("arn:aws") and arn_marker in value):
        return {}
    return {name: [value] for name in actions if name.startswith(f"{service}:")}


S3_WRITE = (
    "s3:GetBucketObjectLockConfiguration",  # GetObjectLockConfiguration of the evidence bucket
    "s3:PutObject",  # PutObject, CreateMultipartUpload, UploadPart, CompleteMultipartUpload
    "s3:PutObjectRetention",  # Object Lock retention on each object
    "s3:AbortMultipartUpload",  # only when an upload fails half-way
    "s3:ListBucket",  # write_manifest lists manifest.d/
    "s3:GetObject",  # write_manifest reads manifest.d/ entries
)
"""What an action that writes evidence (through the evidence store) needs on the bucket."""
_EVIDENCE_OBJECT_ACTIONS = (
    "s3:PutObject",
    "s3:PutObjectRetention",
    "s3:AbortMultipartUpload",
    "s3:GetObject",
)


def evidence_resources(bucket: Any) -> dict[str, list[str]]:
    """The evidence writes scoped to the evidence bucket's ``incidents/`` prefix.

    ``bucket`` is the step's ``bucket`` value (may be an IAM wildcard); None: the
    configured evidence bucket (``clampdown iam-policy`` fills the placeholder in).
    ``s3:GetBucketObjectLockConfiguration`` is left to the action: some read it on other
    buckets too (``snapshot_config`` records each model bucket's lock configuration).
    """
    from clampdown.core.iam_policy import EVIDENCE_BUCKET

    name = bucket if isinstance(bucket, str) and "{" not in bucket else EVIDENCE_BUCKET
    objects = f"arn:aws:s3:::{name}/incidents/*"
    return {
        **{action: [objects] for action in _EVIDENCE_OBJECT_ACTIONS},
        "s3:ListBucket": [f"arn:aws:s3:::{name}"],
    }


class AwsAction(Action):
    """Base of AWS actions: subclasses implement ``apply`` (and ``undo`` when they change
    something). Both receive an :class:`Aws` for the step's region and account.

    Every mutating call in ``apply`` sits in a :func:`changing` block that names its
    undo, so the undo is on record before the call is made. ``undo`` must succeed when
    the change never happened or was already put back: rollback also runs the undo of an
    intent the run never confirmed.

    ``iam_resources`` (for ``clampdown iam-policy``): an action that declares every
    :data:`S3_WRITE` action writes evidence, so by default its object reads and writes
    and its listing are scoped to the evidence bucket (:func:`evidence_resources`). An
    action that also reads objects or lists keys in another bucket must override
    ``iam_resources`` and declare those (``snapshot_cloudtrail`` does, for trail files).
    """

    reversible: ClassVar[bool] = False

    @classmethod
    def iam_resources(cls, with_: Mapping[str, Any]) -> dict[str, list[str]]:
        if not set(S3_WRITE) <= set(cls.iam_actions):
            return {}
        return evidence_resources(with_.get("bucket"))

    def run(self, params: Any, ctx: ActionContext) -> Any:
        aws = Aws(ctx)
        try:
            return self.apply(params, aws, ctx)
        except Exception as exc:
            raise translate(exc, aws) from None

    def apply(self, params: Any, aws: Aws, ctx: ActionContext) -> Any:
        raise NotImplementedError

    def preview(self, params: Any, ctx: ActionContext) -> list[str] | None:
        """What ``apply`` would change, found with read-only calls (``plan --live``)."""
        if type(self).describe is AwsAction.describe:
            return None
        aws = Aws(ctx, read_only=True)
        try:
            return self.describe(params, aws, ctx)
        except MutatingCallRefused:
            raise
        except Exception as exc:
            raise translate(exc, aws) from None

    def describe(self, params: Any, aws: Aws, ctx: ActionContext) -> list[str]:
        """One line per change ``apply`` would make now (empty: nothing to do).

        Called with a read-only :class:`Aws`: only Get/List/Describe/… calls go out.
        """
        raise NotImplementedError

    def rollback(self, how: dict[str, Any], ctx: ActionContext) -> None:
        """Put back what one undo record describes (rollback calls this, newest first)."""
        aws = Aws(ctx)
        try:
            self.undo(how, aws, ctx)
        except Exception as exc:
            raise translate(exc, aws) from None

    def undo(self, how: dict[str, Any], aws: Aws, ctx: ActionContext) -> None:
        raise NotImplementedError(f"{self.name} records no undo")

    @classmethod
    def release_run(cls, run_id: str) -> None:
        """The run ended in this process: its AWS clients and assumed-role credentials go
        (the respond flow calls this, once per action class the runbook uses)."""
        release_run(run_id)
