"""The core: runbook models, loader, lint, expressions, plan, ledger, step rules,
triggers, the drill model and its scoring.

It imports no Prefect, boto3, Slack or web framework, and nothing from the flows,
the providers or the application layer (import-linter checks it in CI), so it can
be read, tested and reused without any of them.
"""
