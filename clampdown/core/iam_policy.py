"""``clampdown iam-policy``: the least-privilege policy the engine's role needs.

Built only from what actions declare, so it matches the code that will run:
``iam_actions`` (what an action may call) and ``iam_resources(with_)`` (the ARNs each
call touches, as a function of the step's ``with`` values). The generator asks
``iam_resources`` with every value a ``with`` field can take before the run:

* a literal is passed as written;
* ``"{{ inputs.x }}"`` (alone or inside text) is replaced by each value of the input's
  ``enum`` (one ARN per value), or by IAM wildcards translated from its anchored
  ``pattern`` (``^arn:aws:iam::\\d{12}:(user|role)/.+$`` gives ``arn:aws:iam::*:user/*``
  and ``arn:aws:iam::*:role/*``: a runbook that takes only roles gets no user actions);
* any other string expression becomes ``"*"`` ("any value"). When the action's own
  input field accepts only IAM user and/or role ARNs, the generator tries one wildcard
  per kind instead (``arn:aws:iam::*:user/*``, ``arn:aws:iam::*:role/*``), so an
  action that splits its calls by kind still gets per-kind statements.

So a value handed to ``iam_resources`` may hold IAM wildcards (``*`` any run of
characters, ``?`` one character). An action that cannot narrow such a value leaves
the IAM action out of its answer, and the policy grants it on ``"*"`` with a note on
stderr naming the step and field. An action that returns ``["*"]`` says AWS itself
requires ``"*"`` (the call has no resource-level permissions): no note. ``[]`` means
the call is not made for these values.

Resources may name the evidence bucket as :data:`EVIDENCE_BUCKET`; it becomes
``CLAMPDOWN_EVIDENCE_BUCKET`` (or ``*`` with a note when it is not set). Cross-account
steps add ``sts:AssumeRole`` on their roles; the engine's own ledger and manifest
writes add the S3 calls on the evidence bucket's ``incidents/`` prefix.

``read_only=True`` gives the policy ``clampdown plan --live`` needs: only the declared
actions that read configuration (Get/List/Describe/Head, API Gateway's GET), without
any read of data (objects, secret values, log events, CloudTrail events), and no writes.
"""

from __future__ import annotations

import fnmatch
import itertools
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from clampdown.core.actions import Action, Registry
from clampdown.core.expressions import contains_expression
from clampdown.core.models import InputSpec, Runbook

EVIDENCE_BUCKET = "<evidence-bucket>"
"""Placeholder an action may put in an ARN for the evidence bucket it writes to."""

