"""A state store that cannot be opened is a clear error (serve on a read-only or broken
home said it with a SQLAlchemy traceback)."""

from __future__ import annotations

from pathlib import Path

import pytest

from clampdown.core.diagnostics import ClampdownError
from clampdown.core.state_store import StateStore


def test_an_unopenable_sqlite_store_says_what_to_do(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the home's folder should be")
    with pytest.raises(ClampdownError, match="state store \\(sqlite\\) cannot be opened") as err:
        StateStore(f"sqlite:///{blocker}/state.sqlite3")
    assert "writable" in err.value.hint
