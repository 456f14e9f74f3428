"""Approval decisions that arrive the way the Prefect UI sends them.

The UI's "Resume" button on a paused flow run shows a form built from the run-input
schema the flow stored when it paused, and posts the filled form to the API's
``/flow_runs/{id}/resume`` — nothing of clampdown's sender side (``submit_decision``,
Slack, the CLI) is involved, so nothing pre-checks the decision. Here the form is read
back from the API exactly as the UI reads it, filled in, and sent with Prefect's own
``resume_flow_run``. The flow must apply every rule itself: refuse (and record) a
decision by an unauthorised person, by the starter, bound to other parameters, another
run or another step — and pause again, the gated step not run — and accept one by a
member of an allowed Slack group, after which the run goes on.

These decisions are unauthenticated: the run counts them only when an operator turned
``CLAMPDOWN_PREFECT_UI_DECISIONS`` on (the ``ui_on`` fixture). Off — the default — the
same posts are refused and recorded, as is any decision that claims to come from Slack or
the terminal without that source's proof, even from someone holding the Prefect API.

Real flow runs on the session's Prefect API; Slack is the local stand-in (it resolves
the approver group); the gated step is ``core.log``, so no AWS is needed.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect.client.orchestration import SyncPrefectClient
from prefect.exceptions import PrefectHTTPStatusError

from clampdown.app.local_runs import InProcessStarter
from clampdown.core.decision_proof import UI_OFF
from clampdown.core.ledger import read as read_ledger
from clampdown.core.settings import settings
from clampdown_flows.approval_store import request_file
from clampdown_flows.decisions import submit_decision
from clampdown_flows.prefect_api import local_auth_string
from clampdown_slack.testing.standin import SlackStandIn
from tests.approver_keys import approver_keys
from tests.gate_poll import poll_quickly
from tests.slack_requests import ONCALL

STARTER = "U0STARTER"
LEAD = "U0LEAD"
OUTSIDER = "U0OUTSIDER"
SUSPECT = "arn:aws:iam::123456789012:user/mallory"
RUNBOOK = """\
apiVersion: clampdown/v1
kind: Runbook
metadata: {name: ui-gated, title: Gate decided from the Prefect UI, severity: high}
inputs:
  principal_arn: {type: string, required: true}
steps:
  - id: approve
    uses: approval.request
    with:
      summary: "Contain {{ inputs.principal_arn }}?"
      approvers: {users: [U0LEAD, U0STARTER], groups: [security-oncall]}
      timeout: 120s
  - id: contain
    uses: core.log
    needs: [approve]
    with: {message: "contained {{ inputs.principal_arn }}"}
  - id: wrap_up
    uses: core.log
    needs: [contain]
    if: always()
    with: {message: "contain {{ steps.contain.status }}"}
"""


@pytest.fixture
def runbook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "library"
    folder.mkdir()
    path = folder / "ui-gated.yaml"
    path.write_text(RUNBOOK, encoding="utf-8")
    monkeypatch.setenv("CLAMPDOWN_LIBRARY", str(folder))
    return path


@pytest.fixture(autouse=True)
def _quick_gate_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every decision here reaches the run through the Prefect API alone (no bell): the
    paused run finds it at its next poll, every 0.1 s instead of 0.67 s (tests/gate_poll.py)."""
    poll_quickly(monkeypatch)


