"""What a run's ledger says happened, as the reports show it: decisions, changes, evidence,
scoping results, inputs and the three measured times.

Both reports read the ledger through these functions, so an incident report
(:mod:`clampdown.core.incident_report`, every run) and a drill's after-action report
(:mod:`clampdown.core.report`) never disagree about a decision, a change or a hash.
Pure: records in, facts out; no file, network or provider is touched here.

Times are seconds after the run's clock origin ``t0`` (an epoch); see :class:`Times` for
what each measured time means.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

Record = Mapping[str, Any]

SCOPING_ACTIONS = frozenset(
    {"aws.forensics.scope_exfiltration", "aws.forensics.scope_inference_extraction"}
)
NOTIFYING_ACTIONS = frozenset({"slack.status"})
# fields of an undo record that are payloads (documents, policies as they were), not names
_PAYLOAD_HINTS = ("document", "before", "previous", "applied", "statement", "policy_json")


def epoch(ts: str) -> float:
    """An ISO timestamp of the ledger ("…Z") as seconds since the epoch."""
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def _at(record: Record, t0: float) -> float | None:
    ts = record.get("ts")
    return epoch(str(ts)) - t0 if ts else None


# --- decisions -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """One approve or deny as the run recorded it, counted or refused, with who and why."""

    step: str
    at: float | None
    approver: str  # the id the run authenticated (Slack user id, terminal key's principal)
    decision: str  # "approve" | "deny"
    reason: str = ""
    source: str = ""  # slack, terminal, ui
    accepted: bool = True
    refusal: str = ""
    name: str | None = None  # the person's name, when a directory knew it
    run: str = ""  # the runbook of the run, when a report covers several runs

    @property
    def who(self) -> str:
        """ "Sam Okafor (U0APPROVE1)" when the name is known, else the id."""
        return f"{self.name} ({self.approver})" if self.name else self.approver

    @property
    def denial(self) -> bool:
        return self.decision == "deny"


@dataclass(frozen=True)
class GateEnd:
    """How an approval request ended: approved, denied or timed out, and when."""

    step: str
    at: float | None
    outcome: str
    approvers: tuple[str, ...] = ()
    denied_by: str | None = None
    reason: str | None = None


def decisions(
    records: Iterable[Record], t0: float, names: Mapping[str, str] | None = None
) -> list[Decision]:
    """Every ``approval.decision`` of the ledger, in order, with names where known."""
    names = names or {}
    found = []
    for r in records:
        if r.get("type") != "approval.decision":
            continue
        who = str(r.get("approver") or "?")
        found.append(
            Decision(
                step=str(r.get("step") or "?"),
                at=_at(r, t0),
                approver=who,
                decision=str(r.get("decision") or "?"),
                reason=str(r.get("reason") or ""),
                source=str(r.get("source") or ""),
                accepted=bool(r.get("accepted", True)),
                refusal=str(r.get("refusal") or ""),
                name=names.get(who),
            )
        )
    return found


def gate_ends(records: Iterable[Record], t0: float) -> list[GateEnd]:
    """Every ``approval.end``: the outcome of each approval request."""
    return [
        GateEnd(
            step=str(r.get("step") or "?"),
            at=_at(r, t0),
            outcome=str(r.get("outcome") or "?"),
            approvers=tuple(r.get("approvers") or ()),
            denied_by=r.get("denied_by"),
            reason=r.get("reason"),
        )
        for r in records
        if r.get("type") == "approval.end"
    ]


def people(records: Iterable[Record]) -> list[str]:
    """Every person id the ledger names as deciding or starting: to look their names up."""
    found: dict[str, None] = {}
    for r in records:
        if r.get("type") == "approval.decision" and r.get("approver"):
            found[str(r["approver"])] = None
        if r.get("type") == "run.start":
            trigger = (r.get("run") or {}).get("trigger") or {}
            if trigger.get("user"):
                found[str(trigger["user"])] = None
    return list(found)


# --- changes and their rollback -----------------------------------------------------------


@dataclass(frozen=True)
class RollbackState:
    """Whether a change was put back: ``in place``, ``rolled back`` or ``rollback failed``."""

    state: str = "in place"
    rollback_id: str | None = None
    at: str | None = None
    error: str = ""

    @property
    def text(self) -> str:
        if self.state == "rolled back":
            return f"rolled back by run {self.rollback_id} at {self.at}"
        if self.state == "rollback failed":
            return f"still in place: rollback {self.rollback_id} failed: {self.error}"
        if self.state == "rollback started":
            return f"rollback {self.rollback_id} started, never finished"
        return "in place"


@dataclass(frozen=True)
class Change:
    """One change a step made, from its undo record: where (the names in it) and how to undo."""

    step: str
    uses: str
    at: float | None
    undo: str  # the undo record's description: how the change is put back
    op: str
    targets: tuple[tuple[str, str], ...]  # (field, value): which user, key, policy, bucket…
    failed_attempt: bool = False  # recorded by an attempt that then failed
    rollback: RollbackState = field(default_factory=RollbackState)

    @property
    def target_text(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.targets) or "—"


def _targets(how: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """The names in an undo record (user, key id, policy, bucket), not its saved documents."""
    found = []
    for key, value in how.items():
        if key in ("op", "description") or any(h in key for h in _PAYLOAD_HINTS):
            continue
        if isinstance(value, str | int | bool) and len(str(value)) <= 200:
            found.append((key, str(value)))
        elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            found.append((key, ", ".join(value)[:200]))
    return tuple(found)


def changes(
    records: Sequence[Record], t0: float, rollbacks: Sequence[Sequence[Record]] = ()
) -> list[Change]:
    """Every change the run recorded (``undo`` of ``step.end`` and ``step.attempt_failed``),
    in the order made, each with its rollback state from the rollback runs' ledgers."""
    uses_of: dict[str, str] = {}
    made: list[Change] = []
    for r in records:
        kind, step = r.get("type"), str(r.get("step") or "")
        if kind == "step.start":
            uses_of[step] = str(r.get("uses") or "")
        if kind not in ("step.end", "step.attempt_failed"):
            continue
        for entry in r.get("undo") or []:
            made.append(
                Change(
                    step=step,
                    uses=uses_of.get(step, str(r.get("uses") or "")),
                    at=_at(r, t0),
                    undo=str(entry.get("description") or ""),
                    op=str(entry.get("op") or ""),
                    targets=_targets(entry),
                    failed_attempt=kind == "step.attempt_failed",
                )
            )
    states = rollback_states(rollbacks)
    return [replace(c, rollback=states.get((c.step, c.undo), RollbackState())) for c in made]


def rollback_states(rollbacks: Sequence[Sequence[Record]]) -> dict[tuple[str, str], RollbackState]:
    """(step, undo description) -> what the rollback runs did with it; the latest run wins
    unless an earlier one already put it back."""
    states: dict[tuple[str, str], RollbackState] = {}
    for ledger in sorted(rollbacks, key=lambda recs: str(recs[0].get("ts", "")) if recs else ""):
        if not ledger:
            continue
        rollback_id = str(((ledger[0].get("run") or {}).get("id")) or "?")
        pending: dict[str, str] = {}  # step -> description of the undo started
        for r in ledger:
            if r.get("type") == "undo.start":
                key = (str(r.get("step")), str(r.get("description") or ""))
                pending[str(r.get("step"))] = key[1]
                if states.get(key, RollbackState()).state != "rolled back":
                    states[key] = RollbackState("rollback started", rollback_id, r.get("ts"))
            elif r.get("type") == "undo.end":
                step = str(r.get("step"))
                key = (step, pending.pop(step, ""))
                if states.get(key, RollbackState()).state == "rolled back":
                    continue
                if r.get("status") == "succeeded":
                    states[key] = RollbackState("rolled back", rollback_id, r.get("ts"))
                else:
                    states[key] = RollbackState(
                        "rollback failed", rollback_id, r.get("ts"), str(r.get("error") or "")
                    )
    return states


# --- evidence --------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvidenceItem:
    """One evidence object: full SHA-256, size, and (when known) version and retention."""

    key: str
    sha256: str
    size: int | None = None
    step: str = ""
    version_id: str | None = None
    lock_mode: str | None = None
    retain_until: str | None = None

    @classmethod
    def from_entry(cls, entry: Mapping[str, Any], step: str = "") -> EvidenceItem:
        size = entry.get("size")
        return cls(
            key=str(entry.get("key") or ""),
            sha256=str(entry.get("sha256") or ""),
            size=int(size) if isinstance(size, int | float) else None,
            step=step,
            version_id=entry.get("version_id"),
            lock_mode=entry.get("lock_mode") or entry.get("mode"),
            retain_until=entry.get("retain_until") or entry.get("locked_until"),
        )


def evidence(records: Iterable[Record]) -> tuple[list[EvidenceItem], str | None]:
    """The evidence objects the steps report (``objects``/``object`` with a ``sha256``) and
    the manifest URI (``run.end`` ``evidence``, else a step's ``manifest_uri``)."""
    items: dict[str, EvidenceItem] = {}
    manifest: str | None = None
    for r in records:
        if r.get("type") == "run.end" and r.get("evidence"):
            manifest = str(r["evidence"])
        if r.get("type") != "step.end":
            continue
        outputs = r.get("outputs") or {}
        manifest = manifest or outputs.get("manifest_uri")
        entries = list(outputs.get("objects") or [])
        if isinstance(outputs.get("object"), Mapping):
            entries.append(outputs["object"])
        for entry in entries:
            if isinstance(entry, Mapping) and entry.get("sha256") and entry.get("key"):
                items[str(entry["key"])] = EvidenceItem.from_entry(entry, str(r.get("step") or ""))
    return sorted(items.values(), key=lambda e: e.key), manifest


def merge_evidence(
    items: Sequence[EvidenceItem], manifest: Sequence[Mapping[str, Any]]
) -> list[EvidenceItem]:
    """The ledger's items completed with a manifest's entries (version ids, retention)."""
    by_key = {i.key: i for i in items}
    for entry in manifest:
        found = EvidenceItem.from_entry(entry)
        known = by_key.get(found.key)
        by_key[found.key] = EvidenceItem(
            key=found.key,
            sha256=found.sha256 or (known.sha256 if known else ""),
            size=found.size if found.size is not None else (known.size if known else None),
            step=known.step if known else "",
            version_id=found.version_id or (known.version_id if known else None),
            lock_mode=found.lock_mode or (known.lock_mode if known else None),
            retain_until=found.retain_until or (known.retain_until if known else None),
        )
    return sorted(by_key.values(), key=lambda e: e.key)


# --- scoping ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScopingResult:
    """What a scoping step found (``aws.forensics.scope_*``), read generically from its outputs."""

    step: str
    uses: str
    outputs: Mapping[str, Any]

    def _list(self, name: str) -> list[Mapping[str, Any]]:
        value = self.outputs.get(name) or []
        return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []

    @property
    def principal(self) -> str:
        return str(self.outputs.get("principal") or "—")

    @property
    def window(self) -> tuple[str, str]:
        return str(self.outputs.get("window_start") or "—"), str(
            self.outputs.get("window_end") or "—"
        )

    @property
    def objects(self) -> list[Mapping[str, Any]]:
        return self._list("objects")

    @property
    def models(self) -> list[Mapping[str, Any]]:
        return self._list("models")

    @property
    def totals(self) -> Mapping[str, Any]:
        value = self.outputs.get("totals")
        return value if isinstance(value, Mapping) else {}

    @property
    def management_events(self) -> list[Any]:
        value = self.outputs.get("management_events")
        return list(value) if isinstance(value, list) else []

    @property
    def blind_spots(self) -> list[Mapping[str, Any]]:
        return self._list("blind_spots")

    @property
    def confidence(self) -> str:
        return str(self.outputs.get("confidence") or "—")

    @property
    def confidence_reason(self) -> str:
        return str(self.outputs.get("confidence_reason") or "")

    @property
    def summary(self) -> str:
        return str(self.outputs.get("summary") or "")

    @property
    def truncated(self) -> str:
        """Said when the ledger holds only part of the objects list, and where the rest is."""
        total = self.outputs.get("objects_total")
        if not self.outputs.get("objects_truncated") and not (
            isinstance(total, int) and total > len(self.objects)
        ):
            return ""
        where = self.outputs.get("results_uri") or "the step's full results"
        return f"showing {len(self.objects)} of {total} objects; all of them are in {where}"

    @property
    def scan(self) -> str:
        """How the scope was computed: engine, trail, files and records read, the full result."""
        o = self.outputs
        parts = [
            f"{name} {o[key]}"
            for key, name in (
                ("engine", "engine"),
                ("trail", "trail"),
                ("files_scanned", "files scanned"),
                ("records_scanned", "records scanned"),
            )
            if o.get(key) not in (None, "")
        ]
        if o.get("linked_credentials"):
            parts.append("linked credentials " + ", ".join(map(str, o["linked_credentials"])))
        if o.get("results_uri"):
            digest = o.get("results_sha256")
            parts.append(
                f"full result {o['results_uri']}" + (f" (SHA-256 {digest})" if digest else "")
            )
        return "; ".join(parts)

    @property
    def sources(self) -> list[dict[str, Any]]:
        """Which sources the scope read, how much of each, and the object reads each saw
        (a read seen in both counts in both rows). Empty for outputs that do not say
        (another scoping action): the report shows what the step recorded, nothing more."""
        o = self.outputs
        if "files_scanned" not in o and "access_log_locations" not in o:
            return []
        by = self.totals.get("reads_by_source")
        by = by if isinstance(by, Mapping) else {}

        def reads(*keys: str) -> Any:
            values = [by.get(k) for k in keys]
            return sum(values) if all(isinstance(v, int) for v in values) else "—"

        engine = str(o.get("engine") or "")
        trail = str(o.get("trail") or "—")
        rows: list[dict[str, Any]] = [
            {
                "source": "CloudTrail (S3 data and management events)",
                "read from": f"Athena table over {trail}" if engine == "athena" else trail,
                "files": o.get("files_scanned", "—") if engine != "athena" else "— (Athena)",
                "records": o.get("records_scanned", "—") if engine != "athena" else "— (Athena)",
                "object reads seen": reads("cloudtrail_only", "both"),
            }
        ]
        locations = o.get("access_log_locations")
        if isinstance(locations, list) and locations:
            rows.append(
                {
                    "source": "S3 server access logs",
                    "read from": ", ".join(map(str, locations)),
                    "files": o.get("access_log_files_scanned", "—"),
                    "records": o.get("access_log_records_scanned", "—"),
                    "object reads seen": reads("access_log_only", "both"),
                }
            )
        elif "access_log_locations" in o:
            rows.append(
                {
                    "source": "S3 server access logs",
                    "read from": "not read: no location (none in access_logs; none found by "
                    "GetBucketLogging, or discovery turned off)",
                    "files": 0,
                    "records": 0,
                    "object reads seen": "—",
                }
            )
        return rows

    @property
    def other_tables(self) -> dict[str, list[Mapping[str, Any]]]:
        """Lists of records the report knows no name for (e.g. callers of an inference API)."""
        known = {"objects", "models", "blind_spots", "management_events"}
        return {
            name: self._list(name)
            for name, value in self.outputs.items()
            if name not in known and isinstance(value, list) and self._list(name)
        }


