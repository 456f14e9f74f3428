"""Approval gates end to end: real Prefect pause/resume, signed Slack clicks, moto, stand-in.

A run is started the way a responder starts one (the serve app's in-process starter,
trigger user = the responder), pauses at ``approval.request``, and decisions arrive as
signed ``block_actions`` / ``view_submission`` requests on ``/slack/events`` of the real
FastAPI + Bolt app, or from ``clampdown approve`` signed with the approver's own SSH key. The AWS end state is read from moto
server; what Slack saw is read from the stand-in.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from fastapi.testclient import TestClient
from prefect.client.orchestration import SyncPrefectClient
from typer.testing import CliRunner

from clampdown.app.cli import app as cli_app
from clampdown.app.local_runs import InProcessStarter
from clampdown.app.serve import create_app
from clampdown.core.ledger import read as read_ledger
from clampdown.core.settings import settings
from clampdown.core.signatures import SERVE_PRINCIPAL
from clampdown_flows.approval_store import request_file
from clampdown_flows.decisions import submit_decision
from clampdown_slack.approval_card import (
    APPROVE_ACTION,
    DENY_ACTION,
    DENY_VIEW,
    REASON_BLOCK,
    REASON_INPUT,
)
from clampdown_slack.testing.standin import SlackStandIn
from tests.approver_keys import approver_keys
from tests.gate_poll import poll_quickly
from tests.slack_requests import ONCALL, block_action, post_signed, view_submission

STARTER = "U0STARTER"
LEAD = "U0LEAD"
OUTSIDER = "U0OUTSIDER"
RUNBOOK = """\
apiVersion: clampdown/v1
kind: Runbook
metadata: {name: gated-contain, title: Gated containment, severity: critical}
inputs:
  principal_arn: {type: string, required: true}
  quorum: {type: integer, default: 1}
  timeout: {type: string, default: 60s}
  on_timeout: {type: string, default: deny}
steps:
  - id: approve
    uses: approval.request
    with:
      summary: "Revoke {{ inputs.principal_arn }}?"
      approvers: {users: [U0LEAD], groups: [security-oncall]}
      min_approvals: "{{ inputs.quorum }}"
      timeout: "{{ inputs.timeout }}"
      on_timeout: "{{ inputs.on_timeout }}"
  - id: revoke
    uses: aws.iam.revoke_credentials
    needs: [approve]
    with: {principal_arn: "{{ inputs.principal_arn }}"}
  - id: report
    uses: core.log
    needs: [revoke]
    if: always()
    with: {message: "revoke {{ steps.revoke.status }}"}
"""


@pytest.fixture
def library(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "library"
    folder.mkdir()
    (folder / "gated-contain.yaml").write_text(RUNBOOK)
    monkeypatch.setenv("CLAMPDOWN_LIBRARY", str(folder))
    return folder / "gated-contain.yaml"


@pytest.fixture
def suspect(aws_endpoint: str) -> str:
    iam = boto3.client("iam")
    name = f"suspect-{uuid.uuid4().hex[:8]}"
    arn = iam.create_user(UserName=name)["User"]["Arn"]
    iam.create_access_key(UserName=name)
    return arn


@pytest.fixture(autouse=True)
def _quick_gate_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    """A decision from `clampdown approve` or straight through the Prefect API rings no bell
    (a Slack click does): the paused run finds it at its next poll, every 0.1 s instead of
    0.5 s (tests/gate_poll.py)."""
    poll_quickly(monkeypatch)


@pytest.fixture(scope="module")
def prefect_client(prefect_server: str) -> Iterator[SyncPrefectClient]:
    """One Prefect client for the module's reads of flow run states (building one costs
    ~30 ms of CPU, its TLS context: the waits built one each, two or three per test)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        yield client


