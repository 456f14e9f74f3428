"""How a run was started, written durably before anyone is told it started.

``serve`` answers an alert "started" only once ``runs/<id>/start.json`` is on disk
(fsync'd): from then on the run exists even if the process dies before the flow writes
its first ledger record, and any process can start or continue it from this file
(:mod:`clampdown.core.run_ownership` says whether one already does). When the file
cannot be written (full or read-only disk) the starter raises
:class:`~clampdown.core.runs.RunNotStarted` and the sender is asked to retry.

Secret inputs never reach the disk in clear: with ``CLAMPDOWN_INPUTS_KEY`` they are
kept sealed (:mod:`clampdown.core.sealed_inputs`); without it they are left out and
named, and a run that needs them cannot be resumed (it ends and says so).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import SecretStr

from clampdown.core.diagnostics import ClampdownError
from clampdown.core.home import RUN_START, RunFiles
from clampdown.core.sealed_inputs import is_sealed, seal_inputs


@dataclass(frozen=True)
class RunStart:
    """A run's start parameters: what ``respond`` is called with, secrets sealed or left out."""

    run_id: str
    runbook: str
    inputs: dict[str, Any]
    trigger: dict[str, Any]
    library: str | None = None
    drill: bool = False
    requested_at: str = field(
        default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds")
    )
    secrets_left_out: tuple[str, ...] = ()

    @classmethod
    def of(
        cls,
        run_id: str,
        runbook: str,
        inputs: Mapping[str, Any],
        trigger: Mapping[str, Any],
        *,
        library: str | None = None,
        drill: bool = False,
        inputs_key: SecretStr | None = None,
    ) -> RunStart:
        """The start of a run; secret values (``SecretStr`` or already sealed) are sealed
        with ``inputs_key`` or, without one, left out and named."""
        secret = {k for k, v in inputs.items() if isinstance(v, SecretStr)}
        plain = {k: v for k, v in inputs.items() if k not in secret}
        left_out: tuple[str, ...] = ()
        if secret and inputs_key is not None:
            plain |= seal_inputs(secret, {k: inputs[k] for k in secret}, inputs_key)
        elif secret:
            left_out = tuple(sorted(secret))
        return cls(run_id, runbook, plain, dict(trigger), library, drill, secrets_left_out=left_out)

    def save(self, files: RunFiles) -> None:
        """Write it durably (fsync'd, atomic; in the run store when there is one); an
        ``OSError`` (or a store error) means the run did not start."""
        files.write(RUN_START, json.dumps(asdict(self), default=str), durable=True)

    @classmethod
    def load(cls, files: RunFiles) -> RunStart | None:
        """The run's start record, None when it has none (a run from an older version)."""
        try:
            text = files.read(RUN_START)
            if text is None:
                return None
            data = json.loads(text)
        except (OSError, ValueError) as exc:
            raise ClampdownError(
                f"the start record of run '{files.run_id}' cannot be read: {exc}",
                f"inspect {files.start}",
            ) from None
        data["secrets_left_out"] = tuple(data.get("secrets_left_out") or ())
        return cls(**data)

    @property
    def has_sealed_inputs(self) -> bool:
        return any(is_sealed(v) for v in self.inputs.values())


def continuation(files: RunFiles) -> tuple[str, dict[str, Any] | None, dict[str, Any]]:
    """How ``respond`` continues the stopped run of ``files`` (brought from the run store
    by the caller): its runbook, its inputs and the other keyword arguments.

    A run that died before its first ledger record starts afresh from its start record
    (same run id, trigger, library); any other is resumed from its ledger, which holds
    its inputs (the runbook named by the start record, else the run id, for ``respond``
    to report). One answer for serve (:mod:`clampdown.app.local_runs`) and
    ``clampdown worker`` (:mod:`clampdown.app.deployment`).
    """
    start = RunStart.load(files)
    if start is not None and not files.ledger.exists():
        options = {"trigger": start.trigger, "library": start.library, "drill": start.drill}
        return start.runbook, start.inputs, options
    return (start.runbook if start is not None else files.run_id), None, {"resume": True}
