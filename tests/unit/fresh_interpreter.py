"""One fresh interpreter for the import checks (tests/integration/test_import_probes.py).

What a command imports shows only in an interpreter that has imported nothing yet, and
starting one costs a second or more (three with Prefect's client). So the test modules
register their checks ("probes") when they are collected, and the first test that asks for
a result runs every registered probe in one interpreter, in the order of their ``rank``,
each in a namespace of its own, and keeps what each printed or raised.

Sharing can make a check stricter, never looser: a later probe sees every module the
earlier ones imported as well as its own, so "X is not imported" fails if anything before
it imported X. The ranks put the checks that Prefect must stay out of first and the one
that imports the respond flow (and so Prefect) last. A probe that changes the environment
puts it back before it returns.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from tests.paths import REPO

RUNNER = """\
import contextlib, io, json, sys, traceback
probes = json.loads(sys.stdin.read())
results = {}
for name, code in probes:
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(code, name, "exec"), {"__name__": "__probe__"})
        results[name] = {"out": out.getvalue(), "error": None}
    except BaseException:
        results[name] = {"out": out.getvalue(), "error": traceback.format_exc()}
sys.stdout.write("\\n" + json.dumps(results))
"""


@dataclass(frozen=True)
class Outcome:
    """What a probe printed, and the traceback of what it raised (None if nothing)."""

    out: str
    error: str | None

    def lines(self) -> list[str]:
        return self.out.strip().splitlines()


_probes: dict[str, tuple[int, str]] = {}
_results: dict[str, Outcome] = {}


def register(name: str, rank: int, code: str) -> None:
    """Add a probe (at collection: module level in a test module)."""
    if _probes.get(name, (rank, code)) != (rank, code):
        raise ValueError(f"probe {name!r} registered twice with different code")
    _probes[name] = (rank, code)


def outcome(name: str) -> Outcome:
    """The probe's outcome; the first call runs every probe registered by then."""
    if name not in _results:
        _results.update(_run_all())
    return _results[name]


def _run_all() -> dict[str, Outcome]:
    ordered = sorted(_probes.items(), key=lambda item: (item[1][0], item[0]))
    done = subprocess.run(
        [sys.executable, "-c", RUNNER],
        input=json.dumps([(name, code) for name, (_, code) in ordered]),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    last = done.stdout.rstrip().rsplit("\n", 1)[-1]
    try:
        raw: dict[str, Any] = json.loads(last)
    except ValueError:
        raise AssertionError(
            f"the probe interpreter gave no results (exit {done.returncode}):\n"
            f"{done.stdout}\n{done.stderr}"
        ) from None
    return {name: Outcome(**value) for name, value in raw.items()}