def scoping(records: Iterable[Record]) -> list[ScopingResult]:
    """The outputs of every scoping step that ended (by action, or by the outputs' shape)."""
    uses_of: dict[str, str] = {}
    found = []
    for r in records:
        step = str(r.get("step") or "")
        if r.get("type") == "step.start":
            uses_of[step] = str(r.get("uses") or "")
        if r.get("type") != "step.end" or r.get("status") != "succeeded":
            continue
        outputs = r.get("outputs") or {}
        uses = uses_of.get(step, "")
        if uses in SCOPING_ACTIONS or ("blind_spots" in outputs and "totals" in outputs):
            found.append(ScopingResult(step, uses, outputs))
    return found


# --- times -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Times:
    """The three measured times, in seconds after the clock's origin (None: not measured).

    * ``notify``: the first moment the ledger shows responders were told: the Slack
      observer's ``slack.posted`` record (the run's thread was posted) or the end of the
      first ``slack.status`` step that succeeded.
    * ``approve``: the first ``approval.end`` whose outcome is ``approved`` (a person's
      decision reached quorum). Denials and timeouts are not approvals: a denial is kept
      apart as ``denied``.
    * ``contain``: the end of the last containment step (a destructive action that is not
      an approval gate) that succeeded; None when a containment step failed or none ran.
    """

    notify: float | None = None
    approve: float | None = None
    contain: float | None = None
    denied: float | None = None


def measured_times(records: Sequence[Record], t0: float, containment: Iterable[str] = ()) -> Times:
    """The three times (:class:`Times`) of one run's ledger."""
    contain_uses = set(containment)
    uses_of: dict[str, str] = {}
    notify: float | None = None
    approve: float | None = None
    denied: float | None = None
    contained: list[float] = []
    broken = False
    for r in records:
        kind, at = r.get("type"), _at(r, t0)
        step = str(r.get("step") or "")
        if kind == "step.start":
            uses_of[step] = str(r.get("uses") or "")
        elif kind == "slack.posted" and at is not None:
            notify = at if notify is None else min(notify, at)
        elif kind == "approval.end" and at is not None:
            if r.get("outcome") == "approved" and approve is None:
                approve = at
            elif r.get("outcome") == "denied" and denied is None:
                denied = at
        elif kind == "step.end" and at is not None:
            uses = uses_of.get(step, str(r.get("uses") or ""))
            ok = r.get("status") == "succeeded"
            if uses in NOTIFYING_ACTIONS and ok:
                notify = at if notify is None else min(notify, at)
            if uses in contain_uses:
                if ok:
                    contained.append(at)
                elif r.get("status") == "failed":
                    broken = True
    contain = max(contained) if contained and not broken else None
    return Times(notify=notify, approve=approve, contain=contain, denied=denied)


def run_start(records: Sequence[Record]) -> Record:
    """The ``run.start`` record (empty when the ledger has none)."""
    return next((r for r in records if r.get("type") == "run.start"), {})


def run_end(records: Sequence[Record]) -> Record | None:
    """The ``run.end`` record (alerts may join after it, so not always the last)."""
    return next((r for r in reversed(records) if r.get("type") == "run.end"), None)


def inputs(records: Sequence[Record]) -> dict[str, Any]:
    """The inputs the run got, as recorded (secret ones are masked by the ledger)."""
    return dict(run_start(records).get("inputs") or {})
