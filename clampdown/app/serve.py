"""``clampdown serve``: one ASGI app for everything that reaches clampdown over HTTP.

* ``GET /healthz`` — ``{"ok": true, "runbooks": N}`` (503 when the library is unreadable).
* ``POST /slack/events`` — the Bolt app (:mod:`clampdown_slack.app`): slash command
  ``/clampdown``; Slack's signature is verified on every request.
* Alert endpoints (``POST /alerts/<source>``, another issue) mount on the same app.
* ``--socket-mode``: Slack's traffic comes over a websocket the server opens
  (:mod:`clampdown_slack.socket_mode`) and ``/slack/events`` answers 404; alerts and
  ``/healthz`` stay on HTTP.

Runs start in-process: a thread pool owned by the app runs each ``respond`` flow with
``asyncio.run`` against the process's Prefect API (:func:`serve` starts one local API
for the whole server). Scale-out (``run_deployment``) replaces :func:`in_process_starter`.

The trigger file (:func:`trigger_file`): serve does not start with one that has lint errors
(:class:`TriggersRefused`, before anything listens), nor with a ``CLAMPDOWN_TRIGGERS`` that
names no file. Without one at the library's default place it starts (Slack only is a real
set-up) and the alert endpoints answer 503 with ``Retry-After`` until the file exists:
never 200 "ignored", which senders do not retry (:class:`clampdown_flows.triage.NoTriggers`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from clampdown.app.body_limits import BodyLimit, route_limits
from clampdown.core.alert import Alert
from clampdown.core.diagnostics import ClampdownError, Diagnostic, InvalidFileError
from clampdown_alerts.outcome import AlertTriage
from clampdown_slack.app import SlackAppSettings, StartRun, build_slack_app, library_runbooks
from clampdown_slack.channel_notices import ChannelNotices
from clampdown_slack.thread_replies import ThreadReplies

if TYPE_CHECKING:
    from pathlib import Path

    from slack_bolt import App

    from clampdown.core.settings import Settings
    from clampdown.core.state_store import StateStore
    from clampdown_alerts import AlertSettings

logger = logging.getLogger("clampdown.serve")


class ServeSettings(BaseSettings):
    """Settings of the HTTP server itself (``CLAMPDOWN_SERVE_*``), read once by create_app."""

    model_config = SettingsConfigDict(env_prefix="CLAMPDOWN_", extra="ignore")

    serve_openapi: bool = Field(
        False, description="serve /openapi.json, /docs and /redoc (off: they map the API)"
    )


class TriggersRefused(ClampdownError):
    """serve does not start with this trigger file: it has lint errors (each with its
    place), or ``CLAMPDOWN_TRIGGERS`` names a file that does not exist. Why refuse rather
    than start without it: alerts would then be refused for as long as serve runs, and a
    start is when someone is watching. Exit 2, as lint's for an invalid file."""

    exit_code = 2


def trigger_file(conf: Settings) -> Path | None:
    """The trigger file serve reads (``CLAMPDOWN_TRIGGERS``, else ``<library>/triggers.yaml``),
    None when there is none at the default place (serve for Slack only).

    Raises :class:`TriggersRefused` when ``CLAMPDOWN_TRIGGERS`` names no file: a setting
    that names a missing file is a mistake (a typo, a volume not mounted), not a choice."""
    path = conf.triggers or conf.library / "triggers.yaml"
    if path.exists() or path.is_symlink():  # a dangling link is a broken file, not none
        return path
    if conf.triggers is not None:
        raise TriggersRefused(
            f"serve did not start: CLAMPDOWN_TRIGGERS names {path}, which does not exist",
            "point CLAMPDOWN_TRIGGERS at the trigger file (or unset it to use "
            "<library>/triggers.yaml) and start serve again",
        )
    return None


def check_triggers(conf: Settings) -> Path | None:
    """:func:`trigger_file`, linted: what ``clampdown serve`` checks before anything listens
    (:class:`TriggersRefused` with lint's errors when the file has any)."""
    from clampdown.core.trigger_files import lint_triggerset

    path = trigger_file(conf)
    if path is not None:
        errors = [d for d in lint_triggerset(path, conf.library) if d.severity == "error"]
        if errors:
            raise _refused(path, errors)
    return path


def check_signer(conf: Settings) -> None:
    """The ledger's signing key as every run of this serve will make it, made once now: a
    key that cannot be used (no AWS region, an unknown profile, a key that is not there or
    not a signing key, two keys configured, a local key that does not load) is said before
    anything listens, instead of failing every run serve starts, one alert at a time."""
    from clampdown.core.extensions import ledger_signer

    try:
        ledger_signer(conf)
    except ClampdownError as exc:
        raise ClampdownError(f"serve did not start: {exc.message}", exc.hint) from None


