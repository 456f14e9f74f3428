"""Settings from ``CLAMPDOWN_*`` environment variables (pydantic-settings).

No secret lives in a file of the repository; tokens come from the environment.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from clampdown.core.diagnostics import ClampdownError
from clampdown.core.home import Home

if TYPE_CHECKING:
    from clampdown.core.run_store import RunStore


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CLAMPDOWN_", extra="ignore")

    home: Path = Field(Path("~/.clampdown"), description="state folder: ledgers, dedup state")
    library: Path = Field(
        default_factory=lambda: default_library(),
        description="runbook folder (./runbooks if there is one, else the shipped library)",
    )
    execution: Literal["local", "deployment"] = "local"
    run_store: Literal["files", "postgresql"] = Field(
        "files",
        description="where runs' ledgers, start records, approval requests and decision "
        "inboxes live: files in CLAMPDOWN_HOME, or postgresql (the database of "
        "CLAMPDOWN_STATE_URL; the scaled mode without a shared filesystem)",
    )
    _state_url: str | None = PrivateAttr(None)
    triggers: Path | None = Field(None, description="trigger file (<library>/triggers.yaml)")
    drill: bool = Field(False, description="runs started here are drills (set by clampdown drill)")
    evidence_bucket: str | None = Field(None, description="S3 bucket for evidence and ledgers")
    evidence_retention_days: int = Field(365, ge=1, description="Object Lock retention")
    evidence_lock_mode: Literal["GOVERNANCE", "COMPLIANCE"] = Field(
        None,  # type: ignore[assignment]  # filled below: COMPLIANCE, GOVERNANCE in drills
        description="Object Lock mode of evidence: COMPLIANCE (default; nobody can delete "
        "before retention ends) or GOVERNANCE (default in drills)",
        validate_default=False,
    )
    ledger_kms_key_id: str | None = Field(
        None,
        description="AWS KMS asymmetric signing key (ECC_NIST_P256) that signs ledger heads",
    )
    ledger_key: Path | None = Field(
        None,
        description="local Ed25519 key (PEM) that signs ledger heads, for drills and "
        "development; outside CLAMPDOWN_HOME",
    )
    approvers: str = Field(
        "", description="default approvers: user ids and group ids or handles, comma-separated"
    )
    groups: str = Field(
        "", description="approver groups without a member directory: name=U1,U2; other=U3"
    )
    break_glass_approvers: str = Field(
        "",
        description="user ids (U…/W…, comma-separated) who may decide any approval whose "
        "groups cannot be resolved (no member directory answer, no cached membership); "
        "each such decision is recorded as break-glass",
    )
    allowed_signers: Path | None = Field(
        None,
        description="who may sign terminal decisions: git's allowed_signers format mapping "
        "approver ids to SSH public keys; outside CLAMPDOWN_HOME, writable by its owner only",
    )
    approver_key: Path | None = Field(
        None,
        description="your SSH key for `clampdown approve` (a private key, or its .pub when "
        "the key is in ssh-agent); --key overrides it",
    )
    serve_key: Path | None = Field(
        None,
        description="clampdown serve's SSH private key: it signs Slack decisions with it; list "
        "its public key as clampdown-serve in CLAMPDOWN_ALLOWED_SIGNERS",
    )
    prefect_ui_decisions: bool = Field(
        False,
        description="count unauthenticated decisions typed in the Prefect UI (trusts whoever "
        "can reach the Prefect API)",
    )

    @field_validator("break_glass_approvers")
    @classmethod
    def _user_ids_only(cls, value: str) -> str:
        """Break glass names people, never a group: a group is what cannot be resolved."""
        from clampdown.core.approvals import split_people

        _, groups = split_people(value)
        if groups:
            raise ValueError(f"user ids only (U… or W…), not {', '.join(groups)}")
        return value

    @model_validator(mode="after")
    def _lock_mode(self) -> Settings:
        """Evidence is locked in COMPLIANCE mode unless asked otherwise; drills use
        GOVERNANCE so their simulated buckets can be cleaned up."""
        if self.evidence_lock_mode is None:
            self.evidence_lock_mode = "GOVERNANCE" if self.drill else "COMPLIANCE"
        return self

    @field_validator("run_store")
    @classmethod
    def _run_store_database(cls, value: str) -> str:
        """``postgresql`` needs a PostgreSQL ``CLAMPDOWN_STATE_URL``."""
        if value == "postgresql" and _postgres_state_url() is None:
            raise ValueError(
                "postgresql needs CLAMPDOWN_STATE_URL=postgresql://user:password@host/db "
                "(the database serve and every worker share); unset CLAMPDOWN_RUN_STORE to "
                "keep runs in CLAMPDOWN_HOME"
            )
        return value

    @model_validator(mode="after")
    def _run_store_url(self) -> Settings:
        """The run store's database URL, read once with the rest."""
        if self.run_store == "postgresql":
            self._state_url = _postgres_state_url()
        return self

    @property
    def paths(self) -> Home:
        """Every path under ``home`` (:mod:`clampdown.core.home`), and the shared run store
        when ``run_store`` is ``postgresql``."""
        return Home(self.home, store=self.shared_run_store())

    def shared_run_store(self) -> RunStore | None:
        """The PostgreSQL run store (one per database URL in a process), None for files."""
        if self._state_url is None:
            return None
        from clampdown.core.run_store_pg import postgres_run_store

        return postgres_run_store(self._state_url)

    def run_dir(self, run_id: str) -> Path:
        return self.paths.run(run_id).dir

    def ledger_path(self, run_id: str) -> Path:
        return self.paths.run(run_id).ledger

    def existing_ledger(self, run_id: str) -> Path:
        """The ledger of a past run, or a user error that says where ledgers live."""
        return self.paths.existing_ledger(run_id)


