"""Failure table (docs/operations.md, "what survives what"): a real `clampdown run`
process interrupted with Ctrl-C (SIGINT) or killed (SIGKILL) while its run waits for
people, and a run whose process keeps dying.

The subject is the process, so each `clampdown run` and `clampdown resume` here is a
process of its own, signalled as a terminal or the kernel would. They use the session's
Prefect API (``PREFECT_API_URL``, as the docs allow), so no process starts a server.
Nothing is timed: each wait is for an event (a file, a ledger record, a process exit),
bounded only so that a hang fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from clampdown.core.ledger import read
from tests.approver_keys import ApproverKeys, approver_keys

CLI = str(Path(sys.executable).parent / "clampdown")
RUNBOOK = """\
apiVersion: clampdown/v1
kind: Runbook
metadata: {name: gate-then-act, title: Gate then act, severity: high}
steps:
  - {id: first, uses: core.log, with: {message: "before the gate"}}
  - id: approve
    uses: approval.request
    needs: [first]
    with: {summary: "Go?", approvers: {users: [U0TERM1, U0TERM2]}, min_approvals: 2,
           timeout: 30m}
  - {id: act, uses: core.log, needs: [approve], with: {message: approved}}
"""
AS_AT_A_TERMINAL = (
    sys.executable,
    "-c",
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.argv[1], sys.argv[1:])",
)
"""Starts a command with SIGINT's default action, as a shell at a terminal starts it. A
process started in the background (CI's runner, `nohup … &`, pytest-xdist's workers
started from one) inherits SIGINT *ignored*, and Python then never turns Ctrl-C into an
interrupt: the SIGINT tests waited for an exit that could not come. exec keeps the
default action; the command's pid is this process's."""
BOUND = 180.0
"""Seconds any one wait may take at most (a loaded 2-core machine): a hang fails."""


@dataclass
class Terminal:
    """A responder's terminal: the environment of their `clampdown` commands."""

    root: Path
    home: Path
    env: dict[str, str]
    runbook: Path
    keys: ApproverKeys

    def start(self, name: str, *args: str) -> tuple[subprocess.Popen[bytes], Path]:
        """`clampdown <args>` in a process group of its own, its output in ``name``.log,
        with Ctrl-C as a terminal delivers it (:data:`AS_AT_A_TERMINAL`)."""
        log = self.root / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [*AS_AT_A_TERMINAL, CLI, *args], env=self.env, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        return proc, log

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [CLI, *args], env=self.env, capture_output=True, text=True, timeout=BOUND
        )

    def ledger(self, run_id: str) -> list[dict[str, Any]]:
        path = self.home / "runs" / run_id / "ledger.jsonl"
        return read(path) if path.is_file() else []

    def types(self, run_id: str) -> list[str]:
        return [r["type"] for r in self.ledger(run_id)]


def wait_for(
    check: Callable[[], Any], what: str, proc: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> Any:  # fmt: skip
    """Poll until ``check`` holds; fail at once if ``proc`` exits first."""
    deadline = time.monotonic() + BOUND
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError, KeyError):
            if value := check():
                return value
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-4000:] if log else ""
            raise AssertionError(f"{what}: the process exited ({proc.returncode})\n{tail}")
        time.sleep(0.1)
    raise AssertionError(f"never happened: {what}")


def the_run(terminal: Terminal, proc: subprocess.Popen[bytes], log: Path) -> str:
    """The id of the run ``proc`` started, once its approval waits."""
    request = wait_for(
        lambda: next((
            p for p in (terminal.home / "runs").glob("*/approvals/approve.json")
            if json.loads(p.read_text())["status"] == "pending"
        ), None),
        "the run to wait for approval", proc, log,
    )  # fmt: skip
    return request.parent.parent.name


def waiting_again(terminal: Terminal, run_id: str, times: int, proc: Any, log: Path) -> None:
    """The resumed run has re-entered its approval wait (its ``times``-th resume)."""
    wait_for(
        lambda: terminal.types(run_id).count("approval.resumed") == times,
        f"resume {times} to wait again", proc, log,
    )  # fmt: skip


@contextlib.contextmanager
def stopped_at_exit(*procs: subprocess.Popen[bytes]) -> Iterator[None]:
    try:
        yield
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)


@pytest.fixture
def terminal(
    tmp_path: Path, prefect_server: str, write_runbook: Any, monkeypatch: pytest.MonkeyPatch
) -> Terminal:
    from prefect.settings import PREFECT_API_AUTH_STRING

    keys = approver_keys(tmp_path, monkeypatch, "U0TERM1", "U0TERM2")
    home = tmp_path / "home"
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("CLAMPDOWN_", "PREFECT_API", "PREFECT_HOME", "PREFECT_SERVER"))
    }
    env |= {
        "CLAMPDOWN_HOME": str(home),
        "CLAMPDOWN_ALLOWED_SIGNERS": str(keys.allowed_signers),
        "PREFECT_API_URL": prefect_server,
        "PREFECT_API_AUTH_STRING": str(PREFECT_API_AUTH_STRING.value() or ""),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "COLUMNS": "250",
    }
    return Terminal(tmp_path, home, env, write_runbook(RUNBOOK, "gate-then-act.yaml"), keys)


