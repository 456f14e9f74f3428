"""The ``kind: Drill`` document: a tabletop scenario on simulated AWS, and its lint.

A drill names everything a rehearsal needs so that two runs of it are the same
exercise: the *seed* (the simulated account before the incident: users with keys,
the model bucket, the endpoint, CloudTrail files and log events that tell the
story), the *alert* posted at T+0, the *injects* (people deciding, Slack failing,
AWS throttling, the attacker acting again), the *objectives* the team is scored
on, and what the authors *expect* (a drill built to show a denial expects the
containment objectives to be missed).

The core only describes drills; :mod:`flows.drill` runs them and
:mod:`flows.objectives` scores them. Objective kinds live here (not beside their
checkers) so ``clampdown lint`` can reject an unknown kind without importing a
provider. Every problem is a positioned :class:`~clampdown.diagnostics.Diagnostic`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path as FsPath
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator

from clampdown.alert import Source as AlertSource
from clampdown.diagnostics import ClampdownError, Diagnostic, InvalidFileError, did_you_mean
from clampdown.durations import Duration, PositiveDuration
from clampdown.loader import _diagnostics, read
from clampdown.models import RUNBOOK_NAME, STEP_ID, StrictModel
from clampdown.yamlsource import Source

DRILL_KIND = "Drill"
DEFAULT_DRILL = "model-theft"
ACCOUNT = re.compile(r"^\d{12}$")
SLACK_USER = re.compile(r"^[UW][A-Z0-9]{2,20}$")
MAX_DRILL_SECONDS = 3600.0
# Alert sources a drill can sign the way the real sender does (SNS needs AWS's certificate).
DRILL_ALERT_SOURCES = ("guardduty", "eventbridge", "alertmanager", "pagerduty", "generic")


class DrillMetadata(StrictModel):
    name: str = Field(json_schema_extra={"pattern": RUNBOOK_NAME.pattern})
    title: str
    family: str = Field(description="scenario family: model-theft, inference-extraction, …")
    description: str | None = None
    tags: list[str] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _kebab(cls, value: str) -> str:
        if not RUNBOOK_NAME.match(value):
            suggestion = re.sub(r"[^a-z0-9]+", "-", value.lower()).strip("-")
            raise ValueError(f"drill name '{value}' is not kebab-case; write '{suggestion}'")
        return value


class Person(StrictModel):
    """Someone with a part in the drill; ``slack_user`` is who clicks in Slack."""

    name: str
    slack_user: str = Field(description="Slack user id, e.g. U0APPROVER")

    @field_validator("slack_user")
    @classmethod
    def _user_id(cls, value: str) -> str:
        if not SLACK_USER.match(value):
            raise ValueError(f"'{value}' is not a Slack user id (U… or W…, capitals and digits)")
        return value


# --- seed ---------------------------------------------------------------------------------


class SeedUser(StrictModel):
    name: str = Field(min_length=1, max_length=64)
    access_keys: int = Field(1, ge=0, le=2, description="active access keys (IAM allows two)")
    console: bool = Field(False, description="give the user a console login profile")
    policy: dict[str, Any] | None = Field(None, description="an inline identity policy")


class SeedRole(StrictModel):
    name: str = Field(min_length=1, max_length=64)
    service: str | None = Field(
        None, description="service principal that may assume it, e.g. sagemaker.amazonaws.com"
    )
    sessions: int = Field(0, ge=0, le=5, description="role sessions to open (stolen credentials)")
    policy: dict[str, Any] | None = None


class SeedBucket(StrictModel):
    name: str = Field(min_length=3, max_length=63)
    object_lock: bool = False
    objects: dict[str, int | str] = Field(
        default_factory=dict, description="key -> size in bytes, or the text of the object"
    )


class SeedEndpoint(StrictModel):
    name: str = Field(min_length=1, max_length=63)
    model_data: str = Field(pattern=r"^s3://", description="s3:// URI of model.tar.gz")
    role: str = Field(description="execution role (a seed role name)")
    instance_type: str = "ml.m5.large"


class TrailEvent(StrictModel):
    """One CloudTrail record of the story, ``ago`` before the alert."""

    ago: Duration
    event: str = Field(description="eventName, e.g. GetObject")
    source: str = Field(description="eventSource, e.g. s3.amazonaws.com")
    user: str | None = Field(None, description="a seed user (the record carries its key)")
    role: str | None = Field(None, description="a seed role (an assumed-role session)")
    ip: str = "203.0.113.66"
    user_agent: str = "aws-cli/2.15.0"
    request: dict[str, Any] = Field(default_factory=dict, description="requestParameters")
    resources: list[str] = Field(default_factory=list, description="resource ARNs")
    repeat: int = Field(1, ge=1, le=500, description="how many such records, one second apart")


class SeedTrail(StrictModel):
    name: str
    bucket: str = Field(description="bucket the trail delivers to (created by the seed)")
    events: list[TrailEvent] = Field(default_factory=list)


class LogEvent(StrictModel):
    ago: Duration
    message: str
    repeat: int = Field(1, ge=1, le=1000)


class SeedLogGroup(StrictModel):
    name: str
    events: list[LogEvent] = Field(default_factory=list)


class SeedKmsKey(StrictModel):
    """A customer managed key the model's artifacts are encrypted with."""

    alias: str = Field(
        min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_-]+$", description="alias/<this>"
    )
    description: str = ""


