"""The shipped runbooks stay approvable while Slack is down (issue 11).

Their approvers are groups only (``security-oncall``). While Slack cannot answer who is
in a group, the membership Slack last gave (kept in the state store) is used and said on
the approval card; with no kept answer, only the break-glass approvers
(``CLAMPDOWN_BREAK_GLASS_APPROVERS``) may decide besides listed users. Slack is the
stand-in; the real slack_sdk client; the state store is the SQLite one serve uses."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from clampdown.core.approvals import Decision, Request, params_hash
from clampdown.core.extensions import RunHeader
from clampdown.core.ledger import Ledger, new_run_id
from clampdown.core.settings import settings
from clampdown.core.state_store import StateStore, default_url
from clampdown_flows.approval_store import BreakGlass, counted_by_break_glass, resolve_members
from clampdown_slack.client import SlackSettings
from clampdown_slack.directory import membership_note, slack_member_directory
from clampdown_slack.run_thread import RunThread, card_membership
from clampdown_slack.testing.standin import SlackStandIn
from tests.slack_requests import CHANNEL, ONCALL

GROUPS = ("security-oncall",)


def _slack_cannot_list_groups(standin: SlackStandIn) -> None:
    """Slack's user-group API fails (HTTP 500, past the client's retries); chat still works."""
    standin.fail_next("usergroups.list", n=1000, mode="server_error")


def _request(run_id: str = "run0001", groups: tuple[str, ...] = GROUPS) -> Request:
    gated = {"revoke": {"uses": "aws.iam.revoke_credentials", "params": {"principal_arn": "x"}}}
    now = datetime.now(UTC)
    return Request(
        run_id=run_id,
        step="approve_containment",
        summary="Revoke?",
        gated=gated,
        params_hash=params_hash(gated),
        allowed_users=frozenset(),
        groups=groups,
        min_approvals=1,
        two_person_rule=True,
        started_by=None,
        requested_at=now,
        deadline=now + timedelta(minutes=15),
        on_timeout="deny",
    )


def _decision(request: Request, approver: str) -> Decision:
    return Decision(
        run_id=request.run_id,
        step=request.step,
        params_hash=request.params_hash,
        decision="approve",
        approver=approver,
    )


def test_while_slack_cannot_answer_the_last_membership_is_used_and_said(
    oncall_slack: SlackStandIn,
) -> None:
    assert resolve_members(GROUPS) == set(ONCALL)  # Slack answered: kept
    _slack_cannot_list_groups(oncall_slack)
    lookup = slack_member_directory(settings()).lookup(GROUPS)  # type: ignore[union-attr]
    assert lookup.members == set(ONCALL)
    assert lookup.as_of is not None and lookup.problem is not None
    assert resolve_members(GROUPS) == set(ONCALL)  # what the run and the sender use
    note = membership_note(lookup)
    assert note == (
        f":warning: group membership as of {lookup.as_of.strftime('%Y-%m-%d %H:%M UTC')}, "
        "Slack unreachable"
    )
    request = _request()
    assert request.refusal(_decision(request, ONCALL[0]), resolve_members(GROUPS), _now()) is None


def test_the_kept_membership_is_in_the_state_store_for_another_process(
    oncall_slack: SlackStandIn,
) -> None:
    resolve_members(GROUPS)
    store = StateStore(default_url(settings()))  # what a resumed run or a worker opens
    try:
        cached = store.cached_members(GROUPS)
        assert cached is not None and cached[0] == set(ONCALL)
        assert store.cached_members(("security-oncall", "never-asked")) is None
    finally:
        store.close()


def test_a_group_slack_says_is_gone_does_not_keep_its_old_members(
    oncall_slack: SlackStandIn,
) -> None:
    store = StateStore(default_url(settings()))
    try:
        store.remember_members({"deleted-group": {"U0FORMER"}})
    finally:
        store.close()
    assert resolve_members(("deleted-group",)) is None  # Slack answered: no such group


def _without_break_glass(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLAMPDOWN_BREAK_GLASS_APPROVERS", raising=False)


def test_break_glass_approvers_count_only_when_groups_cannot_be_resolved(
    oncall_slack: SlackStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    request = _request()
    monkeypatch.setenv("CLAMPDOWN_BREAK_GLASS_APPROVERS", "U0CISO, U0VPENG")
    conf = settings()
    live = resolve_members(GROUPS, conf)  # Slack answers: break glass plays no part
    assert live == set(ONCALL) and not isinstance(live, BreakGlass)
    assert request.refusal(_decision(request, "U0CISO"), live, _now()) == (
        "U0CISO is not an approver of this step"
    )
    assert not counted_by_break_glass(live, "U0CISO", request.allowed_users)

    other = _request(groups=("never-looked-up",))  # Slack down and nothing kept for it
    _slack_cannot_list_groups(oncall_slack)
    glass = resolve_members(other.groups, conf)
    assert isinstance(glass, BreakGlass) and glass == {"U0CISO", "U0VPENG"}
    assert other.refusal(_decision(other, "U0CISO"), glass, _now()) is None
    assert counted_by_break_glass(glass, "U0CISO", other.allowed_users)
    assert other.refusal(_decision(other, ONCALL[0]), glass, _now()) == (
        f"{ONCALL[0]} is not an approver of this step"
    )
    # still the kept membership for the group Slack answered for before, not break glass
    kept = resolve_members(GROUPS, conf)
    assert kept == set(ONCALL) and not isinstance(kept, BreakGlass)

    _without_break_glass(monkeypatch)
    assert resolve_members(other.groups, settings()) is None  # nobody named: nobody by glass


def test_break_glass_names_people_never_a_group(monkeypatch: pytest.MonkeyPatch) -> None:
    from clampdown.core.diagnostics import ClampdownError

    monkeypatch.setenv("CLAMPDOWN_BREAK_GLASS_APPROVERS", "U0CISO, @security-oncall")
    with pytest.raises(ClampdownError, match=r"CLAMPDOWN_BREAK_GLASS_APPROVERS.*user ids only"):
        settings()


def _card_context(standin: SlackStandIn) -> str:
    card = next(c.params for c in standin.calls_to("chat.postMessage") if c.params.get("blocks"))
    blocks = card["blocks"] if isinstance(card["blocks"], list) else json.loads(card["blocks"])
    return next(b for b in blocks if b["type"] == "context")["elements"][0]["text"]


def _post_card(standin: SlackStandIn, request: Request) -> str:
    run_id = request.run_id
    files = settings().paths.run(run_id)
    config = SlackSettings(
        slack_bot_token=standin.token,
        slack_channel=CHANNEL,
        slack_api_url=standin.url,
        slack_retry_interval=0,
        slack_max_retries=1,
    )
    conf = settings()
    thread = RunThread(
        run_id,
        config,
        Ledger(files.ledger),
        state_file=files.slack_thread_state,
        membership=lambda groups: card_membership(conf, groups),
    )
    thread.run_started(RunHeader("R", "r", "high", {"type": "manual"}, run_id), [])
    thread.approval_requested(request)
    thread.close("succeeded")
    return _card_context(standin)


def test_the_card_says_the_membership_is_the_kept_one(oncall_slack: SlackStandIn) -> None:
    resolve_members(GROUPS)  # an earlier lookup Slack answered
    _slack_cannot_list_groups(oncall_slack)
    context = _post_card(oncall_slack, _request(new_run_id()))
    assert "approvers: group `security-oncall` (:warning: group membership as of " in context
    assert "Slack unreachable)" in context


def test_the_card_says_who_may_decide_when_groups_cannot_be_resolved(
    oncall_slack: SlackStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLAMPDOWN_BREAK_GLASS_APPROVERS", "U0CISO")
    _slack_cannot_list_groups(oncall_slack)
    context = _post_card(oncall_slack, _request(new_run_id()))
    assert (
        "(:warning: approver groups cannot be resolved now: listed approvers and "
        "break-glass approvers (<@U0CISO>) only)"
    ) in context


def test_the_card_says_nothing_more_when_slack_answers(oncall_slack: SlackStandIn) -> None:
    context = _post_card(oncall_slack, _request(new_run_id()))
    assert "approvers: group `security-oncall` · one approver needed" in context


def _now() -> datetime:
    return datetime.now(UTC)
