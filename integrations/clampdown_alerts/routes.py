"""``POST /alerts/<source>``: authenticate, bound, parse, de-replay, then triage each alert.

Every endpoint runs the same pipeline, in this order, so a request is refused as early
and as cheaply as possible and nothing reaches the triage unless it passed every step:

1. the source's secret is configured (else 503);
2. bearer sources: the token, before reading the body (401);
3. the body, at most ``CLAMPDOWN_MAX_ALERT_BYTES`` (Content-Length and bytes read; 413);
4. JSON (400), then signatures for SNS / PagerDuty / generic (401);
5. the source's parser (400 naming the field);
6. its delivery id not seen before (409; ids are kept ``CLAMPDOWN_DELIVERY_RETENTION``,
   24 h by default, so a late delivery is accepted once), and the message's own timestamp
   no older than that retention nor more than ``CLAMPDOWN_REPLAY_WINDOW`` ahead (401); a
   state store that cannot record the id (full or read-only disk, database down) is 503
   with ``Retry-After``, nothing recorded;
7. the triage, in a worker thread, one alert at a time; 202 when a run started,
   200 otherwise. A triage error forgets the delivery id so the sender's retry works:
   a run that cannot start now (:class:`~clampdown.core.runs.RunNotStarted`: its start
   could not be recorded, Prefect is unreachable) or an alert that cannot be recorded
   (:class:`~clampdown.core.ledger.LedgerWriteError`) is answered 503 with ``Retry-After``,
   any other error 500.

A delivery that authenticated but is malformed (a 400, e.g. JSON nested deeper than
64 levels) is recorded as refused by its body's digest: every retry gets the same 400,
and the log says it was refused before; it never reaches the triage.

Answers are ``{"error": reason}`` or ``{"alerts": [{id, status, run_id, trigger, reason}]}``;
a 503 for a run not started has both (the alert that could not start has status
``not-started``) and ``retry_after``. Several alerts in one delivery are all-or-retry: when
one cannot start, the whole delivery is answered 503 and its retry is triaged again (an
alert whose run did start is then ``deduplicated`` into it).
Logs carry the source, the delivery id and the outcome, never a secret or the body.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from clampdown.core.alert import Alert
from clampdown.core.diagnostics import ClampdownError
from clampdown.core.ledger import LedgerWriteError
from clampdown.core.limits import MAX_JSON_DEPTH, TooDeep, loads_bounded
from clampdown.core.runs import RunNotStarted
from clampdown_alerts import signatures, sources
from clampdown_alerts.errors import (
    AlertRejected,
    Malformed,
    NotConfigured,
    Replayed,
    TooLarge,
    Unauthenticated,
    Unavailable,
    UpstreamFailed,
)
from clampdown_alerts.outcome import AlertTriage, TriageOutcome
from clampdown_alerts.replay import DeliveryLog, check_fresh
from clampdown_alerts.settings import AlertSettings

__all__ = ["AlertTriage", "TriageOutcome", "alert_router"]

logger = logging.getLogger("clampdown.alerts")


@dataclass(frozen=True)
class Delivery:
    """One authenticated request: its alerts and the facts replay protection needs."""

    key: str  # "<source>:<delivery id>", remembered in the DeliveryLog
    sent_at: datetime | None  # the message's own timestamp, when the source has one
    sent_at_field: str
    alerts: list[Alert]
    note: str = ""  # why there is no alert, for an empty list


@dataclass(frozen=True)
class Answered:
    """A request fully handled without triage (SNS subscription confirmation)."""

    key: str
    sent_at: datetime | None
    sent_at_field: str
    body: dict[str, Any]
    act: Callable[[], None] | None = None  # done only once the request is known fresh


Receive = Callable[[Request], Awaitable[Delivery | Answered]]


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refusing more than ``limit`` bytes by header or by count (reads <= limit+1)."""
    length = request.headers.get("content-length")
    if length is not None:
        if not length.strip().isdigit():
            raise Malformed("Content-Length is not a number")
        if int(length) > limit:
            raise TooLarge(f"body of {int(length)} bytes is over the {limit}-byte limit")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk[: limit + 1 - len(body)]
        if len(body) > limit:
            raise TooLarge(f"body is over the {limit}-byte limit")
    return bytes(body)


