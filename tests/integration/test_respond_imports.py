"""What importing the respond flow leaves out: modules only some runs, or only the end of
a run, need are imported when used (issue 15: the respond import's cost)."""

from __future__ import annotations

from tests.unit import fresh_interpreter

LATER = (
    "clampdown.core.incident_report_render",  # the artifact, after the steps
    "clampdown.core.report_sections",
    "clampdown.core.report_chart",
)

fresh_interpreter.register(
    "respond: report modules not imported",
    2,  # it imports the respond flow, so Prefect: with the other probe that does
    "import sys\n"
    "import clampdown_flows.respond\n"
    f"print(sorted(m for m in {LATER!r} if m in sys.modules))\n",
)


def test_respond_leaves_the_report_modules_for_the_end_of_a_run() -> None:
    done = fresh_interpreter.outcome("respond: report modules not imported")
    assert done.error is None and done.lines()[-1:] == ["[]"], done


fresh_interpreter.register(
    "respond: no parameter schema built",
    2,  # imports the respond flow, so Prefect
    "import sys\n"
    "from clampdown_flows.respond import respond\n"
    "from clampdown_flows.rollback import rollback\n"
    "print('pydantic.v1' in sys.modules,"
    " [f.__dict__.get('_parameter_schema') for f in (respond, rollback)])\n",
)


def test_importing_the_flows_builds_no_parameter_schema() -> None:
    """Prefect's Flow builds the schema at definition (pydantic.v1 imported to look for v1
    models, a pydantic model per parameter, ~50 ms); a run never reads it
    (clampdown_flows.plain_flow; that the schema read later is Prefect's: test_plain_flow)."""
    done = fresh_interpreter.outcome("respond: no parameter schema built")
    assert done.error is None and done.lines()[-1:] == ["False [None, None]"], done


fresh_interpreter.register(
    "respond: approval models not built",
    2,  # imports the respond flow, so Prefect
    "import clampdown_flows.respond\n"
    "from clampdown.core.approvals import Approvers, Decision\n"
    "print([m.__pydantic_complete__ for m in (Approvers, Decision)])\n",
)


def test_the_approval_models_are_built_on_first_use() -> None:
    """A run without an approval step never validates a decision or an approvers list;
    (that they validate as before: tests/unit/test_approval_rules.py)."""
    done = fresh_interpreter.outcome("respond: approval models not built")
    assert done.error is None and done.lines()[-1:] == ["[False, False]"], done


def test_the_deferred_modules_still_import() -> None:
    """The names respond imports when it needs them exist where it looks for them."""
    from clampdown.core.incident_report_render import markdown_from_ledger
    from clampdown_flows import preloaded

    assert callable(markdown_from_ledger)
    assert callable(preloaded.load_runbook)
