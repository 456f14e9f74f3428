"""Score a drill: check each objective against the simulated AWS end state and the ledger.

Every checker looks at what is true *now* in the simulated account (IAM keys,
policies, the bucket policy, the endpoint) or at what the ledger recorded, never
at what the runbook says it did: a containment step that reports success while a
key is still active must score as missed. Each returns an
:class:`~clampdown.core.report.ObjectiveResult`: met or missed, the measured value,
and a reason a person can act on.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import hmac
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import unquote

from clampdown.core.drill_model import (
    AccessRestored,
    AlertsRecorded,
    ApprovalWithin,
    BucketLocked,
    ContainedWithin,
    Drill,
    EndpointFrozen,
    EndpointNotInvocableBy,
    EvidenceManifestComplete,
    KmsKeyRotated,
    NoActiveKeys,
    RunbookCompleted,
    RunbookStarted,
    SecretRotated,
    SlackMissesRecorded,
    SlackThreadComplete,
)
from clampdown.core.report import ObjectiveResult, StepSpan
from clampdown_aws.testing.seed import Seeded

INVOKE = "sagemaker:InvokeEndpoint"


@dataclass
class RunFacts:
    """One run that took place during the drill, and how it started."""

    run_id: str
    runbook: str | None
    origin: str  # "the alert", "a second alert (eventbridge)", "/clampdown by U0…"
    records: list[dict[str, Any]] = field(default_factory=list)
    steps: list[StepSpan] = field(default_factory=list)

    @property
    def status(self) -> str | None:
        """The run's end status (None: it had not ended when the drill stopped)."""
        end = next((r for r in reversed(self.records) if r.get("type") == "run.end"), None)
        return None if end is None else str(end.get("status"))


@dataclass
class DrillFacts:
    """Everything the checkers may read once the run is over.

    ``run_id``, ``runbook``, ``records`` and ``steps`` are the alert's run; ``runs``
    lists every run of the drill (the alert's first). An objective that names a
    ``runbook`` is judged on :meth:`for_runbook`, the same facts about that run.
    """

    drill: Drill
    seeded: Seeded
    alert_epoch: float
    client: Callable[[str], Any]
    run_id: str | None = None
    runbook: str | None = None
    records: list[dict[str, Any]] = field(default_factory=list)
    steps: list[StepSpan] = field(default_factory=list)
    slack_messages: list[dict[str, Any]] = field(default_factory=list)
    runs: list[RunFacts] = field(default_factory=list)
    posted_alerts: list[str] = field(default_factory=list)  # ids the endpoint accepted

    def run_of(self, runbook: str) -> RunFacts | None:
        """The drill's (first) run of ``runbook``."""
        return next((r for r in self.runs if r.runbook == runbook), None)

    def for_runbook(self, runbook: str | None) -> DrillFacts:
        """These facts about the drill's run of ``runbook`` (None: the alert's run)."""
        if runbook is None:
            return self
        run = self.run_of(runbook)
        if run is None:
            return dataclasses.replace(self, run_id=None, runbook=None, records=[], steps=[])
        return dataclasses.replace(
            self, run_id=run.run_id, runbook=run.runbook, records=run.records, steps=run.steps
        )

    def outputs(self, step: str) -> dict[str, Any]:
        for record in self.records:
            if record.get("type") == "step.end" and record.get("step") == step:
                return dict(record.get("outputs") or {})
        return {}


def score(facts: DrillFacts) -> list[ObjectiveResult]:
    """Every objective of the drill, in the drill's order; a checker that breaks scores missed."""
    results = []
    for objective in facts.drill.objectives:
        title = objective.title or _default_title(objective)
        try:
            met, measured, reason = _check(objective, facts)
        except Exception as exc:  # an objective that cannot be checked is not met
            met, measured, reason = False, "not checked", f"the check failed: {exc}"
        results.append(ObjectiveResult(objective.id, objective.kind, title, met, measured, reason))
    return results


