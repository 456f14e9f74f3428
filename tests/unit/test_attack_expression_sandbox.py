"""Attack: a memory bomb the size cap did not see, from a runbook expression.

The sandbox capped a repetition by ``len(seq) * count``: ``['x' * 100000] * 100000`` has
100,000 items, so it passed, and it costs 100,000 references to build. Printed — the
ledger's JSON of the step's parameters, ``~``, ``tojson``, ``string``, a text template —
it is 10 GB: the engine process (serve, with every run in it) is killed by the kernel or
swaps. A repetition now weighs what it repeats at every depth.
"""

from __future__ import annotations

from typing import Any

import pytest

from clampdown.core.expressions import ExpressionError, evaluate

CONTEXT: dict[str, Any] = {"inputs": {"n": 1000}, "steps": {}, "run": {}, "alert": {}}


@pytest.mark.parametrize(
    "source",
    [
        # sizes kept small enough that the code before the fix returns them at once
        "{{ ['x' * 1000] * 100000 }}",
        "{{ 100000 * ['x' * 1000] }}",
        "{{ [[1] * 1000] * 1000 }}",
        "{{ [{'k': 'x' * 1000}] * 1000 }}",
        "{{ (('x' * 1000,),) * inputs.n }}",
    ],
)
def test_a_repetition_of_something_big_is_refused(source: str) -> None:
    with pytest.raises(ExpressionError) as info:
        evaluate(source, CONTEXT)
    assert info.value.message.endswith(
        "refused by the sandbox: a repetition would be longer than 100,000 characters or items"
    ), info.value.message


@pytest.mark.parametrize(
    ("source", "size"),
    [
        ("{{ [1] * 100000 }}", 100000),
        ("{{ 'x' * 100000 }}", 100000),
        ("{{ ['ab'] * 30000 }}", 30000),
        ("{{ [[1, 2]] * 30000 }}", 30000),
        ("{{ ['x' * 10] * 0 }}", 0),
        ("{{ ['x' * 100] * -1 }}", 0),
    ],
)
def test_repetitions_below_the_cap_still_work(source: str, size: int) -> None:
    assert len(evaluate(source, CONTEXT)) == size
