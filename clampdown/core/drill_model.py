"""The ``kind: Drill`` document: a tabletop scenario on simulated AWS.

A drill names everything a rehearsal needs so that two runs of it are the same
exercise: the *seed* (the simulated account before the incident: users with keys,
the model bucket, the endpoint, CloudTrail files and log events that tell the
story), the *alert* posted at T+0, the *injects* (people deciding, Slack failing,
AWS throttling, the attacker acting again), the *objectives* the team is scored
on, and what the authors *expect* (a drill built to show a denial expects the
containment objectives to be missed).

This module only holds the models. :mod:`clampdown.core.drill_library` finds and loads
drill files, :mod:`clampdown.core.drill_lint` checks them, :mod:`clampdown.app.drill.runner`
runs them and :mod:`clampdown.app.drill.objectives` scores them.
Objective kinds live here (not beside their
checkers) so ``clampdown lint`` can reject an unknown kind without importing a
provider.
"""

# No __future__ annotations: pydantic then reads each field's type as written instead of
# compiling its text at class creation (a ForwardRef per field; lint imports this module).

import re
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, field_validator

from clampdown.core.alert import Source as AlertSource
from clampdown.core.durations import Duration, PositiveDuration
from clampdown.core.models import RUNBOOK_NAME, STEP_ID, StrictModel

DRILL_KIND = "Drill"
ACCOUNT = re.compile(r"^\d{12}$")
SLACK_USER = re.compile(r"^[UW][A-Z0-9]{2,20}$")
MAX_DRILL_SECONDS = 3600.0


class _DrillModel(StrictModel):
    """A part of a drill document. Its validator is built on first use (``defer_build``),
    not when this module is imported: ``clampdown lint`` imports the module to lint a
    library's drills, where only :class:`Drill` validates (the parts' schemas are built
    into its own), and the parts' forty-odd validators of their own cost about a tenth
    of a cold lint. Validating behaves the same either way."""

    model_config = ConfigDict(defer_build=True)


class DrillMetadata(_DrillModel):
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


class Person(_DrillModel):
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


class SeedUser(_DrillModel):
    name: str = Field(min_length=1, max_length=64)
    access_keys: int = Field(1, ge=0, le=2, description="active access keys (IAM allows two)")
    console: bool = Field(False, description="give the user a console login profile")
    policy: dict[str, Any] | None = Field(None, description="an inline identity policy")


class SeedRole(_DrillModel):
    name: str = Field(min_length=1, max_length=64)
    service: str | None = Field(
        None, description="service principal that may assume it, e.g. sagemaker.amazonaws.com"
    )
    sessions: int = Field(0, ge=0, le=5, description="role sessions to open (stolen credentials)")
    policy: dict[str, Any] | None = None


class SeedBucket(_DrillModel):
    name: str = Field(min_length=3, max_length=63)
    object_lock: bool = False
    objects: dict[str, int | str] = Field(
        default_factory=dict, description="key -> size in bytes, or the text of the object"
    )


class SeedEndpoint(_DrillModel):
    name: str = Field(min_length=1, max_length=63)
    model_data: str = Field(pattern=r"^s3://", description="s3:// URI of model.tar.gz")
    role: str = Field(description="execution role (a seed role name)")
    instance_type: str = "ml.m5.large"


class TrailEvent(_DrillModel):
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
    version_id: str | None = Field(None, description="S3 object version read (versionId)")
    bytes_out: int | None = Field(
        None,
        ge=0,
        description="additionalEventData.bytesTransferredOut of each record (an S3 object "
        "read; default: the seeded object's size for GetObject, else 0)",
    )


class SeedTrail(_DrillModel):
    name: str
    bucket: str = Field(description="bucket the trail delivers to (created by the seed)")
    events: list[TrailEvent] = Field(default_factory=list)
    data_events: list[str] = Field(
        default_factory=list,
        description="buckets whose S3 object reads the trail logs (its event selectors); "
        "S3 object calls on them are written as data events",
    )
    hours: int = Field(
        0,
        ge=0,
        le=168,
        description="deliver a file at least every 30 minutes for this many hours before "
        "the alert, so a scope of that window sees no gap in the trail's files",
    )