class SeedSecret(StrictModel):
    """A Secrets Manager secret of the model stack (its value never leaves the simulation)."""

    name: str = Field(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9_+=@-]+$")
    value: str | dict[str, Any] = Field(description="text, or a JSON object (e.g. a password)")


class Seed(StrictModel):
    account: str = Field("123456789012", description="moto's account id")
    region: str = "us-east-1"
    evidence_bucket: str = Field("clampdown-drill-evidence", description="Object Lock bucket")
    users: list[SeedUser] = Field(default_factory=list)
    roles: list[SeedRole] = Field(default_factory=list)
    buckets: list[SeedBucket] = Field(default_factory=list)
    endpoints: list[SeedEndpoint] = Field(default_factory=list)
    trail: SeedTrail | None = None
    log_groups: list[SeedLogGroup] = Field(default_factory=list)
    kms_keys: list[SeedKmsKey] = Field(default_factory=list)
    secrets: list[SeedSecret] = Field(default_factory=list)

    @field_validator("account")
    @classmethod
    def _account(cls, value: str) -> str:
        if not ACCOUNT.match(value):
            raise ValueError("account must be 12 digits")
        return value


class DrillAlert(StrictModel):
    """What the alert source sends at T+0 (expressions see ``seed`` and ``drill``)."""

    source: AlertSource
    payload: dict[str, Any]


# --- injects --------------------------------------------------------------------------------


class Decide(StrictModel):
    """A person clicks Approve or Deny ``after`` the approval card appears."""

    type: Literal["approve", "deny"]
    by: str = Field(description="a role of the drill (e.g. approver)")
    after: Duration = Field(0.0, description="wait this long after the request appears")
    step: str | None = Field(None, description="approval step id (default: the next one asked)")
    reason: str = ""


class SecondAlert(StrictModel):
    type: Literal["alert"]
    at: Duration
    source: AlertSource
    payload: dict[str, Any]


class SlackOutage(StrictModel):
    """Slack answers every call with an error from ``at`` for ``duration``."""

    type: Literal["slack_outage"]
    at: Duration = 0.0
    duration: PositiveDuration
    mode: Literal["down", "server_error", "ratelimited"] = "server_error"


class AwsThrottling(StrictModel):
    """The first ``calls`` API calls to ``service`` from ``at`` on answer ``Throttling``."""

    type: Literal["aws_throttling"]
    at: Duration = 0.0
    service: str = Field(description="botocore service id, e.g. iam, s3, sagemaker")
    calls: int = Field(3, ge=1, le=50)


class AttackerCreatesKey(StrictModel):
    """The attacker, still holding a working key, mints another one at ``at``."""

    type: Literal["attacker_creates_key"]
    at: Duration
    user: str = Field(description="a seed user")


