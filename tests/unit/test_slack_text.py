"""Untrusted text reaching Slack: escaped, fences broken, secrets masked; approval cards that
show every gated parameter however long one of them is."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from clampdown.core.approvals import Request, params_hash
from clampdown_slack.approval_card import (
    MAX_SECTION_CHARS,
    MAX_VALUE_CHARS,
    decided_blocks,
    long_value_replies,
    progress_text,
    request_blocks,
)
from clampdown_slack.text import ZERO_WIDTH_SPACE, inert, inert_blocks, masked

HOSTILE = "<!channel> <http://evil.example|Approve> a & b ``` *fake* ```"
CONTROL = re.compile(r"<(?!@U[A-Z0-9]+>)")  # any "<" that is not a mention clampdown built


def test_inert_escapes_the_three_characters_slack_documents() -> None:
    assert inert("a & b < c > d") == "a &amp; b &lt; c &gt; d"
    assert inert("&lt;") == "&amp;lt;"  # an entity in the input is shown, not decoded


def test_inert_breaks_every_run_of_backticks() -> None:
    text = inert("x ``` y ```` z `` w ` v")
    assert "``" not in text
    assert text.count("`") == 10  # every backtick is still shown
    assert ZERO_WIDTH_SPACE in text
    assert inert("`code`") == "`code`"  # single backticks are harmless and kept


def test_inert_masks_before_escaping() -> None:
    secret = "hunter2<&>"
    shown = inert(f"token {secret}", lambda t: t.replace(secret, "***"))
    assert shown == "token ***"


def test_inert_blocks_escape_mrkdwn_and_mask_everything() -> None:
    blocks = [
        {"type": "section", "text": {"type": "mrkdwn", "text": "<!here> s3cr3t"}},
        {"type": "section", "text": {"type": "plain_text", "text": "<!here> s3cr3t"}},
    ]
    out = inert_blocks(blocks, lambda t: t.replace("s3cr3t", "***"))
    assert out[0]["text"]["text"] == "&lt;!here&gt; ***"
    assert out[1]["text"]["text"] == "<!here> ***"  # plain_text is never parsed by Slack
    assert masked({"a": ["s3cr3t"]}, lambda t: t.replace("s3cr3t", "***")) == {"a": ["***"]}


def _request(gated: dict[str, Any], summary: str = "Revoke?", **kw: Any) -> Request:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    return Request(
        run_id="0123456789ab",
        step="approve",
        summary=summary,
        gated=gated,
        params_hash=params_hash(gated),
        allowed_users=frozenset({"U0LEAD"}),
        groups=("security-oncall",),
        min_approvals=1,
        two_person_rule=True,
        started_by="U0ALICE",
        requested_at=now,
        deadline=now + timedelta(minutes=15),
        on_timeout="deny",
        **kw,
    )


def _texts(blocks: list[dict[str, Any]]) -> str:
    out = []
    for block in blocks:
        if "text" in block:
            out.append(block["text"]["text"])
        for element in block.get("elements", []):
            if element.get("type") == "mrkdwn":
                out.append(element["text"])
    return "\n".join(out)


def test_hostile_summary_and_parameters_are_inert_on_the_card() -> None:
    gated = {"revoke": {"uses": "aws.iam.revoke_credentials", "reversible": True,
                        "params": {"principal_arn": HOSTILE}}}  # fmt: skip
    text = _texts(request_blocks(_request(gated, summary=f"Revoke {HOSTILE}?")))
    assert "<!channel>" not in text and "<http" not in text
    assert "&lt;!channel&gt;" in text
    assert not CONTROL.search(text), text
    # only clampdown's own fences: each parameter block opens and closes exactly once
    assert text.count("```") == 2


def test_a_long_value_never_pushes_other_parameters_off_the_card() -> None:
    huge = "A" * 10_000
    gated = {
        "first": {"uses": "x.a", "reversible": False, "params": {"policy": huge, "role": "r1"}},
        "second": {"uses": "x.b", "reversible": True, "params": {"zeta": "last-one"}},
    }
    request = _request(gated)
    blocks = request_blocks(request)
    text = _texts(blocks)
    for shown in ('"role": "r1"', '"zeta": "last-one"', "*second*", "NOT reversible"):
        assert shown in text, shown
    assert "the full value is in the thread" in text
    assert huge not in text
    assert all(len(b["text"]["text"]) <= 3000 for b in blocks if "text" in b)
    replies = long_value_replies(request)
    assert len(replies) == 4  # 10,002 characters of JSON in 3,000-character parts
    assert "`first.policy`" in replies[0] and "(part 1/4)" in replies[0]
    rebuilt = "".join(re.search(r"```(.*)```", r, re.S).group(1) for r in replies)
    assert json.loads(rebuilt) == huge


def test_many_parameters_take_several_sections_and_none_is_dropped() -> None:
    params = {f"p{i:03}": "v" * (MAX_VALUE_CHARS - 10) for i in range(40)}
    request = _request({"big": {"uses": "x.a", "reversible": True, "params": params}})
    blocks = request_blocks(request)
    sections = [b["text"]["text"] for b in blocks if b["type"] == "section"][1:]
    assert len(sections) > 1
    assert all(len(s) <= MAX_SECTION_CHARS for s in sections)
    text = "\n".join(sections)
    assert all(f'"p{i:03}"' in text for i in range(40))
    assert long_value_replies(request) == []  # nothing was cut


def test_decided_card_and_progress_escape_the_reason_and_odd_approver_ids() -> None:
    from clampdown.core.approvals import Decision

    request = _request({"s": {"uses": "x.a", "reversible": True, "params": {}}})
    request.denial = Decision.model_construct(approver="U0BOB", reason="<!channel> ``` fake")
    text = _texts(decided_blocks(request, "denied", datetime.now(UTC)))
    assert "<@U0BOB>" in text  # a checked Slack id stays a mention
    assert "&lt;!channel&gt;" in text and "```" not in text
    request.approvals = {"<!here>": request.denial}
    assert "<!here>" not in progress_text(request)


def test_sections_beyond_slacks_50_blocks_go_to_the_thread() -> None:
    from clampdown_slack.approval_card import MAX_BLOCKS, overflow_replies

    gated = {f"s{i:02}": {"uses": "x.a", "reversible": True, "params": {"n": i}} for i in range(60)}
    request = _request(gated)
    blocks = request_blocks(request)
    assert len(blocks) + 1 <= MAX_BLOCKS  # room for the drill banner
    shown = _texts(blocks)
    overflow = overflow_replies(request)
    assert "more section(s) of gated parameters are posted in the thread" in shown
    for i in range(60):  # every step is on the card or in the thread
        assert f"*s{i:02}*" in shown or any(f"*s{i:02}*" in r for r in overflow), i


def test_a_step_guarded_from_downstream_says_so_on_the_card() -> None:
    gated = {
        "freeze": {
            "uses": "aws.sagemaker.freeze_endpoint",
            "reversible": True,
            "params": {"endpoint_name": "prod"},
            "guarded": "downstream of approve, not a direct need",
        }
    }
    text = _texts(request_blocks(_request(gated)))
    assert "*freeze* `aws.sagemaker.freeze_endpoint` (reversible) · _downstream of approve" in text
