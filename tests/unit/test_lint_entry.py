"""``clampdown lint`` through the console script's light start (clampdown.app.entry and
clampdown.app.cli_lint): Typer's reading of the command line, Rich's output. The console
script run in processes of its own (the same output and exit codes as the Typer app, none
of Typer, Rich or the AWS and Slack SDKs imported) is tests/integration/test_lint_processes.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import typer

from clampdown.app import cli_lint
from clampdown.app.cli import app
from clampdown.app.cli_lint import LintArgs, parse_args
from clampdown.app.cli_options import out
from clampdown.core import loader
from clampdown.core.lint import lint_paths
from tests.paths import REPO


def _typer_params(args: list[str]) -> LintArgs:
    """What Typer hands the lint command for ``clampdown lint <args>``."""
    command = typer.main.get_command(app).commands["lint"]  # type: ignore[attr-defined]
    ctx = command.make_context("lint", list(args))
    p = ctx.params
    return LintArgs(
        paths=list(p["paths"] or []),
        format=str(p["format"].value),
        strict=p["strict"],
        library=p["library"],
    )


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["runbooks/"],
        ["a.yaml", "b.yml", "folder"],
        ["--format", "json", "a", "--strict", "-L", "lib"],
        ["--format=json", "--no-strict"],
        ["--library=some lib", "x"],
        ["--library", "lib", "--format", "text"],
        ["a", "--", "--strict", "-L"],
        ["-"],
    ],
)
def test_lint_reads_its_command_line_as_typer_does(args: list[str]) -> None:
    assert parse_args(args) == _typer_params(args)


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["-h"],
        ["--format", "xml"],
        ["--format", "JSON"],
        ["--format"],
        ["--format", "--strict"],
        ["--strict", "--strict"],
        ["--strict=yes"],
        ["-L=lib"],
        ["-Llib"],
        ["--library="],
        ["--verbose", "runbooks"],
        ["--format", "json", "--format", "text"],
    ],
)
def test_lint_leaves_the_rest_to_typer(args: list[str]) -> None:
    assert parse_args(args) is None


TEXTS = [
    "runbooks/a.yaml:3:5: error: unknown action 'core.wiat' — did you mean 'core.wait'?",
    "é 漢字 🔥 trailing   ",
    "markup-looking [red]x[/] and \\[escaped] and a lone [",
    "a\ttab",
    "a\rcarriage return",
    "an \x1b[31mescape",
    "a bell\x07",
    "",
]


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("style", ["red", "yellow"])
def test_a_diagnostic_line_is_printed_as_rich_prints_it(capsys, text: str, style: str) -> None:
    from rich.markup import escape

    out.print(f"[{style}]{escape(text)}[/]")
    by_rich = capsys.readouterr().out
    cli_lint.print_styled(text, style)
    assert capsys.readouterr().out == by_rich


@pytest.mark.parametrize(
    ("markup", "plain"),
    [
        ("lint: [green]clean[/] (runbooks)", "lint: clean (runbooks)"),
        (
            "lint: 2 error(s), 1 warning(s) (a.yaml, b é.yaml)",
            "lint: 2 error(s), 1 warning(s) (a.yaml, b é.yaml)",
        ),
        ("lint: [green]clean[/] (odd[1].yaml)", None),
    ],
)
def test_the_verdict_is_printed_as_rich_prints_it(capsys, markup: str, plain: str | None) -> None:
    out.print(markup)
    by_rich = capsys.readouterr().out
    cli_lint.print_markup(markup, plain)
    assert capsys.readouterr().out == by_rich


@pytest.mark.parametrize(
    "document",
    [
        {"errors": 0, "warnings": 0, "diagnostics": []},
        {"errors": 1, "diagnostics": [{"message": "é 漢字 \t tab \x07 bell \u2028 sep", "n": 1.5}]},
    ],
)
def test_json_is_printed_as_rich_prints_it(capsys, document: dict) -> None:
    out.print_json(json.dumps(document))
    by_rich = capsys.readouterr().out
    cli_lint.print_json(json.dumps(document))
    assert capsys.readouterr().out == by_rich


def test_at_a_forced_terminal_rich_prints_the_colours(capsys, monkeypatch) -> None:
    monkeypatch.setenv("FORCE_COLOR", "1")
    assert not cli_lint._as_is()
    out.print("[red]x[/]")
    by_rich = capsys.readouterr().out
    cli_lint.print_styled("x", "red")
    assert capsys.readouterr().out == by_rich


def test_a_lint_parses_each_file_once(monkeypatch) -> None:
    parsed: list[str] = []
    real = loader.parse

    def counting(text: str, path: str):
        parsed.append(path)
        return real(text, path)

    monkeypatch.setattr(loader, "parse", counting)
    assert lint_paths([REPO / "runbooks"]) == []
    assert parsed and len(parsed) == len(set(parsed)), sorted(parsed)
    assert any(p.endswith("triggers.yaml") for p in parsed)


def test_outside_a_lint_a_file_is_read_afresh(tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    path.write_text("a: 1\n", encoding="utf-8")
    assert loader.read(path).data == {"a": 1}
    path.write_text("a: 2\n", encoding="utf-8")
    assert loader.read(path).data == {"a": 2}
    with loader.reading_once():
        assert loader.read(path).data == {"a": 2}
        path.write_text("a: 3\n", encoding="utf-8")
        assert loader.read(path).data == {"a": 2}  # one lint: one reading of each file
    assert loader.read(path).data == {"a": 3}


@pytest.mark.parametrize(
    "argv",
    [
        ["clampdown", "lint", "--help"],  # Typer's to answer
        ["clampdown", "run", "x.yaml"],
        ["clampdown", "serve"],
    ],
)
def test_commands_other_than_a_light_lint_run_with_the_cyclic_collector(
    monkeypatch, argv: list[str]
) -> None:
    """A light lint turns Python's cyclic collector off (a short process); every other
    command line reaches Typer with it on (serve and run live long)."""
    import gc

    from clampdown.app import cli, entry

    seen: list[bool] = []
    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.setattr(cli, "main", lambda: seen.append(gc.isenabled()))
    monkeypatch.setattr(entry, "_early_local_api", lambda: None)  # no server process here
    was = gc.isenabled()
    try:
        entry.main()
    finally:
        gc.enable() if was else gc.disable()
    assert seen == [True]


def test_a_light_lint_runs_without_the_cyclic_collector(monkeypatch) -> None:
    import gc

    from clampdown.app import entry

    seen: list[bool] = []
    monkeypatch.setattr(sys, "argv", ["clampdown", "lint", "runbooks/"])
    monkeypatch.setattr(cli_lint, "fast_lint", lambda args: seen.append(gc.isenabled()) or 0)
    was = gc.isenabled()
    try:
        with pytest.raises(SystemExit) as done:
            entry.main()
    finally:
        gc.enable() if was else gc.disable()
    assert (done.value.code, seen) == (0, [False])


def test_a_light_lint_freezes_what_is_left_at_exit_not_before(monkeypatch) -> None:
    """The interpreter's last full collection at exit is skipped by freezing the objects
    then (registered at exit: nothing is frozen while main() runs, in any process)."""
    import atexit
    import gc

    from clampdown.app import entry

    registered: list[object] = []
    frozen_during: list[int] = []
    monkeypatch.setattr(sys, "argv", ["clampdown", "lint", "runbooks/"])
    monkeypatch.setattr(atexit, "register", registered.append)
    monkeypatch.setattr(
        cli_lint, "fast_lint", lambda args: frozen_during.append(gc.get_freeze_count()) or 0
    )
    before = gc.get_freeze_count()
    was = gc.isenabled()
    try:
        with pytest.raises(SystemExit):
            entry.main()
    finally:
        gc.enable() if was else gc.disable()
    assert registered == [gc.freeze]
    assert frozen_during == [before]


class _Installed:
    """What ``importlib.metadata.entry_points()`` answers (``clampdown.core.installed``
    reads it once): entry points by group."""

    def __init__(self, groups: dict[str, list[object]]) -> None:
        self.groups = groups

    def select(self, *, group: str) -> list[object]:
        return self.groups.get(group, [])


def _read_once(monkeypatch, groups: dict[str, list[object]], env: dict[str, str]) -> dict:
    """Run the light lint's one reading of the entry points against ``groups``; the
    environment it leaves and the registry it builds."""
    import os

    from clampdown.core import actions, installed

    monkeypatch.setattr(installed, "installed_entry_points", lambda: _Installed(groups))
    monkeypatch.setattr(actions, "_registry", None)
    monkeypatch.setenv("PYDANTIC_DISABLE_PLUGINS", "")  # restored (unset) after the test
    monkeypatch.delenv("PYDANTIC_DISABLE_PLUGINS")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    cli_lint._read_entry_points_once()
    return {"plugins": os.environ.get("PYDANTIC_DISABLE_PLUGINS"), "names": actions._registry}


def test_one_reading_of_the_entry_points_gives_the_registry_every_installed_action(
    monkeypatch,
) -> None:
    from importlib.metadata import EntryPoint

    from clampdown.core.actions import Registry

    wanted = Registry().names()
    points = [
        EntryPoint(name, f"pkg:{name.replace('.', '_')}", "clampdown.actions") for name in wanted
    ]
    found = _read_once(monkeypatch, {"clampdown.actions": points}, {})
    assert found["names"].names() == wanted
    assert found["plugins"] == "__all__"  # nothing installed for pydantic: it need not look


def test_a_pydantic_plugin_installed_or_the_users_setting_is_left_to_pydantic(
    monkeypatch,
) -> None:
    from importlib.metadata import EntryPoint

    plugin = EntryPoint("observer", "acme.pydantic_plugin:plugin", "pydantic")
    assert _read_once(monkeypatch, {"pydantic": [plugin]}, {})["plugins"] is None
    assert _read_once(monkeypatch, {}, {"PYDANTIC_DISABLE_PLUGINS": "observer"})["plugins"] == (
        "observer"
    )


def test_a_registry_already_built_is_kept(monkeypatch) -> None:
    from clampdown.core import actions

    built = actions.Registry({})
    monkeypatch.setattr(actions, "_registry", built)
    assert actions.registry_from([]) is built
