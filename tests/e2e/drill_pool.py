"""The session's drills, run side by side: each in a process of its own, forked from one
forkserver that imported clampdown, Prefect and boto3 once (and read botocore's models).

Why: a drill is mostly waiting on its own clock (scripted approvals 3-6 s after a card, a
20 s Slack outage, injects at T+N s). One after another in the xdist worker, the shipped
drills took ~78 s of its wall time, most of it asleep, while every test that reads them
waited in line. Side by side they wait together.

Each drill still runs end to end exactly as the in-process fixture ran it: ``run_drill``
in a process of clampdown's, in the session's drills home, on the standing drills' Prefect
API, with the guard that it starts no Prefect API of its own (:func:`patch_drills_home`), and
with the session's Prefect API configured as the worker has it (so a drill that followed
``PREFECT_API_URL`` would put its runs there: test_drills.py checks that it does not). A
drill process gets the worker's environment as it was when the drills were handed out.

The forkserver starts without ``CLAMPDOWN_HOME`` in its environment: the drill processes
it forks are not taken for a daemon left on a test's home (tests/leftovers.py reads the
environment a process started with) when a test file ends while they run.
"""

from __future__ import annotations

import contextlib
import io
import multiprocessing
import multiprocessing.forkserver
import multiprocessing.resource_tracker
import os
import traceback
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from clampdown.app.drill.runner import DrillResult

# Imported once, in the forkserver (each drill process is a fork of it): what a drill
# imports anyway, ~2 CPU-s per process otherwise; the last reads botocore's service models
# into the loader every drill's clients share.
PRELOAD = (
    "prefect.client.orchestration",
    "clampdown_flows.respond",
    "clampdown.app.serve",
    "clampdown.app.drill.runner",
    "clampdown.app.drill.objectives",
    "boto3",
    "uvicorn",
    "tests.e2e.drill_preload",
)


def _no_api_of_its_own(*args: object, **kwargs: object) -> None:
    raise AssertionError(
        "a drill of the test session started a Prefect API of its own: it should have used "
        "the session's standing drills' API (clampdown.app.drill.world.standing_api)"
    )


def patch_drills_home(patch: pytest.MonkeyPatch, drills_home: Path) -> None:
    """CLAMPDOWN_HOME is the session's drills home, and a drill that would start a Prefect
    API instead of using the standing one fails (it would cost 8-14 s, unnoticed)."""
    patch.setenv("CLAMPDOWN_HOME", str(drills_home))
    # respond binds local_api when it is imported: patched there first (which imports it
    # with the real one), or a respond first imported under the patch below would keep
    # the guard after this test, and every later `clampdown run` of the worker would fail
    patch.setattr("clampdown_flows.respond.local_api", _no_api_of_its_own)
    patch.setattr("clampdown_flows.prefect_api.local_api", _no_api_of_its_own)
    patch.setattr("clampdown_flows.prefect_api.resident_api", _no_api_of_its_own)


@dataclass(frozen=True)
class WorkerPrefect:
    """The Prefect API the xdist worker is configured with (the session's): its URL and
    the auth string its clients send."""

    url: str
    auth: str | None


@dataclass(frozen=True)
class DrillJob:
    """One drill to run in a drill process: what it needs of the worker."""

    name: str
    library: Path
    drills_home: Path
    report_dir: Path
    log: Path  # the drill process's own output (its stdout and stderr)
    environ: dict[str, str]
    prefect: WorkerPrefect


class DrillFailed(RuntimeError):
    """A drill process raised: the drill, the traceback, the end of its output."""


def run_job(job: DrillJob) -> DrillResult:
    """In a drill process: the drill, as the in-process fixture ran it (module docstring),
    with the worker's environment and Prefect settings."""
    with open(job.log, "ab") as out:  # Prefect's and moto's warnings, not pytest's output
        os.dup2(out.fileno(), 1)
        os.dup2(out.fileno(), 2)
    os.environ.clear()
    os.environ.update(job.environ)
    patch = pytest.MonkeyPatch()
    try:
        patch_drills_home(patch, job.drills_home)
        with _worker_prefect(job.prefect):
            return _run_drill(job)
    except BaseException:
        raise DrillFailed(
            f"drill {job.name} (its output: {job.log}):\n{traceback.format_exc()}"
        ) from None
    finally:
        patch.undo()