class Harness:
    """The server app, its starter, and ways to watch one run."""

    def __init__(
        self,
        client: TestClient,
        starter: InProcessStarter,
        slack: SlackStandIn,
        prefect: SyncPrefectClient,
    ) -> None:
        self.client, self.starter, self.slack, self.prefect = client, starter, slack, prefect

    def start(self, runbook: Path, **inputs: Any) -> str:
        return self.starter(runbook, inputs, {"type": "slack", "user": STARTER})

    def wait_paused(self, run_id: str, step: str = "approve", timeout: float = 30) -> dict:
        """The request file once the flow run is Paused (ready for a decision)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            path = request_file(run_id, step)
            if path.is_file():
                req = json.loads(path.read_text())
                if self.prefect.read_flow_run(uuid.UUID(req["flow_run_id"])).state.is_paused():
                    return req
            time.sleep(0.1)
        raise AssertionError(f"run {run_id} never paused at {step}")

    def wait_decisions(self, run_id: str, count: int, timeout: float = 30) -> list[dict]:
        """The flow's approval.decision records, once there are ``count`` of them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [r for r in ledger(run_id) if r["type"] == "approval.decision"]
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise AssertionError(f"run {run_id} has not recorded {count} decision(s)")

    def flow_state(self, req: dict) -> Any:
        return self.prefect.read_flow_run(uuid.UUID(req["flow_run_id"])).state

    def finish(self, run_id: str, timeout: float = 60) -> dict:
        self.starter.wait(run_id, timeout)
        return next(r for r in reversed(ledger(run_id)) if r["type"] == "run.end")

    def card(self, timeout: float = 15) -> dict:
        """The approval card as posted: the message whose blocks carry the buttons (the
        run's Slack sender posts it from its own thread: it may reach Slack after the pause)."""
        deadline = time.monotonic() + timeout
        while True:
            for call in self.slack.calls_to("chat.postMessage"):
                blocks = call.params.get("blocks")
                if isinstance(blocks, str):
                    blocks = json.loads(blocks)
                for block in blocks or []:
                    if block.get("type") == "actions" and call.status == 200:
                        return {"blocks": blocks, "value": block["elements"][0]["value"]}
            if time.monotonic() > deadline:
                raise AssertionError("no approval card posted")
            time.sleep(0.05)

    def click(self, user: str, action: str = APPROVE_ACTION, **sign: Any) -> Any:
        body = block_action(user, action, self.card()["value"])
        return post_signed(self.client, body, **sign)

    def ephemeral_to(self, user: str, timeout: float = 10) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            texts = [m["text"] for m in self.slack.ephemeral if m.get("user") == user]
            if texts:
                return texts
            time.sleep(0.05)
        return []


@pytest.fixture
def harness(
    prefect_client: SyncPrefectClient, oncall_slack: SlackStandIn, library: Path, suspect: str
) -> Iterator[Harness]:
    starter = InProcessStarter()
    with TestClient(create_app(start_run=starter)) as client:
        yield Harness(client, starter, oncall_slack, prefect_client)
    starter.shutdown()


def ledger(run_id: str) -> list[dict[str, Any]]:
    return read_ledger(settings().ledger_path(run_id))


def keys_active(arn: str) -> list[str]:
    user = arn.rsplit("/", 1)[1]
    keys = boto3.client("iam").list_access_keys(UserName=user)["AccessKeyMetadata"]
    return [k["AccessKeyId"] for k in keys if k["Status"] == "Active"]


def updated_cards(slack: SlackStandIn) -> list[str]:
    return [json.dumps(c.params.get("blocks")) for c in slack.calls_to("chat.update")]


def test_an_approve_click_from_an_allowed_user_resumes_the_run_and_containment_runs(
    harness: Harness, library: Path, suspect: str
) -> None:
    run_id = harness.start(library, principal_arn=suspect)
    req = harness.wait_paused(run_id)
    assert req["gated"]["revoke"]["params"]["principal_arn"] == suspect
    assert keys_active(suspect), "nothing may change before the approval"
    card = json.dumps(harness.card()["blocks"])
    assert suspect in card and "NOT reversible" not in card and "reversible" in card

    response = harness.click(ONCALL[0])
    assert response.status_code == 200

    end = harness.finish(run_id)
    assert end["status"] == "succeeded", end
    assert end["steps"] == {"approve": "succeeded", "revoke": "succeeded", "report": "succeeded"}
    assert keys_active(suspect) == []
    decided = [r for r in ledger(run_id) if r["type"] == "approval.end"]
    assert decided[0]["outcome"] == "approved" and decided[0]["approvers"] == [ONCALL[0]]
    assert any(
        "Approved" in c and ONCALL[0] in c and "actions" not in c
        for c in updated_cards(harness.slack)
    )


