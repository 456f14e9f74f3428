"""The commands about runs: ``run`` one now, list ``runs``, ``approve`` a paused one,
``rollback`` what one changed, ``verify`` its ledger or evidence manifest.

Prefect and the flows are imported inside ``run``, ``approve`` and ``rollback`` only."""

from __future__ import annotations

import getpass
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from clampdown.app.cli_api import early_prefect, resident_prefect
from clampdown.app.cli_errors import err
from clampdown.app.cli_options import (
    Format,
    FormatOpt,
    InputOpt,
    InputsFileOpt,
    LibraryOpt,
    gated_lines,
    library_folder,
    load_named_runbook,
    out,
    print_table,
    quiet_prefect,
)
from clampdown.app.interrupt import BoundedInterrupt
from clampdown.core.diagnostics import ClampdownError

if TYPE_CHECKING:
    from clampdown.core.settings import Settings
    from clampdown_flows.resident_api import EarlyServer

RESPOND = "clampdown_flows.respond"  # imported while a new local Prefect API starts


def run(
    runbook: Annotated[str, typer.Argument(help="a runbook file, or a name in the library")],
    input: InputOpt = [],  # noqa: B006
    inputs_file: InputsFileOpt = None,
    library: LibraryOpt = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="show Prefect's own logs")
    ] = False,
    as_: Annotated[
        str | None,
        typer.Option(
            "--as",
            help="who starts the run (Slack user id): the two-person rule keeps that id from "
            "approving it (default: the login name); a claim, recorded with your local "
            "account (docs/security.md)",
        ),
    ] = None,
) -> None:
    """Execute a runbook now, in this process, with live progress.

    Exit 0 succeeded, 1 failed, 2 bad input, 3 an approval was denied or timed out.
    """
    if not verbose:  # keep Prefect's console chatter off the progress view; API logs stay on
        quiet_prefect()
    with early_prefect() as early:  # a local API's start overlaps the checks and imports
        state, run_id, ledger = _run_now(runbook, input, inputs_file, library, as_, early)
    _report_end(run_id, ledger, state)


def _run_now(
    runbook: str,
    input: list[str],
    inputs_file: Path | None,
    library: Path | None,
    as_: str | None,
    early: EarlyServer | None,
) -> tuple[Any, str, Path]:
    """``run``'s checks and the run itself: its final state, id and ledger."""
    from clampdown.app.progress import RunProgress
    from clampdown.core import inputs as inputs_mod
    from clampdown.core.ledger import new_run_id
    from clampdown.core.settings import settings

    conf = settings()  # read once; the respond flow reads its own at its start
    library = library_folder(library, conf)
    path, model = load_named_runbook(runbook, library)
    values = inputs_mod.validate(model.inputs, inputs_mod.parse_pairs(input, inputs_file))
    run_id = new_run_id()
    ledger = conf.paths.run(run_id).ledger
    if conf.execution == "deployment":  # serve hands runs to workers; this command never does
        err.print(
            "[yellow]note: CLAMPDOWN_EXECUTION=deployment is for `clampdown serve`; "
            "`clampdown run` executes in this process, with this machine's credentials[/]"
        )
    drill = " (a drill: CLAMPDOWN_DRILL is set)" if conf.drill else ""
    err.print(f"run [bold]{run_id}[/] of {model.metadata.name}{drill} — starting Prefect")
    _say_if_unsigned(conf)
    # this home's local API, left running for the next command
    with resident_prefect(RESPOND, early=early):
        from clampdown_flows.respond import run_in_process

        try:
            with RunProgress(ledger, model, out):
                state = run_in_process(
                    str(path),
                    inputs_mod.protect(model.inputs, values),
                    on_interrupt=BoundedInterrupt(run_id, ledger),
                    run_id=run_id,
                    library=str(library),
                    trigger=_terminal_trigger(as_),
                    drill=conf.drill,  # recorded as run.drill, as serve's runs are
                )
        except KeyboardInterrupt:
            _interrupted(run_id, ledger)
    return state, run_id, ledger


