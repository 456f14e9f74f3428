"""Triage: turn an :class:`~clampdown.core.alert.Alert` into one run per incident.

For each alert: match the trigger file (first match wins) → validate the inputs
against the runbook → ask the :class:`~clampdown.core.state_store.StateStore` for one
atomic decision → start a run, or record the alert in the run it belongs to.

Nothing is lost: a run records its trigger alert in ``run.start``; an alert that
repeats an incident (``deduplicated``) or correlates with a run in progress of the
same runbook (``joined``) is appended to that run's ledger as ``alert.joined`` — even
after the run ended. Correlation escalates, never suppresses: an alert whose trigger
asks for another response than the correlated run (containment vs evidence only:
:func:`~clampdown.core.triggers.response_of`) starts its own run, and both ledgers
record the link as ``alert.correlated``.

An alert that starts nothing (no trigger, bad inputs, runbook at its
``max_concurrent_runs``) is answered ``ignored`` with the reason, logged, and —
when a trigger matched — kept in the store's held-alerts table for a responder. So is an
alert whose matching trigger cannot compute its inputs or keys for it (a trigger bug:
:class:`~clampdown.core.triggers.TriggerError`): held under that trigger, never passed
to the next one.

The trigger file is re-read when it changes. An edit that does not lint is logged once
(per change) and refused: the triggers read before stay in force, so alerts keep being
handled as they were (answering 503 instead would lose the alerts of senders that retry
briefly, such as SNS). With no triggers in force at all (``missing_ok``: serve without a
trigger file, or one that appeared and does not lint yet) every alert raises
:class:`NoTriggers`, a :class:`~clampdown.core.runs.RunNotStarted`: 503 with
``Retry-After``, so the sender's retry is triaged once the file is there.

An alert whose run *cannot start now* (the starter raises
:class:`~clampdown.core.runs.RunNotStarted`: the start could not be recorded, Prefect is
unreachable) is neither ignored nor held: the reservation is released (dedup and
correlation keys freed, no run slot taken), the failure is logged, and ``RunNotStarted``
goes up to the alert endpoint, which answers 503 with ``Retry-After`` and forgets the
delivery id, so the sender's retry starts the run. An unexpected error of the starter is
treated the same way (a retry may well work); a :class:`ClampdownError` of the runbook
itself (e.g. secret inputs with no sealing key) is held, since a retry cannot fix it.

How a run is started, in one transaction of the store: a starter that can record a run's
start before launching it (:class:`RecordingStarter`: serve's local starter) is handed a
run id chosen before the decision; the store's claim takes the keys and a run slot with
that id and has the starter record the start durably inside the same transaction, and the
run is launched once it committed. Every other alert then meets either no claim or a run
that has started; a start that cannot be recorded leaves nothing claimed. Any other
``start_run`` (a deployment starter) reserves the keys, starts the run, then attaches its
id. The runbook the triage loaded and checked goes to the starter (and on to the run), so
it is not loaded again for the run.

Why held and not queued when a runbook is at ``max_concurrent_runs``: the limit
exists to stop an alert storm (or a trigger bug) from running destructive
containment many times at once. A queue would start those runs unattended later,
when responders may already have acted by hand; a held alert is visible at once
(log, store, ``on_held`` hook for Slack) and the incident's key is *not* taken,
so the source's next repeat of the alert starts a run once a slot is free.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from clampdown.core import run_ownership
from clampdown.core.actions import registry
from clampdown.core.alert import Alert
from clampdown.core.diagnostics import ClampdownError
from clampdown.core.home import Home
from clampdown.core.ledger import LedgerWriteError, append_to, has_record, new_run_id
from clampdown.core.loader import library_names
from clampdown.core.run_start import RunStart
from clampdown.core.run_store import LedgerPrimary
from clampdown.core.runs import RunNotStarted
from clampdown.core.state_store import Claim, StateStore
from clampdown.core.trigger_files import load_triggerset
from clampdown.core.triggers import (
    Match,
    TriageOutcome,
    TriggerError,
    TriggerSet,
    check_inputs,
    match_alert,
    response_key,
    response_of,
)
from clampdown_flows.ledger_waits import LedgerWaits
from clampdown_flows.preloaded import Preloaded, load_checked

log = logging.getLogger("clampdown.triage")


def _destructive(action_name: str) -> bool:
    """Whether an action changes something; one that cannot be loaded counts as changing
    (the runbook then counts as containment: never joined to an evidence-only run)."""
    try:
        return bool(registry().get(action_name).destructive)
    except ClampdownError:
        return True


StartRun = Callable[[Path, dict[str, Any], dict[str, Any]], str]
LedgerOf = Callable[[str], Path | None]
Stamp = tuple[int, int, int]
"""What tells a changed trigger file: its mtime (ns), size and inode (an editor's atomic
save replaces the inode)."""


class NoTriggers(RunNotStarted):
    """No triggers are in force (no trigger file yet, or one that does not lint yet): the
    alert cannot be triaged now. A RunNotStarted, so the endpoint answers 503 with
    ``Retry-After`` and forgets the delivery: nothing is lost, the retry is triaged once
    the file is usable. The message goes to the sender (no path); the hint to the log."""


class PreparedStart(Protocol):
    """A run whose id is chosen and whose start record is built, not yet written."""

    run_id: str

    def record(self) -> None:
        """Write the start record durably (RunNotStarted, or an error, when it cannot)."""

    def launch(self, on_start: Callable[[], None] | None = None) -> None:
        """Start the recorded run; ``on_start``, when given, is called once the run's
        ``run.start`` is durable (a starter that cannot tell never calls it)."""

    def discard(self) -> None:
        """Remove a recorded start that must not run (its claim did not commit)."""


@runtime_checkable
class RecordingStarter(Protocol):
    """A ``start_run`` that can start in three moves, so the triage records the start
    inside the store's claim (one transaction per alert; see the module's docstring)."""

    def __call__(self, runbook: Path, inputs: dict[str, Any], trigger: dict[str, Any]) -> str: ...

    def prepare(
        self,
        runbook: Path,
        inputs: dict[str, Any],
        trigger: dict[str, Any],
        *,
        run_id: str,
        preloaded: Preloaded | None = None,
        library: Path | None = None,
    ) -> PreparedStart: ...


MAX_TEXT = 500
MAX_RESOURCES = 20


def alert_summary(alert: Alert) -> dict[str, Any]:
    """What the ledger and Slack keep of an alert: its facts, never ``raw`` (it may hold tokens)."""

    def cut(value: str | None) -> str | None:
        return value if value is None or len(value) <= MAX_TEXT else value[:MAX_TEXT] + "…"

    return {
        "source": alert.source,
        "id": cut(alert.id),
        "type": cut(alert.type),
        "title": cut(alert.title),
        "severity": alert.severity,
        "account": cut(alert.account),
        "region": cut(alert.region),
        "principal": cut(alert.principal),
        "resources": [cut(r) for r in alert.resources[:MAX_RESOURCES]],
        "observed_at": alert.observed_at.isoformat(),
    }


class TriggerTriage:
    """``triage(alert) -> TriageOutcome``; thread-safe, and safe across processes via the store.

    ``start_run(runbook_path, inputs, trigger) -> run_id`` returns at once (as
    ``InProcessStarter`` does); ``ledger_of(run_id)`` gives the run's ledger path
    (None when it is not on this machine). ``is_finished`` defaults to "the ledger
    has ``run.end``"; ``on_joined(run_id, alert)`` lets the run's Slack thread say
    that an alert joined; ``on_held(alert, reason)`` tells people about a held alert;
    ``on_related(run_id, alert, new_run_id)`` lets a run's thread say that a correlated
    alert asking for another response started ``new_run_id``.
    The trigger file is re-read when it changes; a change that does not lint is
    refused (logged once per change) and the previous triggers stay in force.
    ``missing_ok``: a trigger file that does not exist yet is no error (serve for Slack
    only): every alert raises :class:`NoTriggers` until the file exists and lints.
    :attr:`problem` says what is wrong with the file now (None: nothing).

    Runs a recording starter records are launched in order, a few at a time
    (:class:`Launcher`); ``close()`` stops that (serve's shutdown).

    ``runs``: the runs' home (a queued run is held there while it waits), whose run store
    (the scaled mode, ``CLAMPDOWN_RUN_STORE=postgresql``)
    holds the runs' ledgers: an alert joining a run is then appended there, in one
    transaction that checks the chain head, whichever machine runs the run (its owner's
    next record chains on it), and the ledgers are read from there.
    """

    def __init__(
        self,
        triggers_path: str | Path,
        store: StateStore,
        start_run: StartRun,
        ledger_of: LedgerOf,
        *,
        library: str | Path | None = None,
        is_finished: Callable[[str], bool] | None = None,
        on_joined: Callable[[str, Alert], None] | None = None,
        on_held: Callable[[Alert, str], None] | None = None,
        on_related: Callable[[str, Alert, str], None] | None = None,
        pending_timeout: float = 10.0,
        runs: Home | None = None,
        missing_ok: bool = False,
    ) -> None:
        if library is None:
            from clampdown.core.settings import settings

            library = settings().library
        self.triggers_path = Path(triggers_path)
        self.library = Path(library)
        self.store = store
        self.start_run = start_run
        self.ledger_of = ledger_of
        self.is_finished = is_finished or self._ledger_finished
        self.on_joined = on_joined
        self.on_held = on_held
        self.on_related = on_related
        self.pending_timeout = pending_timeout
        self.runs = runs if runs is not None and runs.store is not None else None
        self.home = runs
        # links to a run that has not written run.start yet wait off the request path
        self._late = LedgerWaits(self._ledger_started)
        self._lock = threading.Lock()
        self._stamp = self._stat()
        self._triggers: TriggerSet | None = None
        self.problem: str | None = None
        """What is wrong with the trigger file now, for /healthz (None: the file in force)."""
        if self._stamp is None and missing_ok:
            self.problem = "no trigger file: alerts are answered 503 until there is one"
            log.warning(
                "no trigger file at %s: alert endpoints answer 503 (Retry-After) until it "
                "exists; serve reads it when it appears",
                self.triggers_path,
            )
        else:  # a file that does not lint is refused here (InvalidFileError)
            self._triggers = load_triggerset(self.triggers_path, self.library)
        self._runbooks: dict[str, tuple[float, Path, Preloaded]] = {}
        self._records = isinstance(start_run, RecordingStarter)
        self._launcher = Launcher(runs, ledger_of) if self._records else None

    def close(self) -> None:
        """Stop launching: runs recorded but not launched yet are left to the next serve
        (their start records are durable; the stopped-run scan continues them)."""
        if self._launcher is not None:
            self._launcher.close()
        self._late.close()

    # --- the decision ------------------------------------------------------------------

    def __call__(self, alert: Alert) -> TriageOutcome:
        triggers = self._current()
        if triggers is None:
            raise NoTriggers(
                "this server has no usable trigger file yet, so no alert can start a run",
                f"write {self.triggers_path} (check it with `clampdown lint`): serve reads it "
                "when it changes, and the sender's retry is triaged then",
            )
        try:
            match = match_alert(triggers, alert)
        except TriggerError as exc:  # a trigger bug: held under that trigger, not lost
            trigger = exc.trigger
            if trigger is None:  # every TriggerError names its trigger; kept loud if not
                raise
            return self._hold(
                alert,
                trigger.runbook,
                trigger.name,
                f"{alert.source}:{alert.id}",  # its own key could not be computed
                str(exc),
            )
        if match is None:
            reason = "no trigger matches this alert"
            log.info("alert %s:%s ignored: %s", alert.source, alert.id, reason)
            return TriageOutcome("ignored", reason=reason)
        name = match.trigger.name
        try:
            path, given = self._runbook(match.runbook)
            check_inputs(match, given.model)
            response = response_of(given.model, _destructive)
        except ClampdownError as exc:
            return self._held(alert, match, f"trigger '{name}' cannot start {match.runbook}: {exc}")
        trigger = {
            "type": "alert",
            "source": alert.source,
            "alert_id": alert.id,
            "trigger": name,
            "runbook": match.runbook,
            "response": response,
            "correlation_key": match.correlation_key,
            "alert": alert_summary(alert),
        }
        starting = _Starting(self, path, given, match, trigger, alert)
        try:
            if starting.run_id is not None:
                starting.prepare()
            claim = self._claim(match, response, starting)
            starts = claim is not None and claim.status in ("started", "reserved")
            run_id = starting.launch(claim) if claim is not None and starts else None
        except RunNotStarted:
            raise
        except ClampdownError as exc:  # the runbook cannot start as asked: a retry won't help
            return self._held(alert, match, f"could not start {match.runbook}: {exc}")
        if run_id is None:
            return self._not_new(claim, alert, match)
        log.info("alert %s:%s started run %s (%s)", alert.source, alert.id, run_id, name)
        related = self._link_related(run_id, alert, match, response)
        said = "".join(f"; related to run {other} ({rb})" for other, rb in related)
        return TriageOutcome("started", run_id, name, f"started {match.runbook}{said}")

    def _not_new(self, claim: Claim | None, alert: Alert, match: Match) -> TriageOutcome:
        """The outcome of an alert that started no run: it repeats or joins one, or is held."""
        if claim is None:  # the run of this incident is taking long to start
            return self._held(alert, match, "a run for this incident is still starting")
        if claim.status in ("duplicate", "joined"):
            assert claim.run_id is not None
            how = "deduplicated" if claim.status == "duplicate" else "joined"
            self._record(claim.run_id, alert, match, how)
            if how == "joined":
                self._notify_joined(claim.run_id, alert)
            what = "repeats the incident of" if how == "deduplicated" else "correlates with"
            return TriageOutcome(
                how, claim.run_id, match.trigger.name, f"{what} run {claim.run_id}"
            )
        return self._held(
            alert,
            match,
            f"runbook {match.runbook} already has {claim.active} runs in progress "
            f"(max_concurrent_runs {match.trigger.max_concurrent_runs}); alert held",
        )

    def _claim(self, match: Match, response: str, starting: _Starting) -> Claim | None:
        """The store's decision, asked again while a run of the incident is being started
        (None when that takes longer than ``pending_timeout``). With a recording starter a
        decision to start has recorded the run's start (``started``)."""
        deadline = time.monotonic() + self.pending_timeout
        pause = 0.01
        while True:
            try:
                claim = self._claim_once(match, response, starting)
            except BaseException:  # e.g. the commit failed after the start was recorded
                starting.undo()
                raise
            if claim.status != "started":
                starting.undo()  # recorded in a batch that rolled back, then decided otherwise
            if claim.status != "pending":
                return claim
            if time.monotonic() > deadline:
                return None
            time.sleep(pause)
            pause = min(pause * 2, 0.2)

    def _claim_once(self, match: Match, response: str, starting: _Starting) -> Claim:
        return self.store.claim(
            dedup_key=response_key(response, match.dedup_key),
            dedup_ttl=match.trigger.dedup_window,
            correlation_key=(
                response_key(response, match.correlation_key) if match.correlation_key else None
            ),
            correlation_ttl=match.trigger.correlation_window,
            runbook=match.runbook,
            max_runs=match.trigger.max_concurrent_runs,
            is_finished=self.is_finished,
            run_id=starting.run_id,
            on_start=starting.record if starting.run_id is not None else None,
        )

    # --- helpers -----------------------------------------------------------------------

    def _record(self, run_id: str, alert: Alert, match: Match, how: str) -> None:
        """Append the alert to the run's ledger (``alert.joined``): now, or, for a run that
        has not written ``run.start`` yet (still being set up, which under load takes longer
        than any fixed wait), once it has (:class:`~clampdown_flows.ledger_waits.LedgerWaits`),
        never waiting on the alert's request path. If the run does not start, the alert is
        held then (logged, and said where held alerts are said)."""
        path = self.ledger_of(run_id)
        if path is None:
            return
        write = functools.partial(self._write_joined, run_id, path, alert, match, how)
        if self._ledger_started(run_id, path):
            write()
            return
        not_recorded = f"run {run_id} did not start, so the alert is not in its ledger"
        self._late.add(
            run_id,
            f"alert.joined ({alert.source}:{alert.id})",
            write,
            given_up=functools.partial(self._held, alert, match, not_recorded),
        )

    def _write_joined(self, run_id: str, path: Path, alert: Alert, match: Match, how: str) -> None:
        append_to(
            path,
            "alert.joined",
            primary=self._primary(run_id),
            how=how,
            trigger=match.trigger.name,
            dedup_key=match.dedup_key,
            correlation_key=match.correlation_key,
            alert=alert_summary(alert),
        )

    def _link_related(
        self, run_id: str, alert: Alert, match: Match, response: str
    ) -> list[tuple[str, str]]:
        """Link a new run to the runs in progress giving *another response* with its key.

        Correlation escalates, never suppresses: the alert started its own runbook, and
        both ledgers say so (``alert.correlated`` naming the other run) so that a
        responder reading either run sees the whole incident. Only runs whose ledger is
        on this machine are found (deployment mode keeps ledgers on the workers).
        """
        if match.correlation_key is None:
            return []
        related: list[tuple[str, str]] = []
        for other in self.store.active_run_ids():
            start = None if other == run_id else self._run_start(other)
            trigger = (start or {}).get("trigger") or {}
            if trigger.get("correlation_key") != match.correlation_key:
                continue
            other_runbook = str((start or {}).get("runbook") or trigger.get("runbook"))
            if trigger.get("response") == response or self._finished_or_unknown(other):
                continue
            related.append((other, other_runbook))
        for other, other_runbook in related:
            self._append_link(other, run_id, match.runbook, alert, match)
            self._append_link(run_id, other, other_runbook, alert, match)
            self._notify_related(other, alert, run_id)
        return related

    def _finished_or_unknown(self, run_id: str) -> bool:
        """``is_finished`` for linking only: the new run has started whatever it says, so
        an error (Prefect unreachable) must not turn the answer into a failure; unknown
        counts as in progress (linking too much costs a note, too little hides a run)."""
        try:
            return self.is_finished(run_id)
        except Exception as exc:
            log.warning("could not tell whether run %s ended (%s): linked anyway", run_id, exc)
            return False

    def _run_start(self, run_id: str) -> dict[str, Any] | None:
        """The ``run`` field of a run's first record (``run.start``); for a run still being
        set up (recorded, its ``run.start`` not written yet), its start record's runbook and
        trigger; None when neither can be read."""
        path = self.ledger_of(run_id)
        if path is None:
            return None
        if self.runs is not None:
            self.runs.run(run_id).materialize()
        try:
            with path.open("rb") as fh:
                first = json.loads(fh.readline() or b"{}")
        except FileNotFoundError:
            return self._recorded_start(run_id)
        except (OSError, ValueError):
            return None
        if first.get("type") == "run.start":
            return first.get("run")
        return self._recorded_start(run_id) if not first else None

    def _recorded_start(self, run_id: str) -> dict[str, Any] | None:
        """What a recording starter wrote before launching the run (``start.json``)."""
        if self.home is None:
            return None
        try:
            start = RunStart.load(self.home.run(run_id))
        except ClampdownError:
            return None
        if start is None:
            return None
        return {"runbook": start.trigger.get("runbook") or start.runbook, "trigger": start.trigger}

    def _append_link(
        self, run_id: str, other: str, other_runbook: str, alert: Alert, match: Match
    ) -> None:
        """Record in ``run_id``'s ledger that ``other`` answers the same incident: now, or,
        for a run that has not written ``run.start`` yet (one just launched), once it has
        (:class:`~clampdown_flows.ledger_waits.LedgerWaits`)."""
        path = self.ledger_of(run_id)
        if path is None:
            log.error("run %s: no ledger to record the related run %s in", run_id, other)
            return
        write = functools.partial(
            self._write_link, run_id, path, other, other_runbook, alert, match
        )
        if self._ledger_started(run_id):
            write()
        else:
            self._late.add(run_id, f"alert.correlated (related run {other})", write)

    def _write_link(
        self, run_id: str, path: Path, other: str, other_runbook: str, alert: Alert, match: Match
    ) -> None:
        try:
            append_to(
                path,
                "alert.correlated",
                primary=self._primary(run_id),
                related_run=other,
                related_runbook=other_runbook,
                trigger=match.trigger.name,
                correlation_key=match.correlation_key,
                alert=alert_summary(alert),
            )
        except LedgerWriteError as exc:  # the new run has started: the answer stays "started"
            log.error("run %s: the related run %s could not be recorded: %s", run_id, other, exc)

    def _ledger_started(self, run_id: str, path: Path | None = None) -> bool:
        """Whether ``run_id``'s ledger has its first record (in the run store, when there
        is one: the run may be on another machine)."""
        primary = self._primary(run_id)
        if primary is not None:
            return primary.head()[0] > 0
        path = path or self.ledger_of(run_id)
        return path is not None and path.is_file() and path.stat().st_size > 0

    def _primary(self, run_id: str) -> LedgerPrimary | None:
        """The run store's copy of ``run_id``'s ledger (None: the file is the ledger)."""
        return None if self.runs is None else self.runs.run(run_id).ledger_primary

    def _notify_related(self, run_id: str, alert: Alert, new_run: str) -> None:
        if self.on_related is None:
            return
        try:
            self.on_related(run_id, alert, new_run)
        except Exception:  # Slack never decides the outcome of an alert
            log.exception("on_related hook failed for run %s", run_id)

    def _held(self, alert: Alert, match: Match, reason: str) -> TriageOutcome:
        return self._hold(alert, match.runbook, match.trigger.name, match.dedup_key, reason)

    def _hold(
        self, alert: Alert, runbook: str, trigger: str, dedup_key: str, reason: str
    ) -> TriageOutcome:
        """Keep an alert that started no run (store, log, ``on_held``); answered ``ignored``."""
        log.error("alert %s:%s held: %s", alert.source, alert.id, reason)
        self.store.hold(
            runbook=runbook,
            trigger=trigger,
            dedup_key=dedup_key,
            alert=alert_summary(alert),
            reason=reason,
        )
        if self.on_held is not None:
            try:
                self.on_held(alert, reason)
            except Exception:
                log.exception("on_held hook failed")
        return TriageOutcome("ignored", None, trigger, reason)

    def _notify_joined(self, run_id: str, alert: Alert) -> None:
        if self.on_joined is None:
            return
        try:
            self.on_joined(run_id, alert)
        except Exception:  # Slack never decides the outcome of an alert
            log.exception("on_joined hook failed for run %s", run_id)

    def _ledger_finished(self, run_id: str) -> bool:
        if self.runs is not None and self.runs.store is not None:
            return self.runs.store.ended(run_id)  # not the whole run brought here per check
        path = self.ledger_of(run_id)
        return path is not None and has_record(path, "run.end")

    def _stat(self) -> Stamp | None:
        """The trigger file's :data:`Stamp`, None when it cannot be seen (missing)."""
        try:
            found = self.triggers_path.stat()
        except OSError:
            return None
        return (found.st_mtime_ns, found.st_size, found.st_ino)

    def _current(self) -> TriggerSet | None:
        """The triggers in force, the file re-read when it changed (None: none yet)."""
        stamp = self._stat()
        if stamp == self._stamp:
            return self._triggers
        with self._lock:
            if stamp != self._stamp:
                self._stamp = stamp
                self._reload()
        return self._triggers

    def _reload(self) -> None:
        """Put the changed file in force when it lints; otherwise say why once (this
        change) and keep the triggers in force: an on-call engineer's typo must not stop
        alerts from being handled, and must not be taken half."""
        try:
            triggers = load_triggerset(self.triggers_path, self.library)
        except ClampdownError as exc:  # InvalidFileError: every problem, with its place
            if self._triggers is None:
                self.problem = (
                    "the trigger file does not lint: alerts are answered 503 until it does"
                )
                log.error(
                    "%s does not lint: alerts are answered 503 until it does "
                    "(fix it; serve reads it when it changes):\n%s",
                    self.triggers_path,
                    exc,
                )
            else:
                self.problem = (
                    "the trigger file does not lint since its last change: "
                    "the triggers read before stay in force"
                )
                log.error(
                    "kept the previous triggers: %s does not lint (fix it; serve reads it "
                    "when it changes):\n%s",
                    self.triggers_path,
                    exc,
                )
            return
        self._triggers = triggers
        self.problem = None
        log.info("reloaded %s", self.triggers_path)

    def _runbook(self, name: str) -> tuple[Path, Preloaded]:
        """The runbook ``name`` loaded and checked as a run checks it (errors are
        ClampdownError), read again only when its file changed."""
        path = library_names(self.library).get(name)
        if path is None:
            raise ClampdownError(f"no runbook named '{name}' in {self.library}")
        mtime = path.stat().st_mtime
        cached = self._runbooks.get(name)
        if cached is None or cached[0] != mtime or cached[1] != path:
            cached = (mtime, path, load_checked(path))
            self._runbooks[name] = cached
        return path, cached[2]


LAUNCH_AT_ONCE = 4
"""Runs launched and not yet at their ``run.start`` (Prefect's flow-run set-up) at a time."""
SETUP_CAP = 2.0
"""Seconds after which a launched run no longer counts as in set-up, ``run.start`` or not."""


class Launcher:
    """Launches recorded runs in the order their alerts were answered, at most
    :data:`LAUNCH_AT_ONCE` at a time in Prefect's set-up (launched, no ``run.start`` yet).

    Why (issue 15, docs/benchmarks.md): a run's set-up is five round trips to the Prefect
    server, which a burst makes CPU-bound. Launched together (once the state store committed
    the burst's claims in groups), 32 runs shared the server and the first alert's
    containment step waited for everyone's round trips: the burst's first steps came 1-2 s
    later than when the claims were committed one by one. Launched in order, a few at a
    time, the first alerts' runs reach their steps first and the last no later.

    A run waits here only after its start record is durable and its 202 answered; while it
    waits this process holds its ownership lock (:mod:`clampdown.core.run_ownership`), so
    the stopped-run scan does not take it for an orphan, and releases it to launch it. A
    serve that stops with runs waiting leaves them to the next one (:meth:`close`).
    """

    POLL = 0.05
    """Seconds between looks at the ledgers of runs in set-up, for a starter that does not
    say when a run reached ``run.start`` (serve's ``InProcessStarter`` does: no poll then)."""

    def __init__(
        self,
        home: Home | None,
        ledger_of: LedgerOf,
        at_once: int = LAUNCH_AT_ONCE,
        cap: float = SETUP_CAP,
    ) -> None:
        self.home = home
        self.ledger_of = ledger_of
        self.at_once = at_once
        self.cap = cap
        self._cond = threading.Condition()
        self._queue: deque[tuple[PreparedStart, contextlib.ExitStack]] = deque()
        self._setup: dict[str, float] = {}  # run id -> when it was launched
        self._thread: threading.Thread | None = None
        self._closed = False

    def launch(self, prepared: PreparedStart) -> None:
        """Launch now when fewer than ``at_once`` runs are in set-up and none waits, else
        queue it (holding its run) for the launcher thread."""
        with self._cond:
            self._prune()
            if not self._queue and len(self._setup) < self.at_once and not self._closed:
                self._go(prepared, None)
                return
            self._queue.append((prepared, self._hold(prepared.run_id)))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="clampdown-launches", daemon=True
                )
                self._thread.start()
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            waiting = list(self._queue)
            self._queue.clear()
            self._cond.notify()
        for prepared, held in waiting:
            held.close()
            log.warning(
                "run %s recorded, not launched: the next serve continues it", prepared.run_id
            )

    def _hold(self, run_id: str) -> contextlib.ExitStack:
        held = contextlib.ExitStack()
        if self.home is not None:
            try:
                held.enter_context(run_ownership.hold(self.home.run(run_id)))
            except ClampdownError as exc:  # launched anyway: its own hold then decides
                log.warning("run %s could not be held while it waits: %s", run_id, exc)
        return held

    def started(self, run_id: str) -> None:
        """``run_id`` wrote its ``run.start``: the next waiting run may go (called from the
        run's thread, through the starter)."""
        with self._cond:
            if self._setup.pop(run_id, None) is not None:
                self._cond.notify()

    def _go(self, prepared: PreparedStart, held: contextlib.ExitStack | None) -> None:
        if held is not None:
            held.close()  # the run's own process (this one) takes it when it starts
        self._setup[prepared.run_id] = time.monotonic()
        prepared.launch(functools.partial(self.started, prepared.run_id))

    def _prune(self) -> None:
        """Forget runs that wrote ``run.start`` (or have been in set-up ``cap`` seconds)."""
        now = time.monotonic()
        for run_id, since in list(self._setup.items()):
            path = self.ledger_of(run_id)
            started = path is not None and path.is_file() and path.stat().st_size > 0
            if started or now - since > self.cap:
                del self._setup[run_id]

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._closed:
                    return
                self._prune()
                if not self._queue:
                    self._cond.wait()
                    continue
                if len(self._setup) >= self.at_once:  # woken by started(), or the cap
                    oldest = min(self._setup.values())
                    self._cond.wait(max(0.0, min(self.POLL, oldest + self.cap - time.monotonic())))
                    continue
                prepared, held = self._queue.popleft()
                try:
                    self._go(prepared, held)
                except Exception:  # its start record stays: the stopped-run scan continues it
                    log.exception("run %s could not be launched", prepared.run_id)


