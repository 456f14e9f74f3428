"""Who sent this? One check per way a source proves itself.

* bearer — ``Authorization: Bearer <t>`` or ``X-Clampdown-Token: <t>`` (EventBridge API
  destinations send a fixed header; Alertmanager sends ``Authorization``).
* PagerDuty v3 — ``X-PagerDuty-Signature: v1=<hex>[,v1=<hex>]``: HMAC-SHA256 of the raw
  body; any configured secret matching any ``v1`` value passes (secret rotation).
* generic — ``X-Clampdown-Timestamp: <unix seconds>`` and ``X-Clampdown-Signature:
  v1=<hex>``: HMAC-SHA256 of ``v1:{timestamp}:{body}``; the timestamp no older than the
  delivery id retention (signed timestamp + body are the delivery id) nor far ahead.
* SNS — the message's RSA signature (SignatureVersion 1 = SHA1, 2 = SHA256) over AWS's
  canonical string, with the certificate fetched over HTTPS only from
  ``sns.<region>.amazonaws.com[.cn]`` (no redirects, timeout, size cap) and cached.

Every comparison of secrets uses :func:`hmac.compare_digest`. Reasons name the header
or field that failed, never its value.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, parse_qs, urlsplit

from pydantic import SecretStr

from clampdown_alerts.errors import Malformed, Unauthenticated
from clampdown_alerts.replay import refuse_stale

Fetch = Callable[[str, float], bytes]
"""``fetch(url, timeout_seconds) -> body``: an HTTPS GET; injectable so tests never go out."""

MAX_SIGNATURES = 8  # v1 values per header: rotation needs two, a flood needs many
MAX_FETCH_BYTES = 64 * 1024  # a PEM certificate is ~2 KiB; a confirmation answer is small
CERT_CACHE_TTL = 24 * 3600.0
CERT_CACHE_SIZE = 64

# sns.us-east-1.amazonaws.com, sns.us-gov-west-1.amazonaws.com, sns.cn-north-1.amazonaws.com.cn
_SNS_HOST = re.compile(r"sns\.[a-z]{2}(?:-[a-z]+)+-\d{1,2}\.amazonaws\.com(?:\.cn)?")
_CERT_PATH = re.compile(r"/[A-Za-z0-9._-]{1,200}\.pem")
_HEX = re.compile(r"[0-9a-fA-F]{64}")


# --- bearer -------------------------------------------------------------------------------


def verify_bearer(headers: Mapping[str, str], token: SecretStr) -> None:
    """Pass when ``Authorization: Bearer <t>`` or ``X-Clampdown-Token: <t>`` equals the token."""
    offered: list[str] = []
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            offered.append(value.strip())
    if header_token := headers.get("x-clampdown-token"):
        offered.append(header_token.strip())
    if not offered:
        raise Unauthenticated(
            "missing credential: send 'Authorization: Bearer <token>' or 'X-Clampdown-Token'"
        )
    expected = token.get_secret_value().encode()
    if not any(hmac.compare_digest(o.encode(), expected) for o in offered):
        raise Unauthenticated("invalid token")


# --- HMAC signatures ----------------------------------------------------------------------


def _v1_values(header: str | None, name: str) -> list[str]:
    if not header:
        raise Unauthenticated(f"missing {name} header")
    values = [
        part.strip()[3:] for part in header.split(",") if part.strip().lower().startswith("v1=")
    ]
    if not values:
        raise Unauthenticated(f"{name} has no v1=<hex> signature")
    if len(values) > MAX_SIGNATURES:
        raise Unauthenticated(f"{name} has more than {MAX_SIGNATURES} signatures")
    return values


def _any_matches(message: bytes, offered: list[str], secrets: list[bytes]) -> bool:
    expected = [hmac.new(s, message, hashlib.sha256).hexdigest().encode() for s in secrets]
    matched = False
    for value in offered:
        candidate = value.lower().encode() if _HEX.fullmatch(value) else b""
        for digest in expected:
            # no early exit: the time taken does not tell which secret or value matched
            matched |= hmac.compare_digest(candidate, digest)
    return matched


def verify_pagerduty(body: bytes, header: str | None, secrets: list[bytes]) -> None:
    """PagerDuty v3: any ``v1=`` value equal to HMAC-SHA256(secret, raw body) for any secret."""
    offered = _v1_values(header, "X-PagerDuty-Signature")
    if not _any_matches(body, offered, secrets):
        raise Unauthenticated("X-PagerDuty-Signature does not match the body")


def generic_signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """``v1=<hex>`` of a generic alert: what a sender computes (and what tests sign with)."""
    message = b"v1:" + timestamp.encode() + b":" + body
    return "v1=" + hmac.new(secret, message, hashlib.sha256).hexdigest()


def verify_generic(
    body: bytes,
    timestamp: str | None,
    signature: str | None,
    secrets: list[bytes],
    now: float,
    window: float,
    max_ahead: float | None = None,
) -> float:
    """Check the generic HMAC and its timestamp: at most ``window`` seconds old (the id
    retention) and ``max_ahead`` (default ``window``) ahead; returns it (unix seconds)."""
    if not timestamp:
        raise Unauthenticated("missing X-Clampdown-Timestamp header (unix seconds)")
    if not re.fullmatch(r"\d{1,12}", timestamp.strip()):
        raise Unauthenticated("X-Clampdown-Timestamp must be an integer number of unix seconds")
    timestamp = timestamp.strip()
    offered = _v1_values(signature, "X-Clampdown-Signature")
    message = b"v1:" + timestamp.encode() + b":" + body
    if not _any_matches(message, offered, secrets):
        raise Unauthenticated("X-Clampdown-Signature does not match timestamp and body")
    sent = float(timestamp)
    refuse_stale(now - sent, window, "X-Clampdown-Timestamp", max_ahead)
    return sent


# --- SNS ------------------------------------------------------------------------------------

_SIGNED_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
}
_SIGNED_FIELDS["UnsubscribeConfirmation"] = _SIGNED_FIELDS["SubscriptionConfirmation"]
_HASHES = {"1": "sha1", "2": "sha256"}


def sns_string_to_sign(message: Mapping[str, Any]) -> bytes:
    """AWS's canonical string: ``Name\\nvalue\\n`` for each signed field in order.

    ``Subject`` is signed only when present (and not null) in a Notification.
    """
    kind = message.get("Type")
    fields = _SIGNED_FIELDS.get(kind) if isinstance(kind, str) else None
    if fields is None:
        raise Malformed(f"SNS Type must be one of {', '.join(_SIGNED_FIELDS)}")
    parts: list[str] = []
    for name in fields:
        value = message.get(name)
        if name == "Subject" and value is None:
            continue
        if not isinstance(value, str):
            raise Malformed(f"SNS {kind} field '{name}' is missing or not a string")
        parts.append(f"{name}\n{value}\n")
    return "".join(parts).encode()


def check_sns_host(url: Any, field: str) -> SplitResult:
    """An ``https://sns.<region>.amazonaws.com[.cn]`` URL, with no userinfo, port or tricks."""
    if not isinstance(url, str) or not url or len(url) > 2048:
        raise Unauthenticated(f"SNS {field} is missing or too long")
    if any(c.isspace() or ord(c) < 0x20 or c == "\\" for c in url):
        raise Unauthenticated(f"SNS {field} contains whitespace or backslashes")
    parts = urlsplit(url)
    if parts.scheme != "https":
        raise Unauthenticated(f"SNS {field} must use https")
    # netloc == hostname rules out userinfo (a@b), ports, and upper-case look-alikes
    if (
        not parts.hostname
        or parts.netloc != parts.hostname
        or not _SNS_HOST.fullmatch(parts.hostname)
    ):
        raise Unauthenticated(f"SNS {field} host must be sns.<region>.amazonaws.com")
    return parts