def resume(
    run_id: Annotated[str, typer.Argument(help="the run whose process stopped")],
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="show Prefect's own logs")
    ] = False,
) -> None:
    """Continue a run whose process stopped (killed, crashed), here, with live progress.

    Steps that ended are kept, a step that started and did not end runs again, an
    approval wait is re-entered with the same request and the decisions already counted.
    `clampdown serve` does this by itself at start for every stopped run of its home.
    Exit codes as `run`.
    """
    from clampdown.app.progress import RunProgress
    from clampdown.core.lint import load_runbook
    from clampdown.core.run_ownership import is_held
    from clampdown.core.run_start import RunStart
    from clampdown.core.settings import settings

    conf = settings()
    files = conf.paths.run(run_id).materialize()  # from the run store, in the scaled mode
    _refuse_if_ended(run_id, files.ledger)  # before any Prefect API is started
    start = RunStart.load(files)
    if start is None:
        raise ClampdownError(
            f"run '{run_id}' cannot be resumed: it has no start record ({files.start})",
            "check the id with `clampdown runs`; runs started before this version cannot be",
        )
    if is_held(files):
        raise ClampdownError(
            f"run '{run_id}' is being run by another process", "see `clampdown runs`"
        )
    model = load_runbook(Path(start.runbook))[0].model
    if not verbose:
        quiet_prefect()

    drill = " (a drill)" if start.drill else ""
    err.print(f"run [bold]{run_id}[/] of {model.metadata.name}{drill} — resuming")
    with resident_prefect(RESPOND):
        from clampdown_flows.respond import run_in_process

        try:
            with RunProgress(files.ledger, model, out):
                state = run_in_process(
                    start.runbook,
                    {},
                    on_interrupt=BoundedInterrupt(run_id, files.ledger),
                    run_id=run_id,
                    resume=True,
                )
        except KeyboardInterrupt:
            _interrupted(run_id, files.ledger)
    _report_end(run_id, files.ledger, state)


def _refuse_if_ended(run_id: str, ledger: Path) -> None:
    """A run whose ledger has its ``run.end`` is over: refused, saying how it ended and
    what can still be done with it. Why here: the flow refuses it too, but only once a
    Prefect API is up, and its refusal reached the user as the old outcome, exit 0."""
    from clampdown.core.ledger import first_record

    end = first_record(ledger, "run.end")
    if end is None:
        return
    how = str(end.get("status", "unknown"))
    if end.get("aborted_by"):
        how += f" (step '{end['aborted_by']}' failed)"
    elif end.get("error"):
        how += f" ({str(end['error']).splitlines()[0]})"
    raise ClampdownError(
        f"run '{run_id}' cannot be resumed: it already ended: {how}, at {end.get('ts', '?')}",
        f"see what it did with `clampdown report {run_id}`; undo its changes with "
        f"`clampdown rollback {run_id}`; start a new run with `clampdown run`",
    )


def _interrupted(run_id: str, ledger: Path) -> None:
    err.print(f"[yellow]interrupted: run {run_id} ended as cancelled[/]")
    err.print(
        f"ledger: {ledger} (steps not started were not run; one in flight may be half-done: "
        f"`clampdown rollback {run_id} --plan` shows what can be undone)"
    )
    raise typer.Exit(130) from None


