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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from clampdown.core.diagnostics import ClampdownError, did_you_mean
from clampdown.core.home import Home, RunFiles

ENTRY_POINT_GROUP = "clampdown.actions"


class ActionInput(BaseModel):
    """Base for action inputs: unknown ``with`` fields are errors."""

    model_config = ConfigDict(extra="forbid")


class ActionOutput(BaseModel):
    """Base for action outputs: what ``steps.<id>.outputs`` exposes."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class ActionContext:
    """What an action knows about the run it is part of.

    ``record_undo`` is how a containment action says what it changed and how to
    put it back; the executor writes those records to the ledger for rollback.
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

    @property
    def files(self) -> RunFiles:
        """This run's files: ``$CLAMPDOWN_HOME/runs/<run-id>/...``."""
        return self.home.run(self.run_id)

    @property
    def run_dir(self) -> Path:
        """The run's folder, ``$CLAMPDOWN_HOME/runs/<run-id>/``."""
        return self.files.dir

    def record_undo(self, description: str, **how: Any) -> None:
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


class UnknownActionError(ClampdownError):
    pass


class ActionLoadError(ClampdownError):
    """An installed action's entry point fails to import or is not an Action."""


class Registry:
    """Action classes by name; entry points are loaded lazily and cached."""

    def __init__(self, entries: Mapping[str, EntryPoint] | None = None) -> None:
        if entries is None:
            entries = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
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