def check_cert_url(url: Any) -> str:
    parts = check_sns_host(url, "SigningCertURL")
    if parts.query or parts.fragment or not _CERT_PATH.fullmatch(parts.path):
        raise Unauthenticated("SNS SigningCertURL must name a .pem file at the host's root")
    return url


def check_subscribe_url(url: Any, topic_arn: str) -> str:
    """SubscribeURL: an SNS host, the ConfirmSubscription action, for this very topic."""
    parts = check_sns_host(url, "SubscribeURL")
    query = parse_qs(parts.query)
    if (
        parts.path not in ("", "/")
        or query.get("Action") != ["ConfirmSubscription"]
        or query.get("TopicArn") != [topic_arn]
    ):
        raise Unauthenticated("SNS SubscribeURL is not a ConfirmSubscription for this topic")
    return url


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect could lead off the checked host: refuse to follow any."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def https_get(url: str, timeout: float) -> bytes:
    """GET over verified HTTPS, no redirects, at most :data:`MAX_FETCH_BYTES`."""
    opener = urllib.request.build_opener(_NoRedirect)
    request = urllib.request.Request(url, headers={"User-Agent": "clampdown"})
    with opener.open(request, timeout=timeout) as response:
        if response.status != 200:
            raise OSError(f"HTTP {response.status}")
        body = response.read(MAX_FETCH_BYTES + 1)
    if len(body) > MAX_FETCH_BYTES:
        raise OSError("response too large")
    return body


