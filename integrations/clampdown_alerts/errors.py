"""Why an alert request is refused, with the HTTP status that says so.

Every check raises one of these with a short reason the sender can act on; the
route turns it into ``{"error": reason}``. Reasons never echo a secret or the body.
"""

from __future__ import annotations


class AlertRejected(Exception):
    """A request that starts nothing. ``status`` is the HTTP status to answer with."""

    status = 400

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Malformed(AlertRejected):
    """Not JSON, the wrong shape, or a required field missing (400)."""

    status = 400


class Unauthenticated(AlertRejected):
    """No valid credential or signature, or a message outside the replay window (401)."""

    status = 401


class Replayed(AlertRejected):
    """A delivery id already received inside the replay window (409)."""

    status = 409


class TooLarge(AlertRejected):
    """A body over ``CLAMPDOWN_MAX_ALERT_BYTES`` (413)."""

    status = 413


class NotConfigured(AlertRejected):
    """The endpoint's secret is not set on the server: nothing can be authenticated (503)."""

    status = 503


class Unavailable(AlertRejected):
    """clampdown cannot record the delivery now (its state store refuses writes: a full or
    read-only disk, the database down). Nothing was recorded; the sender retries (503)."""

    status = 503
    retry_after = 30  # seconds, sent as Retry-After


class UpstreamFailed(AlertRejected):
    """A call clampdown had to make (SNS subscription confirmation) failed (502)."""

    status = 502