def _check(objective: Any, facts: DrillFacts) -> Verdict:
    """Run the checker on the run the objective is about (its ``runbook``, else the alert's)."""
    checker = CHECKERS[objective.kind]
    if isinstance(objective, RunbookStarted | RunbookCompleted):
        return checker(objective, facts)  # their runbook is what they look for
    runbook = getattr(objective, "runbook", None)
    about = facts.for_runbook(runbook)
    if runbook is not None and about.run_id is None:
        ran = ", ".join(f"{r.runbook} ({r.origin})" for r in facts.runs) or "none"
        return False, "no run", f"no run of {runbook} during the drill; runs: {ran}"
    return checker(objective, about)


Verdict = tuple[bool, str, str]


def _default_title(objective: Any) -> str:
    kind = objective.kind
    if kind == "contained_within":
        return f"Contained within {objective.seconds:g} s of the alert"
    if kind == "approval_within":
        return f"Decision within {objective.seconds:g} s of the alert"
    if kind == "no_active_keys":
        return f"No active access key for {objective.user}"
    if kind == "endpoint_not_invocable_by":
        return f"{objective.principal} cannot invoke {objective.endpoint}"
    if kind == "endpoint_frozen":
        return f"Endpoint {objective.endpoint} frozen"
    if kind == "bucket_locked":
        return f"s3://{objective.bucket}/{objective.prefix} locked"
    if kind == "runbook_started":
        return f"The alert starts {objective.runbook}"
    if kind == "runbook_completed":
        return f"A run of {objective.runbook} completes"
    if kind == "access_restored":
        return f"Access of {objective.user} restored"
    if kind == "kms_key_rotated":
        return f"KMS key alias/{objective.key} rotated"
    if kind == "secret_rotated":
        return f"Secret {objective.secret} rotated"
    if kind == "evidence_manifest_complete":
        return "Evidence manifest complete and intact"
    if kind == "slack_thread_complete":
        return "The Slack thread tells the whole story"
    if kind == "alerts_recorded":
        return "Every alert is in a run's ledger (started, joined or deduplicated)"
    return "The ledger records the Slack updates that were missed"


# --- the run ----------------------------------------------------------------------------------


def runbook_started(o: RunbookStarted, f: DrillFacts) -> Verdict:
    if f.runbook is None:
        return False, "no run", "the alert started no run"
    if f.runbook != o.runbook:
        return False, f.runbook, f"the alert started {f.runbook}, not {o.runbook}"
    return True, f.runbook, f"run {f.run_id}"


def runbook_completed(o: RunbookCompleted, f: DrillFacts) -> Verdict:
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


def contained_within(o: ContainedWithin, f: DrillFacts) -> Verdict:
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


def approval_within(o: ApprovalWithin, f: DrillFacts) -> Verdict:
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


# --- IAM --------------------------------------------------------------------------------------


def _masked(key_id: str) -> str:
    return f"{key_id[:4]}…{key_id[-4:]}"


def no_active_keys(o: NoActiveKeys, f: DrillFacts) -> Verdict:
    iam = f.client("iam")
    keys = iam.list_access_keys(UserName=o.user)["AccessKeyMetadata"]
    active = [k["AccessKeyId"] for k in keys if k["Status"] == "Active"]
    if active:
        return (
            False,
            f"{len(active)} of {len(keys)} active",
            f"still active: {', '.join(_masked(k) for k in active)}",
        )
    return True, f"0 of {len(keys)} active", "every access key of the user is inactive"