class SlashCommand(StrictModel):
    """A person types ``/clampdown <text>`` in the incident channel, ``after`` the alert's
    run ended (e.g. the lead starts rotate-model-secrets, or releases the containment).

    Timed from the end of the alert's run, not from the alert: a release needs a finished
    run, and a person acts on what they see. ``${run.id}`` is the alert's run.
    """

    type: Literal["slash_command"]
    by: str = Field(description="a role of the drill (e.g. incident_lead)")
    after: Duration = Field(0.0, description="wait this long after the alert's run ended")
    text: str = Field(min_length=1, max_length=2000, description="what follows /clampdown")


Inject = Annotated[
    Decide | SecondAlert | SlackOutage | AwsThrottling | AttackerCreatesKey | SlashCommand,
    Field(discriminator="type"),
]
INJECT_TYPES = (
    "approve",
    "deny",
    "alert",
    "slack_outage",
    "aws_throttling",
    "attacker_creates_key",
    "slash_command",
)

# --- objectives ------------------------------------------------------------------------------


class _Objective(StrictModel):
    id: str = Field(json_schema_extra={"pattern": STEP_ID.pattern})
    title: str | None = None

    @field_validator("id")
    @classmethod
    def _snake(cls, value: str) -> str:
        if not STEP_ID.match(value):
            raise ValueError(f"objective id '{value}' is not snake_case")
        return value


class _RunObjective(_Objective):
    """An objective about one run: the alert's, or (``runbook``) the drill's run of that one."""

    runbook: str | None = Field(
        None, description="judge the drill's run of this runbook (default: the alert's run)"
    )


class RunbookStarted(_Objective):
    kind: Literal["runbook_started"]
    runbook: str


class RunbookCompleted(_Objective):
    """A run of ``runbook`` (started any way during the drill) ended well."""

    kind: Literal["runbook_completed"]
    runbook: str


class ContainedWithin(_RunObjective):
    kind: Literal["contained_within"]
    seconds: PositiveDuration


class EvidenceManifestComplete(_RunObjective):
    kind: Literal["evidence_manifest_complete"]
    require: list[Literal["cloudtrail", "ledger", "logs", "describe"]] = Field(
        default_factory=lambda: ["cloudtrail", "ledger"]
    )


class NoActiveKeys(_Objective):
    kind: Literal["no_active_keys"]
    user: str


class EndpointNotInvocableBy(_Objective):
    kind: Literal["endpoint_not_invocable_by"]
    endpoint: str
    principal: str = Field(description="a seed user or role name")


class EndpointFrozen(_Objective):
    kind: Literal["endpoint_frozen"]
    endpoint: str


class BucketLocked(_Objective):
    kind: Literal["bucket_locked"]
    bucket: str
    prefix: str = ""


class AccessRestored(_Objective):
    """After a release: every key of the user is active and no policy denies it everything."""

    kind: Literal["access_restored"]
    user: str


class KmsKeyRotated(_Objective):
    kind: Literal["kms_key_rotated"]
    key: str = Field(description="a seed KMS key alias")


class SecretRotated(_Objective):
    kind: Literal["secret_rotated"]
    secret: str = Field(description="a seed secret name")


class ApprovalWithin(_RunObjective):
    kind: Literal["approval_within"]
    seconds: PositiveDuration


class SlackThreadComplete(_RunObjective):
    kind: Literal["slack_thread_complete"]


class SlackMissesRecorded(_RunObjective):
    kind: Literal["slack_misses_recorded"]


Objective = Annotated[
    RunbookStarted
    | RunbookCompleted
    | ContainedWithin
    | EvidenceManifestComplete
    | NoActiveKeys
    | EndpointNotInvocableBy
    | EndpointFrozen
    | BucketLocked
    | AccessRestored
    | KmsKeyRotated
    | SecretRotated
    | ApprovalWithin
    | SlackThreadComplete
    | SlackMissesRecorded,
    Field(discriminator="kind"),
]
OBJECTIVE_KINDS = (
    "runbook_started",
    "runbook_completed",
    "contained_within",
    "evidence_manifest_complete",
    "no_active_keys",
    "endpoint_not_invocable_by",
    "endpoint_frozen",
    "bucket_locked",
    "access_restored",
    "kms_key_rotated",
    "secret_rotated",
    "approval_within",
    "slack_thread_complete",
    "slack_misses_recorded",
)


