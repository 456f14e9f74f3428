"""Lint's verdict cache (clampdown.app.lint_cache, clampdown.app.lint_inputs): a hit gives
exactly what a cold lint prints, anything that could change the verdict misses, and an
entry or folder that is not the user's own and private, or does not match the files, is
never used.

Most tests run lint in this process through ``lint_with_cache`` with a ``run`` that counts
cold lints (a hit runs nothing); the end-to-end tests run the console script in a fresh
process, where a hit must not import pydantic, yaml, jinja2 or typer.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time
import types
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer

from clampdown.app import lint_cache
from clampdown.app.cli import app
from clampdown.app.cli_lint import LintArgs, fast_lint, parse_args
from clampdown.app.lint_cache import VerdictCache, cache_folder, invocation_key, lint_with_cache
from clampdown.app.lint_inputs import recording, unchanged
from tests.paths import FIXTURES, LIBRARY, REPO

CLEAN = LIBRARY / "contain-iam-user.yaml"
BROKEN = FIXTURES / "broken"


@dataclass
class Linted:
    out: str
    err: str
    code: int
    cold: bool  # the lint ran (a miss); False: replayed from the cache


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder to lint in: ``lib`` (one clean runbook) and ``broken`` (the broken fixtures),
    written a moment before (a file changed in the same clock tick is never cached)."""
    folder = tmp_path / "work"
    (folder / "lib").mkdir(parents=True)
    shutil.copy(CLEAN, folder / "lib" / CLEAN.name)
    shutil.copytree(BROKEN, folder / "broken")
    monkeypatch.chdir(folder)
    _settle()
    return folder


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> os._Environ[str]:
    """This process's environment (what lint reads), with a cache folder of the test's own;
    a test changes it with ``monkeypatch.setenv``."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("CLAMPDOWN_LINT_CACHE", raising=False)
    return os.environ


def _settle() -> None:
    time.sleep(lint_cache_tick())


def lint_cache_tick() -> float:
    from clampdown.app.lint_inputs import TICK_NS

    return 2 * TICK_NS / 1e9


def _lint(capsys: pytest.CaptureFixture[str], env: os._Environ[str], *args: str) -> Linted:
    ran: list[LintArgs] = []

    def run(parsed: LintArgs) -> int:
        ran.append(parsed)
        return fast_lint(parsed)

    capsys.readouterr()
    parsed = parse_args(list(args))
    assert parsed is not None
    code = lint_with_cache(list(args), parsed, run, env)
    done = capsys.readouterr()
    return Linted(done.out, done.err, code, bool(ran))


def _folder(env: os._Environ[str]) -> Path:
    return Path(cache_folder(env))


def _entries(env: os._Environ[str]) -> list[Path]:
    folder = _folder(env)
    return sorted(folder.glob("*.json")) if folder.is_dir() else []


def _entry(env: os._Environ[str], *args: str) -> Path:
    return _folder(env) / f"{invocation_key(list(args), env)}.json"


CASES = [
    ("lib",),
    ("broken",),
    ("--format", "json", "broken"),
    ("--strict", "lib", "broken/needs_unknown_step.yaml"),
    ("--format=json", "--strict", "lib"),
]


@pytest.mark.parametrize("args", CASES)
def test_a_hit_prints_what_the_lint_printed_with_its_exit_code(capsys, work, env, args) -> None:
    cold = _lint(capsys, env, *args)
    assert cold.cold
    _use_private_entry(capsys, env, *args)
    hit = _lint(capsys, env, *args)
    assert not hit.cold
    assert (hit.out, hit.err, hit.code) == (cold.out, cold.err, cold.code)
    afresh = _lint(capsys, env, "--no-cache", *args)
    assert (afresh.out, afresh.code) == (cold.out, cold.code)
    assert cold.code == (0 if args[-1] == "lib" else 1)


def test_a_changed_byte_of_a_runbook_misses(capsys, work, env) -> None:
    first = _lint(capsys, env, "lib")
    assert _lint(capsys, env, "lib").cold is False
    runbook = work / "lib" / CLEAN.name
    runbook.write_text(runbook.read_text().replace("uses: core.log", "uses: core.logs", 1))
    _settle()
    changed = _lint(capsys, env, "lib")
    assert changed.cold and changed.code == 1 and "unknown action 'core.logs'" in changed.out
    assert first.code == 0
    again = _lint(capsys, env, "lib")  # the entry was written again, for the new bytes
    assert not again.cold and again.out == changed.out


def test_a_new_file_in_a_linted_folder_misses(capsys, work, env) -> None:
    _lint(capsys, env, "lib")
    shutil.copy(BROKEN / "unknown_action.yaml", work / "lib" / "extra.yml")
    _settle()
    found = _lint(capsys, env, "lib")
    assert found.cold and found.code == 1 and "lib/extra.yml" in found.out


def test_a_file_that_did_not_exist_misses_once_it_does(capsys, work, env) -> None:
    missing = _lint(capsys, env, "lib/later.yaml")
    assert missing.code == 1 and "no such file or folder" in missing.out
    assert not _lint(capsys, env, "lib/later.yaml").cold
    shutil.copy(CLEAN, work / "lib" / "later.yaml")
    _settle()
    found = _lint(capsys, env, "lib/later.yaml")
    assert found.cold and found.code == 0


@pytest.mark.parametrize(
    "other",
    [
        ("--strict", "lib"),
        ("--format", "json", "lib"),
        ("lib/",),
    ],
)
def test_another_command_line_misses(capsys, work, env, other) -> None:
    _lint(capsys, env, "lib")
    assert _lint(capsys, env, *other).cold


def test_a_changed_setting_misses(capsys, work, env, monkeypatch) -> None:
    """Each setting changed alone, from the same kept entry (one entry for all six: the
    entry a miss writes is for the changed setting's key, the first one stays as it was)."""
    _use_private_entry(capsys, env, "lib")
    for variable in (
        "CLAMPDOWN_LIBRARY",
        "clampdown_library",
        "CLAMPDOWN_SLACK_CHANNEL",
        "PYDANTIC_DISABLE_PLUGINS",
        "LANG",
        "FORCE_COLOR",
    ):
        with monkeypatch.context() as changed:
            changed.setenv(variable, env.get(variable, "") + "x")
            assert _lint(capsys, env, "lib").cold, variable
    assert not _lint(capsys, env, "lib").cold  # the settings as they were: still kept


ENV_READ = """
import json, os, sys
read = set()
class Recording(type(os.environ)):
    def __getitem__(self, key):
        read.add(key)
        return super().__getitem__(key)
    def __contains__(self, key):
        read.add(key)
        return super().__contains__(key)
    def get(self, key, default=None):
        read.add(key)
        return super().get(key, default)
real = os.environ
os.environ = Recording(
    real._data, real.encodekey, real.decodekey, real.encodevalue, real.decodevalue
)
from clampdown.app.cli_lint import fast_lint, parse_args
fast_lint(parse_args(sys.argv[1:]))
sys.stderr.write(json.dumps(sorted(read)))
"""


@pytest.mark.parametrize("args", [["runbooks/"], ["--strict", str(BROKEN)]])
def test_every_variable_a_lint_of_paths_reads_is_in_the_key(args) -> None:
    """Found by running lint with an environment that notes every name read (without
    paths, pydantic-settings reads every variable: CLAMPDOWN_* in any case are keyed)."""
    done = subprocess.run(
        [sys.executable, "-c", ENV_READ, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    read = json.loads(done.stderr.splitlines()[-1])
    assert "PYDANTIC_DISABLE_PLUGINS" in read and "HOME" in read
    assert [name for name in read if not lint_cache.keyed(name)] == []
    assert lint_cache.keyed("clampdown_library") and not lint_cache.keyed("PATH")


def test_without_paths_the_library_setting_decides(capsys, work, env, monkeypatch) -> None:
    monkeypatch.setenv("CLAMPDOWN_LIBRARY", "lib")
    clean = _lint(capsys, env)
    assert not _lint(capsys, env).cold
    monkeypatch.setenv("CLAMPDOWN_LIBRARY", "broken")
    broken = _lint(capsys, env)
    assert broken.cold and (clean.code, broken.code) == (0, 1)


def test_a_lint_during_which_a_file_it_read_changed_is_not_kept(capsys, work, env) -> None:
    runbook = work / "lib" / CLEAN.name

    def changing(parsed: LintArgs) -> int:
        code = fast_lint(parsed)
        runbook.write_text(runbook.read_text().replace("uses: core.log", "uses: core.logs", 1))
        return code

    parsed = parse_args(["lib"])
    assert parsed is not None
    assert lint_cache.lint_with_cache(["lib"], parsed, changing) == 0  # what it read: clean
    assert not _entry(env, "lib").exists()
    _settle()
    found = _lint(capsys, env, "lib")
    assert found.cold and found.code == 1  # the file as it is now
    assert _use_private_entry(capsys, env, "lib").exists()  # a steady lint is kept


def test_an_input_that_cannot_be_read_keeps_nothing(capsys, work, env, monkeypatch) -> None:
    """A module (or file) whose status cannot be read: the lint runs and says its verdict,
    nothing is kept, no traceback."""
    from clampdown.app import lint_inputs

    real = lint_inputs.state_of
    unreadable = str(work / "unreadable.py")

    def state_of(path: str):  # as for a file in a folder the user may not enter
        if path == unreadable:
            raise lint_inputs.Unsure(path)
        return real(path)

    fake = types.ModuleType("h22_unreadable")
    fake.__file__ = unreadable
    monkeypatch.setitem(sys.modules, "h22_unreadable", fake)
    monkeypatch.setattr(lint_inputs, "state_of", state_of)
    found = _lint(capsys, env, "broken")
    assert found.cold and found.code == 1 and "unknown action" in found.out
    assert not _entry(env, "broken").exists()


def test_a_changed_module_misses(tmp_path, monkeypatch) -> None:
    """What an action plug-in's module says is part of the verdict: a record of a run that
    imported a module is not matched once that module's file changes."""
    plugin = tmp_path / "plugins"
    plugin.mkdir()
    (plugin / "h22_acme_actions.py").write_text("NAME = 'acme.block'\n")
    monkeypatch.syspath_prepend(str(plugin))
    # its first import would write plugins/__pycache__: a folder lint listed, changed while
    # it ran, and then no record is kept; this test is about the module's own change
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    _settle()
    try:
        with recording() as recorder:
            import h22_acme_actions  # noqa: F401

        by_hash = recorder.inputs(lambda package: package == "h22_acme_actions")
        by_status = recorder.inputs(lambda package: False)
    finally:  # a module changed below stays out of the next tests' records
        sys.modules.pop("h22_acme_actions", None)
    module = str(plugin / "h22_acme_actions.py")
    assert dict(by_hash["modules"])[module] == "sha256:" + _sha256(Path(module))
    assert dict(by_status["modules"])[module].startswith("stat:")
    assert unchanged(by_hash) and unchanged(by_status)
    Path(module).write_text("NAME = 'acme.blocks'\n")
    assert not unchanged(by_hash) and not unchanged(by_status)


def test_a_lint_records_the_action_modules_it_ran(capsys, work, env) -> None:
    entry = json.loads(_use_private_entry(capsys, env, "lib").read_bytes())
    marks = dict(entry["inputs"]["modules"])
    import pydantic.main

    import clampdown_aws.iam  # the runbook's aws.iam.revoke_credentials

    assert marks[clampdown_aws.iam.__file__] == "sha256:" + _sha256(
        Path(clampdown_aws.iam.__file__)
    )
    assert marks[pydantic.main.__file__].startswith("stat:")  # a library: by its status
    files = dict(entry["inputs"]["files"])
    assert files["lib/" + CLEAN.name] == _sha256(CLEAN)


def test_plugins_are_the_packages_with_a_clampdown_entry_point(tmp_path) -> None:
    points = tmp_path / "acme-1.0.dist-info" / "entry_points.txt"
    points.parent.mkdir()
    points.write_text(
        "[console_scripts]\nacme = acme_cli.main:run\n\n"
        "[clampdown.actions]\nacme.block = acme_actions.block:Block\n"
    )
    gone = tmp_path / "gone-1.0.dist-info" / "entry_points.txt"  # opened: it was not there
    hashed = lint_cache._ours_or_plugins([str(tmp_path / "runbook.yaml"), str(gone), str(points)])
    assert hashed("acme_actions") and hashed("clampdown_aws") and hashed("clampdown")
    assert not hashed("acme_cli") and not hashed("pydantic")


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _use_private_entry(capsys, env, *args: str) -> Path:
    """Lint until an identical lint hits (a lint that ran while a file it read was being
    changed, e.g. by an editor, is not kept, so the first may not be); its entry."""
    for _ in range(3):
        if not _lint(capsys, env, *args).cold:
            return _entry(env, *args)
    raise AssertionError(f"lint {args} never hit the cache")


def test_an_entry_others_can_read_or_write_is_ignored(capsys, work, env) -> None:
    entry = _use_private_entry(capsys, env, "broken")
    expected = _lint(capsys, env, "--no-cache", "broken")
    for mode in (0o644, 0o620, 0o606):
        entry.chmod(mode)
        found = _lint(capsys, env, "broken")
        assert found.cold and (found.out, found.code) == (expected.out, expected.code)
        assert stat.S_IMODE(entry.stat().st_mode) == 0o600  # replaced by a private one
        assert not _lint(capsys, env, "broken").cold


def test_a_folder_others_can_write_is_ignored_and_not_written(capsys, work, env) -> None:
    entry = _use_private_entry(capsys, env, "lib")
    folder = _folder(env)
    for mode in (0o770, 0o707, 0o755):
        folder.chmod(mode)
        before = entry.stat().st_mtime_ns
        assert _lint(capsys, env, "lib").cold
        assert entry.stat().st_mtime_ns == before  # neither read nor written
        assert _lint(capsys, env, "--strict", "lib").cold
        assert not _entry(env, "--strict", "lib").exists()
    folder.chmod(0o700)
    assert not _lint(capsys, env, "lib").cold


def test_an_entry_or_folder_of_another_user_is_ignored(capsys, work, env, monkeypatch) -> None:
    _use_private_entry(capsys, env, "lib")
    with monkeypatch.context() as patched:
        patched.setattr(os, "getuid", lambda: os.geteuid() + 4242)
        assert _lint(capsys, env, "lib").cold


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_an_entry_chowned_to_another_user_is_ignored(capsys, work, env) -> None:
    entry = _use_private_entry(capsys, env, "broken")
    os.chown(entry, 4242, 4242)
    found = _lint(capsys, env, "broken")
    assert found.cold and found.code == 1
    assert entry.stat().st_uid == os.getuid()  # rewritten: a new file of the user's


def test_a_linked_folder_or_entry_is_ignored(capsys, work, env, tmp_path) -> None:
    entry = _use_private_entry(capsys, env, "lib")
    folder = _folder(env)
    elsewhere = tmp_path / "elsewhere"
    folder.rename(elsewhere)
    folder.symlink_to(elsewhere)
    assert _lint(capsys, env, "lib").cold
    assert not (elsewhere / f"{entry.stem}.tmp").exists()
    folder.unlink()
    folder.mkdir(mode=0o700)
    (folder / entry.name).symlink_to(elsewhere / entry.name)
    assert _lint(capsys, env, "lib").cold
    assert not (folder / entry.name).is_symlink()  # replaced by a file of its own


def test_a_damaged_entry_is_ignored_and_written_again(capsys, work, env) -> None:
    """Each damage done to a good entry: the one written again after the last damage is
    the good entry the next damage starts from (as a fresh test's would be)."""
    entry = _use_private_entry(capsys, env, "broken")
    expected = _lint(capsys, env, "--no-cache", "broken")
    for damage in ("", "{", "[]", '{"format": 1}', "garbage\x00"):
        entry.write_text(damage)
        found = _lint(capsys, env, "broken")
        assert found.cold and (found.out, found.code) == (expected.out, expected.code), damage
        assert json.loads(entry.read_bytes())["exit"] == 1
        assert not _lint(capsys, env, "broken").cold  # written again: a good entry


def test_a_forged_clean_verdict_whose_hashes_do_not_match_is_not_used(capsys, work, env) -> None:
    entry = _use_private_entry(capsys, env, "broken/unknown_action.yaml")
    forged = json.loads(entry.read_bytes())
    forged["output"] = [["out", "lint: clean (broken/unknown_action.yaml)\n"]]
    forged["exit"] = 0
    forged["inputs"]["files"] = [
        [path, "0" * 64 if path.endswith("unknown_action.yaml") else digest]
        for path, digest in forged["inputs"]["files"]
    ]
    entry.write_text(json.dumps(forged))
    found = _lint(capsys, env, "broken/unknown_action.yaml")
    assert found.cold and found.code == 1 and "unknown action" in found.out


def test_an_entry_for_another_key_is_not_used(capsys, work, env) -> None:
    entry = _use_private_entry(capsys, env, "lib")
    other = _entry(env, "lib/")
    shutil.copy(entry, other)
    other.chmod(0o600)
    assert _lint(capsys, env, "lib/").cold  # its recorded key is not this one


def test_no_cache_neither_reads_nor_writes(capsys, work, env, monkeypatch) -> None:
    def refused(*_: object) -> None:
        raise AssertionError("the cache was used")

    monkeypatch.setattr(VerdictCache, "lookup", refused)
    monkeypatch.setattr(VerdictCache, "store", refused)
    assert _lint(capsys, env, "--no-cache", "lib").code == 0
    monkeypatch.setenv("CLAMPDOWN_LINT_CACHE", " Off")
    assert _lint(capsys, env, "broken").code == 1
    assert not _folder(env).exists()


def test_the_folder_keeps_the_entries_used_last(capsys, work, env, monkeypatch) -> None:
    monkeypatch.setattr(lint_cache, "KEEP", 2)
    _lint(capsys, env, "lib")
    _lint(capsys, env, "lib/")
    _lint(capsys, env, "lib")  # used: now the most recent
    _lint(capsys, env, "--strict", "lib")
    assert {p.name for p in _entries(env)} == {
        _entry(env, "lib").name,
        _entry(env, "--strict", "lib").name,
    }


def test_the_folder_is_private_and_under_xdg_cache_home(capsys, work, env) -> None:
    _lint(capsys, env, "lib")
    folder = _folder(env)
    assert folder == Path(env["XDG_CACHE_HOME"]) / "clampdown" / "lint"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert [stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()] == [0o600]
    assert Path(cache_folder({"XDG_CACHE_HOME": "rel"})) == Path.home() / ".cache/clampdown/lint"


def _typer_cache(args: list[str]) -> bool:
    command = typer.main.get_command(app).commands["lint"]  # type: ignore[attr-defined]
    return bool(command.make_context("lint", list(args)).params["cache"])


@pytest.mark.parametrize(
    "args", [["x"], ["--no-cache", "x"], ["--cache", "x"], ["x", "--no-cache", "--strict"]]
)
def test_cache_flags_are_read_as_typer_reads_them(args: list[str]) -> None:
    parsed = parse_args(args)
    assert parsed is not None and parsed.cache == _typer_cache(args)


def test_a_repeated_cache_flag_is_typers_to_answer() -> None:
    assert parse_args(["--no-cache", "--cache", "x"]) is None


# ---- end to end: the console script in a fresh process ----------------------------------

CONSOLE = (
    "import atexit, os, sys\n"
    "def note():\n"
    "    heavy = ('pydantic', 'yaml', 'jinja2', 'typer', 'rich')\n"
    "    with open(os.environ['LINT_TEST_IMPORTED'], 'w') as f:\n"
    "        f.write(','.join(m for m in heavy if m in sys.modules))\n"
    "atexit.register(note)\n"
    "sys.argv[0] = 'clampdown'\n"
    "from clampdown.app.entry import main\n"
    "main()\n"
)


def _console(env: os._Environ[str], cwd: Path, *args: str) -> tuple[str, str, int, str]:
    note = Path(env["XDG_CACHE_HOME"]).parent / "imported.txt"
    child = {**env, "LINT_TEST_IMPORTED": str(note)}
    child.pop("PYTHONDONTWRITEBYTECODE", None)
    # as a user's shell has it: a lint in this process set it (the key is taken before)
    child.pop("PYDANTIC_DISABLE_PLUGINS", None)
    done = subprocess.run(
        [sys.executable, "-c", CONSOLE, "lint", *args],
        cwd=cwd,
        env=child,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return done.stdout, done.stderr, done.returncode, note.read_text()


def _console_hit(env: os._Environ[str], cwd: Path, *args: str) -> None:
    """A cold lint, then identical lints until one hits (see _use_private_entry): the hit
    prints the same bytes, exits with the same code and imports nothing heavy."""
    out, err, code, imported = _console(env, cwd, *args)
    assert "pydantic" in imported and "yaml" in imported and "Traceback" not in err
    for _ in range(3):
        again = _console(env, cwd, *args)
        assert again[:3] == (out, err, code)
        if again[3] == "":
            return
        assert "pydantic" in again[3]  # a miss is a whole lint
    raise AssertionError(f"lint {args} never hit the cache")


@pytest.mark.parametrize(
    "args, code", [(("lib",), 0), (("--format", "json", "--strict", "broken"), 1)]
)
def test_a_hit_in_a_fresh_process_imports_no_validator(work, env, args, code) -> None:
    _console_hit(env, work, *args)
    assert _console(env, work, *args)[2] == code


def test_output_rich_renders_is_not_kept(work, env) -> None:
    """A '[' in a path: the verdict line goes through Rich (markup), so it is not kept."""
    shutil.copytree(work / "lib", work / "lib[1]")
    _settle()
    for _ in range(2):
        out, err, code, imported = _console(env, work, "lib[1]")
        assert (code, out) == (0, "lint: clean (lib[1])\n") and "Traceback" not in err
        assert "pydantic" in imported  # linted again: nothing was kept
    assert not _folder(env).exists() or not list(_folder(env).glob("*.json"))


def test_the_shipped_library_from_the_repository_hits(env) -> None:
    _console_hit(env, REPO, "runbooks/")
