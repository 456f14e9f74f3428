"""``clampdown iam-policy``: the least-privilege policy the engine's role needs.

Built only from what actions declare (``iam_actions`` and, where a step's
``with`` values are literal, ``iam_resources``), so it matches the code that
will run. Actions whose resources cannot be known before the run (a value
written as an expression) get ``"*"`` for that action only. Cross-account steps
add ``sts:AssumeRole`` on their roles; an evidence bucket adds the S3 calls the
engine makes to store the ledger and manifest there.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from clampdown.core.actions import Registry
from clampdown.core.expressions import contains_expression
from clampdown.core.models import Runbook

EVIDENCE_ACTIONS = (
    "s3:GetBucketObjectLockConfiguration",
    "s3:GetObject",
    "s3:ListBucket",
    "s3:PutObject",
    "s3:PutObjectRetention",
)


def policy(
    runbooks: Iterable[Runbook], actions: Registry, evidence_bucket: str | None = None
) -> dict[str, Any]:
    """An IAM policy document covering every step of ``runbooks``."""
    wanted: dict[str, set[str]] = defaultdict(set)
    for runbook in runbooks:
        for step in runbook.steps:
            action = actions.get(step.uses)
            literal = {k: v for k, v in step.with_.items() if not contains_expression(v)}
            narrowed = action.iam_resources(literal)
            for name in action.iam_actions:
                resources = narrowed.get(name)
                if resources == []:  # not called for these inputs
                    continue
                wanted[name].update(resources or ["*"])
            role = runbook.setting(step, "account", None)
            if role:
                wanted["sts:AssumeRole"].add("*" if contains_expression(role) else role)
    if evidence_bucket:
        for name in EVIDENCE_ACTIONS:
            target = f"arn:aws:s3:::{evidence_bucket}"
            bucket_level = name in ("s3:ListBucket", "s3:GetBucketObjectLockConfiguration")
            wanted[name].add(target if bucket_level else f"{target}/incidents/*")
    by_resources: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for name, resources in wanted.items():
        key = ("*",) if "*" in resources else tuple(sorted(resources))
        by_resources[key].append(name)
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
