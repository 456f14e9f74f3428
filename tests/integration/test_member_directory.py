"""Approver groups through the member-directory seam: Slack when configured, else CLAMPDOWN_GROUPS."""

from __future__ import annotations

import pytest

from clampdown.core.members import member_directories, members_now
from clampdown_flows.approval_store import resolve_members


@pytest.fixture
def no_slack(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CLAMPDOWN_SLACK_BOT_TOKEN", "CLAMPDOWN_SLACK_CHANNEL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CLAMPDOWN_GROUPS", "security-oncall=U0TERM1, U0TERM2; ir-leads=U0LEAD")


def test_the_slack_directory_is_registered_and_off_without_slack(no_slack: None) -> None:
    from importlib.metadata import entry_points

    names = {ep.name for ep in entry_points(group="clampdown.member_directories")}
    assert "slack" in names
    assert member_directories() == []


def test_without_slack_the_groups_come_from_clampdown_groups(no_slack: None) -> None:
    assert resolve_members(("ir-leads", "security-oncall")) == {"U0LEAD", "U0TERM1", "U0TERM2"}
    assert resolve_members(("unknown-group",)) is None  # nobody can tell
    assert members_now(()) == set()


def test_with_slack_its_groups_are_the_authority(oncall_slack, monkeypatch) -> None:
    from tests.slack_requests import ONCALL

    monkeypatch.setenv("CLAMPDOWN_GROUPS", "security-oncall=U0SOMEONE")
    assert resolve_members(("security-oncall",)) == set(ONCALL)
    # Slack cannot answer (no such group): None, and CLAMPDOWN_GROUPS is not consulted.
    assert resolve_members(("no-such-group",)) is None
