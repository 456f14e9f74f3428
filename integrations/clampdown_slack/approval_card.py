"""The approval card: Block Kit for a pending request, and for one that was decided.

The buttons carry ``{"run_id", "step", "params_hash"}`` as their value, so a click
names exactly what the clicker saw; the flow refuses a decision whose hash is not
the one of the parameters now gated. Deny opens a modal that asks for the reason.

The card shows every gated step and every one of its parameters: a value longer than
:data:`MAX_VALUE_CHARS` is cut on the card and posted in full in the thread
(:func:`long_value_replies`), so a long value can never push another parameter off the
card. Every text that comes from the runbook's inputs, an alert or an approver (summary,
parameters, a denial reason) is made inert (:func:`clampdown_slack.text.inert`).

Group membership is resolved here too (``usergroups.list`` for handles,
``usergroups.users.list`` for members): the flow asks at every decision, so a person
removed from the on-call group an hour ago cannot approve now.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from clampdown.core.approvals import Request
from clampdown_slack.text import inert

APPROVE_ACTION = "clampdown_approve"
DENY_ACTION = "clampdown_deny"
DENY_VIEW = "clampdown_deny_reason"
REASON_BLOCK = "reason"
REASON_INPUT = "reason_input"
_GROUP_ID = re.compile(r"^S[A-Z0-9]{6,}$")
_USER_ID = re.compile(r"^[UW][A-Z0-9]{2,20}$")
MAX_BLOCKS = 50  # Slack's limit of blocks in one message
MAX_SECTION_CHARS = 2900  # a section's text may hold 3,000 characters
MAX_VALUE_CHARS = 300  # longer parameter values are cut on the card (full text: the thread)
MAX_SUMMARY_CHARS = 1500
MAX_REPLY_CHARS = 3000  # one thread reply carries this much of a cut value
MAX_REPLIES_PER_VALUE = 40


def button_value(request: Request) -> str:
    return json.dumps(
        {"run_id": request.run_id, "step": request.step, "params_hash": request.params_hash},
        separators=(",", ":"),
    )


def parse_button_value(value: str) -> dict[str, str]:
    """The request a button or modal names; ValueError when it is not ours."""
    data = json.loads(value)
    if not isinstance(data, dict) or not all(
        isinstance(data.get(k), str) for k in ("run_id", "step", "params_hash")
    ):
        raise ValueError("not a clampdown approval button")
    return {k: data[k] for k in ("run_id", "step", "params_hash")}


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def person(user: str) -> str:
    """A Slack mention for a Slack user id; anything else shown as inert code."""
    return f"<@{user}>" if _USER_ID.match(user) else f"`{inert(user)}`"


def _who(request: Request) -> str:
    people = [person(u) for u in sorted(request.allowed_users)]
    people += [f"group `{inert(g)}`" for g in request.groups]
    return ", ".join(people) or "nobody (CLAMPDOWN_APPROVERS is empty)"


@dataclass(frozen=True)
class LongValue:
    """A value cut on the card; its full text goes to the thread (:func:`long_value_replies`)."""

    where: str  # "<step>.<parameter>" or "summary"
    text: str


@dataclass
class _Shown:
    """The card's parameter sections and the values it had to cut."""

    sections: list[str] = field(default_factory=list)
    cut: list[LongValue] = field(default_factory=list)


def _cut(where: str, text: str, shown: _Shown, limit: int) -> str:
    if len(text) <= limit:
        return text
    shown.cut.append(LongValue(where, text))
    return f"{text[:limit]}… (cut: {len(text)} characters; the full value is in the thread)"


def _param_lines(step_id: str, params: dict[str, Any], shown: _Shown) -> list[str]:
    """One line per parameter, ``"name": value`` (JSON), every one present, long ones cut."""
    lines = []
    for name, value in sorted(params.items()):
        text = json.dumps(value, sort_keys=True, default=str)
        if len(text) > MAX_VALUE_CHARS:
            text = json.dumps(_cut(f"{step_id}.{name}", text, shown, MAX_VALUE_CHARS))
        lines.append(inert(f"{json.dumps(name)}: {text}"))
    return lines