class Expect(StrictModel):
    """What the authors built the drill to show: objectives that must come out missed."""

    missed: list[str] = Field(default_factory=list)


class Roles(StrictModel):
    incident_lead: Person
    approver: Person
    others: dict[str, Person] = Field(default_factory=dict)

    def get(self, name: str) -> Person | None:
        if name in ("incident_lead", "approver"):
            return getattr(self, name)  # type: ignore[no-any-return]
        return self.others.get(name)

    def names(self) -> list[str]:
        return ["incident_lead", "approver", *self.others]


class Drill(StrictModel):
    api_version: Literal["clampdown/v1"] = Field(alias="apiVersion")
    kind: Literal["Drill"]
    metadata: DrillMetadata
    runbook: str = Field(description="the runbook the triggers are expected to start")
    inputs: dict[str, Any] = Field(
        default_factory=dict,
        description="the inputs the triggers should give it (placeholders allowed); a "
        "difference is reported as a failure of the drill",
    )
    roles: Roles
    seed: Seed
    alert: DrillAlert
    injects: list[Inject] = Field(default_factory=list)
    objectives: list[Objective] = Field(min_length=1)
    expect: Expect = Field(default_factory=Expect)
    time_limit: PositiveDuration = Field(300.0, description="stop the drill after this long")


# --- loading and lint -----------------------------------------------------------------------


def load_drill(path: str | FsPath) -> tuple[Drill, Source]:
    """Parse and validate a drill file; raise :class:`InvalidFileError` with positions."""
    source = read(path)
    data = source.data
    if not isinstance(data, dict):
        raise InvalidFileError(
            [source.diagnostic((), "a drill must be a mapping", "start with 'kind: Drill'")]
        )
    pre = _pre_validation(source)
    if pre:
        raise InvalidFileError(pre)
    try:
        return Drill.model_validate(data), source
    except ValidationError as exc:
        raise InvalidFileError(_diagnostics(exc, Drill, source)) from None


def _pre_validation(source: Source) -> list[Diagnostic]:
    """Unknown kinds with a did-you-mean (pydantic's union message names every tag)."""
    data: dict[str, Any] = source.data
    found: list[Diagnostic] = []
    if data.get("kind") != DRILL_KIND:
        found.append(
            source.diagnostic(
                ("kind",), f"kind must be '{DRILL_KIND}', not {data.get('kind')!r}", code="schema"
            )
        )
    for where, choices, key in (
        ("objectives", OBJECTIVE_KINDS, "kind"),
        ("injects", INJECT_TYPES, "type"),
    ):
        items = data.get(where)
        if not isinstance(items, list):
            continue
        for i, item in enumerate(items):
            if not isinstance(item, dict) or key not in item:
                continue
            value = item[key]
            if value not in choices:
                label = "objective kind" if where == "objectives" else "inject type"
                hint = did_you_mean(str(value), choices) or f"use one of: {', '.join(choices)}"
                found.append(source.diagnostic((where, i, key), f"unknown {label} '{value}'", hint))
    return found


def lint_drill(
    drill: Drill, source: Source, runbooks: Iterable[str], *, path: FsPath | None = None
) -> list[Diagnostic]:
    """Cross-field rules: names that must exist, inject timing, objectives that can be met."""
    rules = _DrillRules(drill, source, set(runbooks))
    found = rules.run()
    if path is not None and path.stem != drill.metadata.name:
        found.append(
            source.diagnostic(
                ("metadata", "name"),
                f"file name '{path.name}' does not match the drill name '{drill.metadata.name}'",
                f"rename it to '{drill.metadata.name}{path.suffix}': "
                "'clampdown drill NAME' looks drills up by file name",
                code="file-name",
                severity="warning",
            )
        )
    return found


