"""The simulated world a drill runs in: moto on loopback, the Slack stand-in, the
environment pointed at them, and ``clampdown serve`` on a loopback port.

Kept apart so the one place that decides what a drill may reach (and what of the
user's own AWS and Slack configuration is shut out) is small enough to audit:
:func:`drill_environment` is the only code of the drill that writes ``os.environ``.
The botocore hook that refuses any other host is
:class:`clampdown_aws.testing.simulated.SimulatedAws`.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clampdown.core.diagnostics import ClampdownError
from clampdown.core.drill_model import Drill, Seed, SlashCommand
from clampdown.core.home import private_dirs, write_private
from clampdown_flows.loopback import free_port

if TYPE_CHECKING:
    from clampdown_aws.testing.seeded import Seeded

SLACK_CHANNEL = "C0INCIDENT"
POLL = 0.05
_AWS_VARIABLES_SHUT_OUT = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_CA_BUNDLE",
)


@dataclass
class Secrets:
    """The drill's own secrets, made fresh for every drill and never printed."""

    slack_token: str = field(default_factory=lambda: "xoxb-drill-" + secrets.token_hex(12))
    signing_secret: str = field(default_factory=lambda: secrets.token_hex(16))
    alert_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    pagerduty_secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    hmac_secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))


@contextlib.contextmanager
def drill_environment(
    drill: Drill,
    workspace: Path,
    keys: Secrets,
    *,
    aws_endpoint: str,
    slack_url: str | None,
    allowed_signers: Path,
) -> Iterator[None]:
    """Point the product at the drill's world for as long as the drill runs.

    This is the ONE place where the drill writes ``os.environ``. It is still needed
    for what reads the environment itself, not for the drill's own code (which takes
    the workspace as its :class:`~clampdown.core.home.Home`):

    * ``AWS_*``: boto3/botocore read credentials, region and endpoint from it;
    * ``CLAMPDOWN_*`` of clampdown itself: each ``respond`` flow run reads its
      settings once at its start (home, approvers, evidence bucket, drill), as it does
      on a stock Prefect worker, and ``serve``'s ``create_app`` reads its settings
      once when the drill builds it (alert secrets, responders, execution);
    * ``CLAMPDOWN_SLACK_*``: the run's Slack thread and the Slack app read Slack's
      settings in their factories (once per run, once per app).

    It sets (or, for
    the user's AWS configuration, removes) exactly the variables whose value differs
    from what the drill needs, and on the way out puts back exactly those, as they
    were; nothing else in the environment is touched.

    * AWS: dummy credentials, the loopback endpoint of the simulated AWS, the
      region; the user's profiles, session tokens, role settings, per-service
      endpoints, CA bundle and config files are shut out;
    * clampdown: the drill workspace as ``CLAMPDOWN_HOME``, local execution, the
      drill's people and its own fresh secrets; ``allowed_signers`` (outside the
      workspace, :mod:`~clampdown.app.drill.signers`) lists the keys its people sign
      terminal decisions with, and the user's own approver and serve keys are shut out
      (serve vouches for the drill's Slack clicks with the run's approval key);
    * Slack: the stand-in's URL and the drill's token and signing secret (with
      ``slack_url`` None, the user's real Slack settings are left as they are).
    """
    wanted = _aws_variables(aws_endpoint, drill.seed.region, workspace)
    wanted.update(_clampdown_variables(drill, workspace, keys, slack_url))
    wanted.update(
        {
            "CLAMPDOWN_ALLOWED_SIGNERS": str(allowed_signers),
            "CLAMPDOWN_APPROVER_KEY": None,
            "CLAMPDOWN_SERVE_KEY": None,
        }
    )
    changed = {
        name: os.environ.get(name)
        for name, value in wanted.items()
        if os.environ.get(name) != value
    }
    try:
        for name in changed:
            _set(name, wanted[name])
        yield
    finally:
        for name, old in changed.items():
            _set(name, old)


