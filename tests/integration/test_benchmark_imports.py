"""The benchmarks import clampdown lazily, inside functions, so a rename breaks them only
when someone runs them. This reads their imports and checks every name still exists."""

from __future__ import annotations

import ast
import importlib

import pytest

from tests.paths import REPO

# The scripts (a helper module beside them, such as moto_server.py, has no __main__).
EVERY = sorted(p for p in (REPO / "benchmarks").glob("*.py") if "__main__" in p.read_text())
# Scripts that measure clampdown from outside (fresh clones, or clampdown commands in
# processes).
OUTSIDE = {"quickstart.py", "progress_view.py"}
SCRIPTS = [p for p in EVERY if p.name not in OUTSIDE]


def _clampdown_imports(path):
    yield from _imports_in(path.read_text())


def _imports_in(source):
    """Imports in the source, and in the source of child processes it holds as strings."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("clampdown"):
            for alias in node.names:
                yield node.module, alias.name
        elif isinstance(node, ast.Constant) and "from clampdown" in str(node.value):
            try:
                yield from _imports_in(node.value)
            except SyntaxError:
                continue


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_clampdown_name_a_benchmark_imports_exists(script) -> None:
    imports = list(_clampdown_imports(script))
    assert imports, f"{script.name} imports nothing from clampdown: is this test still needed?"
    missing = [
        f"{module}.{name}"
        for module, name in imports
        if not hasattr(importlib.import_module(module), name)
        and importlib.util.find_spec(f"{module}.{name}") is None
    ]
    assert not missing, f"{script.name} imports names that no longer exist: {missing}"


def test_the_scripts_left_out_import_nothing_from_clampdown() -> None:
    outside = [p for p in EVERY if p.name in OUTSIDE]
    assert [p.name for p in outside] == sorted(OUTSIDE)
    assert [p.name for p in outside if list(_clampdown_imports(p))] == []
