"""What the drill's end and its runs' next steps will load, loaded while it waits for its
approver.

A scripted approver decides seconds after the card (model-theft: 5 s). The drill's process
has nothing to do meanwhile: the run's first steps are done, the run waits for the click.
What comes after the click is on the drill's clock, and it loaded things on first use: the
runs' next steps the modules their actions import when they run (the exfiltration scope's
DuckDB: ~0.2 CPU-s, after the approval), the scoring its modules and the clients of the AWS
services its objectives read (a client's first botocore model, 20-100 ms; the run's
containment step reads the same IAM model). :class:`IdleWarmup` loads them in that wait,
once per drill, beginning :data:`LEAD` s before the decision is due (the run's first steps,
which take the first second or so after the card, are over then) and only when there is
that much time (an approval decided at once, or at the terminal, gets no warm-up).

It changes nothing a drill does or scores: a module imported or a client made earlier is
the same module and client; anything that fails here is left to fail where it is used.
"""

from __future__ import annotations

import contextlib
import importlib
import threading
import time
from typing import TYPE_CHECKING

from clampdown.core.diagnostics import ClampdownError

if TYPE_CHECKING:
    from clampdown.app.drill.session import DrillSession

LEAD = 2.0  # seconds before a scripted decision is due when the warm-up begins

ON_FIRST_USE: dict[str, tuple[str, ...]] = {
    "aws.forensics.scope_exfiltration": ("clampdown_aws.forensics.scope",),
}
"""Action name -> the modules its ``apply`` imports on first use (kept off the import of
the action: lint and plan never need them), where that costs a tenth of a second or more."""

SCORING = ("clampdown.app.drill.objectives", "clampdown_aws.evidence_package")
"""The scoring's own modules, imported when it begins."""


class IdleWarmup:
    """Loads, once, what the story's end will need (module docstring); see :meth:`pending`."""

    def __init__(self, session: DrillSession) -> None:
        self._session = session
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def pending(self, due: float) -> None:
        """A scripted decision is due at ``due`` (epoch seconds): warm up from :data:`LEAD`
        s before it, if the drill has not yet and there is that much time left."""
        with self._lock:
            if self._thread is not None or due - time.time() < LEAD:
                return
            self._thread = threading.Thread(
                target=self._warm, args=(due - LEAD,), name="drill-warmup", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        """The story is over: a warm-up not begun is dropped; one under way finishes."""
        self._stop.set()
        with self._lock:
            thread = self._thread
        if thread is not None:
            thread.join()

    def modules(self) -> list[str]:
        """What the runbook's actions import on first use, then the scoring's modules."""
        from clampdown.core.loader import load, resolve

        session = self._session
        try:
            runbook = load(resolve(session.drill.runbook, session.library)).model
        except ClampdownError:
            return list(SCORING)
        uses = dict.fromkeys(step.uses for step in runbook.steps)
        return [m for name in uses for m in ON_FIRST_USE.get(name, ())] + list(SCORING)

    def services(self) -> list[str]:
        """The AWS services the drill's objectives read."""
        from clampdown.app.drill.objectives_aws import services_read

        return services_read(self._session.drill.objectives)

    def _warm(self, begin: float) -> None:
        if self._stop.wait(max(0.0, begin - time.time())):
            return
        for module in self.modules():
            with contextlib.suppress(Exception):
                importlib.import_module(module)
        for service in self.services():
            with contextlib.suppress(Exception):
                self._session.client(service)
