"""The forensics actions' input patterns use the ASCII character classes AWS allows:
every suspect form the principal parser reads still validates, names AWS cannot hold do
not (pydantic-core compiles a Unicode ``\\w{1,64}`` in ~60 ms; these in about 1 ms)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from clampdown_aws.forensics.exfiltration import ScopeExfiltration
from clampdown_aws.forensics.inference import ScopeInferenceExtraction
from clampdown_aws.forensics.principal import PRINCIPAL_PATTERN, parse_principal

SUSPECTS = [
    "alice",
    "svc.deploy+ci=1,x@y-z_0",
    "arn:aws:iam::123456789012:user/alice",
    "arn:aws:iam::123456789012:user/team/path/alice",
    "arn:aws-us-gov:iam::123456789012:role/serving",
    "arn:aws:sts::123456789012:assumed-role/serving/i-0abc",
    "serving/i-0abc",
    "AKIAIOSFODNN7EXAMPLE",
    "a" * 64,
]
NOT_AWS = ["élodie", "arn:aws:iam::123456789012:user/ålice", "rôle/session", "a" * 65, "a b"]


def _principal(value: str) -> None:
    ScopeExfiltration.Input.model_validate({"principal": value})


@pytest.mark.parametrize("suspect", SUSPECTS)
def test_every_suspect_form_validates(suspect: str) -> None:
    _principal(suspect)
    assert parse_principal(suspect, "123456789012").value


@pytest.mark.parametrize("name", NOT_AWS)
def test_names_iam_cannot_hold_are_refused(name: str) -> None:
    with pytest.raises(ValidationError):
        _principal(name)


def test_the_input_pattern_is_the_parser_s_in_ascii() -> None:
    field = ScopeExfiltration.Input.model_fields["principal"]
    (constraint,) = [m for m in field.metadata if getattr(m, "pattern", None)]
    assert constraint.pattern == PRINCIPAL_PATTERN and "\\w" not in PRINCIPAL_PATTERN


@pytest.mark.parametrize(("stage", "ok"), [("prod", True), ("v1_beta-2", True), ("étape", False)])
def test_api_gateway_stage_names(stage: str, ok: bool) -> None:
    given = {"rest_api_id": "abc123", "stage": stage, "endpoint_name": "ep"}
    if ok:
        ScopeInferenceExtraction.Input.model_validate(given)
    else:
        with pytest.raises(ValidationError):
            ScopeInferenceExtraction.Input.model_validate(given)
