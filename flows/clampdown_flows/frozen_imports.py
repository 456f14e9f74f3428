"""Big imports without Python's cyclic collector, then frozen out of its reach.

A command that runs a flow imports Prefect and the flows (some 1,500 modules), the local
API Prefect's server side (some 2,500): a few hundred thousand objects that live as long
as the process. Each full pass of the collector walks all of them, and the imports
themselves set off many passes — about a tenth of their CPU time, for cycles that are not
garbage. ``gc.freeze()`` moves them to the permanent generation, so later collections walk
only what the process allocates afterwards. The collector stays on for the work itself.
Kept free of Prefect imports: it wraps them.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def imports_frozen() -> Iterator[None]:
    """Collector off inside the block; at its end (also on an error) everything alive
    frozen and the collector back as it was (a collector that was off stays off)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()
