"""``clampdown lint`` in processes of its own: the console script's light start prints what
the Typer app prints, with the same exit codes, and imports none of Typer, Rich, the AWS
and Slack SDKs or Prefect; a lint too deeply nested for the parser ends in a clean error, not a
traceback. Here rather than in tests/unit: each test starts Python processes (most of a
CPU-second each); the unit subset's tests of the same code in-process stay there
(tests/unit/test_lint_entry.py, tests/unit/test_plan_with_values.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clampdown.app.cli import app
from tests.paths import REPO

BROKEN = "tests/fixtures/broken"
HEAVY = ("typer", "rich", "click", "boto3", "slack_sdk", "slack_bolt", "prefect")
# the console script's start, and at the process's exit a last stderr line naming the
# heavy packages it imported (stdout stays the command's own)
ENTRY = (
    "import atexit, sys\n"
    f"heavy = {HEAVY!r}\n"
    "atexit.register(lambda: sys.stderr.write('\\nimported: %s\\n' % sorted(\n"
    "    {m.split('.')[0] for m in sys.modules} & set(heavy))))\n"
    "sys.argv[0] = 'clampdown'\n"
    "from clampdown.app.entry import main\n"
    "main()\n"
)


def _console(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", ENTRY, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    "args",
    [
        ["lint", BROKEN],
        ["lint", "--format", "json", BROKEN],
        ["lint", "--strict", "runbooks", f"{BROKEN}/needs_unknown_step.yaml"],
        ["lint", "runbooks/"],
        ["lint", "no/such/file.yaml"],
        # every diagnostic of the corpus, with its file:line:column, in both ways
        ["lint", "--format", "json", "tests/fixtures/lint_corpus"],
        ["lint", "--format", "json", "--strict", "runbooks", "tests/fixtures/lint_corpus/bad"],
    ],
)
def test_the_console_script_prints_what_the_typer_app_prints_importing_no_sdk(
    args: list[str],
) -> None:
    """Same stdout and exit code as the Typer app, no traceback, and none of Typer, Rich,
    Click, the AWS and Slack SDKs or Prefect imported by the process (every lint, clean
    or not; this was a process of its own for `lint runbooks/` only)."""
    console = _console(*args)
    typer_app = CliRunner().invoke(app, args)
    assert console.stdout == typer_app.stdout
    assert console.returncode == typer_app.exit_code
    assert "Traceback" not in console.stderr
    assert console.stderr.splitlines()[-1] == "imported: []", console.stderr[-2000:]


def test_help_and_usage_errors_are_typers() -> None:
    helped = _console("lint", "--help")
    assert helped.returncode == 0
    assert "Usage: clampdown lint [OPTIONS] [paths]..." in helped.stdout
    refused = _console("lint", "--format", "xml", "runbooks")
    assert refused.returncode == 2
    assert "Invalid value for '--format'" in refused.stderr
    assert "Traceback" not in refused.stderr


# --- the depth limit in a process of its own (from tests/unit/test_plan_with_values.py) ----

HEADER = """\
apiVersion: clampdown/v1
kind: Runbook
metadata: {name: with-values, title: With values, severity: low}
"""
DEEP = "{{ " + "(" * 3000 + "1" + ")" * 3000 + " }}"


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "with-values.yaml"
    path.write_text(HEADER + body, encoding="utf-8")
    return path


def test_lint_in_a_process_of_its_own_gives_no_traceback(tmp_path: Path) -> None:
    path = write(tmp_path, f'steps:\n  - id: note\n    uses: core.log\n    if: "{DEEP}"\n')
    done = subprocess.run(
        [sys.executable, "-m", "clampdown.app.cli", "lint", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert "7:10: error: expression nested more than 48 levels deep" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr
