"""The one shape every alert takes, whatever sent it, so triggers match a single model.

Parsers in :mod:`clampdown_alerts` turn a GuardDuty finding, an EventBridge
event, an SNS-delivered CloudWatch alarm, an Alertmanager alert, a PagerDuty
incident or a generic JSON body into an :class:`Alert`; trigger expressions see it
as ``alert`` (``alert.principal``, ``alert.raw.detail.type`` …).
"""

# No __future__ annotations: pydantic then reads each field's type as written instead of
# compiling its text at class creation (a ForwardRef per field; lint imports this module).

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Severity = Literal["low", "medium", "high", "critical"]
SEVERITY_ORDER: dict[str, int] = {"low": 0, "medium": 1, "high": 2, "critical": 3}

Source = Literal["guardduty", "eventbridge", "sns", "alertmanager", "pagerduty", "generic"]


class Alert(BaseModel):
    """A normalised alert. ``raw`` keeps the source's payload for anything not lifted out."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: Source
    id: str = Field(description="the source's own id for this alert (finding id, event id …)")
    type: str = Field(
        "",
        description="what kind of alert: GuardDuty finding type, CloudTrail eventName, "
        "alarm name, Alertmanager alertname, PagerDuty event type",
    )
    title: str
    severity: Severity = "medium"
    account: str | None = None
    region: str | None = None
    principal: str | None = Field(None, description="ARN of the suspect principal, when known")
    resources: list[str] = Field(default_factory=list, description="ARNs or names involved")
    observed_at: datetime
    raw: dict[str, Any] = Field(default_factory=dict)

    def at_least(self, severity: str) -> bool:
        return SEVERITY_ORDER[self.severity] >= SEVERITY_ORDER[severity]
