"""The lint of drills: cross-field rules a schema cannot express.

Names that must exist (runbooks, roles, seed users, buckets…), inject timing against
the time limit, objectives that can be met, placeholders that resolve. Every problem
is a positioned :class:`~clampdown.core.diagnostics.Diagnostic`, so ``clampdown lint`` and
``clampdown drill`` report them the same way.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path as FsPath
from typing import Any

from clampdown.core.diagnostics import Diagnostic, InvalidFileError, did_you_mean
from clampdown.core.drill_library import load_drill, runbook_names
from clampdown.core.drill_model import (
    AccessRestored,
    ApprovalWithin,
    AttackerCreatesKey,
    BucketLocked,
    Decide,
    Drill,
    EndpointFrozen,
    EndpointNotInvocableBy,
    KmsKeyRotated,
    NoActiveKeys,
    SecondAlert,
    SecretRotated,
    SlackOutage,
    SlashCommand,
)
from clampdown.core.drill_placeholders import (
    PLACEHOLDER,
    PLACEHOLDER_HINT,
    find_placeholders,
    placeholder_problem,
)
from clampdown.core.yamlsource import Source

# Alert sources a drill can sign the way the real sender does (SNS needs AWS's certificate).
DRILL_ALERT_SOURCES = ("guardduty", "eventbridge", "alertmanager", "pagerduty", "generic")
# What a drill may type after /clampdown (the Slack app's subcommands).
SLASH_SUBCOMMANDS = ("run", "status", "list", "help")


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
                for loc, path in find_placeholders(payload, base):
                    problem = placeholder_problem(path, known, allow_run=allow_run)
                    if problem:
                        line, col = self._placeholder_position(loc, path)
                        self.found.append(
                            Diagnostic(
                                self.source.path,
                                line,
                                col,
                                f"placeholder ${{{path}}}: {problem}",
                                PLACEHOLDER_HINT,
                                "invalid",
                            )
                        )

    def _placeholder_position(self, loc: tuple[str | int, ...], path: str) -> tuple[int, int]:
        """Where the first ``${path}`` of the string at ``loc`` is written (a payload's
        string may span lines); the string's start when that cannot be told."""
        value = self.source.value_at(loc)
        if isinstance(value, str):
            for match in PLACEHOLDER.finditer(value):
                if match[1] == path:
                    return self.source.value_position(loc, match.start(), value)
        return self.source.position(loc)

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
            self._objective_refs(loc, obj)
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

    def _objective_refs(self, loc: tuple[str | int, ...], obj: Any) -> None:
        """The seed names an objective measures must exist."""
        if isinstance(obj, NoActiveKeys):
            self._ref((*loc, "user"), obj.user, self.users, "user")
        elif isinstance(obj, EndpointNotInvocableBy):
            self._ref((*loc, "endpoint"), obj.endpoint, self.endpoints, "endpoint")
            self._ref((*loc, "principal"), obj.principal, self.users | self.roles, "user or role")
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
