"""Actions: named, typed units of work, found through the ``clampdown.actions`` entry points.

An action declares a pydantic input model, an output model, the IAM actions it
calls, whether it is destructive, and ``run()``. The registry reads entry-point
*names* eagerly (cheap) and imports an action's module only when it is used, so
``clampdown lint`` does not pay for boto3 or slack-sdk imports it does not need.
A team adds its own actions by declaring entry points in its own package:

.. code-block:: toml

    [project.entry-points."clampdown.actions"]
    "acme.page_oncall" = "acme_clampdown.actions:PageOncall"
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from clampdown.core.diagnostics import ClampdownError, did_you_mean
from clampdown.core.installed import installed_entry_points

if TYPE_CHECKING:  # for annotations only: lint reads actions and never their run files
    # (clampdown.core.home and what it imports)
    from clampdown.core.home import Home, RunFiles

ENTRY_POINT_GROUP = "clampdown.actions"


class ActionInput(BaseModel):
    """Base for action inputs: unknown ``with`` fields are errors."""

    # built on first use, not at import: lint and plan load every action a runbook names
    # but validate few of them (some patterns take the Rust regex crate 30-60 ms)
    model_config = ConfigDict(extra="forbid", defer_build=True)


class ActionOutput(BaseModel):
    """Base for action outputs: what ``steps.<id>.outputs`` exposes."""

    model_config = ConfigDict(extra="forbid", defer_build=True)  # built on first use


IntentHook = Callable[["Intent"], None]
"""Writes one undo intent where it survives the process (the engine: an ``undo.intent``
ledger record, fsync'd) before the change it undoes is made; raising stops the change."""


@dataclass
class Intent:
    """A change an action is about to make, and how to put it back: declared first, settled after.

    :meth:`ActionContext.changing` (or :meth:`ActionContext.intend_undo`) writes it before
    the mutating call; once the call returns, :meth:`confirm` records the undo (what
    rollback runs), or :meth:`not_made` says the call changed nothing. An intent left
    unsettled (the process died, the call timed out) is undone by rollback all the same:
    it may have been applied, and every undo is idempotent.
    """

    id: str
    description: str
    how: dict[str, Any]
    ctx: ActionContext = field(repr=False)
    state: str | None = None  # None (unsettled), "confirmed" or "not made"

    def confirm(self, description: str | None = None, **how: Any) -> None:
        """The change was made: record its undo.

        ``description`` and ``how`` replace the intent's when the call told more than was
        known before it (e.g. the id of a key it created); by default the intent's own.
        """
        if self.state is not None:
            raise RuntimeError(f"undo intent {self.id} is already {self.state}")
        self.state = "confirmed"
        self.ctx.undo.append({"description": description or self.description, **(how or self.how)})
        if self.ctx.intent_hook is not None:
            self.ctx.confirmed.append(self.id)

    def not_made(self) -> None:
        """The call changed nothing (refused, or the state was already as wanted)."""
        if self.state is not None:
            raise RuntimeError(f"undo intent {self.id} is already {self.state}")
        self.state = "not made"
        if self.ctx.intent_hook is not None:
            self.ctx.not_made.append(self.id)


@dataclass
class ActionContext:
    """What an action knows about the run it is part of.

    A containment action says what it changes and how to put it back *before* each
    mutating call, so a process killed between the call and the step's end still leaves
    rollback able to undo it::

        with ctx.changing(f"Re-activate access key {key} of {user}",
                          op="activate_access_key", user_name=user, access_key_id=key):
            iam.update_access_key(UserName=user, AccessKeyId=key, Status="Inactive")

    ``changing`` writes the intent at once (``intent_hook``: the engine appends an
    ``undo.intent`` ledger record) and confirms it when the block ends without an
    error; the executor writes the confirmed undo records (``undo``) and the ids of the
    intents settled (``confirmed``, ``not_made``) into the step's ``step.end`` (or
    ``step.attempt_failed``). Rollback undoes every confirmed record and every intent
    never settled. ``record_undo`` (after the change, no intent) still works, for
    actions written before intents: a crash between their call and the step's end
    leaves that change unrecorded. Outside the engine (``plan --live``, a rollback's
    own undo actions, tests) ``intent_hook`` is None and intents are kept in memory only.

    ``home`` is ``CLAMPDOWN_HOME`` (:class:`~clampdown.core.home.Home`), filled by
    whoever runs the action (the engine, a rollback, ``clampdown plan``); ``files`` are
    this run's files under it and ``run_dir`` its folder. An action finds its run's
    files there, never through the settings. ``mask`` replaces the run's secret values
    (secret inputs) in text an action shows people, e.g. a Slack message: the engine
    passes the ledger's scrub; elsewhere nothing is masked.
    """

    run_id: str
    step_id: str
    runbook: str
    home: Home
    drill: bool = False
    region: str | None = None
    account: str | None = None
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("clampdown.action"))
    undo: list[dict[str, Any]] = field(default_factory=list)
    mask: Callable[[str], str] = field(default=lambda text: text)
    # the key that signs this run's ledger (clampdown.core.ledger_signing), None: unsigned;
    # an action that reads another run's ledger (core.rollback_run) checks it with this key
    ledger_signer: Any = None
    intent_hook: IntentHook | None = None
    confirmed: list[str] = field(default_factory=list)  # ids of intents whose change was made
    not_made: list[str] = field(default_factory=list)  # ids of intents whose call changed nothing

    @property
    def files(self) -> RunFiles:
        """This run's files: ``$CLAMPDOWN_HOME/runs/<run-id>/...``."""
        return self.home.run(self.run_id)

    @property
    def run_dir(self) -> Path:
        """The run's folder, ``$CLAMPDOWN_HOME/runs/<run-id>/``."""
        return self.files.dir

    def intend_undo(self, description: str, **how: Any) -> Intent:
        """Declare a change about to be made and its undo; written before this returns.

        Settle it after the call with :meth:`Intent.confirm` or :meth:`Intent.not_made`
        (:meth:`changing` does so for you). If the hook cannot write it (disk full), this
        raises and the change must not be made.
        """
        intent = Intent(uuid.uuid4().hex[:16], description, dict(how), self)
        if self.intent_hook is not None:
            self.intent_hook(intent)
        return intent

    @contextmanager
    def changing(self, description: str, **how: Any) -> Iterator[Intent]:
        """Around one mutating call: the intent is written before, confirmed after.

        An error out of the block leaves the intent unsettled (the call may have gone
        through before failing): rollback undoes it, idempotently. Call
        :meth:`Intent.not_made` inside the block when the call is known to have changed
        nothing, or :meth:`Intent.confirm` with what the call returned.
        """
        intent = self.intend_undo(description, **how)
        yield intent
        if intent.state is None:
            intent.confirm()

    def record_undo(self, description: str, **how: Any) -> None:
        """Record the undo of a change already made (no intent before it; see the class doc)."""
        self.undo.append({"description": description, **how})