def _policies(iam: Any, kind: str, name: str) -> list[tuple[str, dict[str, Any]]]:
    """Every identity policy document of a user or role: inline and attached."""
    docs: list[tuple[str, dict[str, Any]]] = []
    if kind == "user":
        names = iam.list_user_policies(UserName=name)["PolicyNames"]
        for p in names:
            doc = iam.get_user_policy(UserName=name, PolicyName=p)["PolicyDocument"]
            docs.append((p, _doc(doc)))
        attached = iam.list_attached_user_policies(UserName=name)["AttachedPolicies"]
    else:
        names = iam.list_role_policies(RoleName=name)["PolicyNames"]
        for p in names:
            doc = iam.get_role_policy(RoleName=name, PolicyName=p)["PolicyDocument"]
            docs.append((p, _doc(doc)))
        attached = iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]
    for a in attached:
        version = iam.get_policy(PolicyArn=a["PolicyArn"])["Policy"]["DefaultVersionId"]
        doc = iam.get_policy_version(PolicyArn=a["PolicyArn"], VersionId=version)
        docs.append((a["PolicyName"], _doc(doc["PolicyVersion"]["Document"])))
    return docs


def _doc(document: Any) -> dict[str, Any]:
    if isinstance(document, str):
        return dict(json.loads(unquote(document)))
    return dict(document)


def _listed(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value or [])


def _covers(patterns: Sequence[str], value: str) -> bool:
    return any(fnmatch.fnmatchcase(value.lower(), p.lower()) for p in patterns)


def denies(statement: dict[str, Any], action: str, resource: str, *, session: bool) -> bool:
    """An explicit Deny for ``action`` on ``resource`` that applies to this caller.

    Conditions: none, or only an ``aws:TokenIssueTime`` date condition (the revoke of
    older role sessions), which applies to a stolen ``session``; any other condition
    is not assumed to match.
    """
    if statement.get("Effect") != "Deny":
        return False
    if "Action" in statement and not _covers(_listed(statement["Action"]), action):
        return False
    if "NotAction" in statement and _covers(_listed(statement["NotAction"]), action):
        return False
    if "Resource" in statement and not _covers(_listed(statement["Resource"]), resource):
        return False
    condition = statement.get("Condition") or {}
    if not condition:
        return True
    keys = {k.lower() for block in condition.values() for k in block}
    return session and keys == {"aws:tokenissuetime"}


def endpoint_not_invocable_by(o: EndpointNotInvocableBy, f: DrillFacts) -> Verdict:
    iam = f.client("iam")
    endpoint_arn = f.seeded.endpoints[o.endpoint]["arn"]
    kind = "user" if o.principal in f.seeded.users else "role"
    for name, doc in _policies(iam, kind, o.principal):
        for statement in _listed_statements(doc):
            if denies(statement, INVOKE, endpoint_arn, session=kind == "role"):
                sid = statement.get("Sid") or "a statement"
                return True, "explicit deny", f"{sid} of policy {name} denies {INVOKE}"
    if kind == "user":
        keys = iam.list_access_keys(UserName=o.principal)["AccessKeyMetadata"]
        active = [k for k in keys if k["Status"] == "Active"]
        if not active:
            return True, "no credentials", "no deny, but the user has no active access key"
        return False, "invocable", f"no deny on {INVOKE} and {len(active)} active key(s)"
    return False, "invocable", f"no deny on {INVOKE} for role {o.principal} or its sessions"


def _listed_statements(doc: dict[str, Any]) -> list[dict[str, Any]]:
    statements = doc.get("Statement", [])
    return [statements] if isinstance(statements, dict) else list(statements)


def access_restored(o: AccessRestored, f: DrillFacts) -> Verdict:
    """Every key of the user is active again and no policy of the user denies it all."""
    iam = f.client("iam")
    keys = iam.list_access_keys(UserName=o.user)["AccessKeyMetadata"]
    inactive = [k["AccessKeyId"] for k in keys if k["Status"] != "Active"]
    if not keys:
        return False, "no keys", f"user {o.user} has no access key"
    if inactive:
        return (
            False,
            f"{len(keys) - len(inactive)} of {len(keys)} active",
            f"still inactive: {', '.join(_masked(k) for k in inactive)}",
        )
    for name, doc in _policies(iam, "user", o.user):
        for statement in _listed_statements(doc):
            if statement.get("Effect") == "Deny" and "*" in _listed(statement.get("Action")):
                sid = statement.get("Sid") or "a statement"
                return False, "denied", f"{sid} of policy {name} still denies everything"
    return True, f"{len(keys)} of {len(keys)} active", "keys active, no deny-all policy left"