def test_ctrl_c_of_clampdown_run_ends_the_run_as_cancelled_and_exits_130(
    terminal: Terminal,
) -> None:
    proc, log = terminal.start("run", "run", str(terminal.runbook))
    with stopped_at_exit(proc):
        run_id = the_run(terminal, proc, log)
        os.kill(proc.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the command
        assert proc.wait(BOUND) == 130, log.read_text()
    said = log.read_text()
    assert f"interrupted: run {run_id} ended as cancelled" in said, said
    assert f"clampdown rollback {run_id} --plan" in said
    records = terminal.ledger(run_id)
    end = records[-1]
    assert end["type"] == "run.end" and end["status"] == "cancelled", end
    started = [r["step"] for r in records if r["type"] == "step.start"]
    assert "act" not in started  # not started: not run
    listed = terminal.cli("runs")
    assert run_id in listed.stdout and "cancelled" in listed.stdout, listed.stdout


def test_clampdown_run_killed_is_resumed_and_a_run_killed_four_times_is_ended(
    terminal: Terminal,
) -> None:
    """kill -9 of `clampdown run` at its approval: the run is stopped, not ended; a
    decision sent meanwhile is kept ("recorded, not counted yet", exit 3) and counted by
    `clampdown resume`. Each resume is killed in turn; the fourth stop ends the run."""
    proc, log = terminal.start("run", "run", str(terminal.runbook))
    procs = [proc]
    with stopped_at_exit(*procs):
        run_id = the_run(terminal, proc, log)
        os.killpg(proc.pid, signal.SIGKILL)  # laptop closed, OOM: nothing runs after
        proc.wait(BOUND)
    assert "run.end" not in terminal.types(run_id)
    listed = terminal.cli("runs")
    assert "stopped" in listed.stdout, listed.stdout

    key = str(terminal.keys["U0TERM1"])
    sent = terminal.cli("approve", run_id, "--as", "U0TERM1", "--key", key)
    assert sent.returncode == 3, sent.stdout + sent.stderr
    assert "not counted yet" in sent.stdout + sent.stderr

    for stop in (2, 3, 4):  # the run's processes: `clampdown run`, then resumes 1, 2, 3
        proc, log = terminal.start(f"resume-{stop - 1}", "resume", run_id)
        with stopped_at_exit(proc):
            waiting_again(terminal, run_id, stop - 1, proc, log)
            if stop == 2:  # the decision sent while nothing ran the run is counted
                wait_for(
                    lambda: any(
                        r["type"] == "approval.decision" and r["approver"] == "U0TERM1"
                        and r["accepted"] for r in terminal.ledger(run_id)
                    ),
                    "the kept decision to be counted", proc, log,
                )  # fmt: skip
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(BOUND)
        assert "run.end" not in terminal.types(run_id)

    last = terminal.cli("resume", run_id)
    assert last.returncode == 1, last.stdout + last.stderr
    end = terminal.ledger(run_id)[-1]
    assert end["type"] == "run.end" and end["status"] == "failed", end
    assert "its process stopped 4 times" in end["error"], end
    listed = terminal.cli("runs")
    assert run_id in listed.stdout and "failed" in listed.stdout, listed.stdout
    starts = [r["step"] for r in terminal.ledger(run_id) if r["type"] == "step.start"]
    assert starts.count("first") == 1 and "act" not in starts


CONTAIN = """\
apiVersion: clampdown/v1
kind: Runbook
metadata: {name: contain-now, title: Contain now, severity: critical}
inputs:
  principal_arn: {type: string, required: true}
steps:
  - id: revoke
    uses: aws.iam.revoke_credentials
    with: {principal_arn: "{{ inputs.principal_arn }}"}
"""


def _iam(method: str, path: str, headers: dict[str, str]) -> bool:
    """IAM's calls (query protocol: the service is in the credential scope)."""
    return headers.get("Authorization", "").split("/")[3:4] == ["iam"]


def test_ctrl_c_while_an_aws_call_hangs_exits_without_waiting_for_aws(
    terminal: Terminal, aws_endpoint: str, write_runbook: Any
) -> None:
    """AWS does not answer the step's call (held by a relay: botocore would wait minutes);
    the responder presses Ctrl-C once. The run ends cancelled at once, and `clampdown run`
    exits 130 within its grace (clampdown.app.interrupt) while AWS still has not answered:
    it used to wait at exit for the step's thread (h-fail27)."""
    import boto3

    from tests.aws_hold import aws_hold

    iam = boto3.client("iam", endpoint_url=aws_endpoint, region_name="us-east-1")
    arn = iam.create_user(UserName="mallory")["User"]["Arn"]
    iam.create_access_key(UserName="mallory")
    runbook = write_runbook(CONTAIN, "contain-now.yaml")
    with aws_hold(aws_endpoint, _iam) as hold:
        terminal.env |= {
            "AWS_ENDPOINT_URL": hold.url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        proc, log = terminal.start("contain", "run", str(runbook), "-i", f"principal_arn={arn}")
        with stopped_at_exit(proc):
            wait_for(hold.holding.is_set, "the step's call to reach AWS", proc, log)
            os.kill(proc.pid, signal.SIGINT)
            assert proc.wait(BOUND) == 130, log.read_text()
            assert not hold._released.is_set()  # it left while AWS still had not answered
    said = log.read_text()
    [run_dir] = (terminal.home / "runs").iterdir()
    ends = [r for r in terminal.ledger(run_dir.name) if r["type"] == "run.end"]
    # the run's cancellation writes run.end within a second; should a loaded machine take
    # longer than the grace, the command leaves the run stopped instead, and says so
    if ends:
        assert ends[0]["status"] == "cancelled", ends
        assert f"interrupted: run {run_dir.name} ended as cancelled" in said, said
    else:
        assert f"interrupted: run {run_dir.name} stopped where it was" in said, said
