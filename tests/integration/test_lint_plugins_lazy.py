"""Lint imports an action's plug-in only when a linted runbook uses one of its actions,
and still validates that action's ``with`` values (issue 15: lint imports what it checks).

In a fresh interpreter of its own: the shared probe interpreter
(:mod:`tests.unit.fresh_interpreter`) may have imported a plug-in before."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.paths import REPO

CORE_ONLY = """\
apiVersion: clampdown/v1
kind: Runbook
metadata:
  name: core-only
  title: Core actions only
steps:
  - id: announce
    uses: core.log
    with: {message: hello}
"""

KMS_BAD = """\
apiVersion: clampdown/v1
kind: Runbook
metadata:
  name: kms-bad
  title: A plug-in action with a bad with value
steps:
  - id: approve
    uses: approval.request
    with: {summary: rotate?}
  - id: rotate
    uses: aws.kms.rotate_key
    needs: [approve]
    with:
      key_id: ""
      colour: blue
"""

PROBE = """\
import json, sys, tempfile
from pathlib import Path
from clampdown.core.lint import lint_paths

def plugins():
    return sorted(m for m in sys.modules if m.split(".")[0] in ("clampdown_aws", "clampdown_slack"))

folder = Path(tempfile.mkdtemp())
(folder / "core-only.yaml").write_text(sys.argv[1], encoding="utf-8")
(folder / "kms-bad.yaml").write_text(sys.argv[2], encoding="utf-8")
first = lint_paths([folder / "core-only.yaml"])
after_core = plugins()
second = lint_paths([folder / "kms-bad.yaml"])
print(json.dumps({
    "core": [str(d) for d in first],
    "after_core": after_core,
    "kms": [[d.line, d.column, d.severity, d.message] for d in second],
    "after_kms": plugins(),
}))
"""


def test_only_used_plugins_are_imported_and_their_inputs_still_checked() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, CORE_ONLY, KMS_BAD],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["core"] == [] and found["after_core"] == []
    # the plug-in's input model still judges the step's with values, with positions
    assert found["kms"] == [
        [14, 15, "error", "with.key_id = '': must be at least 1 character(s) long"],
        [15, 7, "error", "unknown with field 'colour'"],
    ]
    assert "clampdown_aws.kms" in found["after_kms"]
    assert not any(m.startswith("clampdown_slack") for m in found["after_kms"])
    assert "clampdown_aws.forensics" not in found["after_kms"]
