"""What providers plug into a run, besides actions: observers, evidence sinks, member directories.

The engine knows these only as the small protocols below. A provider registers a
factory for each under an entry-point group, the way actions register under
``clampdown.actions``, so any process that imports the flow (``clampdown run``,
``serve``, a stock Prefect worker) gets the same plug-ins without wiring code:

==============================  =====================================================
entry-point group               the factory's signature
==============================  =====================================================
``clampdown.run_observers``     ``(run_id: str, ledger: Ledger, settings: Settings)
                                -> RunObserver | None``
``clampdown.evidence_sinks``    ``(settings: Settings) -> EvidenceSink | None``
``clampdown.member_directories`` ``(settings: Settings) -> MemberDirectory | None``
``clampdown.ledger_signers``    ``(settings: Settings) -> LedgerSigner | None``
==============================  =====================================================

``settings`` is the :class:`~clampdown.core.settings.Settings` the entry point read
once (the ``respond`` flow at its start; ``serve`` when it built its app): paths come
from ``settings.paths``, never from a fresh read. A provider with settings of its own
(Slack's token) reads them in its factory, which is called once per run (observers,
sinks) or per question (member directories). A factory returns ``None`` when its
provider is not configured (no Slack token, no evidence bucket): that provider then
takes no part in the run. :func:`run_observers` and :func:`evidence_sinks` call the
factories and keep what they return.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from clampdown.core.installed import installed_entry_points

if TYPE_CHECKING:
    from clampdown.core.approvals import Request
    from clampdown.core.ledger import Ledger
    from clampdown.core.ledger_signing import LedgerSigner
    from clampdown.core.settings import Settings

RUN_OBSERVERS = "clampdown.run_observers"
EVIDENCE_SINKS = "clampdown.evidence_sinks"
MEMBER_DIRECTORIES = "clampdown.member_directories"
LEDGER_SIGNERS = "clampdown.ledger_signers"

StepStatuses = Sequence[tuple[str, str]]
"""Each step id with what a responder should read: ``running``, ``waiting for approval``…"""


@dataclass(frozen=True)
class RunHeader:
    """What a run is, for whoever shows it (the Slack thread's header)."""

    title: str
    runbook: str
    severity: str
    trigger: dict[str, Any]
    run_id: str
    drill: bool = False
    flow_run_id: str | None = None


class RunObserver(Protocol):
    """Told what a run does as it happens. Must not block: the engine calls it inline.

    Failures of an observer are its own business (Slack down must not stop a
    containment): implementations catch, retry in the background, and record misses.
    ``run_ended`` is called once, before ``run.end`` is written (an observer may
    still append to the ledger then). ``approval_requested`` returns a handle (e.g.
    the posted card) that the later calls about that request get back.
    """

    def run_started(self, header: RunHeader, steps: StepStatuses) -> None: ...

    def steps_changed(self, steps: StepStatuses, note: str | None = None) -> None: ...

    def run_ended(self, outcome: str, steps: StepStatuses) -> None: ...

    def approval_requested(self, request: Request) -> Any: ...

    def approval_progress(self, handle: Any, request: Request) -> None: ...

    def approval_ended(self, handle: Any, request: Request, outcome: str, at: datetime) -> None: ...


class EvidenceSink(Protocol):
    """Keeps a run's ledger where it cannot be rewritten (S3 Object Lock).

    ``anchor_head`` copies each signed chain head as the run goes (from a background
    thread). When the steps are done, ``write_manifest`` lists the run's evidence (the
    ledger so far included) and returns what pins that version (``{"uri", "version_id",
    "sha256"}``; recorded in ``run.end``, whose ``evidence`` is ``manifest_uri``); after
    ``run.end``, ``copy_ledger`` stores the finished ledger. A method that fails raises:
    the engine logs and reports ``evidence upload to <location> failed: <error>``, the
    run's outcome unchanged.
    """

    location: str  # where the evidence goes, for messages (``s3://bucket``)

    def manifest_uri(self, run_id: str) -> str: ...

    def anchor_head(self, run_id: str, seq: int, head: bytes) -> None: ...

    def write_manifest(self, run_id: str, ledger: Path) -> dict[str, Any]: ...

    def copy_ledger(self, run_id: str, ledger: Path) -> None: ...


class MemberDirectory(Protocol):
    """Who is in an approver group; ``None`` when the directory cannot answer now.

    Optional: ``name_of(user_id: str) -> str | None``, a person's name for reports
    (``clampdown report`` looks it up with ``getattr``; a directory without it, or an
    answer of None, leaves the id shown as it is).
    """

    def members(self, groups: tuple[str, ...]) -> set[str] | None: ...


log = logging.getLogger("clampdown.extensions")


@functools.cache
def factories(group: str) -> list[Callable[..., Any]]:
    """The factories registered under ``group``, in a stable order (by entry-point name).

    Looked up once per process: reading every distribution's entry points costs
    milliseconds a run should not pay each time. A plug-in that cannot be imported
    must not stop a containment: it is left out and said loudly, as is a group with
    no plug-in at all (clampdown registers its own, so an empty group means the
    installed package metadata is stale or missing, and Slack or evidence would be
    skipped without a word otherwise).
    """
    found: list[Callable[..., Any]] = []
    registered = sorted(installed_entry_points().select(group=group), key=lambda ep: ep.name)
    if not registered:
        log.warning(
            "no plug-in registered under %s: reinstall clampdown (its package metadata "
            "is missing or stale); runs go on without them",
            group,
        )
    for ep in registered:
        try:
            found.append(ep.load())
        except Exception as exc:
            log.error(
                "%s plug-in %r (%s) cannot be loaded, runs go on without it: %s: %s",
                group,
                ep.name,
                ep.value,
                type(exc).__name__,
                exc,
            )
    return found


def run_observers(run_id: str, ledger: Ledger, settings: Settings) -> list[RunObserver]:
    """The observers configured for this run (none when no provider is configured)."""
    found = (factory(run_id, ledger, settings) for factory in factories(RUN_OBSERVERS))
    return [observer for observer in found if observer is not None]


def evidence_sinks(settings: Settings) -> list[EvidenceSink]:
    """Where finished runs' evidence goes (none without e.g. CLAMPDOWN_EVIDENCE_BUCKET)."""
    found = (factory(settings) for factory in factories(EVIDENCE_SINKS))
    return [sink for sink in found if sink is not None]


def ledger_signer(settings: Settings) -> LedgerSigner | None:
    """The key that signs run ledgers' heads (None: runs are unsigned, and say so).

    Two configured at once (a KMS key and a local key) is refused: which one a
    verifier should trust must never be a guess.
    """
    from clampdown.core.diagnostics import ClampdownError

    found = [s for s in (f(settings) for f in factories(LEDGER_SIGNERS)) if s is not None]
    if len(found) > 1:
        raise ClampdownError(
            "more than one ledger signing key is configured: " + ", ".join(s.key_id for s in found),
            "set only one of CLAMPDOWN_LEDGER_KMS_KEY_ID and CLAMPDOWN_LEDGER_KEY",
        )
    return found[0] if found else None
