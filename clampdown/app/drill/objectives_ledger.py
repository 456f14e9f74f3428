"""Objectives judged on what the ledgers and Slack recorded: the runs, the approvals,
the containment timing, the Slack thread, the alerts."""

from __future__ import annotations

from clampdown.app.drill.facts import DrillFacts, ObjectiveCheck
from clampdown.core.drill_model import (
    AlertsRecorded,
    ApprovalWithin,
    ContainedWithin,
    RunbookCompleted,
    RunbookStarted,
    SlackMissesRecorded,
    SlackThreadComplete,
)

# --- the run ----------------------------------------------------------------------------------


def runbook_started(o: RunbookStarted, f: DrillFacts) -> ObjectiveCheck:
    if f.runbook is None:
        return False, "no run", "the alert started no run"
    if f.runbook != o.runbook:
        return False, f.runbook, f"the alert started {f.runbook}, not {o.runbook}"
    return True, f.runbook, f"run {f.run_id}"


def runbook_completed(o: RunbookCompleted, f: DrillFacts) -> ObjectiveCheck:
    """Ended succeeded, every approval it asked approved, no step failed: it did its job."""
    run = f.run_of(o.runbook)
    if run is None:
        started = ", ".join(f"{r.runbook} ({r.origin})" for r in f.runs) or "none"
        return False, "no run", f"no run of {o.runbook} during the drill; runs: {started}"
    if run.status is None:
        return False, "unfinished", f"run {run.run_id} had not ended when the drill stopped"
    scoped = f.for_runbook(o.runbook)
    denial = _denial(scoped)
    if denial:
        return False, run.status, denial
    failed = [s.id for s in run.steps if s.status == "failed"]
    if run.status != "succeeded" or failed:
        return False, run.status, f"run {run.run_id} {run.status}; failed: {failed or 'none'}"
    done = sum(1 for s in run.steps if s.status == "succeeded")
    return True, run.status, f"run {run.run_id} ({run.origin}): {done} step(s) succeeded"


def _denial(f: DrillFacts) -> str | None:
    for s in f.steps:
        if s.approval:
            out = f.outputs(s.id)
            if out.get("outcome") in ("denied", "timed_out") or out.get("approved") is False:
                who = out.get("denied_by") or "nobody (timed out)"
                reason = out.get("reason") or ""
                return f"containment was denied by {who}" + (f": “{reason}”" if reason else "")
    return None


def contained_within(o: ContainedWithin, f: DrillFacts) -> ObjectiveCheck:
    steps = [s for s in f.steps if s.containment]
    failed = [s for s in steps if s.status == "failed"]
    done = [s for s in steps if s.status == "succeeded" and s.end is not None]
    if failed:
        names = ", ".join(f"{s.id} ({s.note})" for s in failed)
        return False, "not contained", f"containment step failed: {names}"
    if not done:
        why = _denial(f) or (
            "containment steps were skipped or cancelled" if steps else "no containment step ran"
        )
        return False, "not contained", why
    took = max(s.end for s in done if s.end is not None)
    if took > o.seconds:
        return False, f"{took:.1f} s", f"took {took:.1f} s; the target is {o.seconds:g} s"
    not_applicable = _not_applicable(f)
    skipped = [
        s.id for s in steps if s.status in ("skipped", "cancelled") and s.id not in not_applicable
    ]
    if skipped:
        return False, f"{took:.1f} s", f"containment steps did not run: {', '.join(skipped)}"
    applied = f"{len(done)} containment step(s) done, target {o.seconds:g} s"
    unused = [s.id for s in steps if s.id in not_applicable]
    if unused:
        applied += f"; not applicable to this alert: {', '.join(unused)}"
    return True, f"{took:.1f} s", applied


def _not_applicable(f: DrillFacts) -> set[str]:
    """Steps that did not apply to this alert: skipped by their own if:, or only because
    a step they need was (a skip for any other reason — a denial, a failure — is a gap)."""
    found: set[str] = set()
    for s in f.steps:  # in ledger order: a step's needs come before it
        note = s.note or ""
        if s.status != "skipped":
            continue
        if note.startswith("if:"):
            found.add(s.id)
        elif note.startswith("needs ") and note.endswith(" did not succeed"):
            needs = note[len("needs ") : -len(" did not succeed")].split(", ")
            if all(n in found for n in needs):
                found.add(s.id)
    return found


