"""``POST /alerts/<source>``: authenticate, bound, parse, de-replay, then triage each alert.

Every endpoint runs the same pipeline, in this order, so a request is refused as early
and as cheaply as possible and nothing reaches the triage unless it passed every step:

1. the source's secret is configured (else 503);
2. bearer sources: the token, before reading the body (401);
3. the body, at most ``CLAMPDOWN_MAX_ALERT_BYTES`` (Content-Length and bytes read; 413);
4. JSON (400), then signatures for SNS / PagerDuty / generic (401);
5. the source's parser (400 naming the field);
6. the message's own timestamp inside the replay window (401) and its delivery id not
   seen before (409);
7. the triage, in a worker thread, one alert at a time; 202 when a run started,
   200 otherwise. A triage error forgets the delivery id so the sender's retry works.

Answers are ``{"error": reason}`` or ``{"alerts": [{id, status, run_id, trigger, reason}]}``.
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
from clampdown_alerts import signatures, sources
from clampdown_alerts.errors import (
    AlertRejected,
    Malformed,
    NotConfigured,
    Replayed,
    TooLarge,
    Unauthenticated,
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
    try:
        return json.loads(body)
    except UnicodeDecodeError:
        raise Malformed("body is not UTF-8 JSON") from None
    except json.JSONDecodeError as exc:
        raise Malformed(
            f"body is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise Malformed("body is nested too deeply") from None


def _digest(*parts: bytes) -> str:
    return hashlib.sha256(b"\0".join(parts)).hexdigest()


def alert_router(
    settings: AlertSettings,
    triage: AlertTriage,
    deliveries: DeliveryLog,
    *,
    fetch: signatures.Fetch | None = None,
    clock: Callable[[], float] = time.time,
) -> APIRouter:
    """The alert endpoints. ``fetch`` (HTTPS GET) and ``clock`` are injectable for tests."""
    sns_verifier = signatures.SnsVerifier(
        settings.sns_cert_dir, settings.sns_cert_timeout, fetch, clock
    )
    https_get = fetch or signatures.https_get
    window = settings.replay_window
    router = APIRouter(prefix="/alerts", tags=["alerts"])

    def now() -> datetime:
        return datetime.fromtimestamp(clock(), UTC)

    def bearer(request: Request, source: str) -> None:
        if settings.alert_token is None:
            raise NotConfigured(f"/alerts/{source} is not configured: set CLAMPDOWN_ALERT_TOKEN")
        signatures.verify_bearer(request.headers, settings.alert_token)

    async def body_json(request: Request) -> tuple[bytes, Any]:
        body = await read_body(request, settings.max_alert_bytes)
        return body, parse_json(body)

    # --- one receiver per source: authenticate and parse, nothing else ----------------------

    async def receive_eventbridge(request: Request, guardduty_only: bool) -> Delivery:
        bearer(request, "guardduty" if guardduty_only else "eventbridge")
        _, event = await body_json(request)
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

    async def receive_alertmanager(request: Request) -> Delivery:
        bearer(request, "alertmanager")
        body, payload = await body_json(request)
        alerts = sources.parse_alertmanager(payload)
        # Alertmanager has no delivery id or send time: an identical body is a replay.
        return Delivery(
            key=f"alertmanager:{_digest(body)}",
            sent_at=None,
            sent_at_field="",
            alerts=alerts,
            note="" if alerts else "no firing alert in the payload",
        )

    async def receive_pagerduty(request: Request) -> Delivery:
        secrets = settings.pagerduty_secrets
        if not secrets:
            raise NotConfigured(
                "/alerts/pagerduty is not configured: set CLAMPDOWN_PAGERDUTY_SECRET"
            )
        body = await read_body(request, settings.max_alert_bytes)
        signatures.verify_pagerduty(body, request.headers.get("x-pagerduty-signature"), secrets)
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

    async def receive_generic(request: Request) -> Delivery:
        secrets = settings.hmac_secrets
        if not secrets:
            raise NotConfigured(
                "/alerts/generic is not configured: set CLAMPDOWN_ALERT_HMAC_SECRET"
            )
        body = await read_body(request, settings.max_alert_bytes)
        timestamp = request.headers.get("x-clampdown-timestamp")
        sent = signatures.verify_generic(
            body,
            timestamp,
            request.headers.get("x-clampdown-signature"),
            secrets,
            clock(),
            window,
        )
        alerts = sources.parse_generic(parse_json(body), now())
        return Delivery(
            key=f"generic:{_digest(str(int(sent)).encode(), body)}",
            sent_at=datetime.fromtimestamp(sent, UTC),
            sent_at_field="X-Clampdown-Timestamp",
            alerts=alerts,
        )

    async def receive_sns(request: Request) -> Delivery | Answered:
        allowed = settings.allowed_topics
        if not allowed:
            raise NotConfigured("/alerts/sns is not configured: set CLAMPDOWN_SNS_TOPIC_ARNS")
        _, message = await body_json(request)
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
        await run_in_threadpool(sns_verifier.verify, message)  # may download the certificate
        key = f"sns:{message['MessageId']}"
        sent_at = sources.parse_time(message["Timestamp"], "sns.Timestamp")
        kind = message["Type"]
        if kind == "SubscriptionConfirmation":
            url = signatures.check_subscribe_url(message["SubscribeURL"], topic)

            def confirm() -> None:
                try:
                    https_get(url, settings.sns_cert_timeout)
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
        alerts = sources.parse_sns_notification(message, settings.alarm_severity)
        return Delivery(
            key=key,
            sent_at=sent_at,
            sent_at_field="sns.Timestamp",
            alerts=alerts,
            note="" if alerts else "the notification is not an alarm in ALARM state",
        )

    # --- the shared pipeline -----------------------------------------------------------------

    async def handle(source: str, request: Request, receive: Receive) -> Response:
        peer = request.client.host if request.client else "?"
        try:
            delivery = await receive(request)
            if delivery.sent_at is not None:
                check_fresh(delivery.sent_at, now(), window, delivery.sent_at_field)
            ttl = 2 * window  # a message is acceptable for +-window around its timestamp
            if not await run_in_threadpool(deliveries.first_seen, delivery.key, ttl):
                raise Replayed(f"delivery {delivery.key} was already received (replay)")
        except AlertRejected as exc:
            logger.warning(
                "alert /%s from %s refused (%d): %s", source, peer, exc.status, exc.reason
            )
            return JSONResponse({"error": exc.reason}, exc.status)

        if isinstance(delivery, Answered):
            try:
                if delivery.act is not None:
                    await run_in_threadpool(delivery.act)
            except AlertRejected as exc:
                deliveries.forget(delivery.key)
                logger.warning("alert /%s %s failed: %s", source, delivery.key, exc.reason)
                return JSONResponse({"error": exc.reason}, exc.status)
            return JSONResponse(delivery.body, 200)

        results: list[dict[str, Any]] = []
        for alert in delivery.alerts:
            try:
                outcome = await run_in_threadpool(triage, alert)
            except Exception:
                deliveries.forget(delivery.key)  # nothing was lost: the sender's retry is accepted
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

    @router.post("/guardduty")
    async def guardduty(request: Request) -> Response:
        return await handle("guardduty", request, lambda r: receive_eventbridge(r, True))

    @router.post("/eventbridge")
    async def eventbridge(request: Request) -> Response:
        return await handle("eventbridge", request, lambda r: receive_eventbridge(r, False))

    @router.post("/sns")
    async def sns(request: Request) -> Response:
        return await handle("sns", request, receive_sns)

    @router.post("/alertmanager")
    async def alertmanager(request: Request) -> Response:
        return await handle("alertmanager", request, receive_alertmanager)

    @router.post("/pagerduty")
    async def pagerduty(request: Request) -> Response:
        return await handle("pagerduty", request, receive_pagerduty)

    @router.post("/generic")
    async def generic(request: Request) -> Response:
        return await handle("generic", request, receive_generic)

    return router
