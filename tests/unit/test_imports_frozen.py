"""The cyclic collector around a command's Prefect imports (issue 15): off while they run,
then everything alive frozen and the collector back as it was, even when the block fails."""

from __future__ import annotations

import gc

import pytest

from clampdown_flows.frozen_imports import imports_frozen

pytestmark = pytest.mark.usefixtures("collector")  # tests/unit/conftest.py


def test_collector_off_inside_then_on_with_the_imports_frozen() -> None:
    gc.enable()
    gc.unfreeze()
    with imports_frozen():
        assert not gc.isenabled()
        made = [[] for _ in range(1000)]
    assert gc.isenabled()
    assert gc.get_freeze_count() >= len(made)


def test_a_collector_that_was_off_stays_off() -> None:
    gc.disable()
    with imports_frozen():
        pass
    assert not gc.isenabled()


def test_the_collector_comes_back_when_the_imports_fail() -> None:
    gc.enable()
    with pytest.raises(ImportError), imports_frozen():
        raise ImportError("no such flow module")
    assert gc.isenabled()