def _set(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def _aws_variables(endpoint: str, region: str, workspace: Path) -> dict[str, str | None]:
    """Dummy credentials and the loopback endpoint; the user's AWS configuration is shut out."""
    env: dict[str, str | None] = {name: None for name in _AWS_VARIABLES_SHUT_OUT}
    env.update({name: None for name in os.environ if name.startswith("AWS_ENDPOINT_URL_")})
    env.update(
        {
            "AWS_ACCESS_KEY_ID": "AKIADRILLDUMMY000000",
            "AWS_SECRET_ACCESS_KEY": "drill-dummy-secret-not-a-real-key",
            "AWS_DEFAULT_REGION": region,
            "AWS_REGION": region,
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_CONFIG_FILE": str(workspace / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(workspace / "no-aws-credentials"),
            "AWS_EC2_METADATA_DISABLED": "true",
        }
    )
    return env


def _clampdown_variables(
    drill: Drill, workspace: Path, keys: Secrets, slack_url: str | None
) -> dict[str, str | None]:
    """clampdown's settings for the drill, and the stand-in's Slack settings when it is used."""
    env: dict[str, str | None] = {
        "CLAMPDOWN_HOME": str(workspace),
        "CLAMPDOWN_EXECUTION": "local",
        "CLAMPDOWN_EVIDENCE_BUCKET": drill.seed.evidence_bucket,
        "CLAMPDOWN_APPROVERS": drill.roles.approver.slack_user,
        "CLAMPDOWN_RESPONDERS": ",".join(_responders(drill)),
        "CLAMPDOWN_ALERT_TOKEN": keys.alert_token,
        "CLAMPDOWN_PAGERDUTY_SECRET": keys.pagerduty_secret,
        "CLAMPDOWN_ALERT_HMAC_SECRET": keys.hmac_secret,
        "CLAMPDOWN_SNS_TOPIC_ARNS": None,
        "CLAMPDOWN_DRILL": "true",
        "CLAMPDOWN_RUN_STORE": None,  # a drill's runs stay in its workspace, never a shared store
    }
    if slack_url is not None:  # the stand-in; otherwise the user's real Slack settings stay
        env.update(
            {
                "CLAMPDOWN_SLACK_BOT_TOKEN": keys.slack_token,
                "CLAMPDOWN_SLACK_SIGNING_SECRET": keys.signing_secret,
                "CLAMPDOWN_SLACK_CHANNEL": SLACK_CHANNEL,
                "CLAMPDOWN_SLACK_API_URL": slack_url,
                "CLAMPDOWN_SLACK_RETRY_INTERVAL": "0.2",
            }
        )
    return env


def _responders(drill: Drill) -> list[str]:
    """Who may use /clampdown: the incident lead, and whoever the drill has type a command."""
    people = [drill.roles.incident_lead.slack_user]
    for inject in drill.injects:
        person = drill.roles.get(inject.by) if isinstance(inject, SlashCommand) else None
        if person is not None and person.slack_user not in people:
            people.append(person.slack_user)
    return people


_MOTO_MODULE = "clampdown.app.drill.moto_process"


@dataclass(frozen=True)
class MotoProcess:
    """The simulated AWS of one drill: its URL, and why its process ended if it did."""

    url: str
    process: Any
    log: Path

    def failure(self) -> str | None:
        """None while moto runs; else its exit status and the last lines it wrote."""
        status = self.process.poll()
        if status is None:
            return None
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace").strip()
        except OSError:
            text = ""
        said = " / ".join(text.splitlines()[-3:])
        return f"moto's process exited ({status}){': ' + said if said else ''}"

    def seed(self, spec: Seed, alert_time: datetime) -> Seeded:
        """Have moto's process seed the drill's world (see
        :mod:`clampdown.app.drill.moto_process`) and return what it made; a seed that
        failed, or a moto that died, is a message naming why and moto's log."""
        from clampdown.app.drill.moto_process import SEEDED
        from clampdown_aws.testing.seeded import Seeded

        request = {"seed": spec.model_dump(mode="json"), "alert_time": alert_time.isoformat()}
        answer = b""
        try:
            self.process.stdin.write(json.dumps(request).encode() + b"\n")
            self.process.stdin.flush()
            answer = self.process.stdout.readline()
            while answer and not answer.startswith(SEEDED.encode()):  # not ours: skipped
                answer = self.process.stdout.readline()
        except OSError:  # its end of the pipe is gone: it died
            answer = b""
        hint = f"its log is {self.log} (moto's process: python -m {_MOTO_MODULE})"
        if not answer:
            with contextlib.suppress(Exception):
                self.process.wait(5)
            why = self.failure() or "its answer never came"
            raise ClampdownError(f"the simulated AWS failed while the drill seeded it: {why}", hint)
        said = json.loads(answer[len(SEEDED) :])
        if "error" in said:
            raise ClampdownError(f"the drill's world could not be seeded: {said['error']}", hint)
        return Seeded(**said["seeded"])


def seed_services(drill: Drill) -> list[str]:
    """The AWS services the drill's seed calls, in the order it first calls them: moto's
    process imports their backends as soon as it serves (see :func:`moto_server`)."""
    seed = drill.seed
    wanted = [
        ("s3", True),
        ("iam", bool(seed.users or seed.roles)),
        ("sts", any(role.sessions for role in seed.roles)),
        ("sagemaker", bool(seed.endpoints)),
        ("kms", bool(seed.kms_keys)),
        ("secretsmanager", bool(seed.secrets)),
        ("cloudtrail", seed.trail is not None),
        ("logs", bool(seed.log_groups)),
    ]
    return [name for name, used in wanted if used]


@contextlib.contextmanager
def moto_server(log: Path, preload: Sequence[str] = ()) -> Iterator[MotoProcess]:
    """moto as a real HTTP server on loopback, with fresh state, in a process of its own
    (:mod:`clampdown.app.drill.moto_process`: its CPU off this process's GIL); its
    warnings and errors go to ``log``. The socket is made here, so the URL is known at
    once and requests made while moto still imports wait for it. The backends of the
    services in ``preload`` are imported by moto as soon as it serves."""
    import importlib.util
    import subprocess
    import sys

    if importlib.util.find_spec("moto") is None:
        raise ClampdownError(
            "drills need moto (simulated AWS), which is not installed",
            "install clampdown's wheel with the drill extra ('clampdown-<version>-py3-none-any"
            ".whl[drill]', docs/operations.md), or run python3 dev.py setup in a checkout",
        )
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with listener, open(log, "ab") as errors:
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        port = listener.getsockname()[1]
        fd = listener.fileno()
        process = subprocess.Popen(
            [sys.executable, "-m", _MOTO_MODULE, str(fd), *preload],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,  # the seed's answer (MotoProcess.seed)
            stderr=errors,
            pass_fds=(fd,),
            env=_moto_environment(),
        )
    # this process keeps no copy of the socket: if moto dies, requests are refused
    try:
        yield MotoProcess(f"http://127.0.0.1:{port}", process, log)
    finally:
        _stop(process)


# What moto's process gets of the environment: where Python and its packages are, the
# locale, a temporary folder. No credentials (AWS, Slack, clampdown's secrets): it needs none.
_MOTO_ENVIRONMENT = (
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "TMPDIR",
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONDONTWRITEBYTECODE",
    "VIRTUAL_ENV",
)


def _moto_environment() -> dict[str, str]:
    """The few variables of :data:`_MOTO_ENVIRONMENT` that are set."""
    return {k: os.environ[k] for k in _MOTO_ENVIRONMENT if k in os.environ}


def _stop(process: Any) -> None:
    """Close moto's standard input (it stops serving and exits); kill it if it lingers."""
    import subprocess

    with contextlib.suppress(OSError):
        process.stdin.close()
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


PREFECT_DIR = "prefect"  # the drills' own Prefect home, beside their workspaces
# How long a drill waits for the API it starts: a new drills database is migrated first,
# 20 s on an idle 2-core machine and over 60 s (local_api's default) at load 13-16 here.
API_START_TIMEOUT = 240
API_FILE = "standing-api.json"  # in that home: the URL of a standing drills API, while it runs


def drill_prefect_home(workspace: Path) -> Path:
    """Where drills' Prefect keeps its database: ``$CLAMPDOWN_HOME/drills/prefect/prefect.db``.

    One home for every drill of a ``CLAMPDOWN_HOME`` (beside the workspaces), not one per
    drill: a fresh Prefect database is migrated at each start, which measured 14-19 s
    more per drill than reusing one (31-42 s against 17-23 s for the server to come up
    on a loaded 2-core machine). Two drills at once share it as two local servers share
    any SQLite database (``BEGIN IMMEDIATE`` writers wait; see ``prefect_api``).
    """
    return workspace.parent / PREFECT_DIR


@contextlib.contextmanager
def _drills_settings(home: Path) -> Iterator[None]:
    """Prefect's settings of the drills' home, in this thread's context, with
    ``PREFECT_API_URL`` unset: a server started here uses the drills' database, and no
    drill goes to the API of real incidents."""
    from prefect.settings import (
        PREFECT_API_DATABASE_CONNECTION_URL,
        PREFECT_API_URL,
        PREFECT_HOME,
        temporary_settings,
    )

    with temporary_settings(
        {
            PREFECT_HOME: str(home),
            PREFECT_API_DATABASE_CONNECTION_URL: f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        },
        restore_defaults={PREFECT_API_URL},
    ):
        yield


@contextlib.contextmanager
def drill_prefect(
    workspace: Path, on_started: Callable[[str, int], object] | None = None
) -> Iterator[str]:
    """A local Prefect API of the drills' own, on their database (:func:`drill_prefect_home`).

    The drill's flow runs, task runs, logs and report artifact land there, never in the
    Prefect database of real incidents: not the default ``~/.prefect/prefect.db`` that
    ``clampdown run`` and ``serve`` use locally, and not the server of
    ``PREFECT_API_URL``, which the drill deliberately ignores. The settings are changed
    for this thread's Prefect context and, while the drill runs, Prefect's process-wide
    settings (its run threads read those); no environment variable is written;
    ``clampdown serve``'s runs in the drill take the API URL from it when their app is
    built.

    A standing drills API of the same home (:func:`standing_drill_prefect`) is used
    when one answers. Otherwise the drills' home's resident API is used, as ``clampdown
    run`` uses its Prefect home's (:mod:`clampdown_flows.resident_api`): the first drill
    starts it and leaves it running for the next one (starting one is most of a drill's
    set-up time); it stops after an hour without a request, or with ``clampdown
    prefect-api stop``. ``on_started(url, pid)`` is called when this drill started it.
    Either way, before the block ends Prefect's record of the drill's task runs is complete.
    """
    home = drill_prefect_home(workspace).resolve()
    private_dirs(home)  # the API's secret is kept there
    with _drills_settings(home):
        standing = standing_api(home)
        if standing is None:
            with _resident_api(home, on_started) as url:
                yield url
        else:
            with _use_api(standing):
                yield standing


@contextlib.contextmanager
def _resident_api(home: Path, on_started: Callable[[str, int], object] | None) -> Iterator[str]:
    """The drills' home's resident API (see :func:`drill_prefect`), started if none runs;
    one that does not come up in :data:`API_START_TIMEOUT` seconds is a message naming the
    database, not a traceback."""
    from clampdown_flows.prefect_api import resident_api

    with contextlib.ExitStack() as stack:
        try:
            api = stack.enter_context(resident_api(timeout=API_START_TIMEOUT))
        except ClampdownError as exc:  # it exited at start, or did not answer in time
            raise ClampdownError(
                f"the drills' Prefect API (database {home / 'prefect.db'}) did not start: "
                f"{exc.message}",
                f"{exc.hint + '; ' if exc.hint else ''}a first drill migrates a new database "
                "(about 20 s on an idle 2-core machine, over a minute on a busy one); try "
                "again when the machine is less busy",
            ) from None
        if api is None:  # cannot happen: the drills' settings unset PREFECT_API_URL
            raise ClampdownError("the drills' Prefect settings point at another API")
        if api.started and on_started is not None:
            on_started(api.url, api.pid)
        yield api.url


def find_drills_api(drills_dir: Path) -> Any:
    """The resident API of the drills' Prefect home in ``drills_dir`` if one runs and proves
    itself (a :class:`~clampdown_flows.resident_api.Resident`), else None."""
    from clampdown_flows.prefect_api import AUTH_FILE, find_resident_api

    home = (drills_dir / PREFECT_DIR).resolve()
    if not (home / AUTH_FILE).is_file():
        return None  # no drill ever started one here
    with _drills_settings(home):
        return find_resident_api()


def stop_drills_api(drills_dir: Path) -> Any:
    """Stop the resident API of the drills' Prefect home in ``drills_dir``; the one stopped,
    or None when none ran."""
    from clampdown_flows.prefect_api import AUTH_FILE, stop_resident_api

    home = (drills_dir / PREFECT_DIR).resolve()
    if not (home / AUTH_FILE).is_file():
        return None
    with _drills_settings(home):
        return stop_resident_api()


@contextlib.contextmanager
def _use_api(url: str) -> Iterator[None]:
    """Every Prefect client of this process (threads too) talks to the drills' API at
    ``url`` with the drills' secret until the block ends; before it ends, what is queued
    is sent and the API shows every task run of the drill in its last state (as
    :func:`~clampdown_flows.prefect_api.local_api` does for a server of its own)."""
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL

    from clampdown_flows.prefect_api import _process_settings, local_auth_string, settle
    from clampdown_flows.prefect_record import watching

    auth = local_auth_string()
    with (
        _process_settings({PREFECT_API_URL: url, PREFECT_API_AUTH_STRING: auth}),
        watching(url) as watch,
    ):
        try:
            yield
        finally:
            settle(watch)


STANDING_PROBE_TIMEOUT = 5.0  # seconds one ask of the published drills' API may take
STANDING_PATIENCE = 30.0
"""Seconds a published drills' API that accepts connections but answers slowly is asked
again before the drill gives up on it."""


def standing_api(home: Path) -> str | None:
    """The URL in ``home``'s :data:`API_FILE` if a Prefect API there answers an
    authenticated request with ``home``'s secret (so it is this home's server, up now);
    else None. One that accepts and answers slowly is asked again for up to
    :data:`STANDING_PATIENCE` seconds. Call it with the drills' settings in force
    (:func:`_drills_settings`)."""
    import base64

    import httpx

    from clampdown_flows.prefect_api import local_auth_string

    try:
        url = json.loads((home / API_FILE).read_text(encoding="utf-8"))["url"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    auth = local_auth_string()
    if not isinstance(url, str) or not url.startswith("http://127.0.0.1:") or not auth:
        return None
    token = base64.b64encode(auth.encode()).decode()
    patience = time.monotonic() + STANDING_PATIENCE
    with httpx.Client(trust_env=False, timeout=STANDING_PROBE_TIMEOUT) as client:
        while True:
            try:
                answer = client.get(
                    f"{url}/admin/version", headers={"Authorization": f"Basic {token}"}
                )
            except httpx.TimeoutException:
                # something listens there and is slow (a loaded machine): a drill that gave
                # up now would start a second API, itself slower than this wait
                if time.monotonic() < patience:
                    continue
                return None
            except httpx.HTTPError:  # nothing listens there
                return None
            return url if answer.status_code == 200 else None


@contextlib.contextmanager
def standing_drill_prefect(drills_dir: Path, timeout: int = 120) -> Iterator[str]:
    """Start the drills' Prefect API of ``drills_dir`` and keep it up for the whole block,
    published in its home (:data:`API_FILE`, 0600), so every drill of that
    ``CLAMPDOWN_HOME`` started meanwhile in any process uses it instead of starting one.

    For whoever runs many drills (the test session: one server start instead of one per
    drill). Prefect's settings of this process are not changed: each drill points its
    clients at the API while it runs (:func:`drill_prefect`).
    """
    from clampdown_flows.prefect_api import local_server_class

    home = (drills_dir / PREFECT_DIR).resolve()
    private_dirs(home)
    with _drills_settings(home):  # the server process takes them at its start
        server = local_server_class()(port=free_port())
        server.start(timeout=timeout)
    try:
        write_private(home / API_FILE, json.dumps({"url": server.api_url, "pid": os.getpid()}))
        yield server.api_url
    finally:
        (home / API_FILE).unlink(missing_ok=True)
        server.stop()


SERVE_START_POLL = 0.005  # how often the drill looks whether serve listens (before the alert)


@dataclass(frozen=True)
class Serving:
    """``clampdown serve`` on loopback for a drill: its URL, and a way to begin its stop."""

    url: str
    server: Any  # the uvicorn.Server, run in a thread of this process

    def begin_stop(self) -> None:
        """Ask serve to stop now; its shutdown (the lifespan's end) runs in its own thread
        while the caller goes on, and the block's end waits for it. For when every run of
        the drill has ended: the report is written meanwhile."""
        self.server.should_exit = True


@contextlib.contextmanager
def serve_on_loopback(app: Any) -> Iterator[Serving]:
    """``clampdown serve``'s app on a loopback port, in a thread of this process."""
    import uvicorn

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="clampdown-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise ClampdownError("clampdown serve did not start for the drill")
        time.sleep(SERVE_START_POLL)
    try:
        yield Serving(f"http://127.0.0.1:{port}", server)
    finally:
        server.should_exit = True
        thread.join(15)
