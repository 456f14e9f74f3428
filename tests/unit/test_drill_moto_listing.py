"""The drill's moto server lists moto's services once, not on every request; what it
prints after the seed's answer goes to its log.

moto's dispatcher asks ``moto.backends.list_of_moto_modules`` (a listing of moto's own
package folder) for each request, inside the lock that serialises its dispatch; the drill
replaces it with the listing made once. Same answer, no more listing of the folder.
"""

from __future__ import annotations

import os

import pytest
from moto import backends

from clampdown.app.drill import moto_process


def test_moto_services_are_listed_once_with_the_same_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # moto's own function, even when a drill earlier in this process replaced it
    original = getattr(backends.list_of_moto_modules, "__wrapped__", backends.list_of_moto_modules)
    monkeypatch.setattr(backends, "list_of_moto_modules", original)  # restored afterwards
    expected = list(original())
    assert "s3" in expected and "iam" in expected

    moto_process.list_moto_modules_once()
    listed = backends.list_of_moto_modules
    assert listed is not original and list(listed()) == expected

    def no_listing(path: str) -> list[str]:
        raise AssertionError(f"moto's folder listed again: {path}")

    monkeypatch.setattr(os, "listdir", no_listing)
    assert list(backends.list_of_moto_modules()) == expected  # from the one listing
    moto_process.list_moto_modules_once()  # a second drill in the process: nothing changes
    assert backends.list_of_moto_modules is listed


def test_after_the_seed_answer_moto_output_goes_to_its_log_not_the_unread_pipe(
    tmp_path, monkeypatch
) -> None:
    """The drill reads moto's standard output only for the seed's answer: what moto prints
    afterwards must not fill that pipe (a full pipe blocks the printing thread)."""
    import io

    log = (tmp_path / "moto.log").open("w")
    monkeypatch.setattr(moto_process.sys, "stderr", log)
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)  # a write into a full pipe raises instead of hanging
    stdout = os.fdopen(write_end, "w")
    try:
        moto_process._answer_seed(io.StringIO(""), stdout)  # the drill sent no seed
        stdout.write("x" * 300_000)  # several pipes' worth
        stdout.flush()
    finally:
        stdout.close()
        log.close()
    os.set_blocking(read_end, False)
    try:
        assert os.read(read_end, 1) == b""  # nothing reached the pipe (its writer is closed)
    finally:
        os.close(read_end)
    assert (tmp_path / "moto.log").read_text() == "x" * 300_000
