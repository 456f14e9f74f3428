"""The runbook a starter in this process already loaded, handed to the run it starts.

serve's triage loads and checks a runbook (parse, schema, lint rules) before it decides
that an alert starts a run; before this hand-off the starter loaded it again to protect
the inputs, and ``respond`` a third time when the run began (about 1-3 ms of CPU each,
paid by every alert of a burst while the runs compete for the same interpreter: issue
15). The starter puts what the triage loaded into the run's context, and
``respond`` uses it when it names the same file.

Why a context variable and not a flow parameter: Prefect records every parameter of a
flow run (serialised, sent to its API); a runbook model is neither small nor meant for
that record. The variable is set only in the context copy that one run's task starts
from (:class:`clampdown.app.local_runs.InProcessStarter`), so runs never see each
other's, and nothing is left behind in the process. A run started any other way (a
deployment run on a worker, ``clampdown run``, a resumed run) finds nothing here and
loads the runbook from its parameters, as before.

The starter may also hand the run a callback, :data:`RUN_STARTED`, which ``respond`` calls
once the run's ``run.start`` record is durable: serve's triage launches its waiting runs a
few at a time, the next one when one reached ``run.start``, and is told so instead of
looking at the runs' ledgers every few milliseconds (``Launcher`` in
:mod:`clampdown_flows.triage`).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clampdown.core.models import Runbook


@dataclass(frozen=True)
class Preloaded:
    """A runbook as loaded and checked (no errors) from ``path``, whose bytes then had
    SHA-256 ``digest`` (what ``run.start`` records of the file)."""

    path: str
    model: Runbook
    digest: str


PRELOADED: ContextVar[Preloaded | None] = ContextVar("clampdown_preloaded_runbook", default=None)
RUN_STARTED: ContextVar[Callable[[], None] | None] = ContextVar(
    "clampdown_run_started", default=None
)


def tell_started() -> None:
    """Call the run's :data:`RUN_STARTED` callback, if its starter gave one (once its
    ``run.start`` is durable). A callback that fails is logged: the run goes on."""
    callback = RUN_STARTED.get()
    if callback is None:
        return
    try:
        callback()
    except Exception:
        logging.getLogger("clampdown.run").exception("the run's starter could not be told")


def preloaded_for(path: str | Path) -> Preloaded | None:
    """What the starter loaded, when it is the runbook at ``path`` (else None: load it)."""
    found = PRELOADED.get()
    if found is None or found.path != str(path):
        return None
    return found


def load_runbook(path: str | Path) -> tuple[Any, list[Any]]:
    """:func:`clampdown.core.lint.load_runbook`, imported when a run loads its runbook
    itself: a run its starter handed a checked runbook never needs lint's modules."""
    from clampdown.core.lint import load_runbook as load_and_lint

    return load_and_lint(path)


def load_checked(path: str | Path) -> Preloaded:
    """Load ``path`` and check it as ``respond`` does before a run (any error is a
    :class:`~clampdown.core.diagnostics.ClampdownError`), with its bytes' digest."""
    loaded, _warnings = load_runbook(path)
    return Preloaded(str(path), loaded.model, hashlib.sha256(Path(path).read_bytes()).hexdigest())