def parse_json(body: bytes) -> Any:
    """The body as JSON, at most MAX_JSON_DEPTH levels deep (else 400, never a 500 later)."""
    try:
        return loads_bounded(body, MAX_JSON_DEPTH)
    except TooDeep as exc:
        raise Malformed(f"body is {exc}") from None
    except UnicodeDecodeError:
        raise Malformed("body is not UTF-8 JSON") from None
    except json.JSONDecodeError as exc:
        raise Malformed(
            f"body is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None


def _digest(*parts: bytes) -> str:
    return hashlib.sha256(b"\0".join(parts)).hexdigest()


class Receivers:
    """One receiver per source: authenticate and parse, nothing else.

    A class rather than closures inside :func:`alert_router` so each receiver is a
    method of its own (and its own complexity), sharing the settings, the SNS verifier
    and the injectable ``fetch`` and ``clock``.
    """

    def __init__(
        self,
        settings: AlertSettings,
        fetch: signatures.Fetch | None,
        clock: Callable[[], float],
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.sns_verifier = signatures.SnsVerifier(
            settings.sns_cert_dir, settings.sns_cert_timeout, fetch, clock
        )
        self.https_get = fetch or signatures.https_get

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    def bearer(self, request: Request, source: str) -> None:
        if self.settings.alert_token is None:
            raise NotConfigured(f"/alerts/{source} is not configured: set CLAMPDOWN_ALERT_TOKEN")
        signatures.verify_bearer(request.headers, self.settings.alert_token)
        request.state.authenticated = True

    async def read(self, request: Request) -> bytes:
        """The bounded body, kept on the request so a refusal can be recorded by its digest."""
        body = await read_body(request, self.settings.max_alert_bytes)
        request.state.body = body
        return body

    async def body_json(self, request: Request) -> tuple[bytes, Any]:
        body = await self.read(request)
        return body, parse_json(body)

    async def eventbridge(self, request: Request, guardduty_only: bool) -> Delivery:
        self.bearer(request, "guardduty" if guardduty_only else "eventbridge")
        _, event = await self.body_json(request)
        alerts = (
            sources.parse_guardduty(event) if guardduty_only else sources.parse_eventbridge(event)
        )
        source = alerts[0].source if alerts else "eventbridge"
        return Delivery(
            key=f"{source}:{event['id']}",
            sent_at=sources.parse_time(event["time"], "event.time"),
            sent_at_field="event.time",
            alerts=alerts,
        )

    async def guardduty(self, request: Request) -> Delivery:
        return await self.eventbridge(request, True)

    async def any_eventbridge(self, request: Request) -> Delivery:
        return await self.eventbridge(request, False)

    async def alertmanager(self, request: Request) -> Delivery:
        self.bearer(request, "alertmanager")
        body, payload = await self.body_json(request)
        alerts = sources.parse_alertmanager(payload)
        # Alertmanager has no delivery id or send time: an identical body is a replay.
        return Delivery(
            key=f"alertmanager:{_digest(body)}",
            sent_at=None,
            sent_at_field="",
            alerts=alerts,
            note="" if alerts else "no firing alert in the payload",
        )

    async def pagerduty(self, request: Request) -> Delivery:
        secrets = self.settings.pagerduty_secrets
        if not secrets:
            raise NotConfigured(
                "/alerts/pagerduty is not configured: set CLAMPDOWN_PAGERDUTY_SECRET"
            )
        body = await self.read(request)
        signatures.verify_pagerduty(body, request.headers.get("x-pagerduty-signature"), secrets)
        request.state.authenticated = True
        payload = parse_json(body)
        alerts = sources.parse_pagerduty(payload)
        event = payload["event"]
        return Delivery(
            key=f"pagerduty:{event['id']}",
            sent_at=sources.parse_time(event["occurred_at"], "body.event.occurred_at"),
            sent_at_field="body.event.occurred_at",
            alerts=alerts,
            note="" if alerts else f"event type {event['event_type']} does not call for a response",
        )

    async def generic(self, request: Request) -> Delivery:
        secrets = self.settings.hmac_secrets
        if not secrets:
            raise NotConfigured(
                "/alerts/generic is not configured: set CLAMPDOWN_ALERT_HMAC_SECRET"
            )
        body = await self.read(request)
        timestamp = request.headers.get("x-clampdown-timestamp")
        sent = signatures.verify_generic(
            body,
            timestamp,
            request.headers.get("x-clampdown-signature"),
            secrets,
            self.clock(),
            self.settings.delivery_retention,
            self.settings.replay_window,
        )
        request.state.authenticated = True
        alerts = sources.parse_generic(parse_json(body), self.now())
        return Delivery(
            key=f"generic:{_digest(str(int(sent)).encode(), body)}",
            sent_at=datetime.fromtimestamp(sent, UTC),
            sent_at_field="X-Clampdown-Timestamp",
            alerts=alerts,
        )

    async def sns(self, request: Request) -> Delivery | Answered:
        allowed = self.settings.allowed_topics
        if not allowed:
            raise NotConfigured("/alerts/sns is not configured: set CLAMPDOWN_SNS_TOPIC_ARNS")
        _, message = await self.body_json(request)
        if not isinstance(message, dict):
            raise Malformed("body must be an SNS message (a JSON object)")
        header_type = request.headers.get("x-amz-sns-message-type")
        if header_type is not None and header_type != message.get("Type"):
            raise Malformed("x-amz-sns-message-type header does not match the message Type")
        topic = message.get("TopicArn")
        if not isinstance(topic, str) or topic not in allowed:
            raise Unauthenticated(
                "SNS TopicArn is not in the allow-list (CLAMPDOWN_SNS_TOPIC_ARNS)"
            )
        signatures.sns_string_to_sign(message)  # shape first: a malformed message is a 400
        await run_in_threadpool(self.sns_verifier.verify, message)  # may fetch the certificate
        request.state.authenticated = True
        return self._sns_message(message, topic)

    def _sns_message(self, message: dict[str, Any], topic: str) -> Delivery | Answered:
        key = f"sns:{message['MessageId']}"
        sent_at = sources.parse_time(message["Timestamp"], "sns.Timestamp")
        kind = message["Type"]
        if kind == "SubscriptionConfirmation":
            url = signatures.check_subscribe_url(message["SubscribeURL"], topic)

            def confirm() -> None:
                try:
                    self.https_get(url, self.settings.sns_cert_timeout)
                except OSError as exc:
                    raise UpstreamFailed(f"could not confirm the SNS subscription: {exc}") from None
                logger.info("confirmed SNS subscription to %s", topic)

            return Answered(
                key, sent_at, "sns.Timestamp", {"status": "confirmed", "topic": topic}, confirm
            )
        if kind == "UnsubscribeConfirmation":
            return Answered(
                key,
                sent_at,
                "sns.Timestamp",
                {"status": "ignored", "reason": "unsubscribe confirmation: nothing to do"},
            )
        alerts = sources.parse_sns_notification(message, self.settings.alarm_severity)
        return Delivery(
            key=key,
            sent_at=sent_at,
            sent_at_field="sns.Timestamp",
            alerts=alerts,
            note="" if alerts else "the notification is not an alarm in ALARM state",
        )


class Pipeline:
    """The steps every endpoint shares once its receiver has authenticated and parsed."""

    def __init__(self, receivers: Receivers, triage: AlertTriage, deliveries: DeliveryLog) -> None:
        self.receivers = receivers
        self.triage = triage
        self.deliveries = deliveries
        self.window = receivers.settings.replay_window
        self.retention = receivers.settings.delivery_retention

    async def handle(self, source: str, request: Request, receive: Receive) -> Response:
        peer = request.client.host if request.client else "?"
        try:
            delivery = await receive(request)
            if delivery.sent_at is not None:
                check_fresh(
                    delivery.sent_at,
                    self.receivers.now(),
                    self.retention,
                    delivery.sent_at_field,
                    self.window,
                )
                # acceptable from `window` before its timestamp to `retention` after it
                ttl = self.retention + self.window
            else:  # no timestamp (Alertmanager): only an identical body soon after is a replay
                ttl = 2 * self.window
            if not await self._first_seen(delivery.key, ttl):
                raise Replayed(f"delivery {delivery.key} was already received (replay)")
        except AlertRejected as exc:
            again = await self._record_refusal(source, request, exc)
            logger.log(
                logging.ERROR if isinstance(exc, Unavailable) else logging.WARNING,
                "alert /%s from %s refused (%d)%s: %s",
                source,
                peer,
                exc.status,
                " again (the same delivery was refused before)" if again else "",
                exc.reason,
            )
            retry = {"Retry-After": str(exc.retry_after)} if isinstance(exc, Unavailable) else None
            return JSONResponse({"error": exc.reason}, exc.status, headers=retry)
        if isinstance(delivery, Answered):
            return await self._answer(source, delivery)
        return await self._triage(source, delivery)

    async def _first_seen(self, key: str, ttl: float) -> bool:
        """:meth:`DeliveryLog.first_seen`; a log that cannot be written (the state store on a
        full or read-only disk, or down) is :class:`Unavailable`: 503, and nothing recorded."""
        try:
            return bool(await run_in_threadpool(self.deliveries.first_seen, key, ttl))
        except Exception as exc:
            logger.error(
                "delivery %s could not be recorded in the state store: %s — free space or make "
                "CLAMPDOWN_HOME writable (local mode), or check CLAMPDOWN_STATE_URL's database",
                key,
                _cause(exc),
            )
            raise Unavailable(
                "the delivery could not be recorded (clampdown's state store refuses writes); "
                "retry the delivery"
            ) from exc

    def _forget(self, key: str) -> None:
        """Forget a delivery id so its retry is accepted; say so when even that fails."""
        try:
            self.deliveries.forget(key)
        except Exception as exc:
            logger.error(
                "delivery %s could not be forgotten (%s): its retry is refused as a replay "
                "until the id expires; send the alert again as a new delivery",
                key,
                _cause(exc),
            )

    async def _record_refusal(self, source: str, request: Request, exc: AlertRejected) -> bool:
        """Remember an authenticated delivery refused as malformed (by the body's digest), so
        its retries are told apart in the log; the answer stays the same 400 every time.
        True when this delivery was refused before (inside twice the replay window)."""
        body = getattr(request.state, "body", None)
        if not isinstance(exc, Malformed) or body is None:
            return False
        if not getattr(request.state, "authenticated", False):
            return False  # an unauthenticated sender must not fill the log
        key = f"{source}:refused:{_digest(body)}"
        try:
            return not await run_in_threadpool(self.deliveries.first_seen, key, 2 * self.window)
        except Exception:  # only the log's "again" depends on it; the answer stays a 400
            return False

    async def _answer(self, source: str, delivery: Answered) -> Response:
        try:
            if delivery.act is not None:
                await run_in_threadpool(delivery.act)
        except AlertRejected as exc:
            self._forget(delivery.key)
            logger.warning("alert /%s %s failed: %s", source, delivery.key, exc.reason)
            return JSONResponse({"error": exc.reason}, exc.status)
        return JSONResponse(delivery.body, 200)

    async def _triage(self, source: str, delivery: Delivery) -> Response:
        results: list[dict[str, Any]] = []
        for alert in delivery.alerts:
            try:
                outcome = await run_in_threadpool(self.triage, alert)
            except (RunNotStarted, LedgerWriteError) as exc:
                return self._not_started(source, delivery, alert, exc, results)
            except Exception:
                # nothing was lost: the sender's retry is accepted
                self._forget(delivery.key)
                logger.exception("triage of %s alert %s failed", alert.source, alert.id)
                return JSONResponse(
                    {"error": "triage failed; the alert was not handled, retry the delivery"}, 500
                )
            results.append(
                {
                    "id": alert.id,
                    "status": outcome.status,
                    "run_id": outcome.run_id,
                    "trigger": outcome.trigger,
                    "reason": outcome.reason,
                }
            )
        logger.info(
            "alert /%s %s: %s",
            source,
            delivery.key,
            ", ".join(f"{r['id']} {r['status']} {r['run_id'] or ''}".strip() for r in results)
            or delivery.note
            or "no alert",
        )
        started = any(r["status"] == "started" for r in results)
        body: dict[str, Any] = {"alerts": results}
        if not results:
            body["reason"] = delivery.note or "no alert in the payload"
        return JSONResponse(body, 202 if started else 200)

    def _not_started(
        self,
        source: str,
        delivery: Delivery,
        alert: Alert,
        exc: ClampdownError,
        results: list[dict[str, Any]],
    ) -> Response:
        """503 + Retry-After: nothing was started for ``alert`` and nothing is remembered
        that would refuse the retry (the triage freed the incident's keys; the delivery id
        is forgotten here)."""
        self._forget(delivery.key)
        retry_after = int(getattr(exc, "retry_after", RunNotStarted.retry_after))
        logged = f"{exc.message} — {exc.hint}" if exc.hint else exc.message
        logger.error(
            "alert /%s %s: %s alert %s NOT started, answered 503 (retry after %d s): %s",
            source,
            delivery.key,
            alert.source,
            alert.id,
            retry_after,
            logged,
        )
        failed = {"id": alert.id, "status": "not-started", "run_id": None, "trigger": None}
        body = {  # the sender learns why, the operator's hint stays in the log
            "error": f"run not started, retry the delivery: {exc.message}",
            "retry_after": retry_after,
            "alerts": [*results, {**failed, "reason": exc.message}],
        }
        return JSONResponse(body, 503, headers={"Retry-After": str(retry_after)})


def _cause(exc: BaseException) -> str:
    """The driver's own words for a storage error (``exc.orig`` of a SQLAlchemy error, which
    would otherwise add the statement and its parameters), else the error itself."""
    cause = getattr(exc, "orig", None) or exc
    return f"{cause.__class__.__name__}: {cause}"


def alert_router(
    settings: AlertSettings,
    triage: AlertTriage,
    deliveries: DeliveryLog,
    *,
    fetch: signatures.Fetch | None = None,
    clock: Callable[[], float] = time.time,
) -> APIRouter:
    """The alert endpoints. ``fetch`` (HTTPS GET) and ``clock`` are injectable for tests."""
    receivers = Receivers(settings, fetch, clock)
    pipeline = Pipeline(receivers, triage, deliveries)
    router = APIRouter(prefix="/alerts", tags=["alerts"])
    endpoints: dict[str, Receive] = {
        "guardduty": receivers.guardduty,
        "eventbridge": receivers.any_eventbridge,
        "sns": receivers.sns,
        "alertmanager": receivers.alertmanager,
        "pagerduty": receivers.pagerduty,
        "generic": receivers.generic,
    }
    for source, receive in endpoints.items():
        router.add_api_route(
            f"/{source}", _endpoint(pipeline, source, receive), methods=["POST"], name=source
        )
    return router


def _endpoint(
    pipeline: Pipeline, source: str, receive: Receive
) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        return await pipeline.handle(source, request, receive)

    return endpoint