class SnsVerifier:
    """Verifies SNS message signatures; caches public keys by certificate URL.

    With ``cert_dir`` the certificate is read from ``cert_dir/<file name of the URL>``
    instead of downloaded (the URL is checked all the same): tests and air-gapped hosts.
    """

    def __init__(
        self,
        cert_dir: Path | None = None,
        timeout: float = 5.0,
        fetch: Fetch | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cert_dir = cert_dir
        self.timeout = timeout
        self.fetch = fetch or https_get
        self.clock = clock
        self._keys: dict[str, tuple[Any, float]] = {}
        self._lock = threading.Lock()

    def verify(self, message: Mapping[str, Any]) -> None:
        """Raise :class:`Unauthenticated` unless the message's signature verifies."""
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        data = sns_string_to_sign(message)
        version = message.get("SignatureVersion")
        if version not in _HASHES:
            raise Unauthenticated("SNS SignatureVersion must be 1 or 2")
        raw_signature = message.get("Signature")
        if not isinstance(raw_signature, str) or not raw_signature:
            raise Unauthenticated("SNS Signature is missing")
        try:
            signature = base64.b64decode(raw_signature, validate=True)
        except (binascii.Error, ValueError):
            raise Unauthenticated("SNS Signature is not base64") from None
        key = self.public_key(check_cert_url(message.get("SigningCertURL")))
        algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
        try:
            key.verify(signature, data, padding.PKCS1v15(), algorithm)
        except InvalidSignature:
            raise Unauthenticated("SNS message signature does not verify") from None

    def public_key(self, url: str) -> Any:
        now = self.clock()
        with self._lock:
            cached = self._keys.get(url)
            if cached and cached[1] > now:
                return cached[0]
            key = self._load(url, now)
            if len(self._keys) >= CERT_CACHE_SIZE:
                self._keys.pop(next(iter(self._keys)))
            self._keys[url] = (key, now + CERT_CACHE_TTL)
            return key

    def _load(self, url: str, now: float) -> Any:
        from cryptography import x509
        from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

        name = urlsplit(url).path.rsplit("/", 1)[-1]
        try:
            if self.cert_dir is not None:
                pem = (self.cert_dir / name).read_bytes()[:MAX_FETCH_BYTES]
            else:
                pem = self.fetch(url, self.timeout)
        except OSError as exc:
            raise Unauthenticated(f"SNS signing certificate could not be fetched: {exc}") from None
        try:
            cert = x509.load_pem_x509_certificate(pem)
        except ValueError:
            raise Unauthenticated("SNS signing certificate is not a PEM certificate") from None
        moment = datetime.fromtimestamp(now, UTC)
        if not cert.not_valid_before_utc <= moment <= cert.not_valid_after_utc:
            raise Unauthenticated("SNS signing certificate is expired or not yet valid")
        key = cert.public_key()
        if not isinstance(key, RSAPublicKey):
            raise Unauthenticated("SNS signing certificate does not hold an RSA key")
        return key