class _Starting:
    """Starting the run of one alert: with a recording starter, its start is recorded
    inside the store's claim (:meth:`record`) and launched after it (:meth:`launch`);
    with another ``start_run``, the claim reserves and :meth:`launch` starts then attaches.
    A failure a retry may fix becomes :class:`RunNotStarted` (logged); a
    :class:`ClampdownError` of the runbook itself goes up as it is."""

    def __init__(
        self,
        triage: TriggerTriage,
        path: Path,
        given: Preloaded,
        match: Match,
        trigger: dict[str, Any],
        alert: Alert,
    ) -> None:
        self.triage = triage
        self.path = path
        self.given = given
        self.match = match
        self.trigger = trigger
        self.what = f"alert {alert.source}:{alert.id}: run of {match.runbook} NOT started"
        self.run_id = new_run_id() if triage._records else None
        self.prepared: PreparedStart | None = None
        self.recorded = False

    def prepare(self) -> None:
        """Before the claim, outside the store's lock: the start record built (inputs
        protected, secrets sealed), so the claim's transaction only has it written."""
        starter = self.triage.start_run
        assert isinstance(starter, RecordingStarter) and self.run_id is not None
        with self._not_started():
            self.prepared = starter.prepare(
                self.path,
                dict(self.match.inputs),
                self.trigger,
                run_id=self.run_id,
                preloaded=self.given,
                library=self.triage.library,  # where the runbook was found
            )

    def record(self) -> None:
        """Inside the claim's transaction: the start record, durably (raising rolls it back;
        called again when the claim is decided again after another start of its batch
        failed: the same record is written again)."""
        assert self.prepared is not None
        with self._not_started():
            self.prepared.record()
        self.recorded = True

    def launch(self, claim: Claim) -> str:
        """The claim committed (``started``): launch; or (``reserved``) start, then attach."""
        store = self.triage.store
        if claim.status == "started":
            assert self.prepared is not None and self.triage._launcher is not None
            self.triage._launcher.launch(self.prepared)
            return self.prepared.run_id
        assert claim.reservation is not None
        try:
            with self._not_started():
                run_id = self.triage.start_run(self.path, dict(self.match.inputs), self.trigger)
        except ClampdownError:  # RunNotStarted included: the keys are freed for the retry
            store.release(claim.reservation)
            raise
        store.attach(claim.reservation, run_id)
        return run_id

    def undo(self) -> None:
        """The claim did not commit after the start was recorded, or was decided again
        without starting (another start of its batch failed): the run must not run."""
        if self.prepared is not None and self.recorded:
            self.prepared.discard()
            self.recorded = False

    @contextlib.contextmanager
    def _not_started(self) -> Iterator[None]:
        try:
            yield
        except RunNotStarted as exc:
            log.error("%s: %s — the sender is asked to retry", self.what, exc)
            raise
        except LedgerWriteError as exc:  # its start could not be recorded (disk full, read-only)
            log.error("%s: %s — the sender is asked to retry", self.what, exc)
            raise RunNotStarted(exc.message, exc.hint) from exc
        except ClampdownError:
            raise
        except Exception as exc:
            log.exception("%s — the sender is asked to retry", self.what)
            raise RunNotStarted(
                f"could not start {self.match.runbook}: {exc.__class__.__name__}: {exc}",
                "see the serve log; the sender's retry starts the run once the cause is gone",
            ) from exc