def _report_end(run_id: str, ledger: Path, state: Any) -> None:
    """Print the run's outcome from its ledger and exit with its code."""
    from clampdown.core.ledger import read

    end = (
        next((r for r in reversed(read(ledger)) if r["type"] == "run.end"), None)
        if ledger.exists()
        else None
    )
    status = end["status"] if end else "failed"
    if end is None and getattr(state, "message", None):  # it stopped before its ledger said so
        err.print(f"[red]{escape(str(state.message))}[/]")
    if end and end.get("outputs"):
        out.print("outputs:")
        for key, value in end["outputs"].items():
            out.print(f"  {key} = {json.dumps(value, default=str)}", markup=False)
    if end and end.get("output_errors"):
        for key, message in end["output_errors"].items():
            err.print(f"[yellow]output {key} could not be rendered: {escape(message)}[/]")
    color = {"succeeded": "green", "denied": "yellow"}.get(status, "red")
    out.print(f"run {run_id}: [{color}]{status}[/]")
    out.print(f"ledger: {ledger}")
    if end and end.get("evidence"):
        out.print(f"evidence: {end['evidence']}", markup=False)
    summary = state.result(raise_on_failure=False) if state.is_completed() else None
    if isinstance(summary, dict) and summary.get("evidence_error"):
        err.print(f"[red]{escape(summary['evidence_error'])}[/]")
    raise typer.Exit({"succeeded": 0, "denied": 3}.get(status, 1))


def _say_if_unsigned(conf: Settings) -> None:
    """No ledger signing key: the run's ledger is unsigned, and the operator is told."""
    from clampdown.core.extensions import ledger_signer
    from clampdown.core.ledger_signing import UNSIGNED_REASON

    if ledger_signer(conf) is None:
        err.print(f"[yellow]warning: this run's ledger is UNSIGNED: {escape(UNSIGNED_REASON)}[/]")


def _terminal_trigger(claim: str | None) -> dict[str, object]:
    """Who started a run from this terminal: the claimed id (``--as``, else the login name)
    and the local account that made the claim. The claim is not authenticated; the
    two-person rule refuses an approver whose authenticated id equals it."""
    login = getpass.getuser()
    return {
        "type": "manual",
        "user": claim or login,
        "authenticated": False,
        "local_user": f"{login} (uid {os.getuid()})",
    }


def runs(
    limit: Annotated[int, typer.Option("--limit", "-n", help="how many, newest first")] = 20,
    format: FormatOpt = Format.text,
) -> None:
    """List recent runs with their status, from the ledgers under CLAMPDOWN_HOME."""
    from clampdown.core.runs import recent_runs
    from clampdown.core.settings import settings

    conf = settings()
    found = recent_runs(conf.paths.runs_dir, limit, home=conf.paths)
    if format is Format.json:
        out.print_json(json.dumps([r.to_dict() for r in found]))
        return
    if not found:
        out.print(f"no runs under {escape(str(conf.home))}/runs")
        return
    table = Table(title="recent runs", title_justify="left")
    for column in ("run id", "runbook", "started", "trigger", "status", "detail"):
        # ids and names are what a user copies: folded on a narrow terminal, never cut
        table.add_column(column, overflow="fold")
    colors = {
        "succeeded": "green",
        "failed": "red",
        "denied": "yellow",
        "in progress": "yellow",
        "waiting for approval": "bold yellow",
    }
    for run in found:
        color = colors.get(run.status, "white")
        table.add_row(
            run.run_id,
            escape(run.runbook),
            run.started,
            escape(run.trigger),
            f"[{color}]{escape(run.label)}[/]",
            escape(run.detail),
        )
    print_table(table)


def _refuse_altered_request(run_id: str, req: dict[str, Any]) -> None:
    """Refuse to show and sign a request whose gated parameters are not the ones it binds.

    What is printed comes from the request file, what is signed is its ``params_hash``:
    whoever can write ``CLAMPDOWN_HOME`` (who cannot sign) could show one set of parameters
    and leave the hash of another, and the run would count the signature. The run made the
    hash from exactly these ``gated`` entries, so any edit shows as a mismatch."""
    from clampdown.core.approvals import params_hash

    if params_hash(req.get("gated") or {}) != req.get("params_hash"):
        raise ClampdownError(
            f"the approval request of run {run_id}, step {req.get('step')}, was changed after "
            "the run wrote it: the parameters it would show are not the ones it asks you to "
            "sign (their hash differs); nothing was signed or sent",
            f"do not approve from this host; check `clampdown verify {run_id}` (the ledger's "
            "signed approval.request record holds what the run asks) and who can write "
            "CLAMPDOWN_HOME",
        )


