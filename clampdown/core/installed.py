"""The installed distributions' entry points, read once per process.

Actions (``clampdown.actions``) and plug-ins (:mod:`clampdown.core.extensions`) are found
through entry points. One reading of them opens the metadata of every installed
distribution (~11 ms of CPU on the 2-core reference machine) whichever group is asked
for, and a run asks for four (its actions, observers, evidence sinks and ledger signers):
read group by group, ~40 ms. A package installed while a process runs is not seen by that
process, as before (each group was read once per process).
"""

from __future__ import annotations

import functools
from importlib.metadata import EntryPoints, entry_points


@functools.cache
def installed_entry_points() -> EntryPoints:
    """Every installed distribution's entry points (read on the first call)."""
    return entry_points()
