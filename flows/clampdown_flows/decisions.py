"""Sending a decision to a paused run: what Slack clicks, ``clampdown approve`` and tests use.

:func:`submit_decision` reads the request (where the run's Prefect API is, which flow
run, the parameters hash), refuses early what the run would refuse anyway (so an
unauthorised click does not even resume it), signs the decision with the run's
approval key, resumes the flow run with it as run input, and waits for the run's
verdict in the ledger. The run checks everything again (:mod:`clampdown_flows.approval_gate`).
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from clampdown.core import run_ownership
from clampdown.core.approvals import Decision, DecisionSource, DecisionVerdict, Request
from clampdown.core.home import RunFiles
from clampdown.core.ledger import read_written
from clampdown.core.settings import Settings, settings
from clampdown.core.signatures import SLACK_NAMESPACE, sign
from clampdown_flows import decision_inbox
from clampdown_flows.approval_gate import unreachable
from clampdown_flows.approval_store import (
    DecisionError,
    allowed_sources,
    approval_key,
    read_requests,
    resolve_members,
)
from clampdown_flows.decision_wakeup import Wakeups


def pending_request(
    run_id: str, step: str | None = None, conf: Settings | None = None
) -> dict[str, Any]:
    """The request a decision is for: the named step, or the run's only pending one.

    ``conf``: the caller's settings (without: the environment now)."""
    requests = read_requests((conf or settings()).paths.run(run_id))
    if not requests:
        raise DecisionError(
            f"run '{run_id}' has no approval request",
            "check the run id with `clampdown runs`",
        )
    if step is not None:
        for req in requests:
            if req["step"] == step:
                return req
        names = ", ".join(r["step"] for r in requests)
        raise DecisionError(f"run '{run_id}' has no approval step '{step}'", f"its steps: {names}")
    pending = [r for r in requests if r.get("status") == "pending"]
    if len(pending) == 1:
        return pending[0]
    if not pending:
        last = requests[-1]
        raise DecisionError(
            f"nothing is waiting for approval in run '{run_id}'",
            f"step '{last['step']}' was already decided: {last.get('status')}",
        )
    names = ", ".join(r["step"] for r in pending)
    raise DecisionError(
        f"run '{run_id}' waits at several approvals: {names}", "name one with --step"
    )


def precheck(
    req: dict[str, Any], approver: str, decision: str, reason: str, conf: Settings | None = None
) -> str | None:
    """What the flow would refuse anyway, found without resuming it (None: send it)."""
    if req.get("status") != "pending":
        return f"step '{req['step']}' was already decided: {req.get('status')}"
    request = Request.from_json(req)
    if approver in req.get("approvals", []) and decision == "approve":
        return f"you have already approved step '{req['step']}'"
    allowed = approver in request.allowed_users
    members = set() if allowed else resolve_members(request.groups, conf)
    if members is None:
        return None  # groups cannot be resolved here now: the run decides, with what it knows
    probe = Decision(
        run_id=request.run_id,
        step=request.step,
        params_hash=request.params_hash,
        nonce=request.nonce,
        decision=decision,  # type: ignore[arg-type]
        approver=approver,
        reason=reason,
    )
    return request.refusal(probe, members, datetime.now(UTC))


