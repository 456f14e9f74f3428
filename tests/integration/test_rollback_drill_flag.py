"""A rollback is what its run is: a drill's rollback says ``run.drill`` true and its
evidence lock mode is the drill's; a real run's says false and keeps COMPLIANCE."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest
from typer.testing import CliRunner

from clampdown.app.cli import app
from clampdown.core.actions import Action, ActionContext, ActionInput, ActionOutput, registry
from clampdown.core.ledger import read
from clampdown.core.settings import Settings

runner = CliRunner()


class Retag(Action):
    """Test-only containment that records how to put it back."""

    name = "test.retag_drill_flag"
    destructive = True
    undone: ClassVar[list[dict[str, Any]]] = []

    class Input(ActionInput):
        bucket: str

    def run(self, params: Input, ctx: ActionContext) -> ActionOutput:
        ctx.record_undo(f"untag {params.bucket}", bucket=params.bucket)
        return ActionOutput()

    def rollback(self, how: dict[str, Any], ctx: ActionContext) -> None:
        self.undone.append(how)


registry().register(Retag)
RUNBOOK = """apiVersion: clampdown/v1
kind: Runbook
metadata: {name: retag, title: Retag}
steps:
  - {id: tag, uses: test.retag_drill_flag, with: {bucket: b1}}
"""


@pytest.mark.usefixtures("prefect_server", "clampdown_home")
@pytest.mark.parametrize(("drill", "mode"), [(True, "GOVERNANCE"), (False, "COMPLIANCE")])
def test_a_rollback_is_a_drill_when_its_run_is(
    drill: bool, mode: str, write_runbook: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import clampdown_flows.rollback as rollback_flow

    seen: list[str] = []

    def sinks(conf: Settings) -> list[Any]:
        seen.append(conf.evidence_lock_mode)
        return []

    monkeypatch.setattr(rollback_flow, "evidence_sinks", sinks)
    if drill:
        monkeypatch.setenv("CLAMPDOWN_DRILL", "true")
    else:
        monkeypatch.delenv("CLAMPDOWN_DRILL", raising=False)
    result = runner.invoke(app, ["run", str(write_runbook(RUNBOOK))])
    assert result.exit_code == 0, result.output
    run_id = Path(result.output.split("ledger: ")[1].split()[0]).parent.name
    rolled = runner.invoke(app, ["rollback", run_id, "--yes"])
    assert rolled.exit_code == 0, rolled.output
    ledger = Path(rolled.output.split("ledger: ")[1].split()[0])
    start = read(ledger)[0]
    assert start["rollback_of"] == run_id and start["run"]["drill"] is drill
    assert seen == [mode]
