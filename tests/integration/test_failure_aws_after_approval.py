"""Failure table (docs/operations.md, "what survives what"): a few seconds of AWS errors
right after approval.

A destructive step people approved retries at least 4 times, 5 s apart, beyond
botocore's own retries, so that AWS trouble at the moment of containment does not fail
the run and spend the approval. Here the run's AWS endpoint is a relay in front of the
moto server that answers every IAM call ``503 ServiceUnavailable`` (AWS's own "try
again") while the outage lasts, as AWS does in a regional incident; the outage ends once
the run has recorded two failed attempts of the containment step (an event in its ledger,
not a time). The runbook asks for no retries of its own: only the approval's horizon can
carry the step through.
"""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest

from clampdown.app.local_runs import InProcessStarter
from clampdown.core.ledger import read
from clampdown.core.settings import settings
from clampdown_flows.decisions import submit_decision
from tests.approver_keys import approver_keys
from tests.integration.shared_models import shared_service_models  # noqa: F401 - autouse
from tests.waiting import wait_for

RUNBOOK = """\
apiVersion: clampdown/v1
kind: Runbook
metadata: {name: revoke-after-approval, title: Revoke after approval, severity: critical}
inputs:
  principal_arn: {type: string, required: true}
defaults: {retries: 0, retry_delay: 1s}
steps:
  - id: approve
    uses: approval.request
    with: {summary: "Revoke?", approvers: {users: [U0TERM1]}, timeout: 30m}
  - id: revoke
    uses: aws.iam.revoke_credentials
    needs: [approve]
    with: {principal_arn: "{{ inputs.principal_arn }}"}
"""
FAILED_ATTEMPTS = 2
"""Attempts of the containment step that meet the outage; the runbook allows none."""
BOUND = 180.0


def wait_for_event(check: Any, what: str) -> Any:
    """:func:`tests.waiting.wait_for` within this file's :data:`BOUND`."""
    return wait_for(check, what, BOUND)


UNAVAILABLE = (
    b'<ErrorResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/"><Error>'
    b"<Type>Receiver</Type><Code>ServiceUnavailable</Code>"
    b"<Message>Service is unavailable (an outage the test made)</Message></Error>"
    b"<RequestId>00000000-0000-0000-0000-000000000000</RequestId></ErrorResponse>"
)


class Relay:
    """An AWS endpoint in front of moto: IAM calls answer 503 while :meth:`down` says so."""

    def __init__(self, moto_url: str, down: Callable[[], bool]) -> None:
        target = urlsplit(moto_url)
        self.upstream = (target.hostname or "127.0.0.1", target.port or 80)
        self.down = down
        self.refused = 0
        relay = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                relay.answer(self)

            do_GET = do_PUT = do_DELETE = do_HEAD = do_POST

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def answer(self, handler: BaseHTTPRequestHandler) -> None:
        headers = dict(handler.headers.items())
        body = handler.rfile.read(int(headers.get("Content-Length") or 0))
        iam = "iam" in headers.get("Authorization", "").split("/")[3:4]
        if iam and self.down():
            self.refused += 1
            self.reply(handler, 503, "Service Unavailable", [("Content-Type", "text/xml")],
                       UNAVAILABLE)  # fmt: skip
            return
        upstream = http.client.HTTPConnection(*self.upstream, timeout=60)
        try:
            upstream.request(handler.command, handler.path, body=body, headers=headers)
            got = upstream.getresponse()
            kept = [(k, v) for k, v in got.getheaders()
                    if k.lower() not in {"connection", "transfer-encoding", "content-length"}]  # fmt: skip
            self.reply(handler, got.status, got.reason, kept, got.read())
        finally:
            upstream.close()

    @staticmethod
    def reply(handler: BaseHTTPRequestHandler, status: int, reason: str,
              headers: list[tuple[str, str]], data: bytes) -> None:  # fmt: skip
        handler.send_response(status, reason)
        for name, value in headers:
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(data)


@contextmanager
def relay(moto_url: str, down: Callable[[], bool]) -> Iterator[Relay]:
    made = Relay(moto_url, down)
    thread = threading.Thread(target=made.server.serve_forever, name="aws-relay", daemon=True)
    thread.start()
    try:
        yield made
    finally:
        made.server.shutdown()
        made.server.server_close()


def ledger(run_id: str) -> list[dict[str, Any]]:
    path = settings().ledger_path(run_id)
    return read(path) if path.is_file() else []


def failed_attempts(run_id: str) -> int:
    return sum(
        r["type"] == "step.attempt_failed" and r.get("step") == "revoke" for r in ledger(run_id)
    )


def test_aws_errors_right_after_approval_do_not_fail_the_approved_step(
    prefect_server: str,
    aws_endpoint: str,
    no_backoff: None,
    write_runbook: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CLAMPDOWN_SLACK_BOT_TOKEN", raising=False)
    keys = approver_keys(tmp_path, monkeypatch, "U0TERM1")
    iam = boto3.client("iam", endpoint_url=aws_endpoint, region_name="us-east-1")
    user = iam.create_user(UserName="mallory")["User"]
    iam.create_access_key(UserName="mallory")
    path = write_runbook(RUNBOOK, "revoke-after-approval.yaml")
    run: dict[str, str] = {}

    with relay(aws_endpoint, lambda: failed_attempts(run["id"]) < FAILED_ATTEMPTS) as aws:
        monkeypatch.setenv("AWS_ENDPOINT_URL", aws.url)  # the run's process talks to the relay
        starter = InProcessStarter()
        try:
            run["id"] = run_id = starter(path, {"principal_arn": user["Arn"]}, {"type": "manual"})
            request = settings().paths.run(run_id).approval_request("approve")
            wait_for_event(
                lambda: request.is_file() and json.loads(request.read_text()), "the gate"
            )
            verdict = submit_decision(
                run_id, "approve", "U0TERM1", key=keys["U0TERM1"], wakeups=starter.wakeups
            )
            assert verdict.accepted, verdict.reason
            wait_for_event(
                lambda: any(r["type"] == "run.end" for r in ledger(run_id)), "the run's end"
            )
        finally:
            starter.shutdown()
        assert aws.refused > 0  # the outage was met

    records = ledger(run_id)
    assert failed_attempts(run_id) == FAILED_ATTEMPTS
    failures = [r for r in records if r["type"] == "step.attempt_failed"]
    assert all("ServiceUnavailable" in json.dumps(r) for r in failures), failures
    [end] = [r for r in records if r["type"] == "step.end" and r["step"] == "revoke"]
    assert end["status"] == "succeeded", end
    assert records[-1]["type"] == "run.end" and records[-1]["status"] == "succeeded"
    [key] = iam.list_access_keys(UserName="mallory")["AccessKeyMetadata"]
    assert key["Status"] == "Inactive"  # contained, once AWS answered