def approve(
    run_id: Annotated[str, typer.Argument(help="the run waiting for approval")],
    as_: Annotated[
        str,
        typer.Option(
            "--as",
            help="your approver id (Slack user id); the run checks that the key that signed "
            "is listed for it in CLAMPDOWN_ALLOWED_SIGNERS and that it is an approver",
        ),
    ],
    key: Annotated[
        Path | None,
        typer.Option(
            "--key",
            "--sign-with",
            help="your SSH key: a private key, or its .pub when the key is in ssh-agent "
            "(default: CLAMPDOWN_APPROVER_KEY)",
        ),
    ] = None,
    step: Annotated[
        str | None, typer.Option(help="the approval step (default: the only one waiting)")
    ] = None,
    deny: Annotated[bool, typer.Option("--deny", help="deny instead of approve")] = False,
    reason: Annotated[str, typer.Option(help="why (required with --deny)")] = "",
) -> None:
    """Approve (or deny) a paused run, signed with your own SSH key; the run checks it.

    Exit 0 when the decision counted, 1 when it was refused or cannot be signed, 3 when
    it is in but not counted yet: the run stopped (the decision is kept and checked and
    counted when the run resumes) or has not answered yet.
    """
    from clampdown.core.settings import settings
    from clampdown_flows.decisions import pending_request, submit_decision

    if deny and not reason.strip():
        raise ClampdownError("a denial needs a reason", "add --reason 'why'")
    conf = settings()
    req = pending_request(run_id, step, conf)
    _refuse_altered_request(run_id, req)
    out.print(f"run {run_id}, step {req['step']}: {escape(req['summary'])}")
    for line in gated_lines(req.get("gated", {})):
        out.print(line, markup=False)
    verdict = submit_decision(
        run_id,
        req["step"],
        as_,
        "deny" if deny else "approve",
        reason,
        "terminal",
        params_hash_seen=req["params_hash"],
        conf=conf,
        key=key,
    )
    if verdict.queued:
        err.print(f"[yellow]{escape(verdict.reason)}[/]")
        raise typer.Exit(3)
    if not verdict.accepted:
        err.print(f"[red]refused:[/] {escape(verdict.reason)}")
        raise typer.Exit(1)
    done = (
        f"; the request is now {verdict.outcome}" if verdict.outcome else "; more approvals needed"
    )
    out.print(f"[green]{'denial' if deny else 'approval'} counted[/]{done}")


