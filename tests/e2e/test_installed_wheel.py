"""A wheel built from the tracked files, installed into a fresh virtualenv outside the
repository: only clampdown's own top-level names, and the CLI works from any folder.

The wheel is built by the build backend pyproject.toml names (setuptools' PEP 517
``build_wheel``, the hook ``pip wheel`` calls), the development environment's own: no
isolated build environment, nothing downloaded, and one process instead of pip's front
end and the hook processes it starts. pip installs it, as docs/operations.md says.

The fresh virtualenv gets the wheel alone (``--no-deps``); its dependencies come from
the development environment's site-packages through a ``.pth`` line, so the test needs
no download. ``.pth`` files of that folder are not processed from there, so the
development (editable) install of clampdown stays invisible: what runs is the wheel
(``PYTHONPATH`` is not passed on, for the same reason).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

from tests.paths import REPO


def _tracked_copy(dest: Path) -> Path:
    """The files git tracks, as they are now (a clean clone of the working tree)."""
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.split(b"\0")
    for name in filter(None, files):
        source = REPO / name.decode()
        target = dest / name.decode()
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
        elif source.exists():
            shutil.copy2(source, target)
    return dest


# the backend's build_wheel in the source folder; prints the wheel's file name
BUILD = (
    "import importlib, sys; print(importlib.import_module(sys.argv[1]).build_wheel(sys.argv[2]))"
)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = _tracked_copy(tmp_path_factory.mktemp("clone"))
    out = tmp_path_factory.mktemp("dist")
    system = tomllib.loads((source / "pyproject.toml").read_text())["build-system"]
    assert "backend-path" not in system  # the backend is an installed module
    built = subprocess.run(
        [sys.executable, "-c", BUILD, system["build-backend"], str(out)],
        cwd=source,
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    return out / built.stdout.strip().splitlines()[-1]


def _user_env(**extra: str) -> dict[str, str]:
    """This environment as a user's shell has it: no CLAMPDOWN_ settings of the tests and
    no PYTHONPATH (it would put a checkout before the wheel)."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("CLAMPDOWN_") and k != "PYTHONPATH"
    }
    return env | extra


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    env_dir = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "-q",
            "--no-deps",
            "--disable-pip-version-check",
            str(wheel),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    (site / "_clampdown_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return env_dir


def _clampdown(
    env_dir: Path, *args: str, cwd: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    env = _user_env()
    env["PATH"] = f"{env_dir / 'bin'}{os.pathsep}{env['PATH']}"
    return subprocess.run(
        [str(env_dir / "bin" / "clampdown"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_the_wheel_installs_only_clampdown_names_and_ships_library_and_prefect_file(
    wheel: Path,
) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {
        "clampdown",
        "clampdown_flows",
        "clampdown_aws",
        "clampdown_slack",
        "clampdown_alerts",
        "clampdown_runbooks",
    }
    assert "clampdown_runbooks/contain-model-theft.yaml" in names
    assert "clampdown_runbooks/drills/model-theft.yaml" in names
    assert "clampdown_runbooks/triggers.yaml" in names
    assert "clampdown_flows/prefect.yaml" in names


def test_installed_cli_finds_its_library_from_any_folder(installed: Path, tmp_path: Path) -> None:
    version = _clampdown(installed, "--version", cwd=tmp_path)
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip().startswith("clampdown ")
    where = subprocess.run(
        [str(installed / "bin" / "python"), "-c", "import clampdown; print(clampdown.__file__)"],
        cwd=tmp_path,
        env=_user_env(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert str(installed) in where and str(REPO) not in where  # the wheel runs, not the checkout
    lint = _clampdown(installed, "lint", cwd=tmp_path)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert "clampdown_runbooks" in lint.stdout + lint.stderr


def test_installed_cli_runs_the_default_drill_from_any_folder(
    installed: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    drill = subprocess.run(
        [str(installed / "bin" / "clampdown"), "drill"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=_user_env(CLAMPDOWN_HOME=str(home)),
    )
    assert drill.returncode == 0, drill.stdout[-3000:] + drill.stderr[-3000:]
    # the drill's console (progress, scores, the report's paths) is stderr
    reports = sorted((home / "drills").glob("*/report.md"))
    assert len(reports) == 1 and f"report: {reports[0].with_suffix('.html')}" in drill.stderr
    assert "objectives" in reports[0].read_text().lower()
