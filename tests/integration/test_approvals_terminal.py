"""Approvals with no Slack at all: groups from CLAMPDOWN_GROUPS, decisions from the terminal,
each signed with the approver's own SSH key and verified by the run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from clampdown.app.cli import app as cli_app
from clampdown.core.approvals import Decision
from clampdown.core.ledger import read
from clampdown.core.members import local_groups_members, members_now
from clampdown.core.settings import settings
from clampdown.core.signatures import generate_key, sign
from clampdown_flows.approval_store import request_file
from tests.approver_keys import approver_keys
from tests.gate_poll import poll_quickly

RUNBOOK = """\
apiVersion: clampdown/v1
kind: Runbook
metadata: {name: terminal-gate, title: Terminal gate, severity: high}
steps:
  - id: approve
    uses: approval.request
    with: {summary: "Go?", approvers: {groups: [security-oncall]}, timeout: 60s}
  - id: act
    uses: core.log
    needs: [approve]
    with: {message: approved}
"""


@pytest.fixture(autouse=True)
def _quick_gate_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every decision here reaches the run from outside its flow's process or through the
    Prefect API (no bell): the paused run finds it at its next poll, every 0.1 s instead
    of 0.5 s (tests/gate_poll.py)."""
    poll_quickly(monkeypatch)