def _pack(head: str, lines: list[str]) -> list[str]:
    """Sections of at most MAX_SECTION_CHARS: the head, then the lines in code blocks."""
    sections: list[str] = []
    current: list[str] = []

    def flush(first: bool) -> None:
        block = "```" + "\n".join(current) + "```" if current else "_no parameters_"
        sections.append(f"{head}\n{block}" if first else f"{head} (continued)\n{block}")

    size = len(head) + 20
    for line in lines:
        if current and size + len(line) + 1 > MAX_SECTION_CHARS:
            flush(not sections)
            current, size = [], len(head) + 32
        current.append(line)
        size += len(line) + 1
    flush(not sections)
    return sections


def gated_parameters(request: Request) -> _Shown:
    """Every gated step and every one of its parameters, as card sections.

    Nothing is dropped: a value longer than MAX_VALUE_CHARS is cut on the card and
    listed in ``cut`` so the full text can follow in the thread; a step with many
    parameters takes several sections (Slack allows 3,000 characters in one).
    """
    shown = _Shown()
    for step_id, gated in request.gated.items():
        uses = inert(gated.get("uses"))
        if gated.get("will_run") is False:
            condition = inert(gated.get("if"))
            shown.sections.append(f"*{inert(step_id)}* `{uses}`: will not run (if: {condition})")
            continue
        reversible = "reversible" if gated.get("reversible") else "NOT reversible"
        head = f"*{inert(step_id)}* `{uses}` ({reversible})"
        if gated.get("guarded"):  # downstream of the gate, not one of its direct needs
            head += f" · _{inert(gated['guarded'])}_"
        params = gated.get("params") or {}
        lines = _param_lines(step_id, params if isinstance(params, dict) else {"": params}, shown)
        shown.sections.extend(_pack(head, lines))
    if not shown.sections:
        shown.sections.append("_no gated steps_")
    return shown


def _summary(request: Request, shown: _Shown) -> str:
    return inert(_cut("summary", request.summary, shown, MAX_SUMMARY_CHARS))


def long_value_replies(request: Request) -> list[str]:
    """Thread replies with the full text of every value the card cut (in order, chunked)."""
    shown = gated_parameters(request)
    _summary(request, shown)
    replies = []
    for value in shown.cut:
        chunks = [
            value.text[i : i + MAX_REPLY_CHARS] for i in range(0, len(value.text), MAX_REPLY_CHARS)
        ]
        kept = chunks[:MAX_REPLIES_PER_VALUE]
        for n, chunk in enumerate(kept, 1):
            part = f" (part {n}/{len(kept)})" if len(kept) > 1 else ""
            replies.append(
                f"Full value of `{inert(value.where)}` for approval `{inert(request.step)}`"
                f" (params `{request.params_hash[:12]}`){part}:\n```{inert(chunk)}```"
            )
        if len(chunks) > len(kept):
            rest = len(value.text) - MAX_REPLY_CHARS * len(kept)
            replies.append(
                f"`{inert(value.where)}` has {rest} more characters than Slack is sent: read "
                f"them in the run's approval request (approvals/{inert(request.step)}.json)"
            )
    return replies


def _param_blocks(shown: _Shown, room: int) -> list[dict[str, Any]]:
    """One section block per parameter section; beyond ``room`` blocks, a pointer to the thread."""
    sections = shown.sections
    if len(sections) > room:
        extra = len(sections) - room + 1
        sections = [
            *sections[: room - 1],
            f"… {extra} more section(s) of gated parameters are posted in the thread",
        ]
    return [{"type": "section", "text": {"type": "mrkdwn", "text": s}} for s in sections]


def overflow_replies(request: Request) -> list[str]:
    """Parameter sections that did not fit in the card's blocks, as thread replies."""
    shown = gated_parameters(request)
    room = MAX_BLOCKS - 4
    return shown.sections[room - 1 :] if len(shown.sections) > room else []