def _postgres_state_url() -> str | None:
    """``CLAMPDOWN_STATE_URL`` when it names a PostgreSQL database, else None (read here,
    not through :mod:`clampdown.core.state_store`, which reads these settings)."""
    import os

    text = os.environ.get("CLAMPDOWN_STATE_URL", "").strip()
    return text if text.startswith(("postgresql://", "postgres://", "postgresql+")) else None


def shipped_library() -> Path:
    """Where the runbook library that ships with clampdown is (package ``clampdown_runbooks``).

    Found without importing it: the package is YAML plus an empty ``__init__``.
    """
    spec = importlib.util.find_spec("clampdown_runbooks")
    if spec is None or not spec.submodule_search_locations:
        return Path("runbooks")
    return Path(next(iter(spec.submodule_search_locations)))


def default_library() -> Path:
    """A ``runbooks/`` folder where the command runs (a team's own library, as documented)
    wins; otherwise the shipped library, so an installed clampdown works from any folder."""
    local = Path("runbooks")
    return local if local.is_dir() else shipped_library()


def settings() -> Settings:
    """Read the environment now. Each entry point (a CLI command, ``serve``'s
    ``create_app``, the ``respond`` and ``rollback`` flows) calls it once and passes the
    result down; a long-lived server does not see a changed environment until restarted."""
    try:
        return Settings()
    except ValidationError as exc:
        raise ClampdownError(
            f"invalid setting: {settings_problems(exc)}", "fix the environment variable"
        ) from None


def current_library() -> Path:
    """``CLAMPDOWN_LIBRARY`` as it is now: the one setting a running server reads again.

    ``serve`` looks the runbook library up at each use on purpose (``/healthz``,
    ``/clampdown list`` and ``run``, runs it starts), so an operator can point a running
    server at another library. Everything else it read once, when its app was built.
    """
    return settings().library


def settings_problems(exc: ValidationError) -> str:
    """``CLAMPDOWN_X: what is wrong`` for each bad variable (never echoing the value)."""
    return "; ".join(
        f"CLAMPDOWN_{str(e['loc'][0]).upper()}: {e['msg']}"
        for e in exc.errors(include_url=False, include_input=False)
    )
