"""``clampdown plan``: what a run would do, stage by stage, without changing anything."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.markup import escape

from clampdown.app.cli_errors import err
from clampdown.app.cli_options import (
    Format,
    FormatOpt,
    InputOpt,
    InputsFileOpt,
    LibraryOpt,
    library_folder,
    load_named_runbook,
    out,
)
from clampdown.core.durations import format_duration


def plan(
    runbook: Annotated[str, typer.Argument(help="a runbook file, or a name in the library")],
    input: InputOpt = [],  # noqa: B006 - typer reads the default, never mutates it
    inputs_file: InputsFileOpt = None,
    library: LibraryOpt = None,
    format: FormatOpt = Format.text,
    live: Annotated[
        bool,
        typer.Option(
            "--live", help="ask each action what it would change now (read-only AWS calls)"
        ),
    ] = False,
) -> None:
    """Show what a run would do, stage by stage, without changing anything."""
    from clampdown.core import plan as planner
    from clampdown.core.actions import registry
    from clampdown.core.inputs import parse_pairs
    from clampdown.core.settings import settings

    # read once, and only when needed: a plan of a --library runbook works without settings
    conf = settings() if library is None or live else None
    _, model = load_named_runbook(runbook, library_folder(library, conf))
    result = planner.build(model, parse_pairs(input, inputs_file), registry())
    if live:
        assert conf is not None
        planner.preview(result, model, registry(), conf.paths)
    if format is Format.json:
        out.print_json(json.dumps(result.to_dict(), default=str))
    else:
        _print_plan(result)
    if result.problems:  # a run with these inputs would fail at these steps
        err.print(
            f"[red]plan: {len(result.problems)} with: value(s) refused[/] — a run with "
            "these inputs would fail at these steps; fix the runbook or the inputs",
        )
        raise typer.Exit(1)


def _print_plan(result: Any) -> None:
    out.print(f"[bold]{escape(result.title)}[/] ({result.runbook}, severity {result.severity})")
    if result.inputs:
        shown = ", ".join(f"{k}={v!r}" for k, v in result.inputs.items())
        out.print(f"inputs: {shown}", markup=False)
    if result.missing_inputs:
        out.print(
            f"[yellow]not given (required at run time): {', '.join(result.missing_inputs)}[/]"
        )
    for number, stage in enumerate(result.stages, start=1):
        parallel = f" — {len(stage)} steps in parallel" if len(stage) > 1 else ""
        out.print(f"\n[bold]Stage {number}[/]{parallel}")
        for step in stage:
            _print_step(step)
    if result.iam_actions:
        out.print(f"\nIAM actions for the whole run: {', '.join(result.iam_actions)}")


def _print_step(step: Any) -> None:
    title = f" — {step.name}" if step.name else ""
    out.print(f"  [bold]{step.id}[/]{title} uses {step.uses} {' '.join(_marks(step))}")
    if step.needs:
        out.print(f"      needs: {', '.join(step.needs)}")
    if step.condition:
        out.print(f"      if: {step.condition}", markup=False)
    for key, value in step.with_.items():
        out.print(f"      with.{key} = {json.dumps(value, default=str)}", markup=False)
    for problem in step.problems:
        out.print(f"      [red]refused:[/] {escape(problem)}")
    if step.will_run is False:
        out.print("      [yellow]would be skipped: its if: is false with these inputs[/]")
    if step.timeout is None:  # an approval: waits for decisions, never retried
        wait = step.with_.get("timeout", 900)
        wait = format_duration(wait) if isinstance(wait, int | float) else wait
        limits = f"waits up to {wait} for a decision (retries and timeout do not apply)"
    else:
        limits = f"retries {step.retries}, timeout {format_duration(step.timeout)}"
    out.print(f"      {limits}, on_failure {step.on_failure}", markup=False)
    if step.iam_actions:
        out.print(f"      IAM: {', '.join(step.iam_actions)}")
    if step.changes is not None:
        out.print("      would change:" + ("" if step.changes else " nothing"))
        for line in step.changes:
            out.print(f"        - {line}", markup=False)
    elif step.preview_note:
        out.print(f"      preview: {step.preview_note}", markup=False)


def _marks(step: Any) -> list[str]:
    """What the responder must notice about a step before it runs."""
    marks = []
    if step.destructive:
        marks.append("[red]DESTRUCTIVE[/]")
    if step.approval_gate:
        marks.append("[cyan]APPROVAL GATE[/]")
    if step.preapproved:
        marks.append(f"[yellow]PRE-APPROVED: {escape(step.preapproved)}[/]")
    return marks
