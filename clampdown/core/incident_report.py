"""The incident report of one run, real or drill, built from the run's ledger alone.

After containment the CISO, counsel and the customer ask the same things: what
happened when, who decided what and why, what exactly was changed (and is it still in
place), what evidence was kept (full hashes, versions, retention), what was taken
(the scoping steps' results and their blind spots), and how long notifying, approving
and containing took. The ledger holds all of it; this module turns one ledger (plus
the ledgers of the rollbacks of that run, for the rollback state of each change)
into an :class:`IncidentReport`. Its renderings are
:mod:`clampdown.core.incident_report_render` (Markdown, self-contained HTML, JSON).

Pure except :func:`load_incident_report`, which reads the ledgers from a
:class:`~clampdown.core.home.Home` and asks the action registry which actions contain.
Names of people come from the caller (``names``: id -> name); an id without a name is
shown as the id.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from clampdown.core.ledger import ChainCheck, verify_lines
from clampdown.core.ledger_verdict import RunVerdict
from clampdown.core.report import Marker, StepSpan, timeline_from_ledger
from clampdown.core.report_facts import (
    Change,
    Decision,
    EvidenceItem,
    GateEnd,
    ScopingResult,
    Times,
    changes,
    epoch,
    evidence,
    gate_ends,
    inputs,
    measured_times,
    run_end,
    run_start,
    scoping,
)


@dataclass
class IncidentReport:
    """Everything the incident report shows about one run."""

    run_id: str
    runbook: str
    status: str  # the run.end status, or "not ended"
    drill: bool
    trigger: Mapping[str, Any]
    started_at: datetime
    ended_at: datetime | None
    origin: str  # what T+0 is, in words
    inputs: dict[str, Any] = field(default_factory=dict)
    steps: list[StepSpan] = field(default_factory=list)
    markers: list[Marker] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    gates: list[GateEnd] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    evidence: list[EvidenceItem] = field(default_factory=list)
    manifest_uri: str | None = None
    manifest_pin: dict[str, Any] = field(default_factory=dict)  # run.end: version id, SHA-256
    scoping: list[ScopingResult] = field(default_factory=list)
    times: Times = field(default_factory=Times)
    failures: list[str] = field(default_factory=list)
    chain: ChainCheck | None = None  # the hash chain alone (what is shown without a verdict)
    verdict: RunVerdict | None = None  # chain, signatures, S3 copy: as `clampdown verify` says
    rollbacks: list[str] = field(default_factory=list)  # ids of the runs that rolled it back
    outputs: dict[str, Any] = field(default_factory=dict)
    started_by: str = ""

    @property
    def title(self) -> str:
        return f"Incident report: run {self.run_id} of {self.runbook}"

    @property
    def blind_spots(self) -> int:
        return sum(len(s.blind_spots) for s in self.scoping)

    @property
    def outcomes(self) -> dict[str, str]:
        return {g.step: g.outcome for g in self.gates}

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON-able data (``clampdown report --format json``)."""
        data = asdict(self)
        data["started_at"] = self.started_at.isoformat()
        data["ended_at"] = self.ended_at.isoformat() if self.ended_at else None
        data["scoping"] = [
            {"step": s.step, "uses": s.uses, "outputs": dict(s.outputs)} for s in self.scoping
        ]
        data["chain"] = asdict(self.chain) if self.chain else None
        data["verdict"] = self.verdict.to_dict() if self.verdict else None
        return json.loads(json.dumps(data, default=str))


def trigger_text(trigger: Mapping[str, Any]) -> str:
    """Who or what started the run, in one line."""
    kind = str(trigger.get("type") or "manual")
    if kind == "alert":
        alert = trigger.get("alert") or {}
        title = alert.get("title") or alert.get("type") or ""
        return f"alert from {trigger.get('source') or '?'} {trigger.get('alert_id') or ''} {title}"
    if kind == "rollback":
        return f"rollback of run {trigger.get('of')}"
    details = ", ".join(
        f"{k}={v}" for k, v in trigger.items() if k != "type" and isinstance(v, str | int)
    )
    return f"{kind} ({details})" if details else kind


