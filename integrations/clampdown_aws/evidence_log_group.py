"""``aws.evidence.snapshot_log_group``: a CloudWatch Logs log group into the evidence bucket.

By default ``FilterLogEvents`` pages stream as gzip JSON lines, hashed into the run's
manifest (see :mod:`clampdown_aws.evidence`); with ``export_task: true`` CloudWatch Logs
exports the window itself, asynchronously.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from pydantic import Field, model_validator

from clampdown.core.actions import ActionContext, ActionInput, ActionOutput
from clampdown.core.diagnostics import ClampdownError
from clampdown_aws.base import Aws, AwsAction
from clampdown_aws.evidence import (
    S3_WRITE,
    Count,
    EvidenceRef,
    checked_store,
    gzip_json_lines,
    manifest_line,
    open_store,
    span_text,
    step_uri,
    to_ref,
    window,
)

FILTER_PAGE = 10_000  # FilterLogEvents' maximum limit


class LogGroupNotFound(ClampdownError):
    """``log_group`` names no log group in the step's region (found by plan --live)."""


class ExportTaskBusy(ClampdownError):
    """CloudWatch Logs runs one export task per account at a time."""


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


class SnapshotLogGroup(AwsAction):
    """Copy a log group's events for the last hours into the evidence bucket.

    Default: ``FilterLogEvents`` over the window (optionally with a filter pattern),
    streamed as gzip JSON lines to ``<step>/logs/<log group>.jsonl.gz`` and hashed into
    the manifest. With ``export_task: true``: a CloudWatch Logs export task writes the
    whole window to ``<step>/export/`` asynchronously; only a descriptor of the task is
    in the manifest (see docs/actions.md).
    """

    name = "aws.evidence.snapshot_log_group"
    summary = "Snapshot a CloudWatch Logs log group to the evidence bucket"
    iam_actions = (
        "logs:FilterLogEvents",
        "logs:CreateExportTask",  # export_task: true only
        "logs:DescribeExportTasks",  # export_task: true only
        "logs:DescribeLogGroups",  # plan --live only: does the group exist
        *S3_WRITE,
    )

    class Input(ActionInput):
        log_group: str = Field(min_length=1, max_length=512, description="log group name")
        lookback_hours: int = Field(24, ge=1, le=720, description="window: the last N hours")
        filter_pattern: str | None = Field(
            None, description="CloudWatch Logs filter pattern (default: every event)"
        )
        bucket: str | None = Field(
            None, description="evidence bucket (default CLAMPDOWN_EVIDENCE_BUCKET)"
        )
        export_task: bool = Field(
            False, description="let CloudWatch Logs export the window (async) instead of streaming"
        )

        @model_validator(mode="after")
        def _pattern_needs_stream(self) -> SnapshotLogGroup.Input:
            if self.export_task and self.filter_pattern:
                raise ValueError(
                    "filter_pattern cannot be combined with export_task: an export task "
                    "copies every event of the window"
                )
            return self

    class Output(ActionOutput):
        manifest_uri: str
        object: EvidenceRef | None = None
        events: int | None = None
        export_task_id: str | None = None

    def apply(self, params: Input, aws: Aws, ctx: ActionContext) -> Output:
        store = checked_store(aws, ctx, params.bucket)
        start, end = window(params.lookback_hours)
        logs = aws.client("logs")
        if params.export_task:
            return self._export(logs, store, params, start, end, ctx)

        count = Count()
        pages = _filter_pages(logs, params.log_group, params.filter_pattern, start, end)
        obj = store.put(
            f"{ctx.step_id}/logs/{params.log_group.strip('/')}.jsonl.gz",
            gzip_json_lines(pages, count),
            "application/gzip",
        )
        manifest = store.write_manifest()
        ctx.logger.info(
            "log group %s: %d events -> s3://%s/%s",
            params.log_group,
            count.n,
            store.bucket,
            obj.key,
        )
        return self.Output(
            manifest_uri=f"s3://{store.bucket}/{manifest.key}", object=to_ref(obj), events=count.n
        )

    def describe(self, params: Input, aws: Aws, ctx: ActionContext) -> list[str]:
        """What a run would write; the group must exist, its events are not read."""
        store = open_store(aws, ctx, params.bucket)
        start, _ = window(params.lookback_hours)
        span = span_text(start, params.lookback_hours)
        dest = step_uri(store, ctx)
        logs = aws.client("logs")
        _log_group(logs, params.log_group, ctx.region)
        if params.export_task:
            line = (
                f"start a CloudWatch Logs export task of every event of {params.log_group} "
                f"({span}) to {dest}export/ (asynchronous, not hashed) and write its "
                f"descriptor to {dest}export-task.json"
            )
            busy = [f"{t['taskId']} ({t['status']['code']})" for t in _export_tasks(logs)]
            if busy:
                line += (
                    f"; export task {', '.join(busy)} is in progress and the account runs one "
                    "at a time: the step fails with ExportTaskBusy unless it finishes first"
                )
            lines = [line]
        else:
            which = (
                f"log events of {params.log_group} matching {params.filter_pattern!r}"
                if params.filter_pattern
                else f"every log event of {params.log_group}"
            )
            lines = [
                f"write {which} ({span}) to {dest}logs/{params.log_group.strip('/')}.jsonl.gz "
                "(events: counted at run time)"
            ]
        return [*lines, manifest_line(store)]

    def _export(
        self,
        logs: Any,
        store: Any,
        params: Input,
        start: datetime,
        end: datetime,
        ctx: ActionContext,
    ) -> Output:
        prefix = f"{store.prefix}/{ctx.step_id}/export"
        task_name = f"clampdown-{ctx.run_id}-{ctx.step_id}"[:512]
        task_id = _active_export(logs, task_name, params.log_group)
        if task_id is None:
            try:
                task_id = logs.create_export_task(
                    taskName=task_name,
                    logGroupName=params.log_group,
                    fromTime=_ms(start),
                    to=_ms(end),
                    destination=store.bucket,
                    destinationPrefix=prefix,
                )["taskId"]
            except logs.exceptions.LimitExceededException:
                raise ExportTaskBusy(
                    "another CloudWatch Logs export task is running in this account and region "
                    "(one at a time)",
                    "retry the step when it finishes, or snapshot without export_task",
                ) from None
        else:
            ctx.logger.info(
                "export task %s of this step is still running; not starting another", task_id
            )
        descriptor = {
            "taskId": task_id,
            "taskName": task_name,
            "logGroupName": params.log_group,
            "from": start.isoformat(),
            "to": end.isoformat(),
            "destination": f"s3://{store.bucket}/{prefix}/{task_id}/",
            "note": "exported asynchronously by CloudWatch Logs; not hashed in this manifest",
        }
        store.put(
            f"{ctx.step_id}/export-task.json",
            [json.dumps(descriptor, indent=2, sort_keys=True).encode()],
            "application/json",
        )
        manifest = store.write_manifest()
        return self.Output(
            manifest_uri=f"s3://{store.bucket}/{manifest.key}", export_task_id=task_id
        )


