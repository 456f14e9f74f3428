"""The rules every approval decision meets (:class:`clampdown.core.approvals.Request`), without
Prefect or Slack: binding to run/step/parameters, deadline, who may decide, the two-person
rule, reasons for denials, one vote per person, quorum, and ``CLAMPDOWN_APPROVERS`` parsing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from clampdown.core.approvals import Decision, Request, params_hash
from clampdown_flows.approval_store import default_approvers

RUN = "a1b2c3d4e5f6"
STEP = "approve"
STARTER = "U0STARTER"
LEAD = "U0LEAD"
ONCALL = ("U0ONCALL1", "U0ONCALL2")
OUTSIDER = "U0OUTSIDER"
T0 = datetime(2025, 5, 14, 10, 0, tzinfo=UTC)
GATED = {
    "revoke": {
        "uses": "aws.iam.revoke_credentials",
        "params": {"principal_arn": "arn:aws:iam::123456789012:user/mallory"},
        "reversible": True,
    }
}


def make_request(**overrides: Any) -> Request:
    values: dict[str, Any] = {
        "run_id": RUN,
        "step": STEP,
        "summary": "Revoke mallory?",
        "gated": GATED,
        "params_hash": params_hash(GATED),
        "allowed_users": frozenset({LEAD, STARTER}),
        "groups": ("security-oncall",),
        "min_approvals": 1,
        "two_person_rule": True,
        "started_by": STARTER,
        "requested_at": T0,
        "deadline": T0 + timedelta(minutes=15),
        "on_timeout": "deny",
    }
    return Request(**{**values, **overrides})


def decide(approver: str, decision: str = "approve", **overrides: Any) -> Decision:
    values: dict[str, Any] = {
        "run_id": RUN,
        "step": STEP,
        "params_hash": params_hash(GATED),
        "decision": decision,
        "approver": approver,
        "reason": "",
    }
    return Decision(**{**values, **overrides})


IN_TIME = T0 + timedelta(minutes=1)
MEMBERS = set(ONCALL)


# --- params_hash ---------------------------------------------------------------------------


def test_params_hash_is_canonical_and_changes_with_any_parameter() -> None:
    reordered = {"revoke": dict(reversed(list(GATED["revoke"].items())))}
    assert params_hash(reordered) == params_hash(GATED)
    assert len(params_hash(GATED)) == 64 and int(params_hash(GATED), 16) >= 0
    other = {
        "revoke": {
            **GATED["revoke"],
            "params": {"principal_arn": "arn:aws:iam::123456789012:user/eve"},
        }
    }
    assert params_hash(other) != params_hash(GATED)
    assert params_hash({}) != params_hash(GATED)


# --- binding: run, step, parameters, deadline -----------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"run_id": "ffffffffffff"}, f"the decision is for run ffffffffffff, not {RUN}"),
        (
            {"step": "approve_rotation"},
            "the decision is for step 'approve_rotation', not 'approve'",
        ),
        (
            {"params_hash": params_hash({"revoke": {"params": {}}})},
            "the decision was made on other parameters than the ones now gated",
        ),
    ],
)
def test_a_decision_bound_to_something_else_is_refused(
    overrides: dict[str, Any], expected: str
) -> None:
    request = make_request()
    assert request.refusal(decide(LEAD, **overrides), MEMBERS, IN_TIME) == expected
    assert request.refusal(decide(LEAD), MEMBERS, IN_TIME) is None


def test_binding_is_checked_before_who_decides() -> None:
    """An outsider's decision for another run is refused for the run, not leaking the list."""
    refusal = make_request().refusal(decide(OUTSIDER, run_id="ffffffffffff"), MEMBERS, IN_TIME)
    assert refusal is not None and refusal.startswith("the decision is for run")


def test_a_decision_after_the_deadline_is_refused_even_from_an_allowed_approver() -> None:
    request = make_request()
    at_deadline = request.deadline
    assert request.refusal(decide(LEAD), MEMBERS, at_deadline) is None
    late = request.deadline + timedelta(microseconds=1)
    assert request.refusal(decide(LEAD), MEMBERS, late) == "the request has expired"