def _refused(path: Path, errors: list[Diagnostic]) -> TriggersRefused:
    listed = "\n".join(f"  {d}" for d in errors)
    count = f"{len(errors)} error" + ("s" if len(errors) > 1 else "")
    return TriggersRefused(
        f"serve did not start: the trigger file {path} has {count}:\n{listed}",
        f"fix the file (`clampdown lint {path}` checks it) and start serve again; while serve "
        "runs, an edit that does not lint is refused and the triggers in force stay",
    )


def default_starter(conf: Settings, resume_stopped: bool = False) -> StartRun:
    """Runs start in this process (local) or on workers (CLAMPDOWN_EXECUTION=deployment).

    ``resume_stopped`` (``clampdown serve``): local runs whose process died are continued
    (:mod:`clampdown.app.local_runs`)."""
    if conf.execution == "deployment":
        from clampdown.app.deployment import DeploymentStarter

        return DeploymentStarter()
    from clampdown.app.local_runs import InProcessStarter

    return InProcessStarter(conf=conf, resume_stopped=resume_stopped)


def create_app(
    settings: SlackAppSettings | None = None,
    start_run: StartRun | None = None,
    socket_mode: bool = False,
    *,
    clampdown: Settings | None = None,
    alerts: AlertSettings | None = None,
    serve: ServeSettings | None = None,
) -> FastAPI:
    """The server's ASGI app; ``start_run`` defaults to :func:`default_starter`.

    Settings are read once, here, for the app's life (or taken as given: ``settings``
    for Slack, ``clampdown`` for clampdown's own, ``alerts`` for the alert endpoints)
    and handed to the triage, the Slack app and the starter. A changed environment
    takes effect when the server restarts, except ``CLAMPDOWN_LIBRARY``: the runbook
    library is looked up at each use (:func:`clampdown.core.settings.current_library`).

    ``socket_mode``: the Bolt app (``app.state.slack``) is built for Socket Mode and
    ``/slack/events`` is off; the caller connects it (:func:`serve` does).

    Slack is optional: without its signing secret and bot token ``/slack/events``
    answers 503 and the alert endpoints still work (and the other way round: an alert
    endpoint whose secret is not set answers 503). So is the trigger file at its default
    place (:func:`trigger_file`); one that has lint errors raises :class:`TriggersRefused`.

    Every request body is bounded before it is read (:mod:`clampdown.app.body_limits`);
    ``/openapi.json``, ``/docs`` and ``/redoc`` are served only with
    ``CLAMPDOWN_SERVE_OPENAPI=true`` (``serve``), since they map every endpoint for anyone.
    """
    from clampdown.core.settings import current_library
    from clampdown.core.settings import settings as clampdown_settings
    from clampdown.core.state_store import StateStore, default_url

    conf = clampdown if clampdown is not None else clampdown_settings()
    triggers = trigger_file(conf)  # a CLAMPDOWN_TRIGGERS naming no file: before anything
    for change in conf.paths.secure():  # 0700: no other local user reads the state folder
        logger.warning("CLAMPDOWN_HOME permissions: %s", change)
    slack_conf = settings if settings is not None else SlackAppSettings()
    starter = start_run or default_starter(conf)
    store = StateStore(default_url(conf))
    slack = _slack_app(slack_conf, starter, socket_mode, conf, store)
    # what serve says in Slack about alerts: in a run's thread (joined, related), in the
    # channel (held); closed with the app, which logs what was not said
    replies = ThreadReplies.configured(conf.paths, slack_conf)
    notices = ChannelNotices.configured(slack_conf)
    try:
        triage = _triage(triggers, store, starter, conf, replies, notices)
    except BaseException:
        _stop(None, starter if start_run is None else None, replies, notices, store)
        raise

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        _stop(triage, starter if start_run is None else None, replies, notices, store)

    alert_conf = alerts if alerts is not None else alert_settings()
    docs = (serve if serve is not None else serve_settings()).serve_openapi
    app = FastAPI(
        title="clampdown",
        lifespan=lifespan,
        openapi_url="/openapi.json" if docs else None,  # the API's map: only when asked
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
    )
    app.add_middleware(BodyLimit, limits=route_limits(alert_conf.max_alert_bytes))
    app.state.slack = slack
    app.state.starter = starter
    app.state.store = store
    app.include_router(_alert_router(triage, store, alert_conf))

    @app.get("/healthz")
    def healthz() -> Response:
        try:
            count = len(library_runbooks(current_library()))  # the library as it is now
        except ClampdownError as exc:
            return JSONResponse({"ok": False, "runbooks": 0, "error": exc.message}, 503)
        body: dict[str, Any] = {"ok": True, "runbooks": count, "slack": slack is not None}
        problem = getattr(triage, "problem", None)  # the trigger file as it is now
        if problem is not None:
            body["triggers"] = problem
        return JSONResponse(body)

    @app.post("/slack/events")
    async def slack_events(request: Request) -> Response:
        if socket_mode:
            return JSONResponse(
                {"error": "this server takes Slack over Socket Mode: /slack/events is off"}, 404
            )
        if slack is None:
            return JSONResponse(
                {
                    "error": "Slack is not configured on this server: set "
                    "CLAMPDOWN_SLACK_SIGNING_SECRET and CLAMPDOWN_SLACK_BOT_TOKEN"
                },
                503,
            )
        from slack_bolt.adapter.starlette.handler import to_bolt_request, to_starlette_response
        from starlette.concurrency import run_in_threadpool

        body = await request.body()
        # Bolt's App is synchronous: dispatch in a worker thread (it returns once acked).
        bolt_response = await run_in_threadpool(slack.dispatch, to_bolt_request(request, body))
        return to_starlette_response(bolt_response)

    return app


