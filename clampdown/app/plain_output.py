"""Whether Rich would print text to stdout unchanged now.

Lint prints its report without Rich when Rich would print the same bytes
(:mod:`clampdown.app.cli_lint`), and only such output is kept and replayed by lint's
verdict cache (:mod:`clampdown.app.lint_cache`), which must decide it before importing
anything else: so this test lives apart, with nothing but ``os`` and ``sys``.
"""

from __future__ import annotations

import os
import sys


def as_is() -> bool:
    """Whether Rich would print text unchanged to stdout now: not to a terminal (no
    colours; FORCE_COLOR and TTY_COMPATIBLE as Rich reads them), not in Jupyter."""
    if "ipykernel" in sys.modules:
        return False
    compatible = os.environ.get("TTY_COMPATIBLE", "")
    if compatible in ("0", "1"):
        return compatible == "0"
    if "FORCE_COLOR" in os.environ:
        return os.environ["FORCE_COLOR"] == ""
    isatty = getattr(sys.stdout, "isatty", None)
    try:
        return isatty is not None and not isatty()
    except ValueError:  # closed: Rich does not call it a terminal either
        return True
