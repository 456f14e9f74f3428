"""Suspects as CloudTrail identifies them, and the SQL condition each becomes."""

from __future__ import annotations

import pytest

from clampdown_aws.forensics.principal import BadPrincipal, identity_predicate, parse_principal

ACCOUNT = "123456789012"


@pytest.mark.parametrize(
    ("written", "kind", "value"),
    [
        ("AKIAMALLORY000000001", "access_key", "AKIAMALLORY000000001"),
        ("ASIAEXPORTER00000001", "access_key", "ASIAEXPORTER00000001"),
        (
            f"arn:aws:iam::{ACCOUNT}:user/ml/alice",
            "user_arn",
            f"arn:aws:iam::{ACCOUNT}:user/ml/alice",
        ),
        (
            f"arn:aws:iam::{ACCOUNT}:role/serving",
            "role_arn",
            f"arn:aws:iam::{ACCOUNT}:role/serving",
        ),
        (
            f"arn:aws:sts::{ACCOUNT}:assumed-role/serving/i-0abc",
            "session_arn",
            f"arn:aws:sts::{ACCOUNT}:assumed-role/serving/i-0abc",
        ),
        ("serving/i-0abc", "session_arn", f"arn:aws:sts::{ACCOUNT}:assumed-role/serving/i-0abc"),
        ("mallory", "user_name", "mallory"),
    ],
)
def test_each_form_of_suspect(written: str, kind: str, value: str) -> None:
    principal = parse_principal(written, ACCOUNT)
    assert (principal.kind, principal.value, principal.written) == (kind, value, written)


def test_role_session_without_account_says_how_to_write_it() -> None:
    with pytest.raises(BadPrincipal, match="role session but the account is unknown") as err:
        parse_principal("serving/i-0abc", None)
    assert "assumed-role" in str(err.value)


def test_unreadable_suspect_is_refused() -> None:
    with pytest.raises(BadPrincipal, match="not a user name or ARN"):
        parse_principal("a b c", ACCOUNT)


def test_predicates_compare_exactly_and_add_minted_keys() -> None:
    role = parse_principal(f"arn:aws:iam::{ACCOUNT}:role/serving", ACCOUNT)
    assert identity_predicate(role) == f"(issuer_arn = 'arn:aws:iam::{ACCOUNT}:role/serving')"
    name = parse_principal("mal_lory", ACCOUNT)
    assert identity_predicate(name, frozenset({"ASIAB", "ASIAA"})) == (
        "((identity_type = 'IAMUser' AND user_name = 'mal_lory') "
        "OR access_key_id IN ('ASIAA', 'ASIAB'))"
    )
