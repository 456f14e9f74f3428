"""At the end of every respond run: the incident report is a Prefect artifact of the run and
its summary is posted in the run's Slack thread (real flow runs, the Slack stand-in)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from clampdown.core.ledger import new_run_id, read
from clampdown.core.settings import settings
from tests.integration.test_slack_run_thread import CHANNEL_ID, slack  # noqa: F401 (fixture)

RUNBOOK = """\
apiVersion: clampdown/v1
kind: Runbook
metadata: {name: report-demo, title: Report demo, severity: high}
steps:
  - {id: note, uses: core.set_output, with: {a: 1}}
  - {id: breaks, uses: core.fail, needs: [note], on_failure: continue,
     with: {message: "boom <!channel>"}}
"""

pytestmark = pytest.mark.usefixtures("prefect_server", "clampdown_home")


def run(path: Path) -> tuple[dict, list[dict]]:
    from clampdown_flows.respond import respond

    run_id = new_run_id()
    summary = asyncio.run(respond(str(path), {}, run_id=run_id))
    return summary, read(settings().paths.run(run_id).ledger)


def test_the_report_is_posted_in_the_thread_and_attached_to_the_flow_run(
    slack,  # noqa: F811 (the fixture imported above)
    write_runbook,
):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    summary, ledger = run(write_runbook(RUNBOOK))
    run_id = summary["run_id"]
    # the header's post is on the record: the report's time to notify
    posted = [r for r in ledger if r["type"] == "slack.posted"]
    assert len(posted) == 1 and posted[0]["channel"] == CHANNEL_ID
    (header,) = [m for m in slack.messages(CHANNEL_ID) if "thread_ts" not in m]
    replies = [m["text"] for m in slack.thread(CHANNEL_ID, header["ts"])[1:]]
    (said,) = [t for t in replies if t.startswith("*Incident report*")]
    assert f"run `{run_id}` (report-demo): *succeeded*" in said
    assert "time to notify " in said and "time to notify —" not in said
    assert "failed: step breaks (core.fail) failed" in said
    assert "<!channel>" not in said and "&lt;!channel&gt;" in said  # ledger text is inert
    assert f"clampdown report {run_id}" in said

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[f"clampdown-report-{run_id}"])
            )
        )
    assert len(found) == 1
    body = str(found[0].data)
    assert body.startswith(f"# Incident report: run {run_id} of report-demo")
    assert "## Changes made and their rollback state" in body
    assert "| `breaks` | `core.fail` | failed |" in body
    # and, in the same (only) artifact, the step table with attempts and the ledger's path
    assert "| ❌ failed | `breaks` | `core.fail` |" in body.split("## Steps", 1)[1]
    assert f"Ledger: `{settings().paths.run(run_id).ledger}`" in body


def test_without_slack_the_artifact_is_still_written(write_runbook):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    summary, ledger = run(write_runbook(RUNBOOK))
    assert not [r for r in ledger if r["type"] == "slack.posted"]
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[f"clampdown-report-{summary['run_id']}"])
            )
        )
    assert len(found) == 1 and "time to notify" in str(found[0].data)
