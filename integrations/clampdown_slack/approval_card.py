"""The approval card: Block Kit for a pending request, and for one that was decided.

The buttons carry ``{"run_id", "step", "params_hash"}`` as their value, so a click
names exactly what the clicker saw; the flow refuses a decision whose hash is not
the one of the parameters now gated. Deny opens a modal that asks for the reason.

Group membership is resolved here too (``usergroups.list`` for handles,
``usergroups.users.list`` for members): the flow asks at every decision, so a person
removed from the on-call group an hour ago cannot approve now.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from clampdown.core.approvals import Request

APPROVE_ACTION = "clampdown_approve"
DENY_ACTION = "clampdown_deny"
DENY_VIEW = "clampdown_deny_reason"
REASON_BLOCK = "reason"
REASON_INPUT = "reason_input"
_GROUP_ID = re.compile(r"^S[A-Z0-9]{6,}$")
_MAX_PARAM_TEXT = 2500  # a section's text may hold 3000 characters


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


def _who(request: Request) -> str:
    people = [f"<@{u}>" for u in sorted(request.allowed_users)]
    people += [f"group `{g}`" for g in request.groups]
    return ", ".join(people) or "nobody (CLAMPDOWN_APPROVERS is empty)"


def _params_text(request: Request) -> str:
    lines = []
    for step_id, gated in request.gated.items():
        if gated.get("will_run") is False:
            lines.append(f"*{step_id}* `{gated.get('uses')}`: will not run (if: {gated.get('if')})")
            continue
        reversible = "reversible" if gated.get("reversible") else "NOT reversible"
        params = json.dumps(gated.get("params", {}), indent=1, sort_keys=True, default=str)
        lines.append(f"*{step_id}* `{gated.get('uses')}` ({reversible})\n```{params}```")
    text = "\n".join(lines) or "_no gated steps_"
    if len(text) > _MAX_PARAM_TEXT:
        text = text[:_MAX_PARAM_TEXT] + "\n… (truncated; `clampdown runs` shows all)"
    return text


def request_blocks(request: Request) -> list[dict[str, Any]]:
    """The pending card: what, exactly with which parameters, who may decide, until when."""
    quorum = (
        f"{request.min_approvals} different approvers needed"
        if request.min_approvals > 1
        else "one approver needed"
    )
    starter = f"<@{request.started_by}>" if request.started_by else "an automated trigger"
    rule = " · the starter may not approve" if request.two_person_rule else ""
    return [
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": f":raised_hand: *Approval needed*: {request.summary}",
            },
        },
        {"type": "section", "text": {"type": "mrkdwn", "text": _params_text(request)}},
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": f"Run `{request.run_id}` step `{request.step}` · started by {starter}"
                    f" · approvers: {_who(request)} · {quorum}{rule}"
                    f" · deadline {_when(request.deadline)}"
                    f" (then {request.on_timeout}) · params `{request.params_hash[:12]}`",
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
    got = ", ".join(f"<@{u}>" for u in request.approvals)
    count = f"{len(request.approvals)}/{request.min_approvals}"
    return f":white_check_mark: {got} approved `{request.step}` ({count})"


def decided_blocks(request: Request, outcome: str, at: datetime) -> list[dict[str, Any]]:
    """The card after the decision: no buttons; who decided, when and why."""
    if outcome == "approved":
        who = ", ".join(f"<@{u}>" for u in request.approvals) or "on timeout"
        head = f":white_check_mark: *Approved* by {who}"
    elif outcome == "denied" and request.denial is not None:
        head = f":no_entry: *Denied* by <@{request.denial.approver}>: {request.denial.reason}"
    else:
        head = f":hourglass: *Timed out*, no decision by the deadline: {request.on_timeout}"
    return [
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": f"~Approval needed~: {request.summary}\n{head}"},
        },
        {"type": "section", "text": {"type": "mrkdwn", "text": _params_text(request)}},
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": f"Run `{request.run_id}` step `{request.step}` · decided {_when(at)}",
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
    groups = list(groups)
    if not groups:
        return set()
    ids: dict[str, str] = {g: g for g in groups if _GROUP_ID.match(g)}
    handles = [g for g in groups if g not in ids]
    if handles:
        listed = client.usergroups_list()["usergroups"]
        by_handle: Mapping[str, str] = {g["handle"]: g["id"] for g in listed}
        for handle in handles:
            if handle not in by_handle:
                raise LookupError(f"no Slack user group with handle '{handle}'")
            ids[handle] = by_handle[handle]
    members: set[str] = set()
    for group_id in ids.values():
        members.update(client.usergroups_users_list(usergroup=group_id)["users"])
    return members
