"""The hash-chained ledger: appends, reopening, redaction and tamper detection."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clampdown.app.cli import app
from clampdown.core.ledger import GENESIS, Ledger, read, verify_file


@pytest.fixture
def ledger_file(tmp_path: Path) -> Path:
    ledger = Ledger(tmp_path / "runs" / "r1" / "ledger.jsonl")
    ledger.append("run.start", run={"id": "r1"}, inputs={"a": 1})
    for step in ("one", "two", "three"):
        ledger.append("step.start", step=step)
        ledger.append("step.end", step=step, status="succeeded", outputs={"n": step})
    ledger.append("run.end", status="succeeded")
    return ledger.path


def test_records_chain_to_the_previous_line(ledger_file: Path):
    records = read(ledger_file)
    assert records[0]["prev"] == GENESIS
    assert [r["seq"] for r in records] == list(range(8))
    verdict = verify_file(ledger_file)
    assert verdict.ok and verdict.complete and verdict.records == 8


def test_one_changed_byte_names_the_altered_record(ledger_file: Path):
    lines = ledger_file.read_bytes().splitlines(keepends=True)
    lines[3] = lines[3].replace(b'"two"', b'"twO"', 1)
    ledger_file.write_bytes(b"".join(lines))
    verdict = verify_file(ledger_file)
    assert not verdict.ok and verdict.broken_line == 4
    assert "line 4 (seq 3, step.start): the record was altered" in verdict.message


def test_a_deleted_line_is_found_at_the_next_record(ledger_file: Path):
    lines = ledger_file.read_bytes().splitlines(keepends=True)
    del lines[2]
    ledger_file.write_bytes(b"".join(lines))
    verdict = verify_file(ledger_file)
    assert not verdict.ok and verdict.broken_line == 3
    assert "chain is broken" in verdict.message and "expected seq 2" in verdict.message


def test_a_recomputed_hash_does_not_hide_an_edit(ledger_file: Path):
    """An attacker who fixes up the edited record's own hash still breaks the next prev."""
    import hashlib

    from clampdown.core.ledger import _canonical

    lines = ledger_file.read_bytes().splitlines(keepends=True)
    record = json.loads(lines[4])
    record["outputs"] = {"n": "forged"}
    record.pop("hash")
    record["hash"] = hashlib.sha256(_canonical(record)).hexdigest()
    lines[4] = json.dumps(record).encode() + b"\n"
    ledger_file.write_bytes(b"".join(lines))
    verdict = verify_file(ledger_file)
    assert not verdict.ok and verdict.broken_line == 6


def test_a_truncated_ledger_is_intact_but_incomplete(ledger_file: Path):
    lines = ledger_file.read_bytes().splitlines(keepends=True)
    ledger_file.write_bytes(b"".join(lines[:-1]))
    verdict = verify_file(ledger_file)
    assert verdict.ok and not verdict.complete
    assert "no run.end record" in verdict.message


def test_reopening_continues_the_chain(ledger_file: Path):
    Ledger(ledger_file).append("note", text="appended later")
    verdict = verify_file(ledger_file)
    assert verdict.ok and verdict.records == 9


def test_redacted_values_are_masked_everywhere(tmp_path: Path):
    ledger = Ledger(tmp_path / "l.jsonl")
    ledger.redact("hunter2-password", None, "")
    ledger.append("step.end", outputs={"nested": ["x hunter2-password y"]}, note="hunter2-password")
    text = ledger.path.read_text()
    assert "hunter2" not in text and text.count("***") == 2


def test_verify_cli_exit_codes_and_messages(
    ledger_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from clampdown.core.ledger_signing import generate_local_key, load_local_key, open_ledger

    runner = CliRunner()
    unsigned = runner.invoke(app, ["verify", str(ledger_file)])
    assert unsigned.exit_code == 1 and "UNSIGNED" in unsigned.output, unsigned.output
    assert "chain intact over 8 records" in unsigned.output

    key = generate_local_key(tmp_path / "keys" / "ledger.pem")
    monkeypatch.setenv("CLAMPDOWN_LEDGER_KEY", str(key))
    signed = open_ledger(tmp_path / "signed.jsonl", "r2", load_local_key(key, tmp_path / "h"))
    signed.append("run.start", run={"id": "r2"})
    signed.append("run.end", status="succeeded")
    signed.close()
    ok = runner.invoke(app, ["verify", str(signed.path)])
    assert ok.exit_code == 0, ok.output
    assert "result   OK: intact, signed (no evidence bucket configured)" in ok.output

    lines = ledger_file.read_bytes().splitlines(keepends=True)
    lines[1] = lines[1].replace(b"step.start", b"step.stopp")
    ledger_file.write_bytes(b"".join(lines))
    bad = runner.invoke(app, ["verify", str(ledger_file)])
    assert bad.exit_code == 1 and "TAMPERED" in bad.output and "line 2" in bad.output
    missing = runner.invoke(app, ["verify", "no-such-run"])
    assert missing.exit_code == 1
    assert "no ledger for run 'no-such-run'" in missing.output


def test_a_live_reader_takes_whole_lines_only(tmp_path) -> None:
    """A follower may read between the bytes of an append: the part is not a record yet."""
    from clampdown.core.ledger import read_written

    path = tmp_path / "ledger.jsonl"
    ledger = Ledger(path)
    ledger.append("run.start", run={"id": "r1"})
    ledger.close()
    whole = path.read_bytes()
    with path.open("ab") as fh:
        fh.write(b'{"seq": 1, "ts": "2026-12-05T12:02:19.10')  # an append half-way
    assert [r["type"] for r in read_written(path)] == ["run.start"]
    with pytest.raises(ValueError):
        read(path)  # at rest, the torn tail is an error for verify to report
    path.write_bytes(whole)
    assert read_written(path) == read(path)