def test_forged_and_stale_clicks_get_401_and_the_run_stays_paused(
    harness: Harness, library: Path, suspect: str
) -> None:
    run_id = harness.start(library, principal_arn=suspect)
    req = harness.wait_paused(run_id)

    assert harness.click(ONCALL[0], secret="not-the-signing-secret").status_code == 401
    assert harness.click(ONCALL[0], timestamp=int(time.time()) - 6 * 60).status_code == 401
    time.sleep(0.3)  # three of the paused run's polls (tests/gate_poll.py): none resumes it
    assert harness.flow_state(req).is_paused()
    assert not [r for r in ledger(run_id) if r["type"] == "approval.decision"]

    harness.click(LEAD)  # a listed user approves: the run goes on
    assert harness.finish(run_id)["status"] == "succeeded"


def test_unauthorised_clicker_and_the_starter_are_refused_in_private_and_nothing_resumes(
    harness: Harness, library: Path, suspect: str
) -> None:
    run_id = harness.start(library, principal_arn=suspect)
    req = harness.wait_paused(run_id)

    harness.click(OUTSIDER)
    assert any("not an approver" in t for t in harness.ephemeral_to(OUTSIDER))
    assert harness.flow_state(req).is_paused()

    # the starter is made an approver too: the two-person rule still refuses them
    verdict = submit_decision(run_id, "approve", STARTER, source="terminal")
    assert not verdict.accepted
    assert "not an approver" in verdict.reason or "two-person" in verdict.reason
    assert harness.flow_state(req).is_paused()
    assert keys_active(suspect)

    harness.click(ONCALL[1])
    assert harness.finish(run_id)["status"] == "succeeded"


