"""The shipped runbook library (YAML), installed as package data ``clampdown_runbooks``.

Nothing here is code: this file only lets the wheel carry the library, so an installed
clampdown finds it without a checkout (see ``clampdown.library_location``).
"""