def _export_tasks(logs: Any) -> Iterator[dict[str, Any]]:
    """The account's export tasks that are pending or running now."""
    for status in ("PENDING", "RUNNING"):
        for task in logs.describe_export_tasks(statusCode=status).get("exportTasks", []):
            if task.get("status", {}).get("code") == status:
                yield task


def _active_export(logs: Any, task_name: str, log_group: str) -> str | None:
    """This step's export task if it is still pending or running (a step retry)."""
    for task in _export_tasks(logs):
        if task.get("taskName") == task_name and task.get("logGroupName") == log_group:
            return str(task["taskId"])
    return None


def _log_group(logs: Any, name: str, region: str | None) -> dict[str, Any]:
    """The log group named ``name`` (the first group of that prefix, as names sort)."""
    groups = logs.describe_log_groups(logGroupNamePrefix=name, limit=1).get("logGroups", [])
    if not groups or groups[0].get("logGroupName") != name:
        raise LogGroupNotFound(
            f"log group '{name}' not found in {region or 'the default region'}",
            "check log_group (the name, not the ARN) and the step's region",
        )
    return dict(groups[0])


def _filter_pages(
    logs: Any, log_group: str, pattern: str | None, start: datetime, end: datetime
) -> Iterator[list[dict[str, Any]]]:
    args: dict[str, Any] = {"logGroupName": log_group, "startTime": _ms(start), "endTime": _ms(end)}
    if pattern:
        args["filterPattern"] = pattern
    pages = logs.get_paginator("filter_log_events").paginate(
        **args, PaginationConfig={"PageSize": FILTER_PAGE}
    )
    for page in pages:
        yield page.get("events", [])
