"""Human approval gates: the ``approval.request`` action and the rules every decision meets.

This module is Prefect-free and Slack-free: it says *what* a request is, what a
decision carries, and whether a decision counts. The flow (:mod:`clampdown_flows.approval_gate`)
pauses and resumes; Slack (:mod:`clampdown_slack.approval_card`) shows the card.

A decision is bound to one request: it names the run, the step and the SHA-256 of
the gated steps' parameters as they were shown to the approver. A decision for
another run, step or set of parameters is refused, so an Approve click cannot be
replayed onto something nobody saw. The checks, in order:

1. bound to this run, this step, these parameters;
2. made before the deadline;
3. the approver is allowed (listed user id, or member of a listed Slack user group);
4. the approver did not start the run (two-person rule, on by default);
5. one vote per person: a repeated vote by the same person changes nothing.

Where a decision comes from is proven, not claimed (:mod:`clampdown.core.decision_proof`):
a terminal decision carries an OpenSSH signature by the approver's own key, checked
against ``CLAMPDOWN_ALLOWED_SIGNERS`` for the claimed approver id; a Slack decision is
signed by ``clampdown serve`` (which verified Slack's signed request) with the run's
approval key; a decision typed in the Prefect UI (or posted to the Prefect API) is
unauthenticated and refused unless ``CLAMPDOWN_PREFECT_UI_DECISIONS`` is on. Every
signature covers the request's nonce, so it is valid for that one request only, and
one key counts once in a quorum whatever ids it claims (docs/security.md).

A single allowed Deny ends the request as denied; ``min_approvals`` distinct allowed
Approves end it as approved; the deadline ends it as ``on_timeout`` says.
"""

# No __future__ annotations: pydantic then reads each field's type as written instead of
# compiling its text at class creation (a ForwardRef per field; lint imports this module).

import hashlib
import hmac
import json
import secrets
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

from clampdown.core.actions import Action, ActionContext, ActionInput, ActionOutput
from clampdown.core.durations import PositiveDuration

Outcome = Literal["approved", "denied", "timed_out"]


