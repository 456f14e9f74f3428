"""What to change after a drill: advice for each missed objective, and for what failed."""

from __future__ import annotations

from clampdown.core.report import DrillReport


def recommendations(report: DrillReport) -> list[str]:
    """What to change, derived from each missed objective (and from what failed)."""
    found: list[str] = []
    for o in report.objectives:
        if o.met:
            continue
        text = _ADVICE.get(o.kind)
        if text:
            found.append(f"**{o.title}** — {o.reason} {text}".strip())
    refused = [d for d in report.decisions if "NOT counted" in d]
    if any("could not be resolved" in d for d in refused):
        found.append(
            "Decisions were refused because the approver group could not be resolved (Slack "
            "was unreachable): list the approvers' user ids in the runbook (approvers.users) "
            "or CLAMPDOWN_APPROVERS, so a decision from the terminal still counts."
        )
    elif refused:
        found.append(
            f"{len(refused)} decision(s) were not counted: make sure every approver knows "
            "who may approve which step, and that the run's starter cannot approve it."
        )
    if any(f.startswith("Slack:") for f in report.failures):
        found.append(
            "Slack updates were missed: agree on a fallback channel (phone bridge, "
            "`clampdown runs` in a terminal) for when Slack is down."
        )
    if any(s.status == "failed" for s in report.steps):
        found.append(
            "Steps failed during the run: read their errors above, fix the permission or "
            "input at fault, and re-run this drill until the run is clean."
        )
    if not found:
        found.append(
            "Every objective was met. Make the drill harder: shorten the containment target, "
            "add a Slack outage or AWS throttling, or rehearse with a different approver."
        )
    return found


_ADVICE = {
    "contained_within": (
        "Shorten the path to containment: pre-authorise the quarantine of confirmed "
        "credential theft (a standing order as `preapproved:`), widen the approver group so "
        "someone is always reachable, and agree in advance when a denial is acceptable."
    ),
    "approval_within": (
        "Approvers were slow or absent: page the approver group with the alert, and give "
        "the approval a timeout whose `on_timeout` matches the risk."
    ),
    "no_active_keys": (
        "A key of the suspect is still active: make sure the runbook deactivates every key "
        "of the user (including ones created after the alert) and re-checks at the end."
    ),
    "endpoint_not_invocable_by": (
        "The suspect can still call the endpoint: deny invoke to the principal (identity "
        "policy or role session revocation) or freeze the endpoint as a last resort."
    ),
    "endpoint_frozen": (
        "The endpoint still serves traffic: add aws.sagemaker.freeze_endpoint behind the "
        "approval, or check why it failed."
    ),
    "bucket_locked": (
        "The model prefix is still readable by the suspect: run lock-model-artifacts (or "
        "its step) for the bucket and prefix in the alert."
    ),
    "evidence_manifest_complete": (
        "Evidence is incomplete: set CLAMPDOWN_EVIDENCE_BUCKET to an Object Lock bucket and "
        "run preserve-evidence first, before anything changes."
    ),
    "runbook_started": (
        "The alert did not start the expected runbook: run `clampdown triggers test` on the "
        "alert payload and fix the trigger's match expression."
    ),
    "runbook_completed": (
        "A follow-up run did not finish its job: read its steps and decisions above; a "
        "release or rotation left half done needs a person to finish it by hand."
    ),
    "access_restored": (
        "The release did not give the user its access back: check the release run's "
        "rollback ledger for undo steps that failed, then `clampdown rollback <run-id>`."
    ),
    "kms_key_rotated": (
        "The model's KMS key was not rotated: run rotate-model-secrets with the key's alias "
        "and check the key is customer managed and allows kms:RotateKeyOnDemand."
    ),
    "secret_rotated": (
        "The secret still holds the value the suspect could read: run rotate-model-secrets "
        "for it, and make sure whatever uses it accepts the new value."
    ),
    "slack_thread_complete": (
        "The Slack thread is missing parts of the story: check the Slack settings and that "
        "the bot is in the channel."
    ),
    "slack_misses_recorded": (
        "Slack failures were not recorded: the ledger must say which updates never reached "
        "the responders, or the after-action review cannot trust the thread."
    ),
    "alerts_recorded": (
        "An alert the endpoint accepted is in no run's ledger: check the triggers' dedup_key "
        "and correlate_by, and the state store (CLAMPDOWN_STATE_URL)."
    ),
}
