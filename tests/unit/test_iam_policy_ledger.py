"""iam-policy grants the engine kms:Sign on the ledger signing key, and nothing wider."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from clampdown.app.cli import app

RUNBOOK = """apiVersion: clampdown/v1
kind: Runbook
metadata: {name: logs-only, title: Logs only}
steps:
  - {id: hello, uses: core.log, with: {message: hi}}
"""
KEY = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def kms_statements(document: dict) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for statement in document["Statement"]:
        actions = (
            statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        )
        for action in actions:
            if action.startswith("kms:"):
                found.setdefault(json.dumps(statement["Resource"]), []).append(action)
    return found


def test_the_ledger_key_adds_sign_on_that_key_only(write_runbook, monkeypatch):
    path = write_runbook(RUNBOOK)
    runner = CliRunner()
    plain = runner.invoke(app, ["iam-policy", str(path)])
    assert plain.exit_code == 0 and kms_statements(json.loads(plain.stdout)) == {}
    monkeypatch.setenv("CLAMPDOWN_LEDGER_KMS_KEY_ID", KEY)
    signed = runner.invoke(app, ["iam-policy", str(path)])
    assert signed.exit_code == 0, signed.output
    assert kms_statements(json.loads(signed.stdout)) == {
        json.dumps(KEY): ["kms:DescribeKey", "kms:Sign"]
    }
    monkeypatch.setenv("CLAMPDOWN_LEDGER_KMS_KEY_ID", "alias/clampdown-ledger")
    alias = runner.invoke(app, ["iam-policy", str(path)])
    assert kms_statements(json.loads(alias.stdout)) == {'"*"': ["kms:DescribeKey", "kms:Sign"]}
    assert "is an alias" in alias.stderr
