"""What the seed of a drill made: the facts alert payloads and objectives refer to."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Seeded:
    """What the seed made: names, ARNs and key ids that payloads and objectives use."""

    account: str
    region: str
    evidence_bucket: str
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    roles: dict[str, dict[str, Any]] = field(default_factory=dict)
    buckets: dict[str, dict[str, Any]] = field(default_factory=dict)
    endpoints: dict[str, dict[str, Any]] = field(default_factory=dict)
    kms_keys: dict[str, dict[str, Any]] = field(default_factory=dict)
    secrets: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The AWSCURRENT version each secret was seeded with (objectives compare with it).
    secret_versions: dict[str, str] = field(default_factory=dict)
    trail_records: list[dict[str, Any]] = field(default_factory=list)
    trail_objects: list[str] = field(default_factory=list)
    log_events: int = 0
    # Session credentials of seeded roles (the attacker's stolen ones); never printed.
    session_credentials: dict[str, dict[str, str]] = field(default_factory=dict, repr=False)

    def context(self) -> dict[str, Any]:
        """The ``seed`` name of alert payload placeholders."""
        return {
            "account": self.account,
            "region": self.region,
            "evidence_bucket": self.evidence_bucket,
            "users": self.users,
            "roles": self.roles,
            "buckets": self.buckets,
            "endpoints": self.endpoints,
            "kms_keys": self.kms_keys,
            "secrets": self.secrets,
        }

    def principal_arn(self, name: str) -> str | None:
        if name in self.users:
            return str(self.users[name]["arn"])
        if name in self.roles:
            return str(self.roles[name]["arn"])
        return None