def request_blocks(request: Request, membership: str | None = None) -> list[dict[str, Any]]:
    """The pending card: what, exactly with which parameters, who may decide, until when.

    ``membership``: clampdown's own note when Slack could not say who is in the approver
    groups (:func:`clampdown_slack.directory.membership_note`), shown after the approvers."""
    quorum = (
        f"{request.min_approvals} different approvers needed"
        if request.min_approvals > 1
        else "one approver needed"
    )
    starter = person(request.started_by) if request.started_by else "an automated trigger"
    rule = " · the starter may not approve" if request.two_person_rule else ""
    shown = gated_parameters(request)
    summary = _summary(request, shown)
    return [
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": f":raised_hand: *Approval needed*: {summary}"},
        },
        *_param_blocks(shown, MAX_BLOCKS - 4),  # 4: summary, context, actions, drill banner
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": f"Run `{inert(request.run_id)}` step `{inert(request.step)}`"
                    f" · started by {starter}"
                    f" · approvers: {_who(request)}"
                    f"{f' ({membership})' if membership else ''} · {quorum}{rule}"
                    f" · deadline {_when(request.deadline)}"
                    f" (then {inert(request.on_timeout)}) · params `{request.params_hash[:12]}`",
                }
            ],
        },
        {
            "type": "actions",
            "block_id": f"approval:{request.step}",
            "elements": [
                {
                    "type": "button",
                    "action_id": APPROVE_ACTION,
                    "text": {"type": "plain_text", "text": "Approve"},
                    "style": "primary",
                    "value": button_value(request),
                },
                {
                    "type": "button",
                    "action_id": DENY_ACTION,
                    "text": {"type": "plain_text", "text": "Deny…"},
                    "style": "danger",
                    "value": button_value(request),
                },
            ],
        },
    ]


def progress_text(request: Request) -> str:
    got = ", ".join(person(u) for u in request.approvals)
    count = f"{len(request.approvals)}/{request.min_approvals}"
    return f":white_check_mark: {got} approved `{inert(request.step)}` ({count})"


def decided_blocks(request: Request, outcome: str, at: datetime) -> list[dict[str, Any]]:
    """The card after the decision: no buttons; who decided, when and why."""
    if outcome == "approved":
        who = ", ".join(person(u) for u in request.approvals) or "on timeout"
        head = f":white_check_mark: *Approved* by {who}"
    elif outcome == "denied" and request.denial is not None:
        head = (
            f":no_entry: *Denied* by {person(request.denial.approver)}: "
            f"{inert(request.denial.reason)}"
        )
    else:
        head = f":hourglass: *Timed out*, no decision by the deadline: {inert(request.on_timeout)}"
    shown = gated_parameters(request)
    summary = _summary(request, shown)
    return [
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": f"~Approval needed~: {summary}\n{head}"},
        },
        *_param_blocks(shown, MAX_BLOCKS - 3),  # 3: summary, context, drill banner
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": f"Run `{inert(request.run_id)}` step `{inert(request.step)}`"
                    f" · decided {_when(at)}",
                }
            ],
        },
    ]


def deny_modal(value: str) -> dict[str, Any]:
    """The modal a Deny click opens: the reason is required."""
    return {
        "type": "modal",
        "callback_id": DENY_VIEW,
        "private_metadata": value,
        "title": {"type": "plain_text", "text": "Deny containment"},
        "submit": {"type": "plain_text", "text": "Deny"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {
                "type": "input",
                "block_id": REASON_BLOCK,
                "label": {"type": "plain_text", "text": "Why deny?"},
                "element": {
                    "type": "plain_text_input",
                    "action_id": REASON_INPUT,
                    "multiline": True,
                    "min_length": 3,
                    "max_length": 2000,
                },
            }
        ],
    }


def group_members(client: Any, groups: Iterable[str]) -> set[str]:
    """Everyone in the given Slack user groups (ids or handles); raises on a Slack error."""
    found: set[str] = set()
    for members in members_by_group(client, groups).values():
        found |= members
    return found


def members_by_group(client: Any, groups: Iterable[str]) -> dict[str, set[str]]:
    """Each asked group (id or handle, as asked) with its members; raises on a Slack error,
    :class:`LookupError` when Slack says a handle names no group."""
    groups = list(groups)
    if not groups:
        return {}
    ids: dict[str, str] = {g: g for g in groups if _GROUP_ID.match(g)}
    handles = [g for g in groups if g not in ids]
    if handles:
        listed = client.usergroups_list()["usergroups"]
        by_handle: Mapping[str, str] = {g["handle"]: g["id"] for g in listed}
        for handle in handles:
            if handle not in by_handle:
                raise LookupError(f"no Slack user group with handle '{handle}'")
            ids[handle] = by_handle[handle]
    return {
        asked: set(client.usergroups_users_list(usergroup=group_id)["users"])
        for asked, group_id in ids.items()
    }
