"""Who the suspect is, in the terms CloudTrail records use.

A responder names the suspect the way the alert did: an IAM user (name or ARN), a role
(every session of it), one role session (``role/session`` or its ``assumed-role`` ARN),
or an access key id. Each becomes a condition on the narrow columns of
:mod:`clampdown_aws.forensics.sql` (``identity_arn``, ``identity_type``, ``user_name``,
``issuer_arn``, ``access_key_id``), always as an exact comparison: a session name may hold
``_``, which a ``LIKE`` would read as a wildcard.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from clampdown.core.diagnostics import ClampdownError

ACCESS_KEY = re.compile(r"^(AKIA|ASIA|AIDA|AROA)[A-Z0-9]{12,124}$")
# The characters IAM allows in user, role and session names (and, with "/", in paths):
# ASCII only. Also the input model's pattern: pydantic-core's Rust regex took ~60 ms to
# compile a Unicode \w{1,64} each time the model was built.
_NAME = "A-Za-z0-9_+=,.@-"
_USER_ARN = re.compile(rf"^arn:aws[a-z-]*:iam::(\d{{12}}):user/[/{_NAME}]+$")
_ROLE_ARN = re.compile(rf"^arn:aws[a-z-]*:iam::(\d{{12}}):role/[/{_NAME}]+$")
_SESSION_ARN = re.compile(rf"^arn:aws[a-z-]*:sts::(\d{{12}}):assumed-role/[{_NAME}]+/[{_NAME}]+$")
_ROLE_SESSION = re.compile(rf"^([{_NAME}]+)/([{_NAME}]+)$")
_USER_NAME = re.compile(rf"^[{_NAME}]{{1,64}}$")
PRINCIPAL_PATTERN = (
    rf"^(arn:aws[a-z-]*:(iam|sts)::\d{{12}}:(user|role|assumed-role)/[/{_NAME}]+"
    rf"|[{_NAME}]{{1,64}}(/[{_NAME}]{{1,64}})?|[A-Z0-9]{{16,128}})$"
)


class BadPrincipal(ClampdownError):
    """The suspect is written in a form clampdown cannot match against CloudTrail."""


@dataclass(frozen=True)
class Principal:
    """One suspect as CloudTrail identifies it: ``kind`` and the value compared.

    ``kind`` is ``user_arn``, ``user_name``, ``role_arn`` (every session of the role),
    ``session_arn`` or ``access_key``.
    """

    kind: str
    value: str
    written: str

    def describe(self) -> str:
        return {
            "user_arn": f"IAM user {self.value}",
            "user_name": f"IAM user named {self.value}",
            "role_arn": f"every session of role {self.value}",
            "session_arn": f"role session {self.value}",
            "access_key": f"access key {self.value}",
        }[self.kind]


def parse_principal(text: str, account: str | None) -> Principal:
    """Read the suspect; ``account`` (the trail's) completes a ``role/session`` form."""
    written = text.strip()
    if ACCESS_KEY.match(written):
        return Principal("access_key", written, written)
    if _USER_ARN.match(written):
        return Principal("user_arn", written, written)
    if _ROLE_ARN.match(written):
        return Principal("role_arn", written, written)
    if _SESSION_ARN.match(written):
        return Principal("session_arn", written, written)
    session = _ROLE_SESSION.match(written)
    if session:
        if not account:
            raise BadPrincipal(
                f"principal '{written}' is a role session but the account is unknown",
                "write it as arn:aws:sts::<account>:assumed-role/<role>/<session>",
            )
        arn = f"arn:aws:sts::{account}:assumed-role/{session[1]}/{session[2]}"
        return Principal("session_arn", arn, written)
    if _USER_NAME.match(written):
        return Principal("user_name", written, written)
    raise BadPrincipal(
        f"principal '{written}' is not a user name or ARN, role ARN, role session "
        "(role/session or assumed-role ARN) or access key id",
        "e.g. arn:aws:iam::123456789012:user/alice, role/serving/i-0abc, AKIA…",
    )


def literal(value: str) -> str:
    """A SQL string literal (values are validated first; quotes are doubled anyway)."""
    return "'" + value.replace("'", "''") + "'"


def identity_predicate(
    principal: Principal, keys: frozenset[str] = frozenset(), row: str = ""
) -> str:
    """SQL over the narrow columns: the event was made by the suspect or by credentials
    the suspect minted (``keys``: access key ids from its AssumeRole, GetSessionToken,
    GetFederationToken or CreateAccessKey). ``row``: a prefix for the column names (``i.``
    inside a list lambda over structs with those fields)."""
    value = literal(principal.value)
    base = {
        "user_arn": f"{row}identity_arn = {value}",
        "user_name": f"({row}identity_type = 'IAMUser' AND {row}user_name = {value})",
        "role_arn": f"{row}issuer_arn = {value}",
        "session_arn": f"{row}identity_arn = {value}",
        "access_key": f"{row}access_key_id = {value}",
    }[principal.kind]
    if not keys:
        return f"({base})"
    listed = ", ".join(literal(key) for key in sorted(keys))
    return f"({base} OR {row}access_key_id IN ({listed}))"