# --- who may decide ------------------------------------------------------------------------


def test_someone_neither_listed_nor_in_a_group_is_not_an_approver() -> None:
    refusal = make_request().refusal(decide(OUTSIDER), MEMBERS, IN_TIME)
    assert refusal == f"{OUTSIDER} is not an approver of this step"


def test_a_member_of_an_allowed_group_may_decide() -> None:
    request = make_request()
    assert request.refusal(decide(ONCALL[0]), MEMBERS, IN_TIME) is None
    # membership is what the groups hold now: once out of the group, no longer allowed
    assert request.refusal(decide(ONCALL[0]), {ONCALL[1]}, IN_TIME) is not None


def test_unresolvable_groups_leave_only_listed_users_and_say_why() -> None:
    request = make_request(groups=("security-oncall", "ml-leads"))
    refusal = request.refusal(decide(ONCALL[0]), None, IN_TIME)
    assert refusal == (
        f"{ONCALL[0]} is not a listed approver and the groups "
        "security-oncall, ml-leads could not be resolved"
    )
    assert request.refusal(decide(LEAD), None, IN_TIME) is None


def test_without_groups_a_none_membership_is_a_plain_not_an_approver() -> None:
    request = make_request(groups=())
    assert request.refusal(decide(OUTSIDER), None, IN_TIME) == (
        f"{OUTSIDER} is not an approver of this step"
    )


# --- two-person rule -----------------------------------------------------------------------


def test_two_person_rule_refuses_the_starter_even_when_listed() -> None:
    refusal = make_request().refusal(decide(STARTER), MEMBERS, IN_TIME)
    assert refusal == f"{STARTER} started this run; two-person rule: someone else must decide"


def test_two_person_rule_refuses_the_starter_who_is_a_group_member() -> None:
    request = make_request(allowed_users=frozenset({LEAD}))
    refusal = request.refusal(decide(STARTER), MEMBERS | {STARTER}, IN_TIME)
    assert refusal is not None and "two-person rule" in refusal


def test_two_person_rule_off_lets_the_starter_approve() -> None:
    request = make_request(two_person_rule=False)
    assert request.refusal(decide(STARTER), MEMBERS, IN_TIME) is None
    request.record(decide(STARTER))
    assert request.decided == "approved"


def test_a_run_without_a_known_starter_has_nobody_to_exclude() -> None:
    request = make_request(started_by=None)
    assert request.refusal(decide(STARTER), MEMBERS, IN_TIME) is None


# --- denials, votes, quorum ----------------------------------------------------------------


@pytest.mark.parametrize("reason", ["", "   \n\t"])
def test_a_denial_needs_a_reason(reason: str) -> None:
    refusal = make_request().refusal(decide(LEAD, "deny", reason=reason), MEMBERS, IN_TIME)
    assert refusal == "a denial needs a reason"


def test_a_single_allowed_deny_decides_the_request() -> None:
    request = make_request(min_approvals=3)
    request.record(decide(ONCALL[0]))
    assert request.decided is None
    deny = decide(ONCALL[1], "deny", reason="pentest in progress")
    assert request.refusal(deny, MEMBERS, IN_TIME) is None
    request.record(deny)
    assert request.decided == "denied"
    assert request.denial is deny
    assert request.to_json()["denied_by"] == ONCALL[1]


def test_a_repeated_approve_by_the_same_person_is_refused_and_counts_once() -> None:
    request = make_request(min_approvals=2)
    first = decide(ONCALL[0])
    assert request.refusal(first, MEMBERS, IN_TIME) is None
    request.record(first)
    again = decide(ONCALL[0])
    assert request.refusal(again, MEMBERS, IN_TIME) == (
        f"{ONCALL[0]} has already approved; 2 different people are needed"
    )
    assert list(request.approvals) == [ONCALL[0]]
    assert request.decided is None