# --- KMS and Secrets Manager --------------------------------------------------------------------


def kms_key_rotated(o: KmsKeyRotated, f: DrillFacts) -> Verdict:
    """New key material since the alert (an on-demand rotation), and the key still usable."""
    kms = f.client("kms")
    key_id = f.seeded.kms_keys[o.key]["id"]
    meta = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    rotations = kms.list_key_rotations(KeyId=key_id).get("Rotations", [])
    since = [
        r
        for r in rotations
        if r.get("RotationType") == "ON_DEMAND" and _when(r.get("RotationDate")) >= f.alert_epoch
    ]
    if not since:
        return False, "not rotated", f"no on-demand rotation of alias/{o.key} after the alert"
    if meta.get("KeyState") != "Enabled":
        return False, str(meta.get("KeyState")), f"rotated, but the key is {meta.get('KeyState')}"
    took = _when(since[-1].get("RotationDate")) - f.alert_epoch
    return True, f"T+{took:.1f} s", f"{len(since)} on-demand rotation(s); key enabled"


def _when(value: Any) -> float:
    if isinstance(value, datetime):
        return value.timestamp()
    return float(value or 0)


def secret_rotated(o: SecretRotated, f: DrillFacts) -> Verdict:
    """AWSCURRENT is a new version with a new value; the seeded one is AWSPREVIOUS."""
    sm = f.client("secretsmanager")
    seeded = f.seeded.secret_versions[o.secret]
    stages = sm.describe_secret(SecretId=o.secret).get("VersionIdsToStages", {})
    current = next((v for v, s in stages.items() if "AWSCURRENT" in s), None)
    if current is None or current == seeded:
        return False, "not rotated", "AWSCURRENT is still the version the secret was seeded with"
    new = sm.get_secret_value(SecretId=o.secret, VersionId=current)["SecretString"]
    old = sm.get_secret_value(SecretId=o.secret, VersionId=seeded)["SecretString"]
    if hmac.compare_digest(new.encode(), old.encode()):  # values compared, never shown
        return False, "same value", f"version {current} holds the value it replaced"
    if "AWSPREVIOUS" not in stages.get(seeded, []):
        return False, "rotated", "the seeded version is not AWSPREVIOUS (rollback could not use it)"
    return True, "rotated", f"AWSCURRENT is version {current}, with a new value"


# --- SageMaker and S3 ----------------------------------------------------------------------------


def endpoint_frozen(o: EndpointFrozen, f: DrillFacts) -> Verdict:
    sagemaker = f.client("sagemaker")
    endpoint = sagemaker.describe_endpoint(EndpointName=o.endpoint)
    config = endpoint.get("EndpointConfigName", "")
    weights = [v.get("CurrentWeight", 1.0) for v in endpoint.get("ProductionVariants", [])]
    if config.endswith("-clampdown-blocked"):
        return True, config, "the endpoint serves the blocked config"
    if weights and all(w == 0 for w in weights):
        return True, "weights 0", "every production variant has weight 0"
    return False, endpoint.get("EndpointStatus", "?"), f"serving {config} with weights {weights}"