EVIDENCE_ACTIONS = (
    "s3:GetBucketObjectLockConfiguration",
    "s3:GetObject",
    "s3:ListBucket",
    "s3:PutObject",
    "s3:PutObjectRetention",
)
_BUCKET_LEVEL = ("s3:ListBucket", "s3:GetBucketObjectLockConfiguration")
PER_KIND = " (one wildcard per IAM kind)"
MAX_VARIANTS = 64  # combinations of with values asked per step; beyond: treated as unknown
READ_PREFIXES = ("Get", "List", "Describe", "Head")
# reads of data, not configuration: plan --live makes none of them
DATA_READS = frozenset(
    {
        "s3:GetObject",
        "s3:GetObjectVersion",
        "secretsmanager:GetSecretValue",
        "logs:GetLogEvents",
        "logs:FilterLogEvents",
        "cloudtrail:LookupEvents",
        "kms:Decrypt",
    }
)
_INPUT_REF = re.compile(r"\{\{\s*inputs\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
# concrete ARNs that tell whether an action's field takes IAM principals only
_KIND_PROBES = {
    "arn:aws:iam::123456789012:user/probe": "arn:aws:iam::*:user/*",
    "arn:aws:iam::123456789012:role/probe": "arn:aws:iam::*:role/*",
}
_FOREIGN_PROBES = (
    "probe",
    "arn:aws:s3:::probe",
    "arn:aws:iam::123456789012:group/probe",
    "arn:aws:sts::123456789012:assumed-role/probe/session",
)


@dataclass
class Policy:
    """The policy document and why some of it is wider than it could be."""

    document: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def policy(
    runbooks: Iterable[Runbook],
    actions: Registry,
    evidence_bucket: str | None = None,
    *,
    read_only: bool = False,
) -> dict[str, Any]:
    """An IAM policy document covering every step of ``runbooks``."""
    return build(runbooks, actions, evidence_bucket, read_only=read_only).document


def build(
    runbooks: Iterable[Runbook],
    actions: Registry,
    evidence_bucket: str | None = None,
    *,
    read_only: bool = False,
    ledger_key: str | None = None,
) -> Policy:
    """The policy and its notes (which steps got ``"*"`` and why)."""
    wanted: dict[str, set[str]] = defaultdict(set)
    notes: list[str] = []
    for runbook in runbooks:
        for step in runbook.steps:
            action = actions.get(step.uses)
            names = read_only_actions(action.iam_actions) if read_only else action.iam_actions
            where = f"{runbook.metadata.name}: step {step.id} ({step.uses})"
            for name, resources in _step_resources(
                action, names, step.with_, runbook, where, notes
            ):
                wanted[name].update(resources)
            role = runbook.setting(step, "account", None)
            if role:
                wanted["sts:AssumeRole"].add("*" if contains_expression(role) else role)
    bucket = evidence_bucket or "*"
    if not evidence_bucket and any(EVIDENCE_BUCKET in r for rs in wanted.values() for r in rs):
        notes.append(
            "CLAMPDOWN_EVIDENCE_BUCKET is not set: evidence writes are allowed under "
            "incidents/ of any bucket; set it to name the bucket"
        )
    if evidence_bucket and not read_only:
        target = f"arn:aws:s3:::{evidence_bucket}"
        for name in EVIDENCE_ACTIONS:
            wanted[name].add(target if name in _BUCKET_LEVEL else f"{target}/incidents/*")
    if ledger_key and not read_only:
        for name in LEDGER_SIGNING_ACTIONS:  # every ledger record is signed with this key
            wanted[name].add(_kms_key_resource(ledger_key, notes))
    resolved = {
        name: {r.replace(EVIDENCE_BUCKET, bucket) for r in resources}
        for name, resources in wanted.items()
    }
    return Policy(_document(resolved), notes)


LEDGER_SIGNING_ACTIONS = ("kms:DescribeKey", "kms:Sign")


def _kms_key_resource(key: str, notes: list[str]) -> str:
    """The ledger signing key (``CLAMPDOWN_LEDGER_KMS_KEY_ID``) as an IAM resource."""
    if key.startswith("arn:aws:kms:") and ":key/" in key:
        return key
    if key.startswith(("alias/", "arn:aws:kms:")):
        notes.append(
            "CLAMPDOWN_LEDGER_KMS_KEY_ID is an alias: kms:Sign is granted on any key "
            '("*"); give the key\'s ARN to narrow it'
        )
        return "*"
    return f"arn:aws:kms:*:*:key/{key}"


def read_only_actions(names: Iterable[str]) -> tuple[str, ...]:
    """The configuration reads among ``names``: what a preview may call."""
    kept = []
    for name in names:
        service, _, verb = name.partition(":")
        if name in DATA_READS:
            continue
        if verb.startswith(READ_PREFIXES) or (service == "apigateway" and verb == "GET"):
            kept.append(name)
    return tuple(kept)


def _step_resources(
    action: type[Action],
    names: Iterable[str],
    with_: Mapping[str, Any],
    runbook: Runbook,
    where: str,
    notes: list[str],
) -> Iterator[tuple[str, list[str]]]:
    """(IAM action, resources) for one step, over every value its ``with`` can take."""
    variants, vague = _with_variants(action, with_, runbook.inputs)
    answers = []
    for values in variants:
        try:
            answers.append(action.iam_resources(values))
        except Exception:  # an action that cannot read a wildcard: grant "*", say so
            answers.append({})
            vague = vague or ["(its iam_resources failed on a wildcard value)"]
    starred = []
    for name in names:
        found: set[str] = set()
        for answer in answers:
            resources = answer.get(name)
            if resources is None:
                found = {"*"}
                starred.append(name)
                break
            found.update(resources)
        if found:
            yield name, sorted(found)
    if starred:
        why = (
            f"{'; '.join(vague)} (give the input an enum or an anchored pattern to narrow it)"
            if vague
            else "the action gives no resource ARNs for them with these values"
        )
        notes.append(f'{where}: {", ".join(sorted(set(starred)))} on "*": {why}')
    elif any(PER_KIND in v for v in vague):
        notes.append(
            f"{where}: granted per IAM kind (arn:aws:iam::*:user/*, arn:aws:iam::*:role/*): "
            f"{'; '.join(v for v in vague if PER_KIND in v)} (give the input an anchored "
            "pattern to narrow it)"
        )


def _with_variants(
    action: type[Action], with_: Mapping[str, Any], inputs: Mapping[str, InputSpec]
) -> tuple[list[dict[str, Any]], list[str]]:
    """Every combination of values the ``with`` fields can take, and the vague fields."""
    choices: dict[str, list[Any]] = {}
    vague: list[str] = []
    for key, value in with_.items():
        if _numeric(value, inputs):
            continue  # a count or a duration: names no resource
        options, why = _values(value, inputs)
        if options is None:
            if isinstance(value, str):
                kinds = _principal_kinds(action, key)
                choices[key] = kinds or ["*"]
                vague.append(f"with.{key} is {why}" + (PER_KIND if kinds else ""))
            else:
                vague.append(f"with.{key} is {why}")
            continue
        choices[key] = options
    total = 1
    for options in choices.values():
        total *= len(options)
    if total > MAX_VARIANTS:
        return [{}], [*vague, f"more than {MAX_VARIANTS} combinations of values"]
    keys = list(choices)
    return [
        dict(zip(keys, combo, strict=True)) for combo in itertools.product(*choices.values())
    ], vague


def _numeric(value: Any, inputs: Mapping[str, InputSpec]) -> bool:
    whole = _INPUT_REF.fullmatch(value.strip()) if isinstance(value, str) else None
    spec = inputs.get(whole[1]) if whole else None
    return spec is not None and spec.type in ("integer", "number")


def _values(value: Any, inputs: Mapping[str, InputSpec]) -> tuple[list[Any] | None, str]:
    """The values one ``with`` value can take (None: unknown), and why it is unknown."""
    if isinstance(value, list):
        items = [_values(item, inputs) for item in value]
        if all(options is not None for options, _ in items):
            # each item is one of its options: a list of them all covers every list it can be
            return [[o for options, _ in items for o in options or []]], ""
        return None, "a list with values known only at run time"
    if not contains_expression(value):
        return [value], ""
    names = _INPUT_REF.findall(value)
    if not names or contains_expression(_INPUT_REF.sub("", value)):
        return None, f"'{value}', known only at run time"
    per_input: dict[str, list[Any]] = {}
    for name in dict.fromkeys(names):
        spec = inputs.get(name)
        options = _input_values(spec) if spec else None
        if options is None:
            return None, f"'{value}' and input {name} has no enum or pattern clampdown can read"
        per_input[name] = options
    whole = _INPUT_REF.fullmatch(value.strip())
    if whole:
        return per_input[whole[1]], ""
    rendered = []
    for combo in itertools.product(*per_input.values()):
        chosen = dict(zip(per_input, combo, strict=True))
        rendered.append(_INPUT_REF.sub(lambda m, c=chosen: str(c[m[1]]), value))
    return rendered, ""


def _input_values(spec: InputSpec) -> list[Any] | None:
    if spec.enum:
        return list(spec.enum)
    if spec.type == "boolean":
        return [True, False]
    if spec.pattern and spec.type == "string":
        return pattern_globs(spec.pattern)
    return None


def _principal_kinds(action: type[Action], key: str) -> list[str]:
    """Per-kind wildcards when the action's ``key`` field takes IAM user/role ARNs only."""
    accepted = [glob for probe, glob in _KIND_PROBES.items() if _accepts(action, key, probe)]
    if not accepted or any(_accepts(action, key, probe) for probe in _FOREIGN_PROBES):
        return []
    return accepted


def _accepts(action: type[Action], key: str, value: str) -> bool:
    model = action.Input
    if key not in model.model_fields:
        return False
    try:
        model.__pydantic_validator__.validate_assignment(model.model_construct(), key, value)
    except Exception:
        return False
    return True


# --- regular expression -> IAM wildcards ---------------------------------------------------

_ONE_CHAR_ESCAPES = frozenset("dDwWsS")
MAX_GLOBS = 16


class _Untranslatable(Exception):
    pass


def pattern_globs(pattern: str) -> list[str] | None:
    """IAM wildcard strings that together match at least every string ``pattern`` matches.

    A safe subset only: the pattern must be anchored (``^…$``); literals, ``.``, classes,
    ``\\d``-style escapes, quantifiers and groups with ``|`` are understood (any single
    character becomes ``?``, anything repeated becomes ``*``, alternatives become separate
    strings, at most :data:`MAX_GLOBS`). Anything else (lookarounds, back-references,
    flags, a literal ``$`` that IAM would read as a policy variable) gives None.
    """
    if not (pattern.startswith("^") and pattern.endswith("$") and not pattern.endswith("\\$")):
        return None
    try:
        parser = _Parser(pattern[1:-1])
        globs = parser.alternatives()
        if parser.pos != len(parser.text):
            return None
    except _Untranslatable:
        return None
    cleaned = sorted({re.sub(r"\*+", "*", g) for g in globs})
    return cleaned if len(cleaned) <= MAX_GLOBS else None


@dataclass
class _Parser:
    """A recursive-descent reader of the regex subset :func:`pattern_globs` accepts."""

    text: str
    pos: int = 0

    def alternatives(self) -> list[str]:
        found = self.sequence()
        while self._peek() == "|":
            self.pos += 1
            found += self.sequence()
        return found

    def sequence(self) -> list[str]:
        globs = [""]
        while self.pos < len(self.text) and self._peek() not in "|)":
            options = self.atom()
            if self._quantifier():
                options = ["*"]  # repeated (or optional): any run of characters
            globs = [g + o for g in globs for o in options]
            if len(globs) > MAX_GLOBS:
                raise _Untranslatable
        return globs

    def atom(self) -> list[str]:
        char = self.text[self.pos]
        self.pos += 1
        if char == "\\":
            return self._escape()
        if char == ".":
            return ["?"]
        if char == "[":
            self._skip_class()
            return ["?"]
        if char == "(":
            if self.text.startswith("?:", self.pos):
                self.pos += 2
            elif self.text.startswith("?P<", self.pos):
                self.pos = self.text.index(">", self.pos) + 1
            elif self._peek() == "?":
                raise _Untranslatable  # lookaround, flags, comments
            inner = self.alternatives()
            if self._peek() != ")":
                raise _Untranslatable
            self.pos += 1
            return inner
        if char in "^$*+?{}|)":
            raise _Untranslatable
        return [char]

    def _escape(self) -> list[str]:
        if self.pos >= len(self.text):
            raise _Untranslatable
        char = self.text[self.pos]
        self.pos += 1
        if char in _ONE_CHAR_ESCAPES:
            return ["?"]
        if char.isalnum() or char == "$":
            raise _Untranslatable  # \b, \1, \n, \A…: not in the subset
        return [char]

    def _skip_class(self) -> None:
        start = self.pos
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char == "\\":
                self.pos += 2
                continue
            if char == "]" and self.pos > start and self.text[start : self.pos] not in ("^",):
                self.pos += 1
                return
            self.pos += 1
        raise _Untranslatable

    def _quantifier(self) -> bool:
        char = self._peek()
        if char in ("*", "+", "?"):
            self.pos += 1
        elif char == "{":
            end = self.text.find("}", self.pos)
            if end < 0 or not re.fullmatch(r"\d+(,\d*)?", self.text[self.pos + 1 : end]):
                raise _Untranslatable
            self.pos = end + 1
        else:
            return False
        if self._peek() in ("?", "+"):  # lazy or possessive: same strings
            self.pos += 1
        return True

    def _peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""


# --- the document ------------------------------------------------------------------------------


def _covering(resources: set[str]) -> tuple[str, ...]:
    """The resources without those another one already covers (``arn:aws:s3:::*`` covers
    ``arn:aws:s3:::ir-evidence``), sorted."""
    if "*" in resources:
        return ("*",)
    return tuple(
        sorted(
            r for r in resources if not any(o != r and fnmatch.fnmatchcase(r, o) for o in resources)
        )
    )


def _document(wanted: Mapping[str, set[str]]) -> dict[str, Any]:
    """Statements grouped by resource set: one per kind of resource (user, role, bucket…)."""
    by_resources: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for name, resources in wanted.items():
        if not resources:
            continue
        by_resources[_covering(resources)].append(name)
    statements = [
        {
            "Sid": f"Clampdown{index}",
            "Effect": "Allow",
            "Action": sorted(names),
            "Resource": list(resources) if len(resources) > 1 else resources[0],
        }
        for index, (resources, names) in enumerate(
            sorted(by_resources.items(), key=lambda item: (item[0] == ("*",), item[0])), start=1
        )
    ]
    return {"Version": "2012-10-17", "Statement": statements}