def build_incident_report(
    records: Sequence[Mapping[str, Any]],
    *,
    containment: Iterable[str] = (),
    approvals: Iterable[str] = (),
    names: Mapping[str, str] | None = None,
    rollbacks: Sequence[Sequence[Mapping[str, Any]]] = (),
    chain: ChainCheck | None = None,
) -> IncidentReport:
    """The report of the run whose ledger ``records`` are given.

    ``containment``/``approvals``: the action names that contain and that are approval
    gates (the registry knows; see :func:`action_kinds`). ``rollbacks``: the ledgers of the
    runs that rolled this one back (``run.start`` with ``rollback_of``). T+0 is the
    ``run.start`` record: for a run started by an alert, the moment clampdown took it.
    """
    start = run_start(records)
    if not start:
        raise ValueError("the ledger has no run.start record: not a run ledger")
    run = start.get("run") or {}
    t0 = epoch(str(start["ts"]))
    containment = set(containment)
    steps, markers, said = timeline_from_ledger(
        list(records), t0, containment=containment, approvals=approvals, names=names
    )
    end = run_end(records)
    items, manifest = evidence(records)
    trigger = dict(run.get("trigger") or {})
    failures = [f"step {s.id} ({s.uses}) failed: {s.note}" for s in steps if s.status == "failed"]
    failures += [
        f"Slack: {r.get('count')} update(s) missed, last error: {r.get('last_error')}"
        for r in records
        if r.get("type") == "slack.miss"
    ]
    if end is not None and end.get("error") and not failures:
        failures.append(str(end["error"]))
    names = names or {}
    starter = str(trigger.get("user") or "")
    return IncidentReport(
        run_id=str(run.get("id") or "?"),
        runbook=str(run.get("runbook") or "?"),
        status=str(end.get("status")) if end is not None else "not ended",
        drill=bool(run.get("drill")),
        trigger=trigger,
        started_at=datetime.fromtimestamp(t0, UTC),
        ended_at=datetime.fromtimestamp(epoch(str(end["ts"])), UTC) if end else None,
        origin="the run's start (clampdown took the alert or command)",
        inputs=inputs(records),
        steps=steps,
        markers=markers,
        decisions=said,
        gates=gate_ends(records, t0),
        changes=changes(records, t0, rollbacks),
        evidence=items,
        manifest_uri=manifest,
        manifest_pin=dict((end or {}).get("manifest") or {}),
        scoping=scoping(records),
        times=measured_times(records, t0, containment),
        failures=failures,
        chain=chain,
        rollbacks=[str(((r[0].get("run") or {}).get("id")) or "?") for r in rollbacks if r],
        outputs=dict((end or {}).get("outputs") or {}),
        started_by=f"{names[starter]} ({starter})" if starter in names else starter,
    )


def action_kinds(records: Iterable[dict[str, Any]] | None = None) -> tuple[set[str], set[str]]:
    """(containment actions, approval gates) from the installed actions: a containment action
    is destructive and not a gate. With ``records`` (a ledger), only the actions its steps
    use are loaded: loading all 22 installed actions cost ~80 ms CPU at the end of every
    run, for a report that asks about a handful. An action no longer installed is neither."""
    from clampdown.core.actions import ActionLoadError, UnknownActionError, registry

    if records is None:
        actions, _ = registry().load_all()
    else:
        actions = []
        for name in sorted({str(r["uses"]) for r in records if r.get("uses")}):
            try:
                actions.append(registry().get(name))
            except (UnknownActionError, ActionLoadError):
                continue
    containment = {a.name for a in actions if a.destructive and not a.approval_gate}
    gates = {a.name for a in actions if a.approval_gate}
    return containment, gates


def rollback_ledgers(runs_dir: Path, run_id: str) -> list[list[dict[str, Any]]]:
    """The ledgers of every run that rolled ``run_id`` back (``rollback_of`` in its first
    record), oldest first. Only first lines are parsed until one matches."""
    from clampdown.core.ledger import read

    found = []
    for ledger in sorted(runs_dir.glob("*/ledger.jsonl")) if runs_dir.is_dir() else []:
        try:
            with ledger.open("rb") as fh:
                first = json.loads(fh.readline() or b"{}")
        except (OSError, ValueError):
            continue
        if first.get("rollback_of") == run_id:
            found.append(read(ledger))
    return sorted(found, key=lambda recs: str(recs[0].get("ts", "")) if recs else "")


def load_incident_report(
    ledger: Path,
    runs_dir: Path | None = None,
    names: Mapping[str, str] | None = None,
    *,
    find_rollbacks: bool = True,
    judge: Callable[[bytes], RunVerdict] | None = None,
) -> IncidentReport:
    """The report of the run whose ledger is ``ledger`` (rollbacks looked up in ``runs_dir``,
    by default the ledger's own runs folder; ``find_rollbacks=False`` at the end of a run,
    which nothing can have rolled back yet, spares reading every run's first line).

    ``judge``: the verdict of ``clampdown verify`` (signatures, S3 copy) on the very bytes
    the report is built from; without one (the artifact at the end of a run) only the
    hash chain is checked, and the report says that the signatures were not."""
    return incident_report_of(
        ledger.read_bytes(),
        runs_dir if runs_dir is not None else ledger.parent.parent,
        ledger.parent.name,
        names,
        find_rollbacks=find_rollbacks,
        judge=judge,
    )


def incident_report_of(
    raw: bytes,
    runs_dir: Path,
    run_hint: str,
    names: Mapping[str, str] | None = None,
    *,
    find_rollbacks: bool = True,
    judge: Callable[[bytes], RunVerdict] | None = None,
) -> IncidentReport:
    """:func:`load_incident_report` of ledger bytes already read (``run_hint``: the run id
    when the ledger does not say it), so a caller that packages the bytes reports and
    judges exactly those."""
    records = []
    for line in raw.splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue  # a torn last line of a run still writing: the chain check says so
    containment, gates = action_kinds(records)
    run_id = str(((run_start(records).get("run") or {}).get("id")) or run_hint)
    report = build_incident_report(
        records,
        containment=containment,
        approvals=gates,
        names=names,
        rollbacks=rollback_ledgers(runs_dir, run_id) if find_rollbacks else [],
        chain=verify_lines(raw.splitlines()),
    )
    report.verdict = judge(raw) if judge is not None else None
    return report
