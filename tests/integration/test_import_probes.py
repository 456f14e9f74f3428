"""What some imports leave out, checked in a fresh interpreter (tests/unit/fresh_interpreter.py:
one Python process for every probe, Prefect imported by the last ones): lint, plan and
schema import no Prefect; the light Slack run-observer factory imports no run thread;
respond's plain parameters import no FastAPI. Here rather than in tests/unit: the probes'
process imports Prefect (a few CPU-seconds); each module's in-process tests stay in
tests/unit (test_lint.py, test_slack_observer_factory.py, test_plain_flow.py)."""

from __future__ import annotations

from importlib.metadata import entry_points

from tests.unit import fresh_interpreter
from tests.unit.test_lint import CLEAN

# --- lint, plan, schema (from tests/unit/test_lint.py) ----------------------------------

fresh_interpreter.register(
    "lint, plan, schema: no prefect",
    0,  # first: the later probes import Prefect
    "import sys, tempfile\n"
    "from pathlib import Path\n"
    "import clampdown.app.cli, clampdown.core.lint, clampdown.core.plan, clampdown.core.schema\n"
    "assert 'prefect' not in sys.modules, 'imported by the modules'\n"
    "from clampdown.core.lint import lint_paths\n"
    "with tempfile.TemporaryDirectory() as folder:\n"
    "    path = Path(folder) / 'clean.yaml'\n"
    f"    path.write_text({CLEAN.format(name='no-prefect')!r}, encoding='utf-8')\n"
    "    assert lint_paths([str(path)]) == []\n"
    "assert 'prefect' not in sys.modules, 'imported by lint_paths'\n",
)


def test_lint_plan_schema_do_not_import_prefect() -> None:
    done = fresh_interpreter.outcome("lint, plan, schema: no prefect")
    assert done.error is None, done.error


# --- the Slack run observer's factory (from tests/unit/test_slack_observer_factory.py) --

fresh_interpreter.register(
    "run observers: the light factory imports no thread",
    1,
    "import os, sys\n"
    "saved = dict(os.environ)\n"
    "for k in [k for k in os.environ if k.upper().startswith('CLAMPDOWN_SLACK')]:\n"
    "    del os.environ[k]\n"
    "try:\n"
    "    from clampdown.core.extensions import factories, RUN_OBSERVERS\n"
    "    answers = [f('run-1', None, None) for f in factories(RUN_OBSERVERS)]\n"
    "    print(answers, 'clampdown_slack.run_thread' in sys.modules)\n"
    "finally:\n"
    "    os.environ.clear()\n"
    "    os.environ.update(saved)\n",
)


def test_the_light_factory_is_the_registered_one_and_imports_no_thread() -> None:
    (point,) = [e for e in entry_points(group="clampdown.run_observers") if e.name == "slack"]
    assert point.value == "clampdown_slack:observer_for_run"
    done = fresh_interpreter.outcome("run observers: the light factory imports no thread")
    assert done.error is None and done.lines()[-1] == "[None] False", done


# --- respond's plain parameters (from tests/unit/test_plain_flow.py) --------------------

fresh_interpreter.register(
    "respond: plain parameters import no fastapi",
    2,  # last: it imports the respond flow, so Prefect
    "import sys\n"
    "from clampdown_flows.respond import respond\n"
    "respond.serialize_parameters({'runbook': 'r', 'inputs': {'a': [1]}, 'drill': False})\n"
    "print(sorted(m for m in sys.modules if m.split('.')[0] == 'fastapi'))\n",
)


def test_plain_parameters_do_not_import_fastapi() -> None:
    done = fresh_interpreter.outcome("respond: plain parameters import no fastapi")
    assert done.error is None and done.lines()[-1:] == ["[]"], done