def rollback(
    run_id: Annotated[str, typer.Argument(help="the run whose changes to undo")],
    plan: Annotated[bool, typer.Option("--plan", help="only show what would be undone")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="do not ask for confirmation")] = False,
    again: Annotated[
        bool,
        typer.Option(
            "--again",
            help="roll back a run that was already rolled back (it may reopen what a newer "
            "containment closed)",
        ),
    ] = False,
) -> None:
    """Undo a run's containment changes, newest first (evidence is never deleted).

    The run's ledger is verified first (chain and signatures): a ledger that fails is
    refused, naming the record, and the refusal is recorded. Every undo is shown with its
    action, target and exact parameters; what runs is what was shown (bound by hash).
    A run already rolled back is refused unless --again; a rollback that stopped half-way
    can simply be run again. With approval: the release-containment runbook.
    """
    from clampdown.core.extensions import ledger_signer
    from clampdown.core.ledger import new_run_id
    from clampdown.core.settings import settings
    from clampdown.core.undo import (
        LedgerNotTrusted,
        checked_undo_items,
        describe,
        refuse_rollback,
        rollback_target,
        undo_hash,
    )

    conf = settings()
    home = conf.paths
    path = rollback_target(run_id, home, allow_repeat=again or plan)
    _refuse_other_drill_flag(run_id, path, conf.drill)
    signer = ledger_signer(conf)
    try:
        items, verdict = checked_undo_items(path, signer)
    except LedgerNotTrusted as exc:
        if not plan:
            where = refuse_rollback(run_id, new_run_id(), home, exc, signer)
            err.print(f"refusal recorded in {where}", markup=False)
        raise
    if verdict.status == "unsigned":
        err.print(
            "[yellow]warning: this ledger is UNSIGNED and no signing key is configured: its "
            "undo records cannot be authenticated (docs/verify.md)[/]"
        )
    out.print(
        f"run {run_id}: {len(items)} change(s) to undo, newest first "
        f"(ledger {verdict.status}; undo sha256 {undo_hash(items)[:16]})",
        markup=False,
    )
    for number, item in enumerate(items, start=1):
        out.print(f"  {number}. {describe(item)}", markup=False)
    if plan or not items:
        return
    if not yes:
        if not sys.stdin.isatty():
            raise ClampdownError(
                "rollback changes production: confirmation needed",
                "run it in a terminal, or pass --yes",
            )
        typer.confirm(f"Undo these {len(items)} change(s)?", abort=True)
    quiet_prefect()  # before Prefect is imported, as `run` does: no INFO lines
    with resident_prefect(RESPOND, "clampdown_flows.rollback"):
        from clampdown_flows.respond import RunFailed
        from clampdown_flows.rollback import rollback as rollback_flow

        state = rollback_flow(
            run_id, allow_repeat=again, expected=undo_hash(items), return_state=True
        )
    if state.is_completed():
        result = state.result()
        out.print(
            f"[green]rolled back[/] {result['undone']} change(s); ledger: "
            f"{escape(result['ledger'])}"
        )
        return
    try:
        state.result()
    except RunFailed as exc:
        raise ClampdownError(
            str(exc), "fix the cause and run the rollback again: undo is idempotent"
        ) from None


def _refuse_other_drill_flag(run_id: str, ledger: Path, drill: bool) -> None:
    """A run is rolled back by a process whose ``CLAMPDOWN_DRILL`` says what the run's
    ``run.start`` says. Why: the flag picks the key the ledger is checked with (a drill's
    own key) and the lock mode of the rollback's evidence (GOVERNANCE, deletable, in
    drills): a drill's rollback would be refused as a ledger that fails verification, and
    a real run's rollback would leave evidence anyone allowed to bypass governance can
    delete."""
    from clampdown.core.ledger import started_as_drill

    recorded = started_as_drill(ledger)
    if recorded is None:
        return  # rollback's own verification says what is wrong with the ledger
    if recorded and not drill:
        raise ClampdownError(
            f"run '{run_id}' is a drill and CLAMPDOWN_DRILL is not set: a drill's ledger is "
            "checked with the drill's key, and its rollback's evidence locked in GOVERNANCE "
            "mode, only with it set",
            f"CLAMPDOWN_DRILL=true clampdown rollback {run_id}",
        )
    if drill and not recorded:
        raise ClampdownError(
            f"run '{run_id}' is not a drill but CLAMPDOWN_DRILL is set: its rollback's "
            "evidence would be locked as a drill's (GOVERNANCE mode: deletable)",
            "unset CLAMPDOWN_DRILL and run the rollback again",
        )


def verify(
    target: Annotated[
        str, typer.Argument(help="a run id, a ledger file, s3://…/manifest.json, or a package")
    ],
) -> None:
    """Check a run: hash chain, every signature, truncation, and its copy in the evidence
    bucket; or the manifest version a run pins. Exit 0 only for intact and signed (and
    anchored when an evidence bucket is configured); docs/verify.md shows every outcome."""
    from clampdown.app.cli_report import is_package, verify_package_target
    from clampdown.app.cli_verify import verify_manifest_uri, verify_run
    from clampdown.core.settings import settings

    if is_package(target):  # an evidence package (clampdown export)
        verify_package_target(target)
    if target.startswith("s3://"):
        verify_manifest_uri(target, settings())
        return
    verify_run(target, settings())