def test_two_person_rule_refuses_the_starter_even_when_listed(
    harness: Harness, library: Path, suspect: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    library.write_text(RUNBOOK.replace("users: [U0LEAD]", f"users: [U0LEAD, {STARTER}]"))
    run_id = harness.start(library, principal_arn=suspect)
    harness.wait_paused(run_id)

    harness.click(STARTER)
    assert any("two-person" in t for t in harness.ephemeral_to(STARTER))
    assert keys_active(suspect)
    harness.click(LEAD)
    assert harness.finish(run_id)["status"] == "succeeded"


def test_quorum_of_two_needs_two_different_people_and_a_second_click_changes_nothing(
    harness: Harness, library: Path, suspect: str
) -> None:
    run_id = harness.start(library, principal_arn=suspect, quorum=2)
    req = harness.wait_paused(run_id)

    harness.click(ONCALL[0])
    assert harness.wait_decisions(run_id, 1)[0]["accepted"]
    harness.wait_paused(run_id)  # counted, and paused again for the second approver
    harness.click(ONCALL[0])  # same person again: idempotent
    assert any("already approved" in t for t in harness.ephemeral_to(ONCALL[0]))
    assert harness.flow_state(req).is_paused() and keys_active(suspect)

    harness.click(LEAD)
    end = harness.finish(run_id)
    assert end["status"] == "succeeded"
    accepted = [r for r in ledger(run_id) if r["type"] == "approval.decision" and r["accepted"]]
    assert [r["approver"] for r in accepted] == [ONCALL[0], LEAD]
    assert keys_active(suspect) == []


def test_deny_asks_for_a_reason_then_skips_the_gated_steps_and_the_run_ends_denied(
    harness: Harness, library: Path, suspect: str
) -> None:
    run_id = harness.start(library, principal_arn=suspect)
    harness.wait_paused(run_id)

    assert harness.click(ONCALL[1], DENY_ACTION).status_code == 200
    deadline = time.monotonic() + 10  # the modal opens after the ack, as Slack requires
    while not harness.slack.calls_to("views.open") and time.monotonic() < deadline:
        time.sleep(0.05)
    opened = harness.slack.calls_to("views.open")
    assert len(opened) == 1
    view = opened[0].params["view"]
    view = json.loads(view) if isinstance(view, str) else view
    values = {
        REASON_BLOCK: {
            REASON_INPUT: {"type": "plain_text_input", "value": "false positive: pentest"}
        }
    }
    body = view_submission(ONCALL[1], DENY_VIEW, view["private_metadata"], values)
    assert post_signed(harness.client, body).status_code == 200

    end = harness.finish(run_id)
    assert end["status"] == "denied", end
    assert end["steps"]["revoke"] == "skipped" and end["steps"]["report"] == "succeeded"
    assert keys_active(suspect), "a denied containment must change nothing"
    denial = next(r for r in ledger(run_id) if r["type"] == "approval.end")
    assert denial["denied_by"] == ONCALL[1] and denial["reason"] == "false positive: pentest"
    assert any(
        "Denied" in c and "false positive: pentest" in c for c in updated_cards(harness.slack)
    )


def test_timeout_follows_on_timeout_deny_and_says_so_in_slack(
    harness: Harness, library: Path, suspect: str
) -> None:
    run_id = harness.start(library, principal_arn=suspect, timeout="1s")
    end = harness.finish(run_id)
    assert end["status"] == "denied"
    assert end["steps"]["revoke"] == "skipped"
    record = next(r for r in ledger(run_id) if r["type"] == "approval.end")
    assert record["outcome"] == "timed_out" and record["approved"] is False
    replies = [c.params.get("text", "") for c in harness.slack.calls_to("chat.postMessage")]
    assert any("No decision" in t and "on_timeout=deny" in t for t in replies)
    assert keys_active(suspect)


def test_timeout_with_on_timeout_fail_fails_the_run(
    harness: Harness, library: Path, suspect: str
) -> None:
    run_id = harness.start(library, principal_arn=suspect, timeout="1s", on_timeout="fail")
    end = harness.finish(run_id)
    assert end["status"] == "failed" and end["aborted_by"] == "approve"
    assert keys_active(suspect)


@pytest.fixture
def lead_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The lead's own SSH key, listed for LEAD, as CLAMPDOWN_APPROVER_KEY (approve's default)."""
    keys = approver_keys(tmp_path, monkeypatch, LEAD)
    monkeypatch.setenv("CLAMPDOWN_APPROVER_KEY", str(keys[LEAD]))
    return keys[LEAD]


def test_slack_down_for_a_while_containment_still_completes_and_the_ledger_says_so(
    lead_key: Path, harness: Harness, library: Path, suspect: str, card_kept: CardKept
) -> None:
    """The run's Slack sender works on a thread of its own: paused is not "tried Slack".
    Slack comes back only once the sender has kept the card to try again, after its header
    failed twice (at the start, and again before the card): under load the sender could
    otherwise first reach Slack after it was back, and record fewer misses or none."""
    harness.slack.down(500)
    run_id = harness.start(library, principal_arn=suspect)
    harness.wait_paused(run_id)
    assert card_kept.kept.wait(60), "the run did not keep the card to try again"
    # no card reached Slack; the on-call approves from the terminal instead
    result = CliRunner().invoke(cli_app, ["approve", run_id, "--as", LEAD])
    assert result.exit_code == 0, result.output
    assert "counted" in result.output
    harness.slack.up()
    end = harness.finish(run_id)
    assert end["status"] == "succeeded"
    assert keys_active(suspect) == []
    misses = [r for r in ledger(run_id) if r["type"] == "slack.miss"]
    assert misses and misses[0]["count"] >= 2


def test_clampdown_approve_refuses_a_denial_without_reason_and_an_outsider(
    lead_key: Path, harness: Harness, library: Path, suspect: str
) -> None:
    run_id = harness.start(library, principal_arn=suspect)
    harness.wait_paused(run_id)
    runner = CliRunner()
    no_reason = runner.invoke(cli_app, ["approve", run_id, "--as", LEAD, "--deny"])
    assert no_reason.exit_code == 1 and "reason" in no_reason.output
    outsider = runner.invoke(cli_app, ["approve", run_id, "--as", OUTSIDER])
    assert outsider.exit_code == 1 and "not an approver" in outsider.output
    runs = json.loads(runner.invoke(cli_app, ["runs", "--format", "json"]).output)
    mine = next(r for r in runs if r["run_id"] == run_id)
    assert mine["status"] == "waiting for approval" and "approval at approve" in mine["detail"]
    denied = runner.invoke(
        cli_app, ["approve", run_id, "--as", LEAD, "--deny", "--reason", "wrong user"]
    )
    assert denied.exit_code == 0, denied.output
    assert harness.finish(run_id)["status"] == "denied"
    [counted] = [r for r in ledger(run_id) if r["type"] == "approval.decision"]
    assert counted["accepted"] and counted["authenticated_by"].startswith("ssh key SHA256:")


class CardKept(logging.Handler):
    """Set once the run's Slack sender says it keeps a card it could not post, to try again."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.kept = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if "card" in text and "will try again" in text:
            self.kept.set()