def _stop(
    triage: AlertTriage | None,
    own_starter: StartRun | None,
    replies: ThreadReplies | None,
    notices: ChannelNotices | None,
    store: StateStore,
) -> None:
    """The app stops, in this order: the triage launches no more runs (runs recorded and
    not launched yet are left to the next serve: their start records are durable); the
    starter the app made suspends its runs; what was not said in Slack yet is logged;
    then the state store closes."""
    if triage is not None and hasattr(triage, "close"):
        triage.close()
    if own_starter is not None and hasattr(own_starter, "shutdown"):
        own_starter.shutdown()
    for unsaid in (replies, notices):
        if unsaid is not None:
            unsaid.close()
    store.close()


def _slack_app(
    conf: SlackAppSettings,
    starter: StartRun,
    socket_mode: bool,
    clampdown: Settings,
    store: StateStore,
) -> App | None:
    if not socket_mode and conf.slack_signing_secret is None and conf.slack_bot_token is None:
        logger.warning("Slack is not configured: /slack/events answers 503")
        return None
    import functools

    from clampdown_flows.decisions import submit_decision

    # half a configuration is an error, said clearly (in Socket Mode, so is none)
    return build_slack_app(
        conf,
        starter,
        socket_mode=socket_mode,
        # a click for a run of this serve wakes its approval wait at once (no poll to wait for)
        submit_decision=functools.partial(
            submit_decision, conf=clampdown, wakeups=getattr(starter, "wakeups", None)
        ),
        clampdown=clampdown,
        seen=store,  # slash commands already taken, by trigger_id: durable across restarts
    )


def _triage(
    triggers: Path | None,
    store: Any,
    starter: StartRun,
    conf: Settings,
    replies: ThreadReplies | None,
    notices: ChannelNotices | None,
) -> AlertTriage:
    """The alert triage over ``triggers`` (None: no file yet, alerts answered 503 until
    it exists); a file with lint errors is :class:`TriggersRefused`."""
    import functools

    from clampdown_flows.triage import TriggerTriage

    path = triggers or conf.library / "triggers.yaml"
    try:
        return TriggerTriage(
            path,
            store,
            starter,
            conf.ledger_path,
            library=conf.library,
            on_joined=functools.partial(_say_joined, replies),
            on_related=functools.partial(_say_related, replies),
            on_held=notices.held if notices is not None else None,  # queued: never waits
            # deployment mode: Prefect knows when a run ended (the ledgers are on workers)
            is_finished=getattr(starter, "is_finished", None),
            runs=conf.paths,  # the run store, in the scaled mode (CLAMPDOWN_RUN_STORE)
            missing_ok=triggers is None,
        )
    except InvalidFileError as exc:
        raise _refused(path, [d for d in exc.diagnostics if d.severity == "error"]) from None


def _say_joined(replies: ThreadReplies | None, run_id: str, alert: Alert) -> None:
    """An alert joined a run: say so in the run's Slack thread (best effort), once the run
    has posted it (an alert that joins a run in its first moments comes before the thread:
    :mod:`clampdown_slack.thread_replies`)."""
    from clampdown_slack.text import inert

    if replies is None:
        return
    text = (
        f":link: Alert joined this run: {inert(alert.source)} `{inert(alert.id)}` — "
        f"{inert(alert.title)}"
    )
    replies.say(run_id, text, "that an alert joined it")


