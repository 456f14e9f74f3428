"""Approve and Deny clicks on approval cards, received by the Bolt app.

Each click is acknowledged at once (Slack wants an answer within 3 s); the decision
is then sent to the paused run through the :class:`~clampdown.core.approvals.SubmitDecision`
the application layer registered the handlers with (``clampdown serve`` passes
:func:`clampdown_flows.decisions.submit_decision`); the run checks it and answers.
The clicker's identity is the ``user.id`` of a request whose signature Bolt verified;
nothing the clicker types is trusted for it. The decision reaches the run through the
Prefect API like any other, so serve proves it came from here: ``submit_decision`` signs
a ``slack`` decision with serve's own SSH key (``CLAMPDOWN_SERVE_KEY``) or, without one,
with the run's approval key, and the run refuses a Slack decision without that proof
(:mod:`clampdown.core.decision_proof`, docs/security.md).

* Approve: sent as is; the clicker hears back only when it did not count, or when the
  run has not answered yet (ephemeral; :func:`click_reply`: "Not counted" only for a
  refusal, never for a decision still waiting for the run).
* Deny: opens a modal that asks for the reason; its submission sends the denial.
* An unauthorised clicker, the run's starter, a second click by the same person, or a
  card whose request is already decided: an ephemeral message says why, and the run
  is not even resumed.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from clampdown.core.approvals import DecisionVerdict, SubmitDecision
from clampdown.core.diagnostics import ClampdownError
from clampdown_slack.approval_card import (
    APPROVE_ACTION,
    DENY_ACTION,
    DENY_VIEW,
    REASON_BLOCK,
    REASON_INPUT,
    deny_modal,
    parse_button_value,
)
from clampdown_slack.text import inert

if TYPE_CHECKING:
    from concurrent.futures import Executor

    from slack_bolt import App

log = logging.getLogger("clampdown.slack.approvals")


DECISION_THREADS = 32
"""Clicks being delivered at once. Delivering one waits for the run's verdict (seconds);
on Bolt's own listener threads (5) a few such waits made the next click's acknowledgement
queue past Slack's 3 s, and Slack showed the clicker an error."""


def register_approval_actions(
    app: App, submit_decision: SubmitDecision, deliver: Executor | None = None
) -> None:
    """Add the Approve/Deny button handlers and the deny-reason modal to ``app``;
    decisions are sent with ``submit_decision`` on ``deliver`` (default: a pool of
    :data:`DECISION_THREADS` made here), so a click is acknowledged at once whatever
    the other clicks are waiting for."""
    pool = deliver or ThreadPoolExecutor(DECISION_THREADS, thread_name_prefix="clampdown-click")

    @app.action(APPROVE_ACTION)
    def approve(ack: Any, body: dict[str, Any], client: Any) -> None:
        ack()
        value, channel = _clicked(body)
        if value is not None:
            user = _user(body)
            pool.submit(_decide, submit_decision, client, value, channel, user, "approve", "")

    @app.action(DENY_ACTION)
    def deny(ack: Any, body: dict[str, Any], client: Any) -> None:
        ack()
        value, channel = _clicked(body)
        if value is None:
            return
        metadata = json.dumps({"value": value, "channel": channel})
        client.views_open(trigger_id=body["trigger_id"], view=deny_modal(metadata))

    @app.view(DENY_VIEW)
    def deny_reason(ack: Any, body: dict[str, Any], view: dict[str, Any], client: Any) -> None:
        reason = (
            view.get("state", {}).get("values", {}).get(REASON_BLOCK, {}).get(REASON_INPUT, {})
        ).get("value") or ""
        if len(reason.strip()) < 3:
            ack(response_action="errors", errors={REASON_BLOCK: "Say why you deny."})
            return
        ack()
        try:
            metadata = json.loads(view.get("private_metadata") or "{}")
            value = parse_button_value(json.dumps(metadata["value"]))
        except (ValueError, KeyError, TypeError):
            log.warning("deny modal with unreadable metadata ignored")
            return
        pool.submit(
            _decide,
            submit_decision,
            client,
            value,
            metadata.get("channel"),
            _user(body),
            "deny",
            reason.strip(),
        )


# What the sender says when the decision reached the run but the run has not answered
# yet (clampdown_flows.decisions): not refused, so never "Not counted". A decision kept
# for a run no process holds is flagged (``queued``); the sender's wait running out is
# known only by its wording.
AWAITING_REASONS = ("sent, but the run has not answered yet",)
AWAITING = (
    ":hourglass_flowing_sand: Your {what} of `{step}` is in, but run `{run}` has not answered "
    "yet (it is busy, or stopped and waiting to be resumed). The run checks and counts it when "
    "it takes it; this card changes once the request is decided. `clampdown runs` shows the run."
)


def awaiting(verdict: DecisionVerdict) -> bool:
    """Whether the decision was delivered (or kept for the run) and is not answered yet."""
    if verdict.accepted:
        return False
    return verdict.queued or verdict.reason.startswith(AWAITING_REASONS)


def click_reply(verdict: DecisionVerdict, value: dict[str, str], decision: str) -> str | None:
    """The ephemeral answer to a click: None when it counted, one wording while the run has
    not answered, and "Not counted" only for a decision that was refused."""
    if verdict.accepted:
        return None
    if awaiting(verdict):
        return AWAITING.format(
            what="approval" if decision == "approve" else "denial",
            step=inert(value.get("step", "")),
            run=inert(value.get("run_id", "")),
        )
    return f":no_entry: Not counted: {inert(verdict.reason)}"


def _user(body: dict[str, Any]) -> str:
    return str(body.get("user", {}).get("id") or "")


def _clicked(body: dict[str, Any]) -> tuple[dict[str, str] | None, str | None]:
    """The request named by the clicked button, and the channel of the card."""
    channel = (body.get("channel") or body.get("container") or {}).get("id") or (
        body.get("container") or {}
    ).get("channel_id")
    try:
        value = parse_button_value(body["actions"][0]["value"])
    except (ValueError, KeyError, IndexError, TypeError):
        log.warning("click on an unknown approval button ignored")
        return None, channel
    return value, channel


def _decide(
    submit_decision: SubmitDecision,
    client: Any,
    value: dict[str, str],
    channel: str | None,
    user: str,
    decision: str,
    reason: str,
) -> None:
    try:
        verdict = submit_decision(
            value["run_id"],
            value["step"],
            user,
            decision,  # type: ignore[arg-type]
            reason,
            "slack",
            params_hash_seen=value["params_hash"],
        )
        message = click_reply(verdict, value, decision)
    except ClampdownError as exc:
        message = f":no_entry: {exc.message}"
    except Exception:  # the clicker must hear something; the log has the details
        log.exception("approval click for run %s failed", value.get("run_id"))
        message = ":x: clampdown could not deliver your decision; the server log has details."
    if message is None:
        return
    log.info("approval click by %s on run %s: %s", user, value.get("run_id"), message)
    if channel:
        try:
            client.chat_postEphemeral(channel=channel, user=user, text=message)
        except Exception as exc:
            log.warning("cannot tell %s why their click did not count: %s", user, exc)