class LogEvent(_DrillModel):
    ago: Duration
    message: str
    repeat: int = Field(1, ge=1, le=1000)


class SeedLogGroup(_DrillModel):
    name: str
    events: list[LogEvent] = Field(default_factory=list)


class SeedKmsKey(_DrillModel):
    """A customer managed key the model's artifacts are encrypted with."""

    alias: str = Field(
        min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_-]+$", description="alias/<this>"
    )
    description: str = ""


class SeedSecret(_DrillModel):
    """A Secrets Manager secret of the model stack (its value never leaves the simulation)."""

    name: str = Field(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9_+=@-]+$")
    value: str | dict[str, Any] = Field(description="text, or a JSON object (e.g. a password)")


class Seed(_DrillModel):
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


class DrillAlert(_DrillModel):
    """What the alert source sends at T+0 (expressions see ``seed`` and ``drill``)."""

    source: AlertSource
    payload: dict[str, Any]


# --- injects --------------------------------------------------------------------------------


class Decide(_DrillModel):
    """A person clicks Approve or Deny ``after`` the approval card appears."""

    type: Literal["approve", "deny"]
    by: str = Field(description="a role of the drill (e.g. approver)")
    after: Duration = Field(0.0, description="wait this long after the request appears")
    step: str | None = Field(None, description="approval step id (default: the next one asked)")
    reason: str = ""


class SecondAlert(_DrillModel):
    type: Literal["alert"]
    at: Duration
    source: AlertSource
    payload: dict[str, Any]


class SlackOutage(_DrillModel):
    """Slack answers every call with an error from ``at`` for ``duration``."""

    type: Literal["slack_outage"]
    at: Duration = 0.0
    duration: PositiveDuration
    mode: Literal["down", "server_error", "ratelimited"] = "server_error"


class AwsThrottling(_DrillModel):
    """The first ``calls`` API calls to ``service`` from ``at`` on answer ``Throttling``."""

    type: Literal["aws_throttling"]
    at: Duration = 0.0
    service: str = Field(description="botocore service id, e.g. iam, s3, sagemaker")
    calls: int = Field(3, ge=1, le=50)


class AttackerCreatesKey(_DrillModel):
    """The attacker, still holding a working key, mints another one at ``at``."""

    type: Literal["attacker_creates_key"]
    at: Duration
    user: str = Field(description="a seed user")


class SlashCommand(_DrillModel):
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


class _Objective(_DrillModel):
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


class ScopedExactly(_RunObjective):
    """The run's scoping step named exactly the objects the seeded trail says ``principal``
    read (bucket, key, version) and the bytes of each: nothing missed, nothing extra."""

    kind: Literal["scoped_exactly"]
    principal: str = Field(description="a seed user or role name: the thief of the story")
    step: str | None = Field(
        None,
        description="the scoping step's id (default: the run's scope_exfiltration step)",
    )


class AlertsRecorded(_Objective):
    """Every alert the drill posted is in some run's ledger: it started the run or joined it."""

    kind: Literal["alerts_recorded"]


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
    | SlackMissesRecorded
    | ScopedExactly
    | AlertsRecorded,
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
    "scoped_exactly",
    "alerts_recorded",
)


class Expect(_DrillModel):
    """What the authors built the drill to show: objectives that must come out missed."""

    missed: list[str] = Field(default_factory=list)


class Roles(_DrillModel):
    incident_lead: Person
    approver: Person
    others: dict[str, Person] = Field(default_factory=dict)

    def get(self, name: str) -> Person | None:
        if name in ("incident_lead", "approver"):
            return getattr(self, name)  # type: ignore[no-any-return]
        return self.others.get(name)

    def names(self) -> list[str]:
        return ["incident_lead", "approver", *self.others]


class Drill(_DrillModel):
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
    narrative: str | None = Field(
        None,
        max_length=4000,
        description="the scenario as the facilitator tells it to the team (the report's "
        "Scenario section)",
    )
    facilitator_notes: list[str] = Field(
        default_factory=list,
        description="what the facilitator should watch for and ask in the debrief (the "
        "report's Facilitator notes)",
    )