@pytest.fixture
def no_slack(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CLAMPDOWN_SLACK_BOT_TOKEN", "CLAMPDOWN_SLACK_CHANNEL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CLAMPDOWN_GROUPS", "security-oncall=U0TERM1, U0TERM2; ir-leads=U0LEAD")


def test_local_groups_define_members_only_for_the_groups_they_name(no_slack: None) -> None:
    assert local_groups_members(["security-oncall"]) == {"U0TERM1", "U0TERM2"}
    assert members_now(["ir-leads", "security-oncall"]) == {"U0LEAD", "U0TERM1", "U0TERM2"}
    assert members_now(["unknown-group"]) is None  # nobody can tell: only listed ids count


def start_paused(path: Path, run_id: str, prefect_server: str, trigger: dict) -> threading.Thread:
    """Start the run in a thread and wait until its approval request is written."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from clampdown_flows.respond import run_in_process

    def start() -> None:
        with temporary_settings({PREFECT_API_URL: prefect_server}):
            run_in_process(str(path), {}, run_id=run_id, trigger=trigger)

    runner = threading.Thread(target=start)
    runner.start()
    deadline = time.monotonic() + 30
    while not request_file(run_id, "approve").is_file() and time.monotonic() < deadline:
        time.sleep(0.1)
    return runner


def decisions(run_id: str, count: int = 0, timeout: float = 30) -> list[dict[str, Any]]:
    """The run's approval.decision records (waiting until there are ``count``)."""
    deadline = time.monotonic() + timeout
    while True:
        path = settings().ledger_path(run_id)
        found = [r for r in read(path) if r["type"] == "approval.decision"]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def signed_decision(run_id: str, approver: str, key: Path) -> Decision:
    """What `clampdown approve` sends: the decision for the pending request, signed."""
    req = json.loads(request_file(run_id, "approve").read_text())
    decision = Decision(
        run_id=run_id,
        step="approve",
        params_hash=req["params_hash"],
        nonce=req["nonce"],
        decision="approve",
        approver=approver,
        source="terminal",
    )
    return decision.model_copy(update={"signature": sign(decision.signing_payload(), key)})


def post_to_api(decision: Decision) -> None:
    """Resume the paused run with ``decision`` through the Prefect API (retrying while the
    run is between two pauses), as a sender or an attacker holding the API would."""
    from prefect.exceptions import NotPausedError
    from prefect.flow_runs import resume_flow_run

    req = json.loads(request_file(decision.run_id, "approve").read_text())
    before = len(decisions(decision.run_id))
    deadline = time.monotonic() + 30
    while True:
        try:
            resume_flow_run(uuid.UUID(req["flow_run_id"]), run_input=decision.model_dump())
            break
        except (NotPausedError, RuntimeError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    decisions(decision.run_id, before + 1)


def test_a_terminal_team_approves_with_their_own_keys_and_a_claim_is_not_enough(
    prefect_server: str,
    no_slack: None,
    write_runbook: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`run --as U0TERM1` then `approve --as U0TERM2` from the same shell passes only with
    U0TERM2's private key: the claim alone, or U0TERM1's key, is refused by the run."""
    from clampdown.app.cli_runs import _terminal_trigger

    keys = approver_keys(tmp_path, monkeypatch, "U0TERM1", "U0TERM2")
    monkeypatch.delenv("CLAMPDOWN_APPROVER_KEY", raising=False)
    path: Path = write_runbook(RUNBOOK, "terminal-gate.yaml")
    trigger = _terminal_trigger("U0TERM1")
    assert trigger["user"] == "U0TERM1" and trigger["authenticated"] is False
    runner = start_paused(path, "terminal0001", prefect_server, trigger)
    request = json.loads(request_file("terminal0001", "approve").read_text())
    assert request["groups"] == ["security-oncall"] and len(request["nonce"]) == 32

    cli = CliRunner()
    starter = cli.invoke(
        cli_app, ["approve", "terminal0001", "--as", "U0TERM1", "--key", str(keys["U0TERM1"])]
    )
    assert starter.exit_code == 1 and "two-person rule" in starter.output
    unsigned = cli.invoke(cli_app, ["approve", "terminal0001", "--as", "U0TERM2"])
    assert unsigned.exit_code == 1, unsigned.output
    assert "terminal decisions must be signed with your own SSH key" in unsigned.output
    assert decisions("terminal0001") == []  # neither reached the run

    borrowed = cli.invoke(
        cli_app, ["approve", "terminal0001", "--as", "U0TERM2", "--key", str(keys["U0TERM1"])]
    )
    refusal = (
        "the terminal decision by U0TERM2 is not signed by a key that "
        "CLAMPDOWN_ALLOWED_SIGNERS lists for U0TERM2 (or was altered after signing)"
    )
    assert borrowed.exit_code == 1 and "refused" in borrowed.output
    assert refusal in " ".join(borrowed.output.split())
    [record] = decisions("terminal0001")
    assert record["accepted"] is False and record["refusal"] == refusal
    assert record["approver"] == "U0TERM2" and record["authenticated_by"] is None

    other = cli.invoke(
        cli_app, ["approve", "terminal0001", "--as", "U0TERM2", "--sign-with", str(keys["U0TERM2"])]
    )
    assert other.exit_code == 0, other.output
    runner.join(60)
    records = read(settings().ledger_path("terminal0001"))
    assert records[-1]["type"] == "run.end" and records[-1]["status"] == "succeeded"
    [start] = [r for r in records if r["type"] == "run.start"]
    assert start["run"]["trigger"]["local_user"].endswith(f"(uid {os.getuid()})")
    counted = [r for r in decisions("terminal0001") if r["accepted"]]
    assert [r["approver"] for r in counted] == ["U0TERM2"]
    assert counted[0]["authenticated_by"].startswith("ssh key SHA256:")


QUORUM = RUNBOOK.replace("timeout: 60s}", "timeout: 60s, min_approvals: 2}")


def test_a_quorum_needs_two_distinct_keys_whatever_ids_one_key_claims(
    prefect_server: str,
    no_slack: None,
    write_runbook: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    keys = approver_keys(tmp_path, monkeypatch, "U0TERM2")
    shared = keys.add("shared", listed=False)
    keys.list("U0TERM1,U0LEAD", shared)  # one key, listed for two ids
    monkeypatch.setenv("CLAMPDOWN_GROUPS", "security-oncall=U0TERM1,U0TERM2,U0LEAD")
    path: Path = write_runbook(QUORUM, "quorum-gate.yaml")
    runner = start_paused(path, "quorum000001", prefect_server, {"type": "manual", "user": "me"})

    # what `clampdown approve --as U0TERM1 --key shared` sends (kept, to replay it below)
    first = signed_decision("quorum000001", "U0TERM1", shared)
    post_to_api(first)
    [counted] = decisions("quorum000001")
    assert counted["accepted"] is True and counted["decision_id"] == first.decision_id
    cli = CliRunner()
    twin = cli.invoke(cli_app, ["approve", "quorum000001", "--as", "U0LEAD", "--key", str(shared)])
    assert twin.exit_code == 1
    [_, refused] = decisions("quorum000001")
    assert refused["accepted"] is False and refused["approver"] == "U0LEAD"
    assert refused["refusal"].startswith("the key SHA256:")
    assert refused["refusal"].endswith(
        "has already decided as U0TERM1: one key counts once, whatever id it claims"
    )
    assert json.loads(request_file("quorum000001", "approve").read_text())["status"] == "pending"

    # the captured decision, validly signed, replayed through the Prefect API: counted once
    post_to_api(first)
    replayed = decisions("quorum000001", 3)[2]
    assert replayed["accepted"] is False and replayed["decision_id"] == first.decision_id
    assert replayed["refusal"] == (
        f"decision {first.decision_id} was already counted: a decision counts once"
    )

    second = cli.invoke(
        cli_app, ["approve", "quorum000001", "--as", "U0TERM2", "--key", str(keys["U0TERM2"])]
    )
    assert second.exit_code == 0, second.output
    assert "approval counted; the request is now approved" in second.output, second.output
    runner.join(60)
    records = read(settings().ledger_path("quorum000001"))
    assert records[-1]["type"] == "run.end" and records[-1]["status"] == "succeeded"
    [end] = [r for r in records if r["type"] == "approval.end"]
    assert end["approvers"] == ["U0TERM1", "U0TERM2"]


def test_a_run_paused_at_an_approval_can_be_interrupted(
    prefect_server: str, no_slack: None, write_runbook: Any
) -> None:
    """What the test session does to runs a test left paused (and an embedder may do): the
    run ends as cancelled, says so, and its gated step never starts."""
    from clampdown.app.local_runs import InProcessStarter

    starter = InProcessStarter()
    run_id = starter(write_runbook(RUNBOOK, "terminal-gate.yaml"), {}, {"type": "manual"})
    deadline = time.monotonic() + 30
    while not request_file(run_id, "approve").is_file() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert starter.interrupt_running() == [run_id]
    starter.wait(run_id, 30)  # the run's task ended: the loop is free again
    records = read(settings().ledger_path(run_id))
    [end] = [r for r in records if r["type"] == "run.end"]
    assert end["status"] == "cancelled" and "interrupted" in end["error"]
    assert not any(r["type"] == "step.start" and r.get("step") == "act" for r in records)
    starter.shutdown()


def test_a_decision_sent_the_moment_the_card_is_posted_counts(
    prefect_server: str,
    no_slack: None,
    write_runbook: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The request is saved before the card goes out: an approver who decides the moment
    the card appears (while the run still asks Slack who is in the approver groups) is
    counted. Saved after it, such a click was refused with "has no approval request",
    nothing kept and nothing in the ledger."""
    from clampdown.core.engine import observing
    from clampdown_flows import approval_gate

    keys = approver_keys(tmp_path, monkeypatch, "U0TERM2")
    real_members = approval_gate.resolve_members
    verdicts: list[Any] = []
    inbox = settings().paths.run("terminalfast1").decision_inbox

    def slow_members(*args: Any, **kwargs: Any) -> Any:
        # Slack taking its time over usergroups.users.list: until the approver has decided
        # (the decision kept in the run's inbox, as far as it goes before the pause) or
        # was turned away (what a request saved after the card made of this click)
        deadline = time.monotonic() + 30
        while not (verdicts or list(inbox.glob("*.json"))) and time.monotonic() < deadline:
            time.sleep(0.02)
        return real_members(*args, **kwargs)

    monkeypatch.setattr(approval_gate, "resolve_members", slow_members)
    saved_when_posted: list[bool] = []
    deciders: list[threading.Thread] = []
    real_requested = observing.Observers.approval_requested

    def requested(self: Any, request: Any) -> list[Any]:
        saved_when_posted.append(request_file(request.run_id, request.step).is_file())
        sign_with = ["--sign-with", str(keys["U0TERM2"])]
        approve = ["approve", request.run_id, "--as", "U0TERM2", *sign_with]
        decide = threading.Thread(
            target=lambda: verdicts.append(CliRunner().invoke(cli_app, approve))
        )
        decide.start()
        deciders.append(decide)
        return real_requested(self, request)

    monkeypatch.setattr(observing.Observers, "approval_requested", requested)
    runner = start_paused(
        write_runbook(RUNBOOK, "terminal-gate.yaml"), "terminalfast1", prefect_server, {}
    )
    runner.join(60)
    for decide in deciders:
        decide.join(60)
    assert saved_when_posted == [True]
    [verdict] = verdicts
    assert verdict.exit_code == 0, verdict.output
    [record] = decisions("terminalfast1")
    assert record["accepted"] is True and record["approver"] == "U0TERM2"
    records = read(settings().ledger_path("terminalfast1"))
    assert records[-1]["type"] == "run.end" and records[-1]["status"] == "succeeded"


def test_another_local_user_with_a_key_of_their_own_cannot_approve_as_an_approver(
    prefect_server: str,
    no_slack: None,
    write_runbook: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another account, simulated by a `clampdown approve` process with its own HOME: it
    holds the Prefect API (its auth string) and can read the request, but not U0TERM2's
    key. With no key it cannot send; with a key of its own claiming U0TERM2, the run
    refuses the decision and records the refusal."""
    keys = approver_keys(tmp_path, monkeypatch, "U0TERM2")
    path: Path = write_runbook(RUNBOOK, "terminal-gate.yaml")
    runner = start_paused(path, "attacker0001", prefect_server, {"type": "manual", "user": "x"})
    attacker = tmp_path / "attacker-home"
    (attacker / ".ssh").mkdir(parents=True)
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("CLAMPDOWN_APPROVER", "SSH_AUTH", "PREFECT_API_URL"))
    } | {"HOME": str(attacker), "COLUMNS": "200"}

    def approve(*extra: str) -> subprocess.CompletedProcess[str]:
        command = [str(Path(sys.executable).parent / "clampdown"), "approve", "attacker0001"]
        return subprocess.run(
            [*command, "--as", "U0TERM2", *extra],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    no_key = approve("--key", str(attacker / ".ssh" / "id_ed25519"))
    assert no_key.returncode == 1, no_key.stdout + no_key.stderr
    assert "no SSH key at" in no_key.stderr and "Traceback" not in no_key.stderr
    assert decisions("attacker0001") == []

    own = generate_key(attacker / ".ssh" / "id_ed25519", "mallory@host")
    forged = approve("--key", str(own))
    assert forged.returncode == 1, forged.stdout + forged.stderr
    refusal = (
        "the terminal decision by U0TERM2 is not signed by a key that "
        "CLAMPDOWN_ALLOWED_SIGNERS lists for U0TERM2 (or was altered after signing)"
    )
    assert refusal in " ".join(forged.stderr.split())
    [record] = decisions("attacker0001")
    assert record["accepted"] is False and record["refusal"] == refusal
    assert record["source"] == "terminal" and record["approver"] == "U0TERM2"
    request = json.loads(request_file("attacker0001", "approve").read_text())
    assert request["status"] == "pending"

    # the real U0TERM2, with their own key, still can
    real = CliRunner().invoke(
        cli_app, ["approve", "attacker0001", "--as", "U0TERM2", "--key", str(keys["U0TERM2"])]
    )
    assert real.exit_code == 0, real.output
    runner.join(60)
    assert read(settings().ledger_path("attacker0001"))[-1]["status"] == "succeeded"


SECRET_GATED = """\
apiVersion: clampdown/v1
kind: Runbook
metadata: {name: terminal-gate, title: Terminal gate, severity: high}
inputs:
  token: {type: string, default: "tok-123456", secret: true}
steps:
  - id: approve
    uses: approval.request
    with: {summary: "Go?", approvers: {groups: [security-oncall]}, timeout: 60s}
  - id: act
    uses: core.log
    needs: [approve]
    with: {message: "rotating {{ inputs.token }}"}
"""


def test_a_gated_step_with_a_secret_parameter_is_approved_from_the_terminal(
    prefect_server: str,
    no_slack: None,
    write_runbook: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The approver sees the gated parameters with the secret masked and signs what they see;
    `approve` refused such a request as changed after the run wrote it (the run hashed the
    unmasked parameters), so the run could only time out (h-review27)."""
    from clampdown.app.cli_runs import _terminal_trigger
    from clampdown.core.approvals import params_hash

    keys = approver_keys(tmp_path, monkeypatch, "U0TERM1", "U0TERM2")
    path: Path = write_runbook(SECRET_GATED, "terminal-gate.yaml")
    runner = start_paused(path, "terminal0009", prefect_server, _terminal_trigger("U0TERM1"))
    request = json.loads(request_file("terminal0009", "approve").read_text())
    assert "tok-123456" not in json.dumps(request)  # the secret is not shown
    assert params_hash(request["gated"]) == request["params_hash"]
    sent = CliRunner().invoke(
        cli_app, ["approve", "terminal0009", "--as", "U0TERM2", "--key", str(keys["U0TERM2"])]
    )
    assert sent.exit_code == 0, sent.output
    runner.join(90)
    end = read(settings().ledger_path("terminal0009"))[-1]
    assert end["type"] == "run.end" and end["status"] == "succeeded", end
