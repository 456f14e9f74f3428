"""The runbook document, ``apiVersion: clampdown/v1``, as pydantic models.

Every model forbids unknown keys: a typo such as ``retires: 3`` must be an error,
not a silently ignored setting in the middle of an incident. Names are checked
here (kebab-case runbooks, snake_case steps) so the error lands on the line.
Cross-field rules that need the whole document (the DAG, expressions, actions)
live in :mod:`clampdown.core.lint`.
"""

# No __future__ annotations: pydantic then reads each field's type as written instead of
# compiling its text at class creation (a ForwardRef per field; lint imports this module).

import functools
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from clampdown.core.durations import Duration, PositiveDuration

API_VERSION = "clampdown/v1"
STEP_ID = re.compile(r"^[a-z][a-z0-9_]*$")
RUNBOOK_NAME = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
INPUT_NAME = re.compile(r"^[a-z][a-z0-9_]*$")

Severity = Literal["low", "medium", "high", "critical"]
SEVERITY_ORDER: dict[str, int] = {"low": 0, "medium": 1, "high": 2, "critical": 3}
InputType = Literal["string", "integer", "number", "boolean", "array", "object"]
OnFailure = Literal["abort", "continue"]


def _input_name(name: str) -> str:
    if not INPUT_NAME.match(name):
        suggestion = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
        raise ValueError(f"input name '{name}' is not snake_case; write '{suggestion}'")
    return name


InputName = Annotated[str, AfterValidator(_input_name)]

Needs = Annotated[
    list[str],
    BeforeValidator(lambda value: [value] if isinstance(value, str) else value),
    WithJsonSchema(
        {
            "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
            "description": "ids of the steps that must finish first (one id or a list)",
        }
    ),
]


class StrictModel(BaseModel):
    # strict: "2" is not a number and "yes" not a boolean, as in the JSON Schema editors use
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True, strict=True)


class Metadata(StrictModel):
    """Who the runbook is and how bad the situation it answers is."""

    name: str = Field(
        description="kebab-case, unique in the library",
        json_schema_extra={"pattern": RUNBOOK_NAME.pattern},
    )
    title: str = Field(description="one line a responder reads in Slack")
    severity: Severity = "high"
    tags: list[str] = Field(default_factory=list)
    description: str | None = None
    owner: str | None = Field(None, description="team or person who maintains it")

    @field_validator("name")
    @classmethod
    def _kebab(cls, value: str) -> str:
        if not RUNBOOK_NAME.match(value):
            suggestion = re.sub(r"[^a-z0-9]+", "-", value.lower()).strip("-")
            raise ValueError(f"runbook name '{value}' is not kebab-case; write '{suggestion}'")
        return value


class InputSpec(StrictModel):
    """One runbook input: its type and the constraints checked before a run starts."""

    type: InputType = "string"
    description: str | None = None
    required: bool = False
    default: Any = None
    pattern: str | None = Field(None, description="regular expression a string must match")
    minimum: float | None = None
    maximum: float | None = None
    enum: list[Any] | None = None
    min_items: int | None = Field(
        None, ge=0, description="for type: array, the fewest items a value may have"
    )
    secret: bool = Field(False, description="mask the value in the ledger, logs and Slack")

    @model_validator(mode="after")
    def _secret_is_text(self) -> "InputSpec":
        if self.secret and self.type != "string":
            raise ValueError("a secret input must be of type string (tokens, passwords, keys)")
        return self

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"pattern is not a valid regular expression: {exc}") from None
        return value


class StepSettings(StrictModel):
    """Execution settings a step may set and ``defaults`` may give to every step."""

    retries: int | None = Field(None, ge=0, le=20)
    retry_delay: Duration | None = None
    timeout: PositiveDuration | None = None
    on_failure: OnFailure | None = None
    region: str | None = Field(None, description="AWS region for this step's API calls")
    account: str | None = Field(None, description="role ARN to assume for cross-account response")


class Defaults(StepSettings):
    """Defaults for every step; a step's own setting wins."""


class Step(StepSettings):
    """One node of the runbook DAG."""

    id: str = Field(
        description="snake_case, unique in the runbook",
        json_schema_extra={"pattern": STEP_ID.pattern},
    )
    name: str | None = Field(None, description="human title for progress displays")
    uses: str = Field(description="action name, e.g. aws.iam.revoke_credentials")
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    needs: Needs = Field(default_factory=list)
    if_: str | bool | None = Field(None, alias="if")
    preapproved: str | None = Field(
        None,
        min_length=10,
        description="for a destructive step with no approval gate: who pre-authorised it "
        "and under which policy (shown in plans, recorded in the ledger)",
    )

    @field_validator("id")
    @classmethod
    def _snake(cls, value: str) -> str:
        if not STEP_ID.match(value):
            suggestion = re.sub(r"[^a-z0-9]+", "_", value.lower()).strip("_") or "step"
            if not suggestion[0].isalpha():
                suggestion = f"step_{suggestion}"
            raise ValueError(f"step id '{value}' is not snake_case; write '{suggestion}'")
        return value


class Runbook(StrictModel):
    """A whole runbook document."""

    api_version: Literal["clampdown/v1"] = Field(alias="apiVersion")
    kind: Literal["Runbook"]
    metadata: Metadata
    inputs: dict[InputName, InputSpec] = Field(
        default_factory=dict, json_schema_extra={"propertyNames": {"pattern": INPUT_NAME.pattern}}
    )
    defaults: Defaults = Field(default_factory=Defaults)
    steps: list[Step] = Field(min_length=1)
    outputs: dict[str, Any] = Field(default_factory=dict)

    def step(self, step_id: str) -> Step:
        """The step with this id (the first, should ids repeat); StopIteration if none."""
        listed, size, by_id = self._step_index
        if listed is not self.steps or size != len(listed):  # steps replaced (model_copy)
            del self.__dict__["_step_index"]
            listed, size, by_id = self._step_index
        found = by_id.get(step_id)
        if found is None:  # no such step: the scan raises StopIteration, as it always did
            return next(s for s in self.steps if s.id == step_id)
        return found

    @functools.cached_property
    def _step_index(self) -> tuple[list[Step], int, dict[str, Step]]:
        """id -> step, built once (not a field: equality and dumps ignore it)."""
        by_id: dict[str, Step] = {}
        for s in self.steps:
            by_id.setdefault(s.id, s)
        return self.steps, len(self.steps), by_id

    def setting(self, step: Step, name: str, fallback: Any) -> Any:
        """A step setting, falling back to ``defaults`` and then to ``fallback``."""
        value = getattr(step, name)
        if value is None:
            value = getattr(self.defaults, name)
        return fallback if value is None else value
