"""The run's Slack status thread kept by the executor: the real slack_sdk WebClient against
the local Slack stand-in, and real Prefect flow runs."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from clampdown.core.actions import registry
from clampdown.core.ledger import new_run_id, read
from clampdown.core.settings import settings
from clampdown_slack.status import SlackStatus
from clampdown_slack.testing.standin import SlackStandIn

TOKEN = "xoxb-1111-2222-standintoken"
CHANNEL = "#incident-response"
CHANNEL_ID = "C0INCIDENT"

RUNBOOK = """\
apiVersion: clampdown/v1
kind: Runbook
metadata: {name: thread-demo, title: Thread demo, severity: high}
steps:
  - {id: left, uses: core.set_output, with: {a: 1}}
  - {id: right, uses: core.set_output, with: {b: 2}}
  - {id: breaks, uses: core.fail, needs: [left, right], on_failure: continue,
     with: {message: boom}}
  - {id: announce, uses: slack.status, needs: [breaks], if: always(), with: {text: "Contained"}}
"""

pytestmark = pytest.mark.usefixtures("prefect_server")


@pytest.fixture(autouse=True)
def slack_status_registered():
    if "slack.status" not in registry():  # until the entry point is declared
        registry().register(SlackStatus)


@pytest.fixture
def slack(monkeypatch: pytest.MonkeyPatch):
    with SlackStandIn(token=TOKEN) as standin:
        monkeypatch.setenv("CLAMPDOWN_SLACK_BOT_TOKEN", TOKEN)
        monkeypatch.setenv("CLAMPDOWN_SLACK_CHANNEL", CHANNEL)
        monkeypatch.setenv("CLAMPDOWN_SLACK_API_URL", standin.url)
        monkeypatch.setenv("CLAMPDOWN_SLACK_RETRY_INTERVAL", "0")
        monkeypatch.setenv("CLAMPDOWN_SLACK_MAX_RETRIES", "1")
        monkeypatch.setenv("PREFECT_UI_URL", "http://prefect.example/")
        yield standin


def run(path: Path, **options) -> tuple[dict, list[dict]]:
    from clampdown_flows.respond import respond

    run_id = new_run_id()
    summary = asyncio.run(respond(str(path), {}, run_id=run_id, **options))
    return summary, read(settings().ledger_path(run_id))


def parents(standin: SlackStandIn) -> list[dict]:
    return [m for m in standin.messages(CHANNEL_ID) if "thread_ts" not in m]


def test_one_header_updated_as_steps_progress_with_replies_in_its_thread(
    slack, write_runbook, clampdown_home: Path
):
    trigger = {
        "type": "alert",
        "source": "guardduty",
        "alert_id": "f-123",
        "trigger": "guardduty-iam-user",
        "alert": {"title": "Keys used from Tor", "resources": ["arn:aws:s3:::models"]},
    }
    summary, ledger = run(write_runbook(RUNBOOK), trigger=trigger)

    assert summary["status"] == "succeeded"
    assert summary["steps"]["breaks"] == "failed"
    (header,) = parents(slack)
    assert slack.calls_to("chat.update")  # it was kept current
    text = header["text"]
    assert "*Thread demo* (`thread-demo`)" in text and "severity *high*" in text
    assert "Trigger: alert guardduty `f-123` Keys used from Tor" in text
    assert summary["run_id"] in text and "resources" not in text
    start = next(r for r in ledger if r["type"] == "run.start")
    assert f"<http://prefect.example/runs/flow-run/{start['flow_run_id']}|" in text
    assert "Status: *SUCCEEDED*" in text
    for line in ("✅ `left` succeeded", "✅ `right` succeeded", "❌ `breaks` failed"):
        assert line in text
    assert "✅ `announce` succeeded" in text
    assert "DRILL" not in text

    replies = slack.thread(CHANNEL_ID, header["ts"])[1:]
    texts = [m["text"] for m in replies]
    assert any("`breaks` failed" in t and "boom" in t for t in texts)
    assert "Contained" in texts
    ends = {r["step"]: r for r in ledger if r["type"] == "step.end"}
    assert ends["announce"]["outputs"]["thread_ts"] == header["ts"]
    saved = json.loads((clampdown_home / "runs" / summary["run_id"] / "slack.json").read_text())
    assert saved["threads"][CHANNEL] == {"channel": CHANNEL_ID, "thread_ts": header["ts"]}
    assert not [r for r in ledger if r["type"] == "slack.miss"]


def test_drill_runs_say_so_in_the_header(slack, write_runbook):
    summary, _ = run(write_runbook(RUNBOOK), drill=True)
    assert summary["status"] == "succeeded"
    (header,) = parents(slack)
    assert header["text"].startswith("[DRILL] ")
    assert all("[DRILL]" in m["text"] for m in slack.messages(CHANNEL_ID))


def test_slack_down_for_the_whole_run_is_recorded_once_and_the_run_succeeds(slack, write_runbook):
    slack.down()
    summary, ledger = run(write_runbook(RUNBOOK))

    assert summary["status"] == "succeeded"
    assert parents(slack) == []
    (miss,) = [r for r in ledger if r["type"] == "slack.miss"]
    assert miss["count"] >= 1
    assert "service_unavailable" in miss["last_error"] or "gave up" in miss["last_error"]
    assert TOKEN not in settings().ledger_path(summary["run_id"]).read_text()
    types = [r["type"] for r in ledger]
    assert types.index("slack.miss") < types.index("run.end")


def test_not_configured_means_no_slack_call_at_all(write_runbook, monkeypatch):
    with SlackStandIn(token=TOKEN) as standin:
        monkeypatch.delenv("CLAMPDOWN_SLACK_BOT_TOKEN", raising=False)
        monkeypatch.delenv("CLAMPDOWN_SLACK_CHANNEL", raising=False)
        monkeypatch.setenv("CLAMPDOWN_SLACK_API_URL", standin.url)
        summary, ledger = run(write_runbook(RUNBOOK))
        assert summary["status"] == "succeeded"
        assert standin.calls == []
    assert not [r for r in ledger if r["type"] == "slack.miss"]