@pytest.fixture
def card_kept() -> Iterator[CardKept]:
    """Watches the run's Slack sender's log (``clampdown.slack``) for a card kept to retry."""
    handler, logger = CardKept(), logging.getLogger("clampdown.slack")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


def test_a_card_slack_did_not_take_is_posted_once_slack_is_back_and_can_be_clicked(
    harness: Harness,
    library: Path,
    suspect: str,
    monkeypatch: pytest.MonkeyPatch,
    card_kept: CardKept,
) -> None:
    monkeypatch.setattr("clampdown_slack.run_thread.CARD_RETRY", 0.5)
    harness.slack.down(503)
    run_id = harness.start(library, principal_arn=suspect)
    harness.wait_paused(run_id)
    # the run's header is refused while Slack is down, so the card (which goes in the
    # header's thread) cannot be posted: the run keeps it to try again
    assert card_kept.kept.wait(15), "the run did not keep the card to try again"
    assert {c.status for c in harness.slack.calls_to("chat.postMessage")} == {503}
    assert not harness.slack.messages("C0INCIDENT")
    harness.slack.up()
    harness.card()  # posted once Slack is back
    header, *_ = harness.slack.messages("C0INCIDENT")
    card = next(c for c in harness.slack.calls_to("chat.postMessage") if c.params.get("blocks"))
    assert card.params["thread_ts"] == header["ts"], "the card goes in the run's thread"
    harness.click(ONCALL[0])
    assert harness.finish(run_id)["status"] == "succeeded"
    assert keys_active(suspect) == []


@pytest.fixture
def serve_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """serve's own SSH key (CLAMPDOWN_SERVE_KEY), listed as clampdown-serve for the runs."""
    keys = approver_keys(tmp_path, monkeypatch)
    key = keys.add(SERVE_PRINCIPAL, listed=False)
    keys.list(SERVE_PRINCIPAL, key)
    monkeypatch.setenv("CLAMPDOWN_SERVE_KEY", str(key))
    return key


def test_with_serve_s_key_a_reader_of_the_state_folder_cannot_forge_a_slack_click(
    serve_key: Path, harness: Harness, library: Path, suspect: str
) -> None:
    """The attacker reads the run's approval key in CLAMPDOWN_HOME, signs a Slack decision
    as the lead with it and resumes the paused run through the Prefect API: refused and
    recorded, nothing changes; a real click, vouched for by serve's key, counts."""
    from prefect.flow_runs import resume_flow_run

    from clampdown.core.approvals import Decision
    from clampdown_flows.approval_store import approval_key

    run_id = harness.start(library, principal_arn=suspect)
    req = harness.wait_paused(run_id)
    forged = Decision(
        run_id=run_id,
        step="approve",
        params_hash=req["params_hash"],
        nonce=req["nonce"],
        decision="approve",
        approver=LEAD,
        source="slack",
    ).signed(approval_key(settings().paths.run(run_id)))
    resume_flow_run(uuid.UUID(req["flow_run_id"]), run_input=forged.model_dump())
    [record] = harness.wait_decisions(run_id, 1)
    assert record["accepted"] is False and record["approver"] == LEAD
    assert record["refusal"] == (
        "the decision claims to come from Slack but is not signed with clampdown serve's key "
        "(CLAMPDOWN_ALLOWED_SIGNERS lists clampdown-serve)"
    )
    assert keys_active(suspect)

    harness.click(ONCALL[0])
    assert harness.finish(run_id)["status"] == "succeeded"
    counted = [r for r in harness.wait_decisions(run_id, 2) if r["accepted"]]
    assert [r["approver"] for r in counted] == [ONCALL[0]]
    assert counted[0]["authenticated_by"].startswith("slack (clampdown serve key SHA256:")
    assert keys_active(suspect) == []
