"""The docs tell the truth about the command line and the settings.

* every ``clampdown …`` command line in docs/*.md and README.md names a command that
  exists and only options that command has (walked on the live Typer app, so a renamed
  or removed flag fails here);
* every ``CLAMPDOWN_*`` variable the docs name is a field of one of clampdown's
  settings classes, or is read by name in the code (the few read at each use);
* docs/cli.md's command table lists every command ``clampdown --help`` has;
* the documented commands that run offline (``lint``, ``plan`` without ``--live``,
  ``schema``, ``actions``, ``iam-policy``, ``--version``) run as written, from the
  repository folder, and end without a traceback with the exit code the docs show.
"""

from __future__ import annotations

import functools
import importlib
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from clampdown.app.cli import app
from tests.paths import REPO

DOCS = [*sorted((REPO / "docs").glob("*.md")), REPO / "README.md"]
# a command line: in a console block after "$ ", a line of a sh block, or an inline `…` span
_PROMPT = re.compile(
    r"^\s*(?:\$\s+)?((?:[A-Z_]+=\S+\s+)*)(?:\.venv/bin/)?(clampdown\s.*|clampdown)$"
)
_SPAN = re.compile(r"`((?:\.venv/bin/)?clampdown(?:\s[^`\d][^`]*)?)`")  # not `clampdown 0.1.0`
_STOP = {"|", ">", ">>", "&&", "||", ";", "#", "2>&1", "<"}
OFFLINE = {"lint", "plan", "schema", "actions", "iam-policy", "--version"}
# Examples whose output needs a plug-in package the docs use as an example ("acme"), which
# is not installed here: their command lines are still checked, they are not run.
NEEDS_EXAMPLE_PLUGIN = "acme"


@dataclass(frozen=True)
class Example:
    path: Path
    line: int
    text: str
    block: list[str]  # the console block's lines after the command (outputs, echo $?)
    env: tuple[tuple[str, str], ...] = ()  # VAR=value written before the command

    def __str__(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}: {self.text}"


def _examples() -> Iterator[Example]:
    for path in DOCS:
        fence: str | None = None
        lines = path.read_text(encoding="utf-8").splitlines()
        for number, raw in enumerate(lines, start=1):
            stripped = raw.strip()
            if stripped.startswith("```"):
                fence = None if fence is not None else (stripped[3:] or "text")
                continue
            if fence in ("console", "sh", "bash", "shell", "text"):
                match = _PROMPT.match(raw)
                if match and (fence != "console" or stripped.startswith("$")):
                    env = tuple(tuple(pair.split("=", 1)) for pair in match.group(1).split())
                    yield Example(path, number, match.group(2), lines[number:], env)
            elif fence is None:
                for span in _SPAN.finditer(raw):
                    before = raw[: span.start()]
                    if not before.endswith("/"):  # /clampdown in Slack is not the CLI
                        yield Example(path, number, span.group(1), [])


EXAMPLES = list(_examples())


@functools.cache
def _command_tree() -> Any:
    """The live app's click command tree, built once: Typer builds it anew on each call
    (0.1 s), and this file resolves some 900 documented command lines against it."""
    return typer.main.get_command(app)


def _words(text: str) -> list[str]:
    text = text.replace(".venv/bin/clampdown", "clampdown").replace("…", "")
    try:
        words = shlex.split(text, comments=True)
    except ValueError:
        words = text.split()
    kept = []
    for word in words[1:]:
        if word in _STOP:
            break
        kept.append(word)
    return kept


def _placeholder(word: str) -> bool:
    return word.startswith(("<", "[", "{")) or word.isupper() or word in ("...", "…", "COMMAND")


