"""Lint and the run agree on operations that fail for every value: wherever lint checks
an expression (a whole ``{{ }}``, text with ``{{ }}`` in it, an ``if:``), an operation
the run would refuse for each value its operand may have is a lint error, and the same
expression with a value that works is not.

Found by a seeded generator of runbooks over the real actions (lint against plan and the
engine's own rendering, session 27); kept here as the cases it reduced to.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from clampdown.core.actions import registry
from clampdown.core.expressions import ExpressionError, evaluate
from clampdown.core.lint import check
from clampdown.core.loader import load

HEADER = """\
apiVersion: clampdown/v1
kind: Runbook
metadata: {name: agree, title: Agreement}
inputs:
  name: {type: string, default: fraud}
  hours: {type: integer, default: 24}
steps:
  - id: note
    uses: core.log
"""


def lint(tmp_path: Path, step: str) -> list[str]:
    path = tmp_path / "agree.yaml"
    path.write_text(HEADER + step, encoding="utf-8")
    return [d.message for d in check(load(path), registry()) if d.severity == "error"]


@pytest.mark.parametrize(
    ("step", "source"),
    [
        ('    with: {message: "{{ (-inputs.name) | string }}"}\n', "{{ -inputs.name }}"),
        ('    with: {message: "took {{ -inputs.name }} hours"}\n', "{{ -inputs.name }}"),
        (
            '    if: "{{ inputs.hours | length > 0 }}"\n    with: {message: hi}\n',
            "{{ inputs.hours | length }}",
        ),
    ],
)
def test_lint_reports_what_the_run_refuses(tmp_path: Path, step: str, source: str) -> None:
    context = {"inputs": {"name": "fraud", "hours": 24}}
    with pytest.raises(ExpressionError):
        evaluate(source, context)  # the run: the step fails here
    errors = lint(tmp_path, step)
    assert len(errors) == 1 and " fails" in errors[0], errors


@pytest.mark.parametrize(
    "step",
    [
        '    with: {message: "{{ (-inputs.hours) | string }}"}\n',
        '    with: {message: "took {{ inputs.name | length }} characters"}\n',
        '    if: "{{ inputs.name | length > 0 }}"\n    with: {message: hi}\n',
        # numbers have attributes too: the run renders these (h-review27)
        '    with: {message: "{{ inputs.hours.real }} and {{ inputs.hours.denominator }}"}\n',
    ],
)
def test_the_same_operations_on_values_that_work_are_clean(tmp_path: Path, step: str) -> None:
    assert lint(tmp_path, step) == []
