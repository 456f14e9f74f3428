"""What is running while a drill runs: the servers, the drill's secrets, its clock.

:func:`open_session` starts the simulated world in order (moto on loopback, the
Slack stand-in, the environment pointed at them, the botocore hook, the seed, the
local Prefect API and ``clampdown serve``), yields a :class:`DrillSession`, and
stops everything in reverse order, the botocore hook and the environment included.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from clampdown.app.drill.evidence_reads import EvidenceReader
from clampdown.app.drill.signers import DrillSigners, drill_signers
from clampdown.app.drill.timeline import Clock, Timeline
from clampdown.app.drill.world import (
    MotoProcess,
    Secrets,
    Serving,
    drill_environment,
    drill_prefect,
    moto_server,
    seed_services,
    serve_on_loopback,
)
from clampdown.core.drill_model import Drill

MOTO_LOG = "moto.log"  # in the workspace: what moto's process said (warnings, errors)

if TYPE_CHECKING:
    from clampdown_aws.testing.seeded import Seeded
    from clampdown_aws.testing.simulated import SimulatedAws
    from clampdown_slack.testing.standin import SlackStandIn


@dataclass(frozen=True)
class DrillSession:
    """One drill's running world; everything here is set once, when it is all up.

    ``slack`` is the stand-in, or None when the person's real workspace is used
    (``--interactive`` with ``CLAMPDOWN_SLACK_BOT_TOKEN`` set); ``signing_secret`` is
    the one ``clampdown serve`` verifies Slack requests with; ``signers``: the keys the
    drill's people sign terminal decisions with (outside the workspace).
    """

    drill: Drill
    library: Path
    workspace: Path
    console: Console
    keys: Secrets
    signers: DrillSigners
    clock: Clock
    slack: SlackStandIn | None
    sim: SimulatedAws
    seeded: Seeded
    base_url: str
    app: Any
    signing_secret: str
    serving: Serving | None = field(default=None, repr=False, compare=False)

    _clients: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    _clients_lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    _evidence: list[EvidenceReader] = field(default_factory=list, repr=False, compare=False)

    def client(self, service: str) -> Any:
        """A boto3 client of the simulated account, one per service for the whole drill,
        made on first use from a session sharing the botocore models the run's steps have
        loaded (``clampdown_aws.base.session``: a client whose models are read anew costs
        0.1-0.6 s here; the checks and injects ask for one each time; boto3 clients are
        thread-safe, their making from one session is not, hence the lock)."""
        from clampdown_aws.base import session as aws_session

        with self._clients_lock:
            if service not in self._clients:
                made = aws_session(None, "drill", self.drill.seed.region)
                self._clients[service] = made.client(service)
            return self._clients[service]

    def evidence_reader(self) -> EvidenceReader:
        """The drill's one read-back of its runs' evidence (the evidence objective and the
        report's evidence list share it: :mod:`clampdown.app.drill.evidence_reads`)."""
        with self._clients_lock:
            if not self._evidence:
                self._evidence.append(EvidenceReader(self.client, self.seeded.evidence_bucket))
            return self._evidence[0]

    def read_evidence_soon(self, run_id: str) -> None:
        """Begin reading ``run_id``'s evidence back in a thread of its own; for when the run
        has ended. Why then: its manifest is written before ``run.end``, which pins its
        version, and nothing the flow does afterwards changes it or the object versions it
        lists (the ledger's last copy is a newer version of its own key); so the read
        overlaps the flow's last uploads instead of following them, and the scoring that
        asks the reader afterwards finds it done (or waits for it; what it raised is raised
        to the askers then)."""
        reader = self.evidence_reader()

        def read() -> None:
            with contextlib.suppress(Exception):  # kept by the reader for its askers
                reader.read(run_id)

        threading.Thread(target=read, name="drill-evidence-early", daemon=True).start()

    def context(self) -> dict[str, Any]:
        """The placeholders of payloads and commands: ``seed`` and ``drill``."""
        stamp = datetime.fromtimestamp(self.clock.alert_epoch or time.time(), UTC)
        return {
            "seed": self.seeded.context(),
            "drill": {
                "name": self.drill.metadata.name,
                "alert_time": stamp.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
                "alert_epoch": int(stamp.timestamp()),
            },
        }

    def stop_serving(self) -> None:
        """Begin ``clampdown serve``'s stop now (see :meth:`Serving.begin_stop`): for when
        every run of the drill has ended, so its shutdown overlaps the scoring."""
        if self.serving is not None:
            self.serving.begin_stop()

    def run_futures(self) -> dict[str, Any]:
        """The flow runs ``clampdown serve`` started in this process: run id -> future."""
        starter = getattr(self.app.state, "starter", None)
        return dict(getattr(starter, "futures", {}))


@contextlib.contextmanager
def open_session(
    drill: Drill,
    *,
    library: Path,
    workspace: Path,
    console: Console,
    clock: Clock,
    timeline: Timeline,
    real_slack: bool,
) -> Iterator[DrillSession]:
    """Start the drill's world (see the module docstring); stop all of it afterwards."""
    from clampdown_aws.testing.simulated import SimulatedAws
    from clampdown_slack.testing.standin import SlackStandIn

    keys = Secrets()
    with contextlib.ExitStack() as stack:
        moto = stack.enter_context(moto_server(workspace / MOTO_LOG, seed_services(drill)))
        endpoint = moto.url
        slack: SlackStandIn | None = None
        if not real_slack:
            slack = stack.enter_context(
                SlackStandIn(
                    token=keys.slack_token,
                    usergroups={"security-oncall": [drill.roles.approver.slack_user]},
                )
            )
            signing_secret = keys.signing_secret
        else:
            timeline.note("Slack: the real workspace of CLAMPDOWN_SLACK_* was used")
            signing_secret = os.environ.get("CLAMPDOWN_SLACK_SIGNING_SECRET", "")
        signers = stack.enter_context(drill_signers(drill))
        stack.enter_context(
            drill_environment(
                drill,
                workspace,
                keys,
                aws_endpoint=endpoint,
                slack_url=slack.url if slack is not None else None,
                allowed_signers=signers.allowed_signers,
            )
        )
        sim = stack.enter_context(SimulatedAws(endpoint))
        console.print(
            f"[bold]Drill[/] {drill.metadata.title}: seeding simulated AWS, starting "
            "clampdown serve on the drills' Prefect API…"
        )
        seeded, (app, serving) = _seed_while_serving(stack, drill, workspace, console, moto)
        sim.records = seeded.trail_records
        yield DrillSession(
            drill=drill,
            library=library,
            workspace=workspace,
            console=console,
            keys=keys,
            signers=signers,
            clock=clock,
            slack=slack,
            sim=sim,
            seeded=seeded,
            base_url=serving.url,
            app=app,
            signing_secret=signing_secret,
            serving=serving,
        )


def _seed_while_serving(
    stack: contextlib.ExitStack,
    drill: Drill,
    workspace: Path,
    console: Console,
    moto: MotoProcess,
) -> tuple[Seeded, tuple[Any, Serving]]:
    """Seed the simulated account while this thread finds (or starts) the drills' Prefect
    API and starts ``clampdown serve``: moto's process seeds it (:meth:`MotoProcess.seed`,
    on the other core), a thread here waits for its answer, then imports serve's modules.
    Nothing reaches serve before both are done (the alert comes after)."""
    with ThreadPoolExecutor(1, thread_name_prefix="drill-seed") as pool:
        seeding = pool.submit(_seed_then_import_serve, drill, moto, datetime.now(UTC))
        served = _serve(stack, workspace, console)
        return seeding.result(), served


def _seed_then_import_serve(drill: Drill, moto: MotoProcess, alert_time: datetime) -> Seeded:
    seeded = moto.seed(drill.seed, alert_time)
    import clampdown.app.serve  # noqa: F401 - its imports (~1 s), while the API still starts
    import clampdown_flows.respond  # noqa: F401 - the flow serve runs at the alert (~0.1 s)

    return seeded


def _serve(stack: contextlib.ExitStack, workspace: Path, console: Console) -> tuple[Any, Serving]:
    """The drills' own local Prefect API (their database beside the workspaces; the
    resident one, started if none runs), then ``clampdown serve`` on a loopback port."""

    def started(url: str, pid: int) -> None:
        console.print(
            f"started the drills' Prefect API at {url} (pid {pid}); it stays up for the next "
            "drill (an hour without use stops it; so does `clampdown prefect-api stop`)",
            markup=False,
            highlight=False,
        )

    stack.enter_context(drill_prefect(workspace, on_started=started))
    from clampdown.app.serve import create_app  # imported meanwhile by the seeding thread

    app = create_app()
    return app, stack.enter_context(serve_on_loopback(app))
