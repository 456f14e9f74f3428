"""Plug-ins through entry points: clampdown's own are registered, and a broken or missing
one is said loudly without stopping the run."""

from __future__ import annotations

import logging
from importlib.metadata import EntryPoint, EntryPoints

import pytest

from clampdown.core import extensions, installed


@pytest.fixture(autouse=True)
def _fresh_lookup():
    extensions.factories.cache_clear()
    yield
    extensions.factories.cache_clear()


@pytest.mark.parametrize(
    ("group", "name"),
    [
        (extensions.RUN_OBSERVERS, "slack"),
        (extensions.EVIDENCE_SINKS, "s3"),
        (extensions.MEMBER_DIRECTORIES, "slack"),
    ],
)
def test_clampdown_registers_its_own_plug_ins(group: str, name: str) -> None:
    names = [ep.name for ep in extensions.installed_entry_points().select(group=group)]
    assert name in names
    assert extensions.factories(group)


def test_a_plug_in_that_cannot_be_imported_is_left_out_and_logged(monkeypatch, caplog) -> None:
    broken = EntryPoint("pager", "no_such_module_for_clampdown:factory", "clampdown.run_observers")
    fine = EntryPoint("ok", "builtins:len", "clampdown.run_observers")
    monkeypatch.setattr(extensions, "installed_entry_points", lambda: EntryPoints([broken, fine]))
    with caplog.at_level(logging.ERROR, logger="clampdown.extensions"):
        found = extensions.factories(extensions.RUN_OBSERVERS)
    assert found == [len]
    assert "'pager'" in caplog.text and "no_such_module_for_clampdown" in caplog.text
    assert "runs go on without it" in caplog.text


def test_an_empty_group_says_the_install_is_stale(monkeypatch, caplog) -> None:
    monkeypatch.setattr(extensions, "installed_entry_points", lambda: EntryPoints([]))
    with caplog.at_level(logging.WARNING, logger="clampdown.extensions"):
        assert extensions.factories(extensions.EVIDENCE_SINKS) == []
    assert (
        "no plug-in registered under clampdown.evidence_sinks: reinstall clampdown" in caplog.text
    )


def test_a_process_reads_the_installed_entry_points_once_for_every_group(monkeypatch) -> None:
    """A run asks for its actions and three plug-in groups: one reading of the installed
    distributions' metadata serves them all."""
    from clampdown.core import actions

    readings: list[str] = []
    real = installed.entry_points

    def counted(**selection: str) -> EntryPoints:
        readings.append(repr(selection))
        return real(**selection)

    monkeypatch.setattr(installed, "entry_points", counted)
    installed.installed_entry_points.cache_clear()
    try:
        for group in (
            extensions.RUN_OBSERVERS,
            extensions.EVIDENCE_SINKS,
            extensions.LEDGER_SIGNERS,
        ):
            assert extensions.factories(group)
        assert "aws.iam.revoke_credentials" in actions.Registry().names()
    finally:
        installed.installed_entry_points.cache_clear()
    assert readings == ["{}"]