def resolve(text: str) -> tuple[Any, list[str], list[str]]:
    """(click command, its path, the option words given) for a documented command line."""
    command = _command_tree()
    path: list[str] = []
    words = _words(text)
    while words and hasattr(command, "commands"):
        name = words[0]
        if name.startswith("-") or _placeholder(name):
            break
        assert name in command.commands, f"no command 'clampdown {' '.join([*path, name])}'"
        command = command.commands[name]
        path.append(name)
        words = words[1:]
    options = [w.strip("[]").split("=")[0] for w in words if w.strip("[").startswith("-")]
    return command, path, [o for o in options if o not in ("-", "--")]


def _option_names(command: Any) -> set[str]:
    names = {"--help"}
    for param in command.params:
        names.update(getattr(param, "opts", []))
        names.update(getattr(param, "secondary_opts", []))
    return names


@pytest.mark.parametrize("example", EXAMPLES, ids=str)
def test_every_documented_command_line_parses(example: Example) -> None:
    command, path, options = resolve(example.text)
    known = _option_names(command)
    unknown = [o for o in options if o not in known]
    assert not unknown, f"{example}: clampdown {' '.join(path)} has no {', '.join(unknown)}"


def test_the_docs_show_many_command_lines() -> None:
    """The extraction itself works: the docs show most commands, with flags."""
    commands = {tuple(resolve(e.text)[1][:1]) for e in EXAMPLES}
    assert len(EXAMPLES) > 100 and len(commands) >= 12, commands


def test_a_wrong_flag_or_command_is_caught() -> None:
    command, _, options = resolve("clampdown drill --list -i --format json")
    assert "-i" not in _option_names(command) and "-i" in options
    with pytest.raises(AssertionError, match="no command 'clampdown triggers list'"):
        resolve("clampdown triggers list")


# --- settings -----------------------------------------------------------------------------


def _settings_names() -> set[str]:
    from pydantic_settings import BaseSettings

    for folder in ("clampdown", "flows", "integrations"):  # every module with a settings class
        for source in (REPO / folder).rglob("*.py"):
            if (
                "BaseSettings)" in source.read_text(encoding="utf-8")
                and "testing" not in source.parts
            ):
                parts = source.relative_to(REPO / folder).with_suffix("").parts
                prefix = ("clampdown",) if folder == "clampdown" else ()
                importlib.import_module(".".join((*prefix, *parts)))

    def subclasses(cls: type) -> Iterator[type]:
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    names = set()
    for cls in subclasses(BaseSettings):
        prefix = cls.model_config.get("env_prefix", "")
        names.update((prefix + (f.alias or n)).upper() for n, f in cls.model_fields.items())
    return names


def _read_by_name(name: str) -> bool:
    """A variable read from the environment by name (``os.environ.get("CLAMPDOWN_X")``)."""
    quoted = (f'"{name}"', f"'{name}'")
    for folder in ("clampdown", "flows", "integrations"):
        for source in (REPO / folder).rglob("*.py"):
            text = source.read_text(encoding="utf-8")
            if any(q in text for q in quoted) and "environ" in text:
                return True
    return False


def test_every_documented_setting_exists() -> None:
    documented: dict[str, str] = {}
    for path in DOCS:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for match in re.finditer(r"CLAMPDOWN_[A-Z0-9_]*[A-Z0-9](?![A-Z0-9_]*[*<])", line):
                documented.setdefault(match.group(0), f"{path.relative_to(REPO)}:{number}")
    known = _settings_names()
    missing = {n: where for n, where in documented.items() if n not in known}
    missing = {n: where for n, where in missing.items() if not _read_by_name(n)}
    assert not missing, f"documented settings that clampdown does not read: {missing}"
    assert {"CLAMPDOWN_HOME", "CLAMPDOWN_EXECUTION", "CLAMPDOWN_SLACK_BOT_TOKEN"} <= known


# --- the command table and the documented offline commands -------------------------------


def live_commands() -> list[str]:
    """Every command ``clampdown --help`` offers, groups expanded (``triggers test``)."""
    found = []
    for name, command in _command_tree().commands.items():
        if hasattr(command, "commands"):
            found += [f"{name} {sub}" for sub in command.commands]
        else:
            found.append(name)
    return found


