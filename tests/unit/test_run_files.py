"""RunFiles without a run store (local mode): write, read, names, remove and materialize
are the run folder's files, as they always were; the setting that selects the store."""

from __future__ import annotations

from pathlib import Path

import pytest

from clampdown.core.diagnostics import ClampdownError
from clampdown.core.home import Home
from clampdown.core.settings import Settings, settings


def test_run_files_are_the_folder_without_a_store(tmp_path: Path) -> None:
    files = Home(tmp_path).run("r1")
    assert files.store is None and files.ledger_primary is None
    assert files.read("start.json") is None
    files.write("start.json", '{"run_id": "r1"}', durable=True)
    files.write("decisions/b.json", "{}")
    files.write("decisions/a.json", "{}")
    files.write("approvals/.key", "00" * 32)
    assert (tmp_path / "runs" / "r1" / "start.json").read_text() == '{"run_id": "r1"}'
    assert (tmp_path / "runs" / "r1" / "start.json").stat().st_mode & 0o777 == 0o600
    assert files.read("start.json") == '{"run_id": "r1"}'
    assert sorted(files.names("decisions")) == ["a.json", "b.json"]
    assert files.names("approvals") == []  # the key is not a request
    assert files.names("nothing-here") == []
    files.remove("decisions/a.json")
    files.remove("decisions/never-there.json")
    assert files.names("decisions") == ["b.json"]
    assert files.materialize() is files  # nothing to bring from anywhere


def test_the_default_is_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CLAMPDOWN_RUN_STORE", raising=False)
    conf = Settings(home=tmp_path)
    assert conf.run_store == "files" and conf.shared_run_store() is None
    assert conf.paths.store is None


@pytest.mark.parametrize("url", [None, "sqlite:////tmp/state.sqlite3", "not a url"])
def test_the_postgresql_run_store_needs_a_postgresql_url(
    url: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLAMPDOWN_RUN_STORE", "postgresql")
    if url is None:
        monkeypatch.delenv("CLAMPDOWN_STATE_URL", raising=False)
    else:
        monkeypatch.setenv("CLAMPDOWN_STATE_URL", url)
    with pytest.raises(ClampdownError) as caught:
        settings()
    assert "CLAMPDOWN_RUN_STORE" in caught.value.message
    assert "CLAMPDOWN_STATE_URL=postgresql://" in caught.value.message
    assert "tmp/state" not in caught.value.message  # the value is never echoed


def test_an_unknown_run_store_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLAMPDOWN_RUN_STORE", "nfs")
    with pytest.raises(ClampdownError) as caught:
        settings()
    assert "CLAMPDOWN_RUN_STORE" in caught.value.message and "nfs" not in caught.value.message


def test_a_drill_never_uses_the_shared_run_store(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """An operator's CLAMPDOWN_RUN_STORE must not send a drill's runs to production's
    database (where production workers would continue them)."""
    import os

    from clampdown.app.drill.world import Secrets, drill_environment
    from clampdown.core.drill_library import load_drill, resolve_drill
    from tests.paths import REPO

    drill, _ = load_drill(resolve_drill(None, REPO / "runbooks"))
    monkeypatch.setenv("CLAMPDOWN_RUN_STORE", "postgresql")
    with drill_environment(
        drill,
        tmp_path,
        Secrets(),
        aws_endpoint="http://127.0.0.1:5000",
        slack_url=None,
        allowed_signers=tmp_path.parent / "signers" / "allowed_signers",
    ):
        assert "CLAMPDOWN_RUN_STORE" not in os.environ
    assert os.environ["CLAMPDOWN_RUN_STORE"] == "postgresql"


def test_a_stopped_run_is_continued_from_its_start_record_or_its_ledger(tmp_path: Path) -> None:
    from clampdown.core.run_start import RunStart, continuation

    files = Home(tmp_path).run("r1")
    # no start record (an older run): resumed from its ledger, named by its id
    assert continuation(files) == ("r1", None, {"resume": True})
    trigger = {"type": "alert", "source": "generic"}
    RunStart.of("r1", "contain.yaml", {"user": "u"}, trigger, library="/lib").save(files)
    # died before its first ledger record: started afresh from the start record
    assert continuation(files) == (
        "contain.yaml",
        {"user": "u"},
        {"trigger": trigger, "library": "/lib", "drill": False},
    )
    files.ledger.write_text('{"type": "run.start"}\n')
    # it has a ledger: resumed from it (the ledger holds its inputs)
    assert continuation(files) == ("contain.yaml", None, {"resume": True})
