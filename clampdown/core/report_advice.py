"""What to change after a drill: action items with owners, derived from each missed
objective and from what went wrong in the run.

How an item is derived (docs/reports.md says the same):

* each missed objective gives one item: the advice for its kind (:data:`_ADVICE`), owned
  by the role that kind names (:data:`OWNERS`: who can change what failed — the runbook
  owner for a containment gap, the detection owner for a trigger, …);
* decisions the run did not count give one item for the approvers' lead (``approver``);
* missed Slack updates give one for the ``incident_lead`` (agree a fallback channel);
* failed steps give one for the ``runbook_owner``;
* with nothing missed, one item for the ``incident_lead``: make the drill harder.

An owner that is one of the drill's roles is shown with the person's name.
"""

from __future__ import annotations

from collections.abc import Mapping

from clampdown.core.report import ActionItem, DrillReport

OWNERS = {
    "contained_within": "incident_lead",
    "approval_within": "approver",
    "no_active_keys": "runbook_owner",
    "endpoint_not_invocable_by": "runbook_owner",
    "endpoint_frozen": "runbook_owner",
    "bucket_locked": "runbook_owner",
    "evidence_manifest_complete": "cloud_admin",
    "runbook_started": "detection_owner",
    "runbook_completed": "incident_lead",
    "access_restored": "cloud_admin",
    "kms_key_rotated": "cloud_admin",
    "secret_rotated": "ml_platform_owner",
    "slack_thread_complete": "slack_admin",
    "slack_misses_recorded": "runbook_owner",
    "alerts_recorded": "detection_owner",
}


def _owner(role: str, roles: Mapping[str, str]) -> str:
    return f"{role}: {roles[role]}" if role in roles else role


def action_items(report: DrillReport) -> list[ActionItem]:
    """What to change, each with an owner (see the module's docstring for the rules)."""
    roles = report.roles
    found: list[ActionItem] = []
    for o in report.objectives:
        if o.met:
            continue
        text = _ADVICE.get(o.kind)
        if text:
            found.append(
                ActionItem(
                    f"{o.title}: {o.reason} {text}".strip(),
                    _owner(OWNERS.get(o.kind, "incident_lead"), roles),
                    o.id,
                )
            )
    refused = [d for d in report.decisions if not d.accepted]
    if any("could not be resolved" in d.refusal for d in refused):
        found.append(
            ActionItem(
                "Decisions were refused because the approver group could not be resolved "
                "(Slack was unreachable): list the approvers' user ids in the runbook "
                "(approvers.users) or CLAMPDOWN_APPROVERS, so a decision from the terminal "
                "still counts.",
                _owner("runbook_owner", roles),
                "refused decisions",
            )
        )
    elif refused:
        found.append(
            ActionItem(
                f"{len(refused)} decision(s) were not counted: make sure every approver knows "
                "who may approve which step, and that the run's starter cannot approve it.",
                _owner("approver", roles),
                "refused decisions",
            )
        )
    if any(f.startswith("Slack:") for f in report.failures):
        found.append(
            ActionItem(
                "Slack updates were missed: agree on a fallback channel (phone bridge, "
                "`clampdown runs` in a terminal) for when Slack is down.",
                _owner("incident_lead", roles),
                "Slack misses",
            )
        )
    if any(s.status == "failed" for s in report.steps):
        found.append(
            ActionItem(
                "Steps failed during the run: read their errors in What failed, fix the "
                "permission or input at fault, and re-run this drill until the run is clean.",
                _owner("runbook_owner", roles),
                "failed steps",
            )
        )
    if not found:
        found.append(
            ActionItem(
                "Every objective was met. Make the drill harder: shorten the containment "
                "target, add a Slack outage or AWS throttling, or rehearse with a different "
                "approver.",
                _owner("incident_lead", roles),
                "all objectives met",
            )
        )
    return found


def recommendations(report: DrillReport) -> list[str]:
    """The action items' texts (for callers that want lines)."""
    return [item.text for item in action_items(report)]


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