def approval_within(o: ApprovalWithin, f: DrillFacts) -> ObjectiveCheck:
    gates = [s for s in f.steps if s.approval]
    if not gates:
        return False, "no approval", "the run asked for no approval"
    first = gates[0]
    if first.end is None:
        return False, "no decision", f"approval {first.id} never ended"
    if first.status != "succeeded":
        return False, "no decision", f"approval {first.id} {first.status}: {first.note}"
    out = f.outputs(first.id)
    outcome = out.get("outcome") or ("approved" if out.get("approved") else "unknown")
    if outcome == "timed_out":
        return False, f"{first.end:.1f} s", "nobody decided before the approval timed out"
    if first.end > o.seconds:
        return (
            False,
            f"{first.end:.1f} s",
            f"{outcome} after {first.end:.1f} s; target {o.seconds:g} s",
        )
    who = ", ".join(out.get("approvers") or []) or out.get("denied_by") or "?"
    return True, f"{first.end:.1f} s", f"{outcome} by {who}"


# --- Slack ------------------------------------------------------------------------------------


def slack_thread_complete(o: SlackThreadComplete, f: DrillFacts) -> ObjectiveCheck:
    if f.run_id is None:
        return False, "no run", "no run, so no thread"
    marker = f"run `{f.run_id}`"
    headers = [m for m in f.slack_messages if marker in m.get("text", "") and "thread_ts" not in m]
    if not headers:
        return False, "no thread", "no status header for the run reached Slack"
    header = headers[0]
    replies = [m for m in f.slack_messages if m.get("thread_ts") == header["ts"]]
    text = header.get("text", "")
    if "Status: running" in text or "Status: *" not in text:
        return False, f"{len(replies)} replies", "the header never showed the run's outcome"
    unfinished = [s.id for s in f.steps if s.status in ("running", "pending") and s.id in text]
    if unfinished:
        return False, f"{len(replies)} replies", f"steps still shown running: {unfinished}"
    gates = [s for s in f.steps if s.approval]
    if gates and not any(m.get("blocks") for m in replies):
        return False, f"{len(replies)} replies", "no approval card in the thread"
    outcome = text.split("Status: *", 1)[1].split("*", 1)[0]
    return True, f"{len(replies)} replies", f"header shows {outcome} and every step's status"


def slack_misses_recorded(o: SlackMissesRecorded, f: DrillFacts) -> ObjectiveCheck:
    misses = [r for r in f.records if r.get("type") == "slack.miss"]
    if not misses:
        return False, "none", "the ledger has no slack.miss record"
    count = sum(int(r.get("count") or 0) for r in misses)
    return True, f"{count} missed", f"last error: {misses[-1].get('last_error')}"


def alerts_recorded(o: AlertsRecorded, f: DrillFacts) -> ObjectiveCheck:
    if not f.posted_alerts:
        return False, "no alert", "the endpoint accepted no alert"
    found: dict[str, str] = {}
    for run in f.runs:
        for record in run.records:
            if record.get("type") == "run.start":
                alert_id = (record.get("run", {}).get("trigger") or {}).get("alert_id")
                if alert_id:
                    found.setdefault(str(alert_id), f"started {run.run_id}")
            elif record.get("type") == "alert.joined":
                alert_id = (record.get("alert") or {}).get("id")
                how = record.get("how", "joined")
                found.setdefault(str(alert_id), f"{how} {run.run_id}")
    lost = [a for a in f.posted_alerts if a not in found]
    if lost:
        return False, f"{len(lost)} lost", f"in no run's ledger: {', '.join(lost)}"
    said = "; ".join(f"{a}: {found[a]}" for a in f.posted_alerts)
    return True, f"{len(f.posted_alerts)} of {len(f.posted_alerts)}", said
