"""Whether a command starts its resident API's server before it imports Prefect
(:func:`clampdown_flows.resident_api.likely_needed`): a guess without Prefect that only
decides how early; tests/integration/test_early_resident_api.py starts real ones.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from clampdown_flows.resident_api import STATE_FILE, likely_needed


@pytest.fixture
def places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[dict[str, str], Path]:
    """An environment naming an empty Prefect home, and an empty working folder."""
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    (tmp_path / "home").mkdir()
    (tmp_path / "work").mkdir()
    return {"PREFECT_HOME": str(tmp_path / "home")}, tmp_path / "work"


def test_a_new_home_with_nothing_configured_wants_one(places: tuple[dict[str, str], Path]) -> None:
    env, cwd = places
    assert likely_needed(env, cwd)
    assert likely_needed({**env, "PREFECT_API_URL": ""}, cwd)  # blank: Prefect's unset


def test_an_api_url_in_the_environment_wants_none(places: tuple[dict[str, str], Path]) -> None:
    env, cwd = places
    assert not likely_needed({**env, "PREFECT_API_URL": "https://api.example/api"}, cwd)


@pytest.mark.parametrize(
    ("where", "text"),
    [
        ("home/profiles.toml", 'active = "r"\n[profiles.r]\nPREFECT_API_URL = "http://x/api"\n'),
        ("work/prefect.toml", '[api]\nurl = "http://x/api"\n'),
        ("work/pyproject.toml", '[project]\nname = "p"\n\n[tool.prefect.api]\nurl = "x"\n'),
        ("work/.env", "PREFECT_API_URL=http://x/api\n"),
        ("profiles/elsewhere.toml", '[profiles.r]\nPREFECT_API_URL = "http://x/api"\n'),
    ],
)
def test_an_api_url_in_a_file_prefect_reads_wants_none(
    places: tuple[dict[str, str], Path], tmp_path: Path, where: str, text: str
) -> None:
    env, cwd = places
    env["PREFECT_PROFILES_PATH"] = str(tmp_path / "profiles" / "elsewhere.toml")
    assert likely_needed(env, cwd)
    (tmp_path / where).parent.mkdir(exist_ok=True)
    (tmp_path / where).write_text(text)
    assert not likely_needed(env, cwd)


def test_other_settings_in_those_files_still_want_one(
    places: tuple[dict[str, str], Path], tmp_path: Path
) -> None:
    env, cwd = places
    (tmp_path / "home" / "profiles.toml").write_text(
        'active = "ephemeral"\n[profiles.ephemeral]\nPREFECT_SERVER_ALLOW_EPHEMERAL_MODE = "true"\n'
    )
    (cwd / "pyproject.toml").write_text(
        '[project]\nname = "p"\n[tool.prefect.logging]\nlevel = "x"\n'
    )
    assert likely_needed(env, cwd)


def test_the_default_home_is_prefects(places: tuple[dict[str, str], Path], tmp_path: Path) -> None:
    _, cwd = places
    default = tmp_path / "user" / ".prefect"
    default.mkdir(parents=True)
    (default / STATE_FILE).write_text(json.dumps({"port": 1, "pid": os.getpid()}))
    assert not likely_needed({}, cwd)  # $HOME/.prefect names a live process


def test_a_state_file_naming_a_live_process_wants_none_a_dead_one_wants_one(
    places: tuple[dict[str, str], Path], tmp_path: Path
) -> None:
    env, cwd = places
    state = tmp_path / "home" / STATE_FILE
    state.write_text(json.dumps({"port": 1, "pid": os.getpid()}))
    assert not likely_needed(env, cwd)  # a resident is probably up: found as usual
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    state.write_text(json.dumps({"port": 1, "pid": int(gone.stdout)}))
    assert likely_needed(env, cwd)
    state.write_text("{not json")
    assert likely_needed(env, cwd)