def submit_decision(
    run_id: str,
    step: str | None,
    approver: str,
    decision: Literal["approve", "deny"] = "approve",
    reason: str = "",
    source: DecisionSource = "terminal",
    *,
    params_hash_seen: str | None = None,
    wait: float = 30.0,
    conf: Settings | None = None,
    key: Path | None = None,
    wakeups: Wakeups | None = None,
) -> DecisionVerdict:
    """Send one decision to a paused run and return the flow's verdict on it.

    ``params_hash_seen`` is the hash on the card the person looked at (Slack); the
    flow refuses the decision if the gated parameters have changed since. ``conf``: the
    sender's settings, read once by its entry point (without: the environment now).
    ``key``: the approver's SSH key for a terminal decision (default
    ``CLAMPDOWN_APPROVER_KEY``); the run checks it is listed for ``approver``.
    ``wakeups``: the registry of whoever runs flows in this process (serve's starter): once
    the flow run is resumed, a wait of this process is woken at once instead of finding the
    decision at its next poll (:mod:`clampdown_flows.decision_wakeup`).
    """
    conf = conf or settings()
    files = conf.paths.run(run_id)
    req = pending_request(run_id, step, conf)
    refusal = precheck(req, approver, decision, reason, conf)
    if refusal is not None:
        return DecisionVerdict(False, refusal, req.get("status"), req["step"])
    if source not in allowed_sources():
        return DecisionVerdict(
            False, f"decisions from {source} are not accepted here", None, req["step"]
        )
    sent = Decision(
        run_id=run_id,
        step=req["step"],
        params_hash=params_hash_seen or req["params_hash"],
        nonce=str(req.get("nonce") or ""),
        decision=decision,
        approver=approver,
        reason=reason,
        source=source,
        signed_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    sent = _prove(sent, files, key or conf.approver_key, conf.serve_key)
    kept = decision_inbox.keep(files, sent)  # durable first: a dead run reads it on resume
    if not run_ownership.is_held(files):
        return _queued(run_id, req["step"])
    deadline = time.monotonic() + wait
    try:
        _resume(req, sent, deadline, kept)
    except DecisionError:
        if kept.exists() and not run_ownership.is_held(files):  # its process died meanwhile
            return _queued(run_id, req["step"])
        raise
    except Exception as exc:
        if not unreachable(exc):
            raise
        # the run waits the outage out and reads its inbox when the API answers again
        return _queued(run_id, req["step"], API_UNREACHABLE)
    if wakeups is not None:
        wakeups.wake(str(req["flow_run_id"]))  # a run of this process: it looks now
    return _verdict(files.ledger, sent, deadline, files)


def _queued(run_id: str, step: str, why: str | None = None) -> DecisionVerdict:
    """In, not counted yet: kept for the run, which checks and counts it when it takes it
    (``why``: the wording, by default that no process runs the run now)."""
    text = (why or AWAITING_RESUME).format(run=run_id)
    return DecisionVerdict(False, text, None, step, queued=True)


API_UNREACHABLE = (
    "recorded, not counted yet: run {run}'s Prefect API cannot be reached now; the run "
    "waits for it and counts your decision when it answers again"
)
NOT_ANSWERED = "sent, but the run has not answered yet: check `clampdown runs`"

AWAITING_RESUME = (
    "recorded, not counted yet: no process is running run {run} now (it stopped); "
    "your decision is checked and counted when the run resumes (`clampdown serve` resumes "
    "stopped runs; `clampdown resume {run}` does it by hand)"
)


def _prove(sent: Decision, files: RunFiles, key: Path | None, serve_key: Path | None) -> Decision:
    """Attach the proof the run checks: the approver's SSH signature (terminal), or for a
    Slack click (sent by serve after Slack's signature was verified) serve's SSH signature
    with ``CLAMPDOWN_SERVE_KEY`` when it has one, else the run's approval key."""
    if sent.source == "terminal":
        if key is None:
            raise DecisionError(
                "terminal decisions must be signed with your own SSH key",
                "pass --key ~/.ssh/id_ed25519 (or its .pub when the key is in ssh-agent), or "
                "set CLAMPDOWN_APPROVER_KEY; your public key must be listed for your id in "
                "CLAMPDOWN_ALLOWED_SIGNERS on the machine that runs the flow",
            )
        return sent.model_copy(update={"signature": sign(sent.signing_payload(), key)})
    if sent.source == "slack":
        if serve_key is not None:
            signature = sign(sent.signing_payload(), serve_key, SLACK_NAMESPACE)
            return sent.model_copy(update={"signature": signature})
        return sent.signed(approval_key(files))
    return sent


def _resume(
    req: dict[str, Any], decision: Decision, deadline: float, kept: decision_inbox.Kept
) -> None:
    """Resume the paused flow run with the decision; retry while it is between pauses,
    until the run has taken the decision from its inbox (``kept``) instead.

    A run that has not paused yet when the decision is kept (it is still setting up the
    approval: resolving the groups, posting the card) reads its inbox before it pauses and
    counts the decision from there; it then never pauses for this decision, and resuming
    could only fail. Waiting out ``deadline`` would tell the approver "not paused" about a
    decision the run counted; the caller reads the verdict from the ledger instead."""
    from prefect.exceptions import FlowPauseTimeout, NotPausedError
    from prefect.flow_runs import resume_flow_run

    with _api(req.get("api_url")):
        while True:
            try:
                resume_flow_run(uuid.UUID(req["flow_run_id"]), run_input=decision.model_dump())
                return
            except FlowPauseTimeout:
                raise DecisionError(
                    f"the approval at step '{decision.step}' has expired", "start a new run"
                ) from None
            except (NotPausedError, RuntimeError) as exc:
                # between pauses (another decision is being checked), not paused yet, or
                # paused a moment ago and its form ("Run input schema") not saved yet
                between = isinstance(exc, NotPausedError) or "schema not found" in str(exc)
                if not between:
                    raise
                if not kept.exists():  # the run took it from its inbox: it is recorded
                    return
                if time.monotonic() > deadline:
                    raise DecisionError(
                        f"run '{decision.run_id}' is not paused for approval",
                        "it may have finished or be handling another decision: "
                        "check `clampdown runs`",
                    ) from None
                time.sleep(0.2)


@contextlib.contextmanager
def _api(url: str | None) -> Iterator[None]:
    """Talk to the Prefect API the run is on (its own local one, for ``clampdown run``),
    with the auth string that API requires (:func:`clampdown_flows.prefect_api.client_auth`)."""
    if not url:
        yield
        return
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    from clampdown_flows.prefect_api import client_auth

    updates: dict[Any, Any] = {PREFECT_API_URL: url}
    auth = client_auth(url)
    if auth:
        updates[PREFECT_API_AUTH_STRING] = auth
    with temporary_settings(updates):
        yield


OUTCOME_SETTLE = 0.5
"""Seconds a sender waits, after an accepted decision record without ``decides`` (written by
a clampdown before session 26) that is the ledger's last record, for the record that
follows it: such a run writes ``approval.end`` right after the decision that decides the
request, and a read between the two reports no outcome."""


def _verdict(
    ledger: Path, sent: Decision, deadline: float, files: RunFiles | None = None
) -> DecisionVerdict:
    """Wait for the flow's ``approval.decision`` record of this decision (``files``: the
    run's, brought from the run store before each look when there is one: the run may be
    on another machine). An accepted decision's outcome is in its own record
    (``decides``: null while more approvals are needed). A record without it (an older
    run's) takes the request's ``approval.end`` when one follows; while it is still the
    last record, the run may be writing that, so the sender looks again for up to
    :data:`OUTCOME_SETTLE` seconds."""
    settle_until: float | None = None
    while True:
        if files is not None:
            files.materialize()
        records = read_written(ledger) if ledger.is_file() else []
        for index, record in enumerate(records):
            if record.get("type") != "approval.decision" or (
                record.get("decision_id") != sent.decision_id
            ):
                continue
            if not record.get("accepted"):  # the request as it stands (it may have ended)
                outcome = _outcome(records, sent.step)
                return DecisionVerdict(False, str(record.get("refusal")), outcome, sent.step)
            if "decides" in record:
                return DecisionVerdict(True, "counted", record["decides"], sent.step)
            later = records[index + 1 :]
            outcome = _outcome(later, sent.step)
            if settle_until is None:
                settle_until = min(deadline, time.monotonic() + OUTCOME_SETTLE)
            if outcome is not None or later or time.monotonic() >= settle_until:
                return DecisionVerdict(True, "counted", outcome, sent.step)
            break
        else:
            if time.monotonic() > deadline:
                return DecisionVerdict(False, NOT_ANSWERED, None, sent.step, queued=True)
        time.sleep(0.1 if settle_until is None else 0.02)


def _outcome(records: list[dict[str, Any]], step: str) -> str | None:
    """The outcome of ``step``'s ``approval.end`` among ``records``, if there is one."""
    ends = (r for r in records if r.get("type") == "approval.end" and r.get("step") == step)
    return next((r.get("outcome") for r in ends), None)