def _say_related(replies: ThreadReplies | None, run_id: str, alert: Alert, new_run: str) -> None:
    """A correlated alert asked for another response and started ``new_run``: both runs'
    Slack threads say so (best effort), so whoever reads either thread (the one approving
    the containment too) sees the whole incident. Neither run may have posted its thread
    yet: each reply waits for its own."""
    from clampdown_slack.text import inert

    if replies is None:
        return
    said = f"{inert(alert.source)} `{inert(alert.id)}` — {inert(alert.title)}"
    replies.say(
        run_id,
        f":rotating_light: Related alert started run `{inert(new_run)}` (another runbook): {said}",
        "that a related alert started a run",
    )
    replies.say(
        new_run,
        f":link: Started by an alert related to run `{inert(run_id)}`, which answers the same "
        f"incident with another runbook: {said}",
        "that it is related",
    )


def serve_settings() -> ServeSettings:
    """The server's own settings from the environment (a user error when invalid)."""
    from pydantic import ValidationError

    from clampdown.core.settings import settings_problems

    try:
        return ServeSettings()
    except ValidationError as exc:
        raise ClampdownError(
            f"invalid setting: {settings_problems(exc)}", "fix the environment variable"
        ) from None


def alert_settings() -> AlertSettings:
    """The alert endpoints' settings from the environment (a user error when invalid)."""
    from pydantic import ValidationError

    from clampdown.core.settings import settings_problems
    from clampdown_alerts import AlertSettings

    try:
        return AlertSettings()
    except ValidationError as exc:
        raise ClampdownError(
            f"invalid setting: {settings_problems(exc)}", "fix the environment variable"
        ) from None


def _alert_router(triage: AlertTriage, store: Any, alerts: AlertSettings) -> Any:
    from clampdown_alerts import alert_router

    return alert_router(alerts, triage, store)


def serve(host: str = "127.0.0.1", port: int = 8080, socket_mode: bool = False) -> None:
    """Run the server. Local mode shares one local Prefect API (or PREFECT_API_URL) in-process;
    deployment mode talks to the Prefect server at PREFECT_API_URL, where workers take runs.
    ``socket_mode``: Slack's traffic over Socket Mode, connected before HTTP starts."""
    from clampdown.core.settings import settings
    from clampdown_flows.prefect_api import local_api
    from clampdown_slack.socket_mode import app_token

    clampdown = settings()  # read once: the server does not see later changes
    check_triggers(clampdown)  # a trigger file with errors: refused before anything listens
    if clampdown.execution != "deployment":  # its runs sign here (deployment: the workers)
        check_signer(clampdown)
    conf = SlackAppSettings()
    if socket_mode:
        app_token(conf)  # a missing or wrong token is said at once, before Prefect starts
    if clampdown.execution == "deployment":
        _run(host, port, conf, socket_mode, clampdown)
        return
    with local_api(while_starting=_imports_for_runs):
        _run(host, port, conf, socket_mode, clampdown)


def _imports_for_runs() -> None:
    """What serve imports to run its runs (the respond flow, Prefect's flow engine, the
    local starter, the triage, uvicorn: ~1.5 s), imported while its local Prefect API
    starts on the other core, instead of after it answered."""
    import uvicorn  # noqa: F401

    import clampdown.app.local_runs  # noqa: F401
    import clampdown_flows.respond
    import clampdown_flows.triage  # noqa: F401


def _run(
    host: str, port: int, conf: SlackAppSettings, socket_mode: bool, clampdown: Settings
) -> None:
    import uvicorn

    from clampdown.app import serve_logging
    from clampdown_slack.socket_mode import connect

    with serve_logging.configure():  # before anything logs; survives Prefect's own setup
        starter = default_starter(clampdown, resume_stopped=True)
        app = create_app(conf, starter, socket_mode=socket_mode, clampdown=clampdown)
        link = connect(app.state.slack, conf) if socket_mode else None  # errors: before HTTP
        try:
            with _sigterm_unwinds():
                uvicorn.run(app, host=host, port=port, log_config=None)  # see serve_logging
        finally:
            if link is not None:
                link.close()
            if hasattr(starter, "shutdown"):  # runs still going are suspended, not lost
                suspended = starter.shutdown()
                if suspended:
                    logger.warning(
                        "suspended %d run(s) for the next serve: %s",
                        len(suspended),
                        ", ".join(suspended),
                    )


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """SIGTERM (a deploy, ``systemctl stop``) unwinds like Ctrl-C: uvicorn shuts down
    gracefully and then re-raises the signal it caught; with Python's default action the
    process would die there, before runs are suspended and the local Prefect API is
    stopped (it was left orphaned). Here the re-raised signal raises ``SystemExit``, so
    every ``finally`` runs."""
    import signal

    def unwind(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, unwind)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
