"""Prefect flows: ``respond`` executes a runbook."""