class Action:
    """Base class of every action; subclasses set the class attributes and ``run``."""

    name: ClassVar[str]
    summary: ClassVar[str] = ""
    Input: ClassVar[type[BaseModel]] = ActionInput
    Output: ClassVar[type[BaseModel]] = ActionOutput
    iam_actions: ClassVar[tuple[str, ...]] = ()
    destructive: ClassVar[bool] = False
    approval_gate: ClassVar[bool] = False

    def run(self, params: Any, ctx: ActionContext) -> Any:  # sync or async
        raise NotImplementedError

    def preview(self, params: Any, ctx: ActionContext) -> list[str] | None:
        """The changes ``run`` would make now, found without changing anything.

        ``clampdown plan --live`` shows them. None: this action cannot tell.
        """
        return None

    @classmethod
    def iam_resources(cls, with_: Mapping[str, Any]) -> dict[str, list[str]]:
        """Resource ARNs per IAM action, from a step's literal ``with`` values.

        Used by ``clampdown iam-policy`` to narrow the policy; an action left out
        (or a value written as an expression) gets ``"*"``; an empty list means the
        action is not called for these inputs. Only literal values are passed.
        """
        return {}

    @classmethod
    def declared_outputs(cls, with_: Mapping[str, Any]) -> set[str] | None:
        """Output field names a step with these ``with`` values produces (None: unknown)."""
        return set(cls.Output.model_fields)

    @classmethod
    def release_run(cls, run_id: str) -> None:
        """The run ended in this process: let go of what this action kept for it (an AWS
        action: the run's boto3 clients and assumed-role credentials). Called by the flow
        that ran the run, once per action class its runbook uses; nothing by default."""


class UnknownActionError(ClampdownError):
    pass


@dataclass(frozen=True)
class WithProblem:
    """One ``with`` value an action refuses: where, what it was, and the rule it breaks."""

    field: str
    value: Any
    rule: str

    def __str__(self) -> str:
        if self.rule == _MISSING:
            return f"with.{self.field} is missing"
        return f"with.{self.field} = {_shown(self.value)}: {self.rule}"


_MISSING = "is required"
_RULES: dict[str, str] = {
    "string_type": "must be a string",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "list_type": "must be a list",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "extra_forbidden": "is not a field of this action",
    "missing": _MISSING,
}
_CONSTRAINTS: dict[str, str] = {
    "too_short": "must have at least {min_length} item(s)",
    "too_long": "must have at most {max_length} item(s)",
    "string_too_short": "must be at least {min_length} character(s) long",
    "string_too_long": "must be at most {max_length} characters long",
    "string_pattern_mismatch": "must match the pattern {pattern}",
    "greater_than_equal": "must be at least {ge}",
    "greater_than": "must be more than {gt}",
    "less_than_equal": "must be at most {le}",
    "less_than": "must be less than {lt}",
    "literal_error": "must be one of {expected}",
    "enum": "must be one of {expected}",
}


