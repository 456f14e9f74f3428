"""The distribution's shape: every package on disk is in the wheel, under clampdown's names."""

from __future__ import annotations

import tomllib

import clampdown
from tests.paths import REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]


def _packages_on_disk() -> set[str]:
    """Every folder with an ``__init__.py`` under a mapped package, named as it imports."""
    roots = {"clampdown": "clampdown", **SETUPTOOLS["package-dir"]}
    found = set()
    for name, folder in roots.items():
        base = REPO / folder
        for init in base.rglob("__init__.py"):
            relative = init.parent.relative_to(base).parts
            found.add(".".join((name, *relative)))
    return found


def test_the_package_list_names_every_package_on_disk() -> None:
    assert set(SETUPTOOLS["packages"]) == _packages_on_disk()


def test_no_generic_top_level_name_is_installed() -> None:
    top_level = {name.split(".")[0] for name in SETUPTOOLS["packages"]}
    assert all(name == "clampdown" or name.startswith("clampdown_") for name in top_level), (
        top_level
    )


def test_version_is_the_release_in_pyproject() -> None:
    assert clampdown.__version__ == PYPROJECT["project"]["version"]


def test_the_shipped_prefect_file_is_the_one_at_the_top_of_the_repository() -> None:
    from clampdown.app.cli_ops import shipped_prefect_file

    shipped = shipped_prefect_file()
    assert shipped.read_text() == (REPO / "prefect.yaml").read_text()
    assert "entrypoint: clampdown_flows.respond:respond" in shipped.read_text()


def test_the_shipped_library_is_found_without_a_runbooks_folder_here(tmp_path, monkeypatch):
    from clampdown.core.settings import Settings

    monkeypatch.delenv("CLAMPDOWN_LIBRARY", raising=False)
    monkeypatch.chdir(tmp_path)
    assert Settings().library.resolve() == (REPO / "runbooks").resolve()
    (tmp_path / "runbooks").mkdir()  # a team's own library where the command runs wins
    assert Settings().library == (tmp_path / "runbooks").relative_to(tmp_path)