class _DrillRules:
    def __init__(self, drill: Drill, source: Source, runbooks: set[str]) -> None:
        self.drill = drill
        self.source = source
        self.runbooks = runbooks
        self.found: list[Diagnostic] = []
        seed = drill.seed
        self.users = {u.name for u in seed.users}
        self.roles = {r.name for r in seed.roles}
        self.buckets = {b.name for b in seed.buckets}
        self.endpoints = {e.name for e in seed.endpoints}
        self.kms_keys = {k.alias for k in seed.kms_keys}
        self.secrets = {s.name for s in seed.secrets}

    def error(self, loc: tuple[str | int, ...], message: str, hint: str = "", **kw: Any) -> None:
        self.found.append(self.source.diagnostic(loc, message, hint, **kw))

    def run(self) -> list[Diagnostic]:
        d = self.drill
        if d.runbook not in self.runbooks:
            self.error(
                ("runbook",),
                f"unknown runbook '{d.runbook}'",
                did_you_mean(d.runbook, self.runbooks) or "name a runbook of the library",
                code="unknown-runbook",
            )
        if d.alert.source not in DRILL_ALERT_SOURCES:
            self.error(
                ("alert", "source"),
                f"a drill cannot sign '{d.alert.source}' alerts",
                f"use one of: {', '.join(DRILL_ALERT_SOURCES)}",
            )
        self._seed()
        self._expressions()
        self._injects()
        self._objectives()
        return sorted(self.found, key=lambda x: (x.line, x.column))

    def _ref(self, loc: tuple[str | int, ...], value: str, known: set[str], what: str) -> None:
        if value not in known:
            hint = did_you_mean(value, known) or f"add it to seed.{what}s"
            self.error(loc, f"unknown seed {what} '{value}'", hint, code="unknown-name")

    def _seed(self) -> None:
        seed = self.drill.seed
        for kind, names in (
            ("users", [u.name for u in seed.users]),
            ("roles", [r.name for r in seed.roles]),
            ("buckets", [b.name for b in seed.buckets]),
            ("endpoints", [e.name for e in seed.endpoints]),
            ("kms_keys", [k.alias for k in seed.kms_keys]),
            ("secrets", [s.name for s in seed.secrets]),
        ):
            seen: set[str] = set()
            for i, name in enumerate(names):
                if name in seen:
                    field = "alias" if kind == "kms_keys" else "name"
                    self.error(
                        ("seed", kind, i, field), f"duplicate {kind[:-1]} '{name}' in the seed"
                    )
                seen.add(name)
        for i, endpoint in enumerate(seed.endpoints):
            self._ref(("seed", "endpoints", i, "role"), endpoint.role, self.roles, "role")
            bucket = endpoint.model_data.removeprefix("s3://").split("/", 1)[0]
            self._ref(("seed", "endpoints", i, "model_data"), bucket, self.buckets, "bucket")
        if seed.evidence_bucket in self.buckets:
            self.error(
                ("seed", "evidence_bucket"),
                "the evidence bucket must not be one of the seed's buckets",
                "the drill creates it with Object Lock; give it its own name",
            )
        if seed.trail is not None:
            for i, event in enumerate(seed.trail.events):
                loc = ("seed", "trail", "events", i)
                if (event.user is None) == (event.role is None):
                    self.error(loc, "a trail event names either 'user' or 'role'")
                if event.user is not None:
                    self._ref((*loc, "user"), event.user, self.users, "user")
                if event.role is not None:
                    self._ref((*loc, "role"), event.role, self.roles, "role")

    def _expressions(self) -> None:
        d = self.drill
        payloads: list[tuple[tuple[str | int, ...], Any]] = [
            (("alert", "payload"), d.alert.payload)
        ]
        payloads += [
            (("injects", i, "payload"), inj.payload)
            for i, inj in enumerate(d.injects)
            if isinstance(inj, SecondAlert)
        ]
        commands = [
            (("injects", i, "text"), inj.text)
            for i, inj in enumerate(d.injects)
            if isinstance(inj, SlashCommand)
        ]
        known = {
            "users": self.users,
            "roles": self.roles,
            "buckets": self.buckets,
            "endpoints": self.endpoints,
            "kms_keys": self.kms_keys,
            "secrets": self.secrets,
        }
        for allow_run, texts in ((False, payloads), (True, commands)):
            for base, payload in texts:
                for loc, path in _placeholders(payload, base):
                    problem = _placeholder_problem(path, known, allow_run=allow_run)
                    if problem:
                        self.error(loc, f"placeholder ${{{path}}}: {problem}", PLACEHOLDER_HINT)

    def _injects(self) -> None:
        d = self.drill
        decided_steps: dict[str | None, int] = {}
        keys: dict[str, int] = {u.name: u.access_keys for u in d.seed.users}
        for i, inj in enumerate(d.injects):
            loc: tuple[str | int, ...] = ("injects", i)
            at = getattr(inj, "at", None)
            if at is not None and at >= d.time_limit:
                self.error(
                    (*loc, "at"),
                    f"inject at T+{at:g}s comes after the drill's time_limit ({d.time_limit:g}s)",
                    "move it earlier or raise time_limit",
                    code="inject-timing",
                )
            if isinstance(inj, Decide | SlashCommand):
                self._role((*loc, "by"), inj.by)
            if isinstance(inj, SlashCommand):
                self._slash_command(loc, inj)
            elif isinstance(inj, Decide):
                if inj.type == "deny" and not inj.reason.strip():
                    self.error(
                        (*loc,), "a deny inject needs a 'reason' (a denial without one is refused)"
                    )
                if inj.after >= d.time_limit:
                    self.error(
                        (*loc, "after"),
                        f"decision after {inj.after:g}s cannot happen within the drill's "
                        f"time_limit ({d.time_limit:g}s)",
                        code="inject-timing",
                    )
                if inj.step in decided_steps:
                    first = decided_steps[inj.step]
                    self.error(
                        loc,
                        f"a second decision for the same approval (first: injects[{first}])",
                        "one decision per approval step; name the step with 'step:' when a "
                        "runbook asks twice",
                        code="inject-timing",
                        severity="warning",
                    )
                decided_steps.setdefault(inj.step, i)
            elif isinstance(inj, AttackerCreatesKey):
                self._ref((*loc, "user"), inj.user, self.users, "user")
                keys[inj.user] = keys.get(inj.user, 0) + 1
                if keys[inj.user] > 2:
                    self.error(
                        (*loc, "user"),
                        f"user '{inj.user}' would have {keys[inj.user]} access keys; IAM allows 2",
                        "seed the user with one key fewer",
                    )
            elif isinstance(inj, SlackOutage) and inj.at + inj.duration > d.time_limit:
                self.error(
                    (*loc, "duration"),
                    "the outage outlasts the drill's time_limit",
                    code="inject-timing",
                    severity="warning",
                )

    def _role(self, loc: tuple[str | int, ...], role: str) -> None:
        if self.drill.roles.get(role) is None:
            names = self.drill.roles.names()
            self.error(
                loc,
                f"unknown role '{role}'",
                did_you_mean(role, names) or f"roles: {', '.join(names)}",
                code="unknown-name",
            )

    def _slash_command(self, loc: tuple[str | int, ...], inj: SlashCommand) -> None:
        """``run <runbook> …`` must name a runbook of the library; timing within the limit."""
        words = inj.text.split()
        if not words or words[0] not in SLASH_SUBCOMMANDS:
            self.error(
                (*loc, "text"),
                f"'/clampdown {inj.text}' is not a clampdown command",
                f"start with one of: {', '.join(SLASH_SUBCOMMANDS)}",
            )
        elif words[0] == "run":
            name = words[1] if len(words) > 1 else ""
            if name not in self.runbooks:
                self.error(
                    (*loc, "text"),
                    f"'/clampdown run' names unknown runbook '{name}'",
                    did_you_mean(name, self.runbooks) or "name a runbook of the library",
                    code="unknown-runbook",
                )
        if inj.after >= self.drill.time_limit:
            self.error(
                (*loc, "after"),
                f"a command {inj.after:g}s after the run ended cannot happen within the "
                f"drill's time_limit ({self.drill.time_limit:g}s)",
                code="inject-timing",
            )

    def _objectives(self) -> None:
        d = self.drill
        ids: dict[str, int] = {}
        for i, obj in enumerate(d.objectives):
            loc: tuple[str | int, ...] = ("objectives", i)
            if obj.id in ids:
                self.error((*loc, "id"), f"duplicate objective id '{obj.id}'")
            ids.setdefault(obj.id, i)
            if isinstance(obj, NoActiveKeys):
                self._ref((*loc, "user"), obj.user, self.users, "user")
            elif isinstance(obj, EndpointNotInvocableBy):
                self._ref((*loc, "endpoint"), obj.endpoint, self.endpoints, "endpoint")
                self._ref(
                    (*loc, "principal"), obj.principal, self.users | self.roles, "user or role"
                )
            elif isinstance(obj, EndpointFrozen):
                self._ref((*loc, "endpoint"), obj.endpoint, self.endpoints, "endpoint")
            elif isinstance(obj, BucketLocked):
                self._ref((*loc, "bucket"), obj.bucket, self.buckets, "bucket")
            elif isinstance(obj, AccessRestored):
                self._ref((*loc, "user"), obj.user, self.users, "user")
            elif isinstance(obj, KmsKeyRotated):
                self._ref((*loc, "key"), obj.key, self.kms_keys, "kms_key")
            elif isinstance(obj, SecretRotated):
                self._ref((*loc, "secret"), obj.secret, self.secrets, "secret")
            runbook = getattr(obj, "runbook", None)
            if runbook is not None and runbook not in self.runbooks:
                self.error(
                    (*loc, "runbook"),
                    f"unknown runbook '{runbook}'",
                    did_you_mean(runbook, self.runbooks) or "name a runbook of the library",
                    code="unknown-runbook",
                )
            if isinstance(obj, ApprovalWithin) and not any(
                isinstance(inj, Decide) for inj in d.injects
            ):
                self.error(
                    loc,
                    "approval_within needs a decision: no approve or deny inject",
                    "add an inject {type: approve, by: approver, after: 10s}",
                    severity="warning",
                )
        for i, missed in enumerate(d.expect.missed):
            if missed not in ids:
                self.error(
                    ("expect", "missed", i),
                    f"unknown objective '{missed}'",
                    did_you_mean(missed, ids) or "name an objective id",
                )


