"""Every path under ``CLAMPDOWN_HOME``, in one place.

The layout (operators and tests rely on it; keep it byte-for-byte)::

    $CLAMPDOWN_HOME/
        state.sqlite3                  dedup state (local mode), see clampdown.core.state_store
        drills/<drill>-<UTC time>-<hex>/   one drill's workspace (a home of its own)
        runs/<run-id>/
            ledger.jsonl               the run's hash-chained ledger
            approvals/<step>.json      an approval request (clampdown_flows.approval_store)
            approvals/.key             the run's approval key (0600)
            slack.json                 the run's Slack thread state (clampdown_slack.status)
            slack.json.lock            its lock file
            rolled-back.json           written once a rollback undid every change
            rollback.lock              held while a rollback of the run is in progress

:class:`Home` is built from the configured home (``Settings.paths``); nothing else
joins these names. Pure: no environment is read here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from clampdown.core.diagnostics import ClampdownError

LEDGER = "ledger.jsonl"
APPROVALS = "approvals"
APPROVAL_KEY = ".key"
SLACK_THREAD_STATE = "slack.json"
ROLLED_BACK_MARK = "rolled-back.json"
ROLLBACK_LOCK = "rollback.lock"
STATE_DB = "state.sqlite3"


@dataclass(frozen=True)
class RunFiles:
    """The files of one run, under ``<home>/runs/<run-id>/``."""

    home: Home
    run_id: str

    @property
    def dir(self) -> Path:
        return self.home.runs_dir / self.run_id

    @property
    def ledger(self) -> Path:
        return self.dir / LEDGER

    @property
    def approvals_dir(self) -> Path:
        return self.dir / APPROVALS

    def approval_request(self, step: str) -> Path:
        return self.approvals_dir / f"{step}.json"

    @property
    def approval_key(self) -> Path:
        return self.approvals_dir / APPROVAL_KEY

    @property
    def slack_thread_state(self) -> Path:
        return self.dir / SLACK_THREAD_STATE

    @property
    def rolled_back_mark(self) -> Path:
        return self.dir / ROLLED_BACK_MARK

    @property
    def rollback_lock(self) -> Path:
        return self.dir / ROLLBACK_LOCK


@dataclass(frozen=True)
class Home:
    """``CLAMPDOWN_HOME`` as configured (``configured``, for messages) and its paths."""

    configured: Path

    @property
    def root(self) -> Path:
        return self.configured.expanduser()

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def drills_dir(self) -> Path:
        return self.root / "drills"

    @property
    def state_db(self) -> Path:
        return self.root / STATE_DB

    def run(self, run_id: str) -> RunFiles:
        return RunFiles(self, run_id)

    def existing_ledger(self, run_id: str) -> Path:
        """The ledger of a past run, or a user error that says where ledgers live."""
        path = self.run(run_id).ledger
        if not path.is_file():
            raise ClampdownError(
                f"no ledger for run '{run_id}'",
                f"ledgers live under {self.configured}/runs/<run-id>/ledger.jsonl",
            )
        return path