def test_the_command_table_lists_every_command() -> None:
    text = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    table = text[: text.index("\n---\n")]
    rows = set(re.findall(r"^\| \[`clampdown ([a-z -]+)`\]", table, re.MULTILINE))
    missing = [c for c in live_commands() if c not in rows]
    assert not missing, f"docs/cli.md's command table lacks: {missing}"
    gone = rows - set(live_commands())
    assert not gone, f"docs/cli.md's command table lists commands that do not exist: {gone}"


def _offline(example: Example) -> bool:
    words = _words(example.text)
    if not words or words[0] not in OFFLINE or not example.block:
        return False
    if NEEDS_EXAMPLE_PLUGIN in " ".join(example.block[:12]):
        return False
    if "--live" in words or "-o" in words or "--output" in words:
        return False
    if any(_placeholder(w) or "[" in w for w in words):  # a synopsis, not an example
        return False
    paths = [w for w in words if w.endswith((".yaml", ".yml", ".json"))]
    return all((REPO / p).exists() for p in paths)


def _documented_first_line(example: Example) -> str | None:
    """The first line the docs show the command print (None: none shown, or elided)."""
    for line in example.block:
        text = line.strip()
        if not text or text.startswith("```"):
            return None
        if text.startswith("$"):
            return None
        return None if "…" in text or text == "..." else text
    return None


def _documented_exit(example: Example) -> int | None:
    """The exit code the block shows right after the command (``$ echo $?``), if any."""
    for index, line in enumerate(example.block):
        if line.strip().startswith("$ echo $?"):
            return int(example.block[index + 1].strip())
        if line.strip().startswith(("$", "```")):
            return None
    return None


RUNNABLE = [e for e in EXAMPLES if _offline(e)]


@pytest.mark.parametrize("example", RUNNABLE, ids=str)
def test_documented_offline_commands_run_as_written(
    example: Example, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)
    monkeypatch.delenv("CLAMPDOWN_LIBRARY", raising=False)  # as a user in a checkout
    for name, value in example.env:
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(app, _words(example.text))
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{example}: {result.exception!r}"
    )
    assert "Traceback" not in result.output
    shown = _documented_first_line(example)
    if shown is not None:
        printed = [line.strip() for line in result.output.splitlines()]
        assert shown in printed, f"{example}: the docs show {shown!r}; it printed:\n{result.output}"
    expected = _documented_exit(example)
    if expected is not None:
        assert result.exit_code == expected, f"{example}: exit {result.exit_code}\n{result.output}"
    else:
        assert result.exit_code in (0, 1), f"{example}: exit {result.exit_code}\n{result.output}"


def test_some_documented_commands_are_run() -> None:
    kinds = {_words(e.text)[0] for e in RUNNABLE}
    assert kinds >= OFFLINE, kinds  # each kind of offline command is run at least once


def _help_blocks() -> Iterator[tuple[str, set[str]]]:
    """(command, the options its help shows) for each ``clampdown X --help`` in docs/cli.md."""
    text = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    for block in re.findall(r"```\n( Usage: clampdown .*?)```", text, re.DOTALL):
        name = block.split()[2]
        shown = set(re.findall(r"^│ +(--[a-z-]+)", block, re.MULTILINE))
        shown |= set(re.findall(r"^│ +--[a-z-]+ +(-[A-Za-z])\b", block, re.MULTILINE))
        yield name, shown


@pytest.mark.parametrize(("name", "shown"), list(_help_blocks()), ids=lambda v: str(v)[:20])
def test_help_shown_in_the_docs_lists_the_command_s_options(name: str, shown: set[str]) -> None:
    command = _command_tree().commands[name]
    actual = {
        o
        for param in command.params
        for o in getattr(param, "opts", [])
        if o.startswith("--") or len(o) == 2
    } | {"--help"}
    assert shown == actual, f"docs/cli.md shows `clampdown {name} --help` with {sorted(shown)}"