# --- placeholders in alert payloads ---------------------------------------------------------

PLACEHOLDER = re.compile(r"\$\{\s*([A-Za-z_][\w.\-]*)\s*\}")
PLACEHOLDER_HINT = (
    "write ${seed.account}, ${seed.region}, ${seed.users.<name>.arn|id|access_keys.0}, "
    "${seed.roles.<name>.arn|id|sessions.0}, ${seed.buckets.<name>.arn}, "
    "${seed.endpoints.<name>.arn}, ${seed.kms_keys.<alias>.arn|id|alias}, "
    "${seed.secrets.<name>.arn}, ${drill.name}, ${drill.alert_time}, ${drill.alert_epoch}, "
    "or (in a slash command) ${run.id}"
)
_SEED_FIELDS = {
    "users": {"arn", "id", "name", "access_keys"},
    "roles": {"arn", "id", "name", "sessions"},
    "buckets": {"arn", "name"},
    "endpoints": {"arn", "name"},
    "kms_keys": {"arn", "id", "alias", "name"},
    "secrets": {"arn", "name"},
}
# What a drill may type after /clampdown (the Slack app's subcommands).
SLASH_SUBCOMMANDS = ("run", "status", "list", "help")


class PlaceholderError(ClampdownError):
    """A ``${…}`` in an alert payload names nothing the seed made."""