def _run_drill(job: DrillJob) -> DrillResult:
    from rich.console import Console

    from clampdown.app.drill.runner import run_drill

    console = Console(file=io.StringIO(), width=200)
    return run_drill(job.name, report_dir=job.report_dir, console=console, library=job.library)


@contextlib.contextmanager
def _worker_prefect(prefect: WorkerPrefect) -> Iterator[None]:
    """The worker's Prefect settings, in this process and its threads (local_api's way)."""
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL

    from clampdown_flows.prefect_api import _process_settings

    with _process_settings({PREFECT_API_URL: prefect.url, PREFECT_API_AUTH_STRING: prefect.auth}):
        yield


def worker_prefect() -> WorkerPrefect:
    """The Prefect API this process's clients use now."""
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL

    url = PREFECT_API_URL.value()
    assert url, "the session's Prefect API is not configured in this process"
    return WorkerPrefect(str(url), PREFECT_API_AUTH_STRING.value())


class DrillPool:
    """Each drill of the session once: up to ``workers`` at a time in drill processes, and
    one more in this process while a test waits for it.

    The drills are handed to the drill processes from the end of the order they are asked
    for in, and the test that asks for one that no drill process has taken yet runs it
    here, as the fixture always did (so this process's idle wait is a lane too): the
    tests' first drills run here, the last ones in the drill processes meanwhile.
    """

    def __init__(
        self,
        *,
        workers: int,
        library: Path,
        drills_home: Path,
        prefect: WorkerPrefect,
        folder: Path,
    ) -> None:
        self._library = library
        self._drills_home = drills_home
        self._prefect = prefect
        self._folder = folder
        self._futures: dict[str, Future[DrillResult]] = {}
        self._here: dict[str, DrillResult] = {}
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(list(PRELOAD))
        with _environment_without("CLAMPDOWN_HOME"):
            multiprocessing.forkserver.ensure_running()
        self._executor = ProcessPoolExecutor(max(1, workers), mp_context=context)

    def start(self, names: Iterable[str]) -> None:
        """Hand the drills not begun yet to the drill processes, the last named first."""
        for name in reversed(list(dict.fromkeys(names))):
            if name not in self._futures and name not in self._here:
                self._futures[name] = self._executor.submit(run_job, self._job(name))

    def result(self, name: str) -> DrillResult:
        """The drill's result: run here now if no drill process has taken it."""
        if name in self._here:
            return self._here[name]
        future = self._futures.get(name)
        if future is not None and not future.cancel():
            return future.result()
        self._futures.pop(name, None)
        job = self._job(name)
        with pytest.MonkeyPatch.context() as patch:
            patch_drills_home(patch, job.drills_home)
            patch.setenv("CLAMPDOWN_LIBRARY", str(job.library))
            self._here[name] = _run_drill(job)
        return self._here[name]

    def _job(self, name: str) -> DrillJob:
        folder = self._folder / name
        folder.mkdir(parents=True, exist_ok=True)
        environ = {
            **os.environ,
            "CLAMPDOWN_HOME": str(self._drills_home),
            "CLAMPDOWN_LIBRARY": str(self._library),  # as the tests' autouse home sets it
        }
        return DrillJob(
            name=name,
            library=self._library,
            drills_home=self._drills_home,
            report_dir=folder / "report",
            log=folder / "drill.log",
            environ=environ,
            prefect=self._prefect,
        )

    def close(self) -> None:
        """Wait for the drills begun, then stop the drill processes and the forkserver
        (multiprocessing's own stop, which its tests use: otherwise it and its resource
        tracker would last until this process exits)."""
        self._executor.shutdown(wait=True, cancel_futures=True)
        for server in (
            getattr(multiprocessing.forkserver, "_forkserver", None),
            getattr(multiprocessing.resource_tracker, "_resource_tracker", None),
        ):
            stop = getattr(server, "_stop", None)
            if stop is not None:
                stop()


@contextlib.contextmanager
def _environment_without(name: str) -> Iterator[None]:
    value = os.environ.pop(name, None)
    try:
        yield
    finally:
        if value is not None:
            os.environ[name] = value