def _shown(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def with_problems(
    exc: ValidationError, scrub: Callable[[Any], Any] | None = None
) -> list[WithProblem]:
    """A pydantic ValidationError of an action's input model, in clampdown's words:
    the field, the value given and the rule (never pydantic's text or its links).

    ``scrub`` masks secrets in the values before they are quoted (and cut short: a
    secret cut in half would no longer be found by a later scrub)."""
    scrub = scrub or (lambda value: value)
    return [with_problem(err, scrub(err.get("input"))) for err in exc.errors(include_url=False)]


def with_problem(err: Any, value: Any) -> WithProblem:
    """One pydantic error (``ValidationError.errors()`` item) as a :class:`WithProblem`."""
    where = ".".join(str(p) for p in err["loc"]) or "(all)"
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind in _RULES:
        rule = _RULES[kind]
    elif kind in _CONSTRAINTS:
        try:
            rule = _CONSTRAINTS[kind].format(**ctx)
        except (KeyError, IndexError):
            rule = str(err["msg"])
    else:  # a validator of the action's own: its message is already meant for people
        rule = str(err["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    return WithProblem(where, value, rule)


class InputValidationError(ClampdownError):
    """A step's ``with`` values, as rendered, are refused by its action's input model."""

    def __init__(self, step_id: str, action: str, problems: list[WithProblem]) -> None:
        self.step_id = step_id
        self.action = action
        self.problems = problems
        listed = "; ".join(map(str, problems))
        super().__init__(
            f"step '{step_id}' ({action}): {listed}",
            f"fix the with: value of '{step_id}' or the input that gives it "
            "(clampdown actions lists each action's fields)",
        )


def validate_input(
    action: type[Action],
    values: Mapping[str, Any],
    step_id: str,
    scrub: Callable[[Any], Any] | None = None,
) -> BaseModel:
    """``values`` as the action's input model, or :class:`InputValidationError` in
    clampdown's words: the one place run, plan and approvals validate ``with``."""
    try:
        return action.Input.model_validate(values)
    except ValidationError as exc:
        raise InputValidationError(step_id, action.name, with_problems(exc, scrub)) from None


class ActionLoadError(ClampdownError):
    """An installed action's entry point fails to import or is not an Action."""


class Registry:
    """Action classes by name; entry points are loaded lazily and cached."""

    def __init__(self, entries: Mapping[str, EntryPoint] | None = None) -> None:
        if entries is None:
            installed = installed_entry_points().select(group=ENTRY_POINT_GROUP)
            entries = {ep.name: ep for ep in installed}
        self._entries = dict(entries)
        self._loaded: dict[str, type[Action]] = {}

    def names(self) -> list[str]:
        return sorted({*self._entries, *self._loaded})

    def __contains__(self, name: object) -> bool:
        return name in self._entries or name in self._loaded

    def get(self, name: str) -> type[Action]:
        if name in self._loaded:
            return self._loaded[name]
        if name not in self._entries:
            raise UnknownActionError(
                f"unknown action '{name}'",
                did_you_mean(name, self.names()) or "run 'clampdown actions' to list them",
            )
        entry = self._entries[name]
        try:
            cls = entry.load()
        except Exception as exc:  # a broken plugin must not take the whole CLI down
            raise ActionLoadError(
                f"action '{name}' cannot be loaded from {entry.value}: {type(exc).__name__}: {exc}",
                "fix or uninstall the package that provides it",
            ) from None
        if not (isinstance(cls, type) and issubclass(cls, Action)):
            raise ActionLoadError(
                f"entry point '{name}' ({entry.value}) does not point at an Action subclass",
                "fix the package that provides it",
            )
        self._loaded[name] = cls
        return cls

    def register(self, cls: type[Action]) -> type[Action]:
        """Add an action in-process (extensions without packaging, and tests)."""
        self._loaded[cls.name] = cls
        return cls

    def load_all(self) -> tuple[list[type[Action]], list[ActionLoadError]]:
        """Every action that loads, and the errors of those that do not."""
        loaded: list[type[Action]] = []
        broken: list[ActionLoadError] = []
        for name in self.names():
            try:
                loaded.append(self.get(name))
            except ActionLoadError as exc:
                broken.append(exc)
        return loaded, broken


_registry: Registry | None = None


def registry() -> Registry:
    """The process-wide registry, built on first use."""
    global _registry
    if _registry is None:
        _registry = Registry()
    return _registry


def registry_from(entries: Iterable[EntryPoint]) -> Registry:
    """The process-wide registry, built from entry points the caller already read.

    A light ``clampdown lint`` reads the installed packages' entry points once for
    every group it needs (this one and pydantic's plug-ins) instead of once per group:
    each reading opens every installed distribution's metadata. A registry already
    built is kept as it is."""
    global _registry
    if _registry is None:
        _registry = Registry({ep.name: ep for ep in entries})
    return _registry
