"""clampdown: incident-response runbooks for suspected AI model theft.

The core (this package) knows runbooks, expressions, the action registry, the
planner, lint and the ledger. It never imports a provider: actions register
themselves through the ``clampdown.actions`` entry-point group, the Prefect
adapters live in ``clampdown_flows`` (folder ``flows/``) and the application layer that
wires everything is ``clampdown.app``.
"""

__version__ = "0.1.0"  # the release; tests/unit/test_packaging.py keeps it equal to pyproject's
