"""The application layer: the one place that wires the core, the Prefect flows and
the providers together — the CLI, ``clampdown serve``, the worker and the drill harness.

Nothing below this layer imports it (import-linter checks that in CI).
"""