class Approvers(BaseModel):
    """Who may decide: Slack user ids and Slack user groups (ids like S0123 or handles).

    Built on first use (``defer_build``), as the action's input models are: a run without
    an approval step never validates one."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    users: list[str] = Field(default_factory=list, description="Slack user ids, e.g. U024BE7LH")
    groups: list[str] = Field(
        default_factory=list,
        description="Slack user groups: id (S0614TZR7) or handle (security-oncall)",
    )

    @field_validator("users", "groups")
    @classmethod
    def _strip(cls, values: list[str]) -> list[str]:
        return [v.strip().lstrip("@") for v in values if v.strip()]

    @property
    def empty(self) -> bool:
        return not self.users and not self.groups


class ApprovalRequest(Action):
    """Pause the run until authorised people approve or deny the steps that need it.

    The steps that list this one in ``needs`` are the *gated* steps: their exact
    parameters are shown on the card and bound to the decision, and none of them
    runs unless the request ends approved.
    """

    name = "approval.request"
    summary = "Ask authorised people to approve the gated steps (pauses the run)"
    approval_gate = True

    class Input(ActionInput):
        summary: str = Field(description="what is being asked, in one sentence")
        approvers: Approvers = Field(
            default_factory=Approvers,
            description="who may decide; empty: CLAMPDOWN_APPROVERS",
        )
        min_approvals: int = Field(1, ge=1, le=10, description="distinct approvers needed")
        timeout: PositiveDuration = Field(900.0, description="how long to wait, e.g. 15m")
        on_timeout: Literal["deny", "fail", "approve"] = Field(
            "deny",
            description="deny (gated steps skipped), fail (the step fails), or approve",
        )
        two_person_rule: bool = Field(
            True, description="the person who started the run may not approve it"
        )

    class Output(ActionOutput):
        approved: bool
        outcome: Outcome
        approvers: list[str]
        denied_by: str | None = None
        reason: str | None = None

    def run(self, params: Any, ctx: ActionContext) -> Any:
        raise RuntimeError("approval.request is carried out by the respond flow, not as a task")


@dataclass(frozen=True)
class DecisionVerdict:
    """What became of one submitted decision: counted or not, and why."""

    accepted: bool
    reason: str  # why not, or what it did
    outcome: str | None = None  # the request's outcome once decided
    step: str | None = None
    # delivered (or kept for a run no process holds now) but not answered yet: the run
    # checks and counts it when it takes it — neither counted nor refused
    queued: bool = False


DecisionSource = Literal["slack", "terminal", "prefect-ui"]


class SubmitDecision(Protocol):
    """Sends one decision to a paused run and returns the run's verdict on it.

    :func:`clampdown_flows.decisions.submit_decision` is the one there is; the
    application layer hands it to those that take decisions (the Slack app), so they
    need not import the flows.
    """

    def __call__(
        self,
        run_id: str,
        step: str | None,
        approver: str,
        decision: Literal["approve", "deny"] = "approve",
        reason: str = "",
        source: DecisionSource = "terminal",
        *,
        params_hash_seen: str | None = None,
        wait: float = 30.0,
    ) -> DecisionVerdict: ...


class Decision(BaseModel):
    """One person's answer to one request: what Slack, the terminal and the Prefect UI send.

    The flow pauses with ``wait_for_input=Decision``; its JSON schema is the form the
    Prefect UI shows on resume (run, step and params_hash come pre-filled). Built on first
    use (``defer_build``): a run without an approval step never validates one.
    """

    model_config = ConfigDict(extra="forbid", defer_build=True)

    run_id: str = Field(description="the clampdown run id")
    step: str = Field(description="the approval step id")
    params_hash: str = Field(description="SHA-256 of the gated parameters shown")
    nonce: str = Field(
        "", description="the approval request's nonce: a signature is valid for this request only"
    )
    decision: Literal["approve", "deny"]
    approver: str = Field(description="Slack user id of the person deciding")
    reason: str = Field("", max_length=2000, description="why (required to deny)")
    source: Literal["slack", "terminal", "prefect-ui"] = "prefect-ui"
    decision_id: str = Field(
        default_factory=lambda: uuid.uuid4().hex,
        description="set by the sender; the flow's ledger record of this decision carries it",
    )
    signed_at: str = Field("", description="when the sender signed it (ISO 8601, UTC)")
    signature: str = Field(
        "",
        description="leave empty in the Prefect UI: terminal decisions carry the approver's "
        "SSH signature, Slack decisions clampdown serve's",
    )

    def signing_payload(self) -> bytes:
        """Everything a signature vouches for: canonical JSON of every field but the
        signature (run, step, parameters hash, request nonce, decision, reason, approver
        claim, source, decision id, time)."""
        fields = self.model_dump(exclude={"signature"})
        blob = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return b"clampdown-decision-v1\n" + blob.encode()

    def signed(self, key: bytes) -> "Decision":
        mac = hmac.new(key, self.signing_payload(), hashlib.sha256).hexdigest()
        return self.model_copy(update={"signature": mac})

    def signature_valid(self, key: bytes) -> bool:
        mac = hmac.new(key, self.signing_payload(), hashlib.sha256).hexdigest()
        return hmac.compare_digest(mac.encode(), self.signature.encode("utf-8", "replace"))


def split_people(text: str) -> tuple[list[str], list[str]]:
    """``"U024BE7LH, @security-oncall, S0614TZR7"`` → (user ids, groups).

    User ids are upper-case and start with U or W; anything else is a group id or
    handle (write handles in lower case). Used for CLAMPDOWN_APPROVERS and
    CLAMPDOWN_RESPONDERS.
    """
    users: list[str] = []
    groups: list[str] = []
    for entry in text.split(","):
        entry = entry.strip().lstrip("@")
        if entry:
            (users if entry[:1] in ("U", "W") and entry.isupper() else groups).append(entry)
    return users, groups


def params_hash(gated: Mapping[str, Any]) -> str:
    """SHA-256 over the gated steps' parameters (canonical JSON): what the approver saw."""
    blob = json.dumps(gated, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass
class Request:
    """One pending approval, as the flow and the inbound handlers see it."""

    run_id: str
    step: str
    summary: str
    gated: dict[str, dict[str, Any]]  # step id -> {"uses", "params", "reversible"}
    params_hash: str
    allowed_users: frozenset[str]
    groups: tuple[str, ...]
    min_approvals: int
    two_person_rule: bool
    started_by: str | None
    requested_at: datetime
    deadline: datetime
    on_timeout: str
    approvals: dict[str, Decision] = field(default_factory=dict)
    denial: Decision | None = None
    step_hashes: dict[str, str] = field(default_factory=dict)  # per gated step, for run time
    # what every decision's signature must cover, so it is valid for this request only; set
    # with new_nonce() when the request opens ("" for a request made before nonces)
    nonce: str = ""
    keys: dict[str, str] = field(default_factory=dict)  # signing key fingerprint -> approver
    seen: set[str] = field(default_factory=set)  # decision ids counted

    def new_nonce(self) -> None:
        """Give the request a fresh nonce: decisions made for any earlier request (another
        run, step, or this step before a restart) no longer match it."""
        self.nonce = secrets.token_hex(16)

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "step": self.step,
            "summary": self.summary,
            "gated": self.gated,
            "params_hash": self.params_hash,
            "nonce": self.nonce,
            "allowed_users": sorted(self.allowed_users),
            "groups": list(self.groups),
            "min_approvals": self.min_approvals,
            "two_person_rule": self.two_person_rule,
            "started_by": self.started_by,
            "requested_at": self.requested_at.isoformat(),
            "deadline": self.deadline.isoformat(),
            "on_timeout": self.on_timeout,
            "approvals": sorted(self.approvals),
            "denied_by": self.denial.approver if self.denial else None,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Request":
        return cls(
            run_id=data["run_id"],
            step=data["step"],
            summary=data["summary"],
            gated=data["gated"],
            params_hash=data["params_hash"],
            allowed_users=frozenset(data["allowed_users"]),
            groups=tuple(data["groups"]),
            min_approvals=int(data["min_approvals"]),
            two_person_rule=bool(data["two_person_rule"]),
            started_by=data.get("started_by"),
            requested_at=datetime.fromisoformat(data["requested_at"]),
            deadline=datetime.fromisoformat(data["deadline"]),
            on_timeout=data["on_timeout"],
            nonce=str(data.get("nonce") or ""),
        )

    @property
    def decided(self) -> Outcome | None:
        if self.denial is not None:
            return "denied"
        if len(self.approvals) >= self.min_approvals:
            return "approved"
        return None

    def outcome_if_counted(self, decision: Decision) -> Outcome | None:
        """What :attr:`decided` becomes once ``decision`` (one :meth:`refusal` let through)
        is counted, without counting it. The gate writes it into the decision's own ledger
        record (``decides``), so whoever sent the decision reads the request's outcome from
        that one record: the ``approval.end`` that follows it may be written later than a
        sender would wait (a loaded machine), and a verdict without it claimed "more
        approvals needed" for a decision that had approved the request."""
        if self.denial is not None or decision.decision == "deny":
            return "denied"
        approvers = set(self.approvals) | {decision.approver}
        return "approved" if len(approvers) >= self.min_approvals else None

    def refusal(
        self,
        decision: Decision,
        members: Iterable[str] | None,
        at: datetime,
        key: str | None = None,
    ) -> str | None:
        """Why ``decision`` does not count (None: it counts).

        ``members`` is everyone in the request's groups, or None when they could
        not be resolved (then only listed user ids may decide). ``key`` is the
        fingerprint of the SSH key that signed it (terminal decisions): one key counts
        once, whatever approver ids it is listed for.
        """
        bound = self._binding_refusal(decision, at)
        if bound is not None:
            return bound
        who = decision.approver
        allowed = who in self.allowed_users or (members is not None and who in set(members))
        if not allowed:
            if members is None and self.groups:
                return (
                    f"{who} is not a listed approver and the groups "
                    f"{', '.join(self.groups)} could not be resolved"
                )
            return f"{who} is not an approver of this step"
        if self.two_person_rule and self.started_by and who == self.started_by:
            return f"{who} started this run; two-person rule: someone else must decide"
        if decision.decision == "deny" and not decision.reason.strip():
            return "a denial needs a reason"
        if key is not None and self.keys.get(key, who) != who:
            return (
                f"the key {key} has already decided as {self.keys[key]}: "
                "one key counts once, whatever id it claims"
            )
        if who in self.approvals and decision.decision == "approve":
            return f"{who} has already approved; {self.min_approvals} different people are needed"
        return None

    def _binding_refusal(self, decision: Decision, at: datetime) -> str | None:
        """Not for this request: another run, step, parameters, request or a replay."""
        if decision.run_id != self.run_id:
            return f"the decision is for run {decision.run_id}, not {self.run_id}"
        if decision.step != self.step:
            return f"the decision is for step '{decision.step}', not '{self.step}'"
        if decision.params_hash != self.params_hash:
            return "the decision was made on other parameters than the ones now gated"
        if self.nonce and decision.nonce != self.nonce:
            return "the decision was made for another approval request (its nonce differs)"
        if decision.decision_id in self.seen:
            return f"decision {decision.decision_id} was already counted: a decision counts once"
        if at > self.deadline:
            return "the request has expired"
        return None

    def record(self, decision: Decision, key: str | None = None) -> None:
        """Count a decision that passed :meth:`refusal` (``key``: its signing key)."""
        self.seen.add(decision.decision_id)
        if key is not None:
            self.keys[key] = decision.approver
        if decision.decision == "deny":
            self.denial = decision
        else:
            self.approvals[decision.approver] = decision
