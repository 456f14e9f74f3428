"""``clampdown serve``'s own log: refusals, held alerts and start failures stay visible.

Why this is needed: serve keeps Prefect's console handler at CRITICAL (its "Beginning
flow run" lines are not serve's business), and Prefect configures logging the first
time a flow run imports it. That full configuration puts the CRITICAL console handler
on the root logger (so clampdown's loggers, which have no handler of their own, lose
Python's last-resort output of warnings) and resets uvicorn's ``uvicorn.error`` and
``uvicorn.access`` loggers (children of the ``uvicorn`` logger it names: their handlers
are dropped). After the first run serve logged nothing: not a refused alert, not a
held one, not a run that could not start.

So, before uvicorn starts:

* Prefect's logging is configured now (``ensure_logging_setup``), once and in full; a
  later call (a flow run's) is incremental and only changes levels — as long as nothing
  else applies a ``dictConfig`` meanwhile, since that empties the registry of named
  handlers Prefect's incremental update looks its own up in, and Prefect then falls
  back to a full configuration. uvicorn applies one by default, so ``serve`` starts it
  with ``log_config=None`` and its loggers are set up here;
* ``clampdown`` (every clampdown logger is below it: ``clampdown.serve``,
  ``clampdown.alerts``, ``clampdown.triage``, ``clampdown.slack``…), ``uvicorn.error``
  and ``uvicorn.access`` get a handler of serve's own on stderr at INFO and do not
  propagate (the root's CRITICAL console handler would print nothing, an operator's root
  handler would print them twice). Prefect never names ``clampdown`` in its
  configuration, so nothing it does later removes that one.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from typing import TextIO

SERVE_LOGGERS = ("clampdown", "uvicorn.error", "uvicorn.access")
FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class ServeLogHandler(logging.StreamHandler):
    """serve's handler: a class of its own, so it is told apart from Prefect's and uvicorn's."""


@dataclass
class ServeLogging:
    """What :func:`configure` changed, so :meth:`close` can put it back (tests, a second serve)."""

    handler: ServeLogHandler
    before: dict[str, tuple[int, bool]]  # logger name -> (level, propagate)

    def __enter__(self) -> ServeLogging:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        for name, (level, propagate) in self.before.items():
            logger = logging.getLogger(name)
            logger.removeHandler(self.handler)
            logger.setLevel(level)
            logger.propagate = propagate
        self.handler.close()


def configure(level: int = logging.INFO, stream: TextIO | None = None) -> ServeLogging:
    """Set up serve's log before uvicorn starts (see the module's docstring for why).

    ``stream``: where the lines go (default stderr, read when called).
    """
    from prefect.logging.configuration import ensure_logging_setup

    ensure_logging_setup()  # Prefect's full configuration now, not after ours
    handler = ServeLogHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    before = {}
    for name in SERVE_LOGGERS:
        logger = logging.getLogger(name)
        before[name] = (logger.level, logger.propagate)
        logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False
    return ServeLogging(handler, before)