def test_someone_who_approved_may_still_deny_with_a_reason() -> None:
    request = make_request(min_approvals=2)
    request.record(decide(LEAD))
    change = decide(LEAD, "deny", reason="saw new evidence: false positive")
    assert request.refusal(change, MEMBERS, IN_TIME) is None
    request.record(change)
    assert request.decided == "denied"


def test_quorum_of_two_needs_two_distinct_approvers() -> None:
    request = make_request(min_approvals=2)
    assert request.decided is None
    request.record(decide(ONCALL[0]))
    assert request.decided is None
    request.record(decide(ONCALL[0]))  # even if a duplicate slipped through, it is one person
    assert request.decided is None
    request.record(decide(LEAD))
    assert request.decided == "approved"
    assert sorted(request.approvals) == sorted([ONCALL[0], LEAD])
    assert request.to_json()["approvals"] == sorted([ONCALL[0], LEAD])


def test_quorum_of_one_is_met_by_one_approval() -> None:
    request = make_request()
    request.record(decide(ONCALL[1]))
    assert request.decided == "approved"


def test_the_outcome_if_counted_is_what_counting_makes_of_the_request() -> None:
    """What the gate writes in a decision's record (``decides``) before counting it: for
    every step of a quorum of two, a repeated approver and a denial, it is what
    :attr:`Request.decided` then says, and asking counts nothing."""
    request = make_request(min_approvals=2)
    for decision in (
        decide(ONCALL[0]),
        decide(ONCALL[0]),  # the same person again: still one approval
        decide(LEAD),
        decide(ONCALL[1], "deny", reason="not this one"),
    ):
        predicted = request.outcome_if_counted(decision)
        assert request.outcome_if_counted(decision) == predicted  # asking changed nothing
        request.record(decision)
        assert request.decided == predicted, decision
    assert make_request().outcome_if_counted(decide(LEAD, "deny", reason="no")) == "denied"


def test_a_request_survives_its_json_round_trip_for_the_senders() -> None:
    """Senders re-check with the request read from its file: the rules must not change."""
    request = make_request(min_approvals=2)
    again = Request.from_json(request.to_json())
    assert again.params_hash == request.params_hash
    assert again.deadline == request.deadline and again.started_by == STARTER
    assert again.refusal(decide(STARTER), MEMBERS, IN_TIME) == request.refusal(
        decide(STARTER), MEMBERS, IN_TIME
    )
    assert again.refusal(decide(OUTSIDER), MEMBERS, IN_TIME) is not None


def test_decision_rejects_unknown_fields_and_values() -> None:
    with pytest.raises(ValueError, match=r"(?i)extra inputs"):
        Decision.model_validate({**decide(LEAD).model_dump(), "admin": True})
    with pytest.raises(ValueError, match="decision"):
        Decision.model_validate({**decide(LEAD).model_dump(), "decision": "maybe"})
    assert decide(LEAD).decision_id != decide(LEAD).decision_id


# --- CLAMPDOWN_APPROVERS -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "users", "groups"),
    [
        ("", [], []),
        ("U024BE7LH", ["U024BE7LH"], []),
        ("W0ENTERPRISE1", ["W0ENTERPRISE1"], []),
        (
            " U024BE7LH , @security-oncall,S0614TZR7,, W0ABC ",
            ["U024BE7LH", "W0ABC"],
            ["security-oncall", "S0614TZR7"],
        ),
        ("ux-team,Unicorns", [], ["ux-team", "Unicorns"]),  # handles, not user ids
        ("@@security-oncall", [], ["security-oncall"]),
    ],
)
def test_default_approvers_splits_user_ids_from_groups(
    monkeypatch: pytest.MonkeyPatch, value: str, users: list[str], groups: list[str]
) -> None:
    monkeypatch.setenv("CLAMPDOWN_APPROVERS", value)
    assert default_approvers() == (users, groups)


def test_default_approvers_unset_is_nobody(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLAMPDOWN_APPROVERS", raising=False)
    assert default_approvers() == ([], [])
