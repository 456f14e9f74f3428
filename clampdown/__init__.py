"""clampdown: incident-response runbooks for suspected AI model theft.

The core (this package) knows runbooks, expressions, the action registry, the
planner, lint and the ledger. It never imports a provider: actions register
themselves through the ``clampdown.actions`` entry-point group, and the Prefect
executor lives in ``flows/``.
"""

__version__ = "0.1.0"