@pytest.fixture
def ui_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator turned unauthenticated Prefect UI decisions on (read at the run's start)."""
    monkeypatch.setenv("CLAMPDOWN_PREFECT_UI_DECISIONS", "true")


@pytest.fixture
def starter(
    prefect_server: str, oncall_slack: SlackStandIn, runbook: Path
) -> Iterator[InProcessStarter]:
    runs = InProcessStarter()
    yield runs
    runs.shutdown()


@pytest.fixture(scope="module")
def prefect_client(prefect_server: str) -> Iterator[SyncPrefectClient]:
    """One Prefect client for the module's waits (building one costs ~30 ms of CPU, its TLS
    context; a wait for a pause built one per wait, several per test)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        yield client


def ledger(run_id: str) -> list[dict[str, Any]]:
    return read_ledger(settings().ledger_path(run_id))


@dataclass
class Paused:
    """A paused run as the UI sees it: its state and the resume form Prefect stored."""

    flow_run_id: uuid.UUID
    pause_key: str
    schema: dict[str, Any]
    description_key: str  # where Prefect keeps the form's description

    def form(self, **filled: Any) -> dict[str, Any]:
        """What the UI submits: the form's pre-filled defaults plus what the person typed."""
        defaults = {
            name: spec["default"]
            for name, spec in self.schema["properties"].items()
            if "default" in spec and name != "decision_id"
        }
        return defaults | filled


class UiRun:
    """One run started by a responder, decided through the Prefect API only."""

    def __init__(self, starter: InProcessStarter, runbook: Path, client: SyncPrefectClient) -> None:
        self.starter, self.client = starter, client
        self.run_id = starter(
            runbook, {"principal_arn": SUSPECT}, {"type": "slack", "user": STARTER}
        )

    def request(self) -> dict[str, Any]:
        return json.loads(request_file(self.run_id, "approve").read_text())

    def paused(self, other_than: str | None = None, timeout: float = 30) -> Paused:
        """Wait until the flow run is Paused (with a pause key other than ``other_than``)."""
        client = self.client
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if request_file(self.run_id, "approve").is_file():
                flow_run_id = uuid.UUID(self.request()["flow_run_id"])
                state = client.read_flow_run(flow_run_id).state
                details = state.state_details if state is not None else None
                keyset = details.run_input_keyset if details is not None else None
                key = str(details.pause_key) if details is not None else ""
                if state is not None and state.is_paused() and keyset and key != other_than:
                    try:  # Prefect saves the form just after the state says Paused
                        schema = json.loads(
                            client.read_flow_run_input(flow_run_id, keyset["schema"])
                        )
                    except PrefectHTTPStatusError as exc:
                        if exc.response.status_code != 404:
                            raise
                        time.sleep(0.05)
                        continue
                    return Paused(flow_run_id, key, schema, keyset["description"])
            time.sleep(0.1)
        raise AssertionError(f"run {self.run_id} is not paused (other than {other_than})")

    def description(self, paused: Paused, timeout: float = 30) -> str:
        """The form's description, once Prefect saved it: it saves the schema first, then
        the description, so a read just after the schema appeared may find no description
        yet (it was then taken as none)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                saved = self.client.read_flow_run_input(paused.flow_run_id, paused.description_key)
                return str(json.loads(saved))
            except PrefectHTTPStatusError as exc:
                if exc.response.status_code != 404 or time.monotonic() > deadline:
                    raise
            time.sleep(0.05)

    def resume(self, paused: Paused, run_input: dict[str, Any]) -> None:
        """Exactly what the UI's Resume does: the API's resume with the form as run input."""
        from prefect.flow_runs import resume_flow_run

        resume_flow_run(paused.flow_run_id, run_input=run_input)

    def decisions(self, count: int, timeout: float = 30) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [r for r in ledger(self.run_id) if r["type"] == "approval.decision"]
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise AssertionError(f"run {self.run_id} has not recorded {count} decision(s)")

    def refused_then_paused_again(
        self, paused: Paused, run_input: dict[str, Any]
    ) -> tuple[dict, Paused]:
        """Send a decision the flow must refuse; its record, and the run paused anew."""
        before = len([r for r in ledger(self.run_id) if r["type"] == "approval.decision"])
        self.resume(paused, run_input)
        record = self.decisions(before + 1)[before]
        again = self.paused(other_than=paused.pause_key)
        assert not self.ran("contain"), "a refused decision must not let the gated step run"
        assert self.request()["status"] == "pending"
        return record, again

    def ran(self, step: str) -> bool:
        return any(r["type"] == "step.start" and r.get("step") == step for r in ledger(self.run_id))

    def finish(self, timeout: float = 60) -> dict[str, Any]:
        self.starter.wait(self.run_id, timeout)
        return next(r for r in reversed(ledger(self.run_id)) if r["type"] == "run.end")


def test_the_resume_form_prefect_stores_is_prefilled_and_an_allowed_group_member_resumes(
    ui_on: None,
    starter: InProcessStarter,
    runbook: Path,
    oncall_slack: SlackStandIn,
    prefect_client: SyncPrefectClient,
) -> None:
    run = UiRun(starter, runbook, prefect_client)
    paused = run.paused()
    request = run.request()

    # the form the UI renders: bound fields pre-filled, the person's fields to fill in
    props = paused.schema["properties"]
    assert props["run_id"]["default"] == run.run_id
    assert props["step"]["default"] == "approve"
    assert props["params_hash"]["default"] == request["params_hash"]
    assert len(request["params_hash"]) == 64
    assert set(props["decision"]["enum"]) == {"approve", "deny"}
    assert {"decision", "approver"} <= set(paused.schema.get("required", []))
    assert not {"run_id", "step", "params_hash"} & set(paused.schema.get("required", []))
    description = run.description(paused)
    assert run.run_id in description and SUSPECT in description
    assert not run.ran("contain")

    run.resume(paused, paused.form(decision="approve", approver=ONCALL[0]))

    end = run.finish()
    assert end["status"] == "succeeded", end
    assert end["steps"] == {"approve": "succeeded", "contain": "succeeded", "wrap_up": "succeeded"}
    [decision] = [r for r in ledger(run.run_id) if r["type"] == "approval.decision"]
    assert decision["accepted"] is True and decision["refusal"] is None
    assert decision["approver"] == ONCALL[0] and decision["source"] == "prefect-ui"
    [outcome] = [r for r in ledger(run.run_id) if r["type"] == "approval.end"]
    assert outcome["outcome"] == "approved" and outcome["approvers"] == [ONCALL[0]]
    assert run.request()["status"] == "approved"
    updated = json.dumps([c.params.get("blocks") for c in oncall_slack.calls_to("chat.update")])
    assert "Approved" in updated and ONCALL[0] in updated


def test_unauthorised_people_deciding_in_the_ui_are_refused_and_the_run_pauses_again(
    ui_on: None, starter: InProcessStarter, runbook: Path, prefect_client: SyncPrefectClient
) -> None:
    run = UiRun(starter, runbook, prefect_client)
    paused = run.paused()

    refused = {}
    for who, decision, reason in [
        (OUTSIDER, "approve", ""),  # in no list and no group
        (STARTER, "approve", ""),  # listed, but started the run
        (LEAD, "deny", ""),  # allowed, but a denial needs a reason
    ]:
        record, paused = run.refused_then_paused_again(
            paused, paused.form(decision=decision, approver=who, reason=reason)
        )
        assert record["accepted"] is False and record["source"] == "prefect-ui"
        assert record["approver"] == who
        refused[who] = record["refusal"]
    assert refused == {
        OUTSIDER: f"{OUTSIDER} is not an approver of this step",
        STARTER: f"{STARTER} started this run; two-person rule: someone else must decide",
        LEAD: "a denial needs a reason",
    }
    assert not [r for r in ledger(run.run_id) if r["type"] == "approval.end"]

    run.resume(paused, paused.form(decision="approve", approver=LEAD))
    end = run.finish()
    assert end["status"] == "succeeded", end
    accepted = [
        r["approver"]
        for r in ledger(run.run_id)
        if r["type"] == "approval.decision" and r["accepted"]
    ]
    assert accepted == [LEAD]


def test_ui_decisions_bound_to_other_parameters_run_or_step_are_refused(
    ui_on: None, starter: InProcessStarter, runbook: Path, prefect_client: SyncPrefectClient
) -> None:
    run = UiRun(starter, runbook, prefect_client)
    paused = run.paused()
    request = run.request()
    other_hash = "0" * 64
    assert other_hash != request["params_hash"]

    cases = [
        (
            {"params_hash": other_hash},
            "the decision was made on other parameters than the ones now gated",
        ),
        ({"run_id": "ffffffffffff"}, f"the decision is for run ffffffffffff, not {run.run_id}"),
        ({"step": "approve_rotation"}, "no approval is pending at step 'approve_rotation'"),
    ]
    for override, refusal in cases:
        form = paused.form(decision="approve", approver=ONCALL[1], **override)
        record, paused = run.refused_then_paused_again(paused, form)
        assert record["accepted"] is False
        assert record["refusal"] == refusal

    # a form that does not match the stored schema never reaches the flow: the API rejects it
    with pytest.raises(RuntimeError, match="Cannot resume this run"):
        run.resume(paused, paused.form(decision="maybe", approver=ONCALL[1]))
    # the server refused it, so the run is still in the same pause: had it been resumed, the
    # flow would have recorded the form and paused again under a new key
    assert run.paused().pause_key == paused.pause_key
    assert len([r for r in ledger(run.run_id) if r["type"] == "approval.decision"]) == 3

    # the same person, on the parameters actually shown, denies with a reason: gated step skipped
    run.resume(
        paused, paused.form(decision="deny", approver=ONCALL[1], reason="pentest, ticket SEC-42")
    )
    end = run.finish()
    assert end["status"] == "denied", end
    assert end["steps"] == {"approve": "succeeded", "contain": "skipped", "wrap_up": "succeeded"}
    [outcome] = [r for r in ledger(run.run_id) if r["type"] == "approval.end"]
    assert outcome["denied_by"] == ONCALL[1] and outcome["reason"] == "pentest, ticket SEC-42"
    # the three refused forms and the denial: the one the API rejected never reached the flow
    decided = [r["accepted"] for r in ledger(run.run_id) if r["type"] == "approval.decision"]
    assert decided == [False, False, False, True]


def test_a_ui_decision_cannot_pose_as_slack_or_the_terminal_and_the_ui_can_be_turned_off(
    ui_on: None,
    starter: InProcessStarter,
    runbook: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    prefect_client: SyncPrefectClient,
) -> None:
    keys = approver_keys(tmp_path, monkeypatch, LEAD)
    run = UiRun(starter, runbook, prefect_client)
    paused = run.paused()
    refusals = {
        "slack": "the decision claims to come from Slack but is not signed by clampdown serve "
        "(the run's approval key)",
        "terminal": f"the terminal decision by {LEAD} is not signed by a key that "
        f"CLAMPDOWN_ALLOWED_SIGNERS lists for {LEAD} (or was altered after signing)",
    }
    forged_sig = "-----BEGIN SSH SIGNATURE-----\nAAAA\n-----END SSH SIGNATURE-----\n"
    for source, signature in (("slack", "0" * 64), ("terminal", forged_sig)):
        forged = paused.form(decision="approve", approver=LEAD, source=source, signature=signature)
        record, paused = run.refused_then_paused_again(paused, forged)
        assert record["accepted"] is False
        assert record["refusal"] == refusals[source]

    monkeypatch.setenv("CLAMPDOWN_APPROVAL_SOURCES", "slack,terminal")
    record, paused = run.refused_then_paused_again(
        paused, paused.form(decision="approve", approver=LEAD)
    )
    assert record["refusal"] == "decisions from prefect-ui are not accepted here"

    verdict = submit_decision(run.run_id, "approve", LEAD, key=keys[LEAD])  # LEAD's own key
    assert verdict.accepted, verdict
    assert run.finish()["status"] == "succeeded"


def test_by_default_decisions_posted_to_the_prefect_api_are_refused_and_recorded(
    starter: InProcessStarter,
    runbook: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    prefect_client: SyncPrefectClient,
) -> None:
    """Issue 12's attack: someone who can reach the Prefect API posts a decision to the
    paused run (a typed UI decision, an unsigned terminal claim); with the UI path off by
    default both are refused and recorded, and only a decision signed by the approver's own
    key counts. Without the API's auth string the post does not even reach the run."""
    keys = approver_keys(tmp_path, monkeypatch, LEAD)
    monkeypatch.delenv("CLAMPDOWN_PREFECT_UI_DECISIONS", raising=False)
    run = UiRun(starter, runbook, prefect_client)
    paused = run.paused()
    url = f"{prefect_api_url()}/flow_runs/{paused.flow_run_id}/resume"

    anonymous = httpx.post(url, json={"run_input": paused.form(decision="approve", approver=LEAD)})
    assert anonymous.status_code == 401

    record, paused = run.refused_then_paused_again(
        paused, paused.form(decision="approve", approver=ONCALL[0])
    )
    assert record["accepted"] is False and record["source"] == "prefect-ui"
    assert record["refusal"] == UI_OFF
    assert "CLAMPDOWN_PREFECT_UI_DECISIONS=false" in record["refusal"]

    # straight to the API with httpx (the holder of the auth string), claiming the terminal
    user, _, password = (local_auth_string() or "").partition(":")
    unsigned = paused.form(decision="approve", approver=LEAD, source="terminal")
    before = len(run.decisions(1))
    posted = httpx.post(url, json={"run_input": unsigned}, auth=(user, password))
    assert posted.status_code in (200, 201), posted.text
    record = run.decisions(before + 1)[before]
    assert record["accepted"] is False and record["approver"] == LEAD
    assert record["refusal"] == (
        f"the terminal decision by {LEAD} is not signed: terminal decisions must be signed "
        "with the approver's own SSH key (`clampdown approve --key`)"
    )
    run.paused(other_than=paused.pause_key)
    assert not run.ran("contain") and run.request()["status"] == "pending"

    verdict = submit_decision(run.run_id, "approve", LEAD, key=keys[LEAD])
    assert verdict.accepted, verdict
    end = run.finish()
    assert end["status"] == "succeeded"
    accepted = [r for r in ledger(run.run_id) if r["type"] == "approval.decision" and r["accepted"]]
    assert [r["approver"] for r in accepted] == [LEAD]
    assert accepted[0]["authenticated_by"].startswith("ssh key SHA256:")


def prefect_api_url() -> str:
    from prefect.settings import PREFECT_API_URL

    return str(PREFECT_API_URL.value())