def bucket_locked(o: BucketLocked, f: DrillFacts) -> Verdict:
    s3 = f.client("s3")
    try:
        policy = json.loads(s3.get_bucket_policy(Bucket=o.bucket)["Policy"])
    except Exception as exc:
        if "NoSuchBucketPolicy" in str(exc):
            return False, "no policy", f"bucket {o.bucket} has no bucket policy"
        raise
    target = f"arn:aws:s3:::{o.bucket}/{o.prefix}model.tar.gz"
    for statement in _listed_statements(policy):
        if statement.get("Effect") != "Deny" or statement.get("Principal") not in (
            "*",
            {"AWS": "*"},
        ):
            continue
        if _covers(_listed(statement.get("Action")), "s3:GetObject") and _covers(
            _listed(statement.get("Resource")), target
        ):
            return True, statement.get("Sid", "deny"), f"deny of s3:GetObject on {o.prefix}*"
    return False, "readable", f"no deny of s3:GetObject on s3://{o.bucket}/{o.prefix}"


# --- evidence ---------------------------------------------------------------------------------

_REQUIRED = {
    "cloudtrail": lambda key: "/cloudtrail" in key,
    "ledger": lambda key: key.endswith("/ledger.jsonl"),
    "logs": lambda key: "/logs/" in key or "/export-task.json" in key,
    "describe": lambda key: "describe" in key.rsplit("/", 1)[-1] or "/describe" in key,
}


def evidence_manifest_complete(o: EvidenceManifestComplete, f: DrillFacts) -> Verdict:
    if f.run_id is None:
        return False, "no run", "no run, so no evidence"
    s3 = f.client("s3")
    bucket = f.seeded.evidence_bucket
    key = f"incidents/{f.run_id}/manifest.json"
    try:
        manifest = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except Exception as exc:
        if "NoSuchKey" in str(exc):
            return False, "no manifest", f"s3://{bucket}/{key} was never written"
        raise
    entries = manifest.get("objects", [])
    changed = []
    for entry in entries:
        args = {"Bucket": bucket, "Key": entry["key"]}
        if entry.get("version_id"):
            args["VersionId"] = entry["version_id"]
        digest = hashlib.sha256()
        for chunk in s3.get_object(**args)["Body"].iter_chunks(1024 * 1024):
            digest.update(chunk)
        if digest.hexdigest() != entry["sha256"]:
            changed.append(entry["key"])
    missing = [r for r in o.require if not any(_REQUIRED[r](e["key"]) for e in entries)]
    measured = f"{len(entries)} objects"
    if changed:
        return False, measured, f"hash mismatch: {', '.join(changed)}"
    if missing:
        return False, measured, f"no {', '.join(missing)} evidence in the manifest"
    return True, measured, f"every object re-hashed; has {', '.join(o.require)}"


# --- Slack ------------------------------------------------------------------------------------


def slack_thread_complete(o: SlackThreadComplete, f: DrillFacts) -> Verdict:
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


def slack_misses_recorded(o: SlackMissesRecorded, f: DrillFacts) -> Verdict:
    misses = [r for r in f.records if r.get("type") == "slack.miss"]
    if not misses:
        return False, "none", "the ledger has no slack.miss record"
    count = sum(int(r.get("count") or 0) for r in misses)
    return True, f"{count} missed", f"last error: {misses[-1].get('last_error')}"


def alerts_recorded(o: AlertsRecorded, f: DrillFacts) -> Verdict:
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


CHECKERS: dict[str, Callable[..., Verdict]] = {
    "runbook_started": runbook_started,
    "contained_within": contained_within,
    "approval_within": approval_within,
    "no_active_keys": no_active_keys,
    "endpoint_not_invocable_by": endpoint_not_invocable_by,
    "endpoint_frozen": endpoint_frozen,
    "bucket_locked": bucket_locked,
    "access_restored": access_restored,
    "kms_key_rotated": kms_key_rotated,
    "secret_rotated": secret_rotated,
    "runbook_completed": runbook_completed,
    "evidence_manifest_complete": evidence_manifest_complete,
    "slack_thread_complete": slack_thread_complete,
    "slack_misses_recorded": slack_misses_recorded,
    "alerts_recorded": alerts_recorded,
}
