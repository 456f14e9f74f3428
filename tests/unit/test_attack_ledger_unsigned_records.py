"""Attack: append an unsigned record the engine itself writes, then verify, report, resume.

Whoever can write ``CLAMPDOWN_HOME`` (or the run store) cannot sign, but may append: the
chain of an appended record is computed with the product's own ``append_to``, the way an
alert joining a run is written by another process. Records that other processes write
(``alert.joined``, ``alert.correlated``) are allowed unsigned. Every other record is the
engine's, and readers act on it: a ``step.skip`` for a step that has not run yet makes a
resumed run skip its containment (:func:`clampdown.core.engine.resume.restore` takes it as
the step's end), and one appended after ``run.end`` turns a step that ran into
"skipped" in the report. Such a record must not leave the ledger ``intact``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from clampdown.core.ledger import append_to
from clampdown.core.ledger_signing import (
    Ed25519Signer,
    generate_local_key,
    load_local_key,
    open_ledger,
    verify_ledger,
)
from clampdown.core.ledger_verdict import judge_run


@pytest.fixture
def signer(tmp_path: Path) -> Ed25519Signer:
    return load_local_key(generate_local_key(tmp_path / "keys" / "ledger.pem"), tmp_path / "home")


def stopped_run(path: Path, signer: Ed25519Signer, *, ended: bool) -> Path:
    """A signed run: the evidence step ran; ``revoke`` had not started when it stopped
    (``ended``: it ran and the run ended)."""
    ledger = open_ledger(path, "r1", signer)
    ledger.append("run.start", run={"id": "r1", "runbook": "contain"}, inputs={})
    ledger.append("step.start", step="snapshot", uses="core.noop", attempt=0)
    ledger.append("step.end", step="snapshot", status="succeeded", outputs={}, attempts=1)
    if ended:
        ledger.append("step.start", step="revoke", uses="aws.iam.deactivate_keys", attempt=0)
        ledger.append("step.end", step="revoke", status="succeeded", outputs={}, attempts=1)
        ledger.append("run.end", status="succeeded")
    ledger.close()
    return path


ENGINE_TYPES = [
    ("step.skip", {"step": "revoke", "reason": "skipped by the operator"}),
    ("step.cancel", {"step": "revoke", "reason": "cancelled"}),
    ("slack.posted", {"channel": "C0FAKE", "message_ts": "1.0"}),
    ("slack.miss", {"count": 0, "last_error": "", "channel": "C0FAKE"}),
    ("approval.api_unreachable", {"waiting": ["approve"]}),
    ("approval.api_reachable", {"waiting": ["approve"]}),
    ("step.ended", {"step": "revoke"}),  # a type no reader knows yet is not trusted either
]


@pytest.mark.parametrize(("kind", "fields"), ENGINE_TYPES, ids=[k for k, _ in ENGINE_TYPES])
def test_an_unsigned_engine_record_appended_to_a_stopped_run_is_not_trusted(
    tmp_path, signer, kind, fields
):
    path = stopped_run(tmp_path / "ledger.jsonl", signer, ended=False)
    assert verify_ledger(path.read_bytes().splitlines(), signer).status == "truncated"
    append_to(path, kind, **fields)  # the attacker: chained, not signed
    result = verify_ledger(path.read_bytes().splitlines(), signer)
    # resume accepts "truncated" and "intact" only (respond._trusted_records)
    assert result.status == "not-signed", result.message
    assert f"NOT SIGNED: record 3 ({kind})" in result.message


def test_a_step_skip_appended_after_run_end_does_not_read_as_signed(tmp_path, signer):
    path = stopped_run(tmp_path / "ledger.jsonl", signer, ended=True)
    assert judge_run(path.read_bytes(), signer).ok
    append_to(path, "step.skip", step="revoke", reason="never ran")
    verdict = judge_run(path.read_bytes(), signer)
    assert not verdict.ok and verdict.result == "NOT SIGNED", verdict.result


@pytest.mark.parametrize("kind", ["alert.joined", "alert.correlated"])
def test_records_another_process_writes_may_stay_unsigned_and_are_named(tmp_path, signer, kind):
    path = stopped_run(tmp_path / "ledger.jsonl", signer, ended=True)
    append_to(path, kind, alert={"source": "guardduty", "id": "a1"})
    result = verify_ledger(path.read_bytes().splitlines(), signer)
    assert result.status == "intact", result.message
    assert "1 record(s) not signed, written by another process" in result.notes[0]
    assert f"6 {kind}" in result.notes[0]
