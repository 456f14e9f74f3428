"""Shared fixtures: one Prefect test server per session, a fresh CLAMPDOWN_HOME per test.

The suite runs on two pytest-xdist workers (``python3 dev.py test``): every session
fixture here starts once per worker, each worker has a Prefect home of its own, a test
file stays on one worker (``--dist loadfile``: its module fixtures start once), and the
drill files share one (:func:`pytest_xdist_make_scheduler`: one standing drills' API).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

# Before Prefect is imported anywhere: no telemetry (offline), state in a temp dir of this
# process's own. An xdist worker inherits the controller's environment, so a home this
# conftest made (named by MADE_HOME) is replaced by a new one: two workers' Prefect
# servers must not share one SQLite database. A PREFECT_HOME set by hand is kept.
MADE_HOME = "CLAMPDOWN_TESTS_MADE_PREFECT_HOME"
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
# xdist workers must collect the same test ids, and some ids print a set (its order follows
# str hashing, random per interpreter): the workers get one seed, random per session.
if not os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("PYTHONHASHSEED", str(int.from_bytes(os.urandom(4)) % 4294967295))
if os.environ.get("PREFECT_HOME", "") in ("", os.environ.get(MADE_HOME)):
    os.environ["PREFECT_HOME"] = os.environ[MADE_HOME] = tempfile.mkdtemp(
        prefix="clampdown-prefect-"
    )
SESSION_PREFECT_HOME = Path(os.environ["PREFECT_HOME"])
MADE_HERE = os.environ.get(MADE_HOME) == str(SESSION_PREFECT_HOME)

from tests.paths import FIXTURES, REPO  # noqa: E402,F401 - used by tests through the fixtures
from tests.prefect_homes import (  # noqa: E402
    migrated_database,
    remove_template_folder,
    seed_prefect_home,
    template_folder,
)

# The session's folder for Prefect's migrated template (tests/prefect_homes.py), made by the
# first pytest process (the xdist controller) and shared by its workers: XDG_CACHE_HOME
# points into it, so every Prefect server the tests start on an empty home starts from
# the session's template, and the user's own cache is left alone.
TEMPLATE_FOLDER, MADE_TEMPLATE_HERE = template_folder()

DRILL_FIXTURES = ("drill", "in_drills_home", "drills_prefect", "drills_home")
DRILL_FILES = "tests/e2e/test_drill"  # test_drills.py, test_drill_scoping.py: one xdist scope
# (Sessions 22-25 kept a RUN_FIRST order of files here, sorted in
# pytest_collection_modifyitems on workers. It never applied: xdist sets ``dist`` to "no"
# on its workers, the check looked for "loadfile" there, so files ran in collection
# order. Measured in session 26 on three full runs: the workers end within 2-8 s of each
# other, and a longest-first order would save at most 4 s, so it is gone rather than fixed.)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """``--dist loadfile`` with the drill files as one scope: every drill on one worker (the
    standing drills' API and the drill results are per worker); and the scaled-mode files
    (tests/e2e/test_scaled_*.py) as another: they share one Prefect server on PostgreSQL
    per worker (tests/scaled_stack.py). (``--dist loadgroup`` with
    ``xdist_group`` marks would say the same, but pytest 9.2's node ids broke it in
    pytest-xdist 3.8: pytest-dev/pytest-xdist#1386.)"""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class DrillsTogether(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            if module.startswith(DRILL_FILES):
                return "drills"
            return "scaled" if module.startswith("tests/e2e/test_scaled_") else module

    return DrillsTogether(config, log)  # type: ignore[arg-type]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On an xdist worker: a warning for a drill outside :data:`DRILL_FILES` (it would start
    a second standing drills' API on another worker). Without xdist nothing changes. (On a
    worker ``config.getvalue("dist")`` is "no" whatever the controller was given, so this
    does not look at it.)"""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    for item in items:
        module = item.nodeid.split("::")[0]
        parametrized = getattr(getattr(item, "callspec", None), "params", {})
        uses = set(DRILL_FIXTURES) & set(getattr(item, "fixturenames", ())) - set(parametrized)
        if uses and not module.startswith(DRILL_FILES):
            item.warn(pytest.PytestWarning(f"runs a drill outside {DRILL_FILES}*.py: {uses}"))


@pytest.fixture(scope="session", autouse=True)
def _no_processes_left(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """At the session's end, stop what its tests started and left running: resident Prefect
    APIs (``clampdown run`` leaves one for an hour), anything else on a home of the session's
    (see tests/leftovers.py). Torn down after every other session fixture."""
    yield
    from tests.leftovers import describe, session_processes, stop

    roots = [tmp_path_factory.getbasetemp()]
    if MADE_HERE:
        roots.append(SESSION_PREFECT_HOME)
    left = session_processes(roots)
    if left:
        sys.stderr.write(
            "\nstopping processes the tests left running: "
            + "; ".join(describe(pid) for pid in left)
            + "\n"
        )
        stop(left)


@pytest.fixture(scope="module", autouse=True)
def _no_daemons_left_by_the_module(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """When an integration or end-to-end file ends, stop the detached processes its tests
    left on the session's homes: a resident Prefect API that ``clampdown run`` or a drill
    keeps for an hour polls its background services (a few % of a core) until the
    session's end, on a machine whose two cores the rest of the suite needs. Processes
    this worker holds (session fixtures' servers) are not touched."""
    yield
    if request.path.is_relative_to(Path(__file__).parent / "unit"):
        return
    from tests.leftovers import detached, session_processes, terminate

    terminate(detached(session_processes([tmp_path_factory.getbasetemp()])))


_template_ahead: list[threading.Thread] = []  # the controller's, while it makes the template


def _runs_servers(config: pytest.Config) -> bool:
    """Whether the run has more than unit tests (which never start a Prefect server)."""
    unit = Path(__file__).parent / "unit"
    paths = [Path(arg.split("::", 1)[0]).resolve() for arg in config.args] or [unit.parent]
    return any(not path.is_relative_to(unit) for path in paths)


def pytest_configure(config: pytest.Config) -> None:
    """On the pytest-xdist controller of a run with more than unit tests: the session's
    Prefect template (tests/prefect_homes.py) is made in the background while the workers
    start and collect (~6 s each on an idle machine), not by the first worker that needs it
    while the other waits for it on the lock (~10 CPU-s). A worker that asks meanwhile
    waits for the same lock; if this attempt fails, the worker's own attempt makes it or
    says why in its test."""
    if not MADE_TEMPLATE_HERE or os.environ.get("PYTEST_XDIST_WORKER"):
        return
    if not config.getoption("numprocesses", None) or not _runs_servers(config):
        return

    def make() -> None:
        with contextlib.suppress(Exception):  # the workers try again, and report it
            migrated_database()

    thread = threading.Thread(target=make, name="prefect-template", daemon=True)
    thread.start()
    _template_ahead.append(thread)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Remove the Prefect home and the template's folder this process made (temp folders
    pytest does not clean)."""
    for thread in _template_ahead:  # not while its process still writes there
        thread.join(600)
    if MADE_HERE:
        shutil.rmtree(SESSION_PREFECT_HOME, ignore_errors=True)
    if MADE_TEMPLATE_HERE:
        remove_template_folder(TEMPLATE_FOLDER)


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[str]:
    """A real Prefect API (SQLite under the temporary PREFECT_HOME) shared by every test
    that runs flows: the same local server `clampdown run` uses. The home this conftest
    made starts from the session's migrated template (tests/prefect_homes.py)."""
    from clampdown.app.local_runs import interrupt_all_runs
    from clampdown_flows.prefect_api import local_api

    if MADE_HERE:
        seed_prefect_home(SESSION_PREFECT_HOME)
    patch = pytest.MonkeyPatch()
    try:
        # 180 s, not 60: under xdist each worker starts one at the same moment, on a shared
        # 2-core machine that may be loaded already
        with local_api(timeout=180) as url:
            yield url
            # A run a test left paused (at an approval) would keep the interpreter from
            # exiting (its worker thread is joined at exit): interrupt it while its server
            # still answers.
            left = interrupt_all_runs()
            if left:
                sys.stderr.write(f"\nruns still in progress after the tests, interrupted: {left}\n")
                time.sleep(2)
            # This API's record is not under test at the session's end (Prefect's record is
            # checked by test_prefect_record.py with processes of its own), so local_api's
            # exit does not wait for it: task runs that tests left unfinished made that wait
            # sit out its whole stall (prefect_record.STALL_SECONDS, 15 s) at the end of a
            # worker's run.
            patch.setattr("clampdown_flows.prefect_api.wait_for_record", lambda *a, **k: (0, 0))
    finally:
        patch.undo()


@pytest.fixture(autouse=True)
def clampdown_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "clampdown-home"
    monkeypatch.setenv("CLAMPDOWN_HOME", str(home))
    monkeypatch.setenv("CLAMPDOWN_LIBRARY", str(REPO / "runbooks"))
    return home


@pytest.fixture
def write_runbook(tmp_path: Path):
    """Write a runbook YAML text to a file and return its path."""

    def write(text: str, name: str = "runbook.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write


# --- AWS: moto in-process and as a real HTTP server ----------------------------------------


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials and a region: no test can reach real AWS."""
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SECURITY_TOKEN",
        "AWS_SESSION_TOKEN",
    ):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)


@pytest.fixture
def mocked_aws(aws_credentials: None) -> Iterator[None]:
    """moto in-process (``mock_aws``)."""
    from moto import mock_aws

    with mock_aws():
        yield


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """moto as a real HTTP server on loopback, shared by the session."""
    import socket

    from moto.server import ThreadedMotoServer

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def aws_endpoint(moto_server: str, aws_credentials: None, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every boto3 client of the test talks to the moto server (fresh state per test)."""
    import urllib.request

    urllib.request.urlopen(urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST"))
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    return moto_server


@pytest.fixture
def action_ctx(clampdown_home: Path):
    """An ActionContext as the executor builds it, for calling actions directly."""
    from clampdown.core.actions import ActionContext
    from clampdown.core.home import Home

    return ActionContext(
        run_id="testrun0001",
        step_id="step",
        runbook="test",
        home=Home(clampdown_home),
        region="us-east-1",
    )


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep botocore's standard retry decisions, without their random (up to 1 s) sleeps."""
    from botocore.retries import standard

    monkeypatch.setattr(standard.ExponentialBackoff, "delay_amount", lambda self, context: 0)


@pytest.fixture
def oncall_slack(monkeypatch: pytest.MonkeyPatch):
    """The Slack stand-in with a security-oncall group, and every Slack setting pointing at it
    (signing secret as tests/slack_requests.py signs; fast retries)."""
    from clampdown_slack.testing.standin import SlackStandIn
    from tests.slack_requests import CHANNEL, ONCALL, SECRET

    with SlackStandIn(usergroups={"security-oncall": ONCALL}) as standin:
        monkeypatch.setenv("CLAMPDOWN_SLACK_SIGNING_SECRET", SECRET)
        monkeypatch.setenv("CLAMPDOWN_SLACK_BOT_TOKEN", standin.token)
        monkeypatch.setenv("CLAMPDOWN_SLACK_API_URL", standin.url)
        monkeypatch.setenv("CLAMPDOWN_SLACK_CHANNEL", CHANNEL)
        monkeypatch.setenv("CLAMPDOWN_SLACK_RETRY_INTERVAL", "0")
        monkeypatch.setenv("CLAMPDOWN_SLACK_MAX_RETRIES", "1")
        yield standin