def _placeholders(
    value: Any, loc: tuple[str | int, ...]
) -> list[tuple[tuple[str | int, ...], str]]:
    if isinstance(value, str):
        return [(loc, m[1]) for m in PLACEHOLDER.finditer(value)]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _placeholders(v, (*loc, k))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _placeholders(v, (*loc, i))]
    return []


def _placeholder_problem(
    path: str, known: dict[str, set[str]], *, allow_run: bool = False
) -> str | None:
    """Why ``path`` cannot resolve, judged from the drill file alone (None: it can)."""
    parts = path.split(".")
    if parts[0] == "run":
        if not allow_run:
            return "${run.id} exists only in a slash command (the alert's run)"
        return None if parts == ["run", "id"] else "run has only id"
    if parts[0] == "drill":
        if len(parts) == 2 and parts[1] in ("name", "alert_time", "alert_epoch"):
            return None
        return "drill has name, alert_time and alert_epoch"
    if parts[0] != "seed":
        return f"unknown name '{parts[0]}'"
    if len(parts) == 2 and parts[1] in ("account", "region", "evidence_bucket"):
        return None
    if len(parts) < 4 or parts[1] not in _SEED_FIELDS:
        return "not a seed value"
    kind, name, field = parts[1], parts[2], parts[3]
    if name not in known[kind]:
        hint = did_you_mean(name, known[kind])
        return f"no seed {kind[:-1]} '{name}'" + (f"; {hint}" if hint else "")
    if field not in _SEED_FIELDS[kind]:
        return f"a seed {kind[:-1]} has {', '.join(sorted(_SEED_FIELDS[kind]))}"
    if field in ("access_keys", "sessions"):
        if len(parts) != 5 or not parts[4].isdigit():
            return f"name one of the {field} by index, e.g. {field}.0"
    elif len(parts) != 4:
        return "not a seed value"
    return None


