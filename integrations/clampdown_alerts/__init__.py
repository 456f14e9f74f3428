"""Inbound alerts for ``clampdown serve``: authenticate, parse, normalise into :class:`Alert`.

One module per concern, so each can be read (and audited) on its own:

* :mod:`.settings` — ``CLAMPDOWN_*`` secrets, allow-lists and limits.
* :mod:`.signatures` — bearer, PagerDuty v3, generic HMAC and SNS message signatures.
* :mod:`.replay` — timestamp window and the :class:`DeliveryLog` of seen delivery ids.
* :mod:`.sources` — one parser per source, payload -> ``list[Alert]``.
* :mod:`.outcome` — what the triage answers (:class:`TriageOutcome`).
* :mod:`.routes` — ``alert_router(...)``: the ``POST /alerts/<source>`` endpoints.
"""

from __future__ import annotations

from clampdown_alerts.outcome import AlertTriage, TriageOutcome
from clampdown_alerts.replay import DeliveryLog, InMemoryDeliveryLog
from clampdown_alerts.routes import alert_router
from clampdown_alerts.settings import AlertSettings

__all__ = [
    "AlertSettings",
    "AlertTriage",
    "DeliveryLog",
    "InMemoryDeliveryLog",
    "TriageOutcome",
    "alert_router",
]