def fill_placeholders(value: Any, context: dict[str, Any]) -> Any:
    """Replace every ``${path}`` with its value; a whole-string placeholder keeps its type."""
    if isinstance(value, dict):
        return {k: fill_placeholders(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [fill_placeholders(v, context) for v in value]
    if not isinstance(value, str):
        return value
    whole = PLACEHOLDER.fullmatch(value.strip())
    if whole:
        return _lookup(whole[1], context)
    return PLACEHOLDER.sub(lambda m: str(_lookup(m[1], context)), value)


def _lookup(path: str, context: dict[str, Any]) -> Any:
    current: Any = context
    for part in path.split("."):
        if isinstance(current, dict) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            raise PlaceholderError(f"placeholder ${{{path}}} names nothing", PLACEHOLDER_HINT)
    return current


# --- the drill library ----------------------------------------------------------------------


def drills_dir(library: str | FsPath) -> FsPath:
    return FsPath(library) / "drills"


def drill_files(library: str | FsPath) -> dict[str, FsPath]:
    """Drill name (file stem) -> file, in the library's ``drills/`` folder."""
    folder = drills_dir(library)
    if not folder.is_dir():
        return {}
    return {f.stem: f for f in sorted(folder.glob("*.y*ml"))}


def runbook_names(library: str | FsPath) -> set[str]:
    lib = FsPath(library)
    return {f.stem for f in lib.glob("*.y*ml") if f.name != "triggers.yaml"}


def resolve_drill(ref: str | None, library: str | FsPath) -> FsPath:
    """A drill file from a path or a name in ``<library>/drills/`` (default: model-theft)."""
    ref = ref or DEFAULT_DRILL
    candidate = FsPath(ref)
    if candidate.suffix in (".yaml", ".yml"):
        if not candidate.is_file():
            raise ClampdownError(f"drill file '{ref}' does not exist", "check the path")
        return candidate
    files = drill_files(library)
    if ref in files:
        return files[ref]
    raise ClampdownError(
        f"no drill named '{ref}' in {drills_dir(library)}",
        did_you_mean(ref, files) or "run 'clampdown drill --list' to see the drills",
    )


def load_checked(path: str | FsPath, library: str | FsPath) -> tuple[Drill, list[Diagnostic]]:
    """Load and lint a drill for running: raise on errors, return the warnings."""
    drill, source = load_drill(path)
    found = lint_drill(drill, source, runbook_names(library), path=FsPath(path))
    errors = [d for d in found if d.severity == "error"]
    if errors:
        raise InvalidFileError(errors)
    return drill, found


def lint_drills(paths: Iterable[str | FsPath], library: str | FsPath) -> list[Diagnostic]:
    """Lint drill files (for ``clampdown lint``): every problem of every file."""
    names = runbook_names(library)
    found: list[Diagnostic] = []
    for path in map(FsPath, paths):
        try:
            drill, source = load_drill(path)
        except InvalidFileError as exc:
            found.extend(exc.diagnostics)
            continue
        found.extend(lint_drill(drill, source, names, path=path))
    return found
