"""Webhook alerts: a signed JSON POST, retried, that only reaches the addresses it may.

What a receiver can count on, in the Standard Webhooks way (https://www.standardwebhooks.com),
so any of its libraries verifies what asgimon sends:

- ``webhook-id`` is the notification's id, the same on every retry: deduplicate on it.
- ``webhook-timestamp`` (epoch seconds) and ``webhook-signature`` are made afresh for each
  attempt; the signature is ``v1,`` + base64 HMAC-SHA256, keyed with the target's secret,
  of ``{id}.{timestamp}.{body}``, so a replayed old request can be told by its age.
- The body is :meth:`Notification.to_json` as JSON.

What the host can count on:

- The request reaches a global address, or one inside ``ALERTS_WEBHOOK_ALLOW``: the name is
  resolved and checked when connecting, and the checked address is the one connected to
  (:mod:`asgimon.plugins.ssrf`). No proxy is taken from the environment and no redirect is
  followed, since either would send the request somewhere that was never checked.
- One attempt takes at most ``ALERTS_WEBHOOK_TIMEOUT`` in all (resolving, connecting,
  sending, reading the answer), however slowly the receiver drips, and reads at most 64 KB
  of the answer.
- Timeouts, connection errors, 408, 429 and 5xx are retried, up to ``ALERTS_MAX_ATTEMPTS``
  attempts within ``ALERTS_RETRY_DEADLINE``, with exponentially growing, fully jittered
  pauses, or the pause a 429 or 503 asks for in ``Retry-After``. A 410 asks for the target
  to be disabled; any other answer is final.

A target is ``{"url": "https://hooks.example.com/asgimon", "secret": "whsec_…"}``; the
secret is made when the target is validated without one.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import email.utils
import hashlib
import hmac
import json
import random
import secrets
import ssl
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC
from typing import TYPE_CHECKING, Any, cast

from asgimon.alerts.channels import Delivery, Notification
from asgimon.errors import FieldError, require_extra
from asgimon.plugins.ssrf import AddressGuard, IPAddress, Refused, Resolve

if TYPE_CHECKING:
    import httpx

    from asgimon.settings import Settings

__all__ = ["WebhookChannel", "channel"]

MAX_URL_LENGTH = 2048
MAX_ANSWER_BYTES = 64 * 1024
BACKOFF_BASE = 1.0
BACKOFF_CAP = 60.0

_SECRET_PREFIX = "whsec_"
_SECRET_BYTES = 32
_KEYS = ("url", "secret")
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class _Outcome:
    reason: str
    ok: bool = False
    retry: bool = False
    retry_after: float | None = None
    disable: bool = False


def _parse_url(value: object) -> httpx.URL:
    import httpx

    if not isinstance(value, str):
        raise ValueError("required: an http:// or https:// URL")
    if len(value) > MAX_URL_LENGTH:
        raise ValueError(f"longer than {MAX_URL_LENGTH} characters")
    try:
        url = httpx.URL(value)
    except httpx.InvalidURL as exc:
        raise ValueError(f"not a valid URL: {exc}") from None
    if url.scheme not in _DEFAULT_PORTS:
        raise ValueError("must start with http:// or https://")
    if not url.host:
        raise ValueError("has no host")
    if url.userinfo:
        # It would travel in clear in logs and the rule's history; the secret signs instead.
        raise ValueError("must not contain a user name or password")
    if len(str(url)) > MAX_URL_LENGTH:
        raise ValueError(f"longer than {MAX_URL_LENGTH} characters once encoded")
    return url


def _destination(target: Mapping[str, Any]) -> tuple[httpx.URL, bytes]:
    try:
        url = _parse_url(target.get("url"))
    except ValueError as exc:
        raise ValueError(f"url: {exc}") from None
    if target.get("secret") is None:
        # Signing with a secret nobody was shown would make every request unverifiable.
        raise ValueError("secret: missing")
    try:
        return url, _decode_secret(target["secret"])
    except ValueError as exc:
        raise ValueError(f"secret: {exc}") from None


def _decode_secret(value: object) -> bytes:
    if not isinstance(value, str) or not value.startswith(_SECRET_PREFIX):
        raise ValueError(f"must be {_SECRET_PREFIX} followed by base64")
    try:
        key = base64.b64decode(value.removeprefix(_SECRET_PREFIX), validate=True)
    except ValueError:
        raise ValueError(f"must be {_SECRET_PREFIX} followed by base64") from None
    if not 16 <= len(key) <= 64:
        raise ValueError(f"must encode 16 to 64 bytes, not {len(key)}")
    return key


def _new_secret() -> str:
    return _SECRET_PREFIX + base64.b64encode(secrets.token_bytes(_SECRET_BYTES)).decode("ascii")


def _sign(key: bytes, msg_id: str, timestamp: int, body: str) -> str:
    mac = hmac.new(key, f"{msg_id}.{timestamp}.{body}".encode(), hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode("ascii")


def _retry_after(value: str | None, wall: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delay-seconds or an HTTP date."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - wall)


def _after(reason: str, attempts: int) -> str:
    return reason if attempts == 1 else f"{reason} after {attempts} attempts"


async def _read_capped(response: httpx.Response) -> None:
    # The answer is only read so the exchange ends cleanly; a receiver that sends more than
    # that gets its connection closed instead of our memory.
    read = 0
    chunks = cast(AsyncGenerator[bytes, None], response.aiter_raw())
    async with contextlib.aclosing(chunks):
        async for chunk in chunks:
            read += len(chunk)
            if read >= MAX_ANSWER_BYTES:
                break


class WebhookChannel:
    """Posts notifications to webhook targets, signed, retried and kept to public addresses.

    ``sleep``, ``now`` (a monotonic clock for the pauses and the retry deadline), ``wall``
    (the clock stamped into ``webhook-timestamp``) and ``rng`` (the jitter) are there so a
    retry schedule can be tested without waiting. ``verify`` takes an
    :class:`ssl.SSLContext` for receivers behind a private certificate authority, and
    ``resolve`` replaces the system resolver (``getaddrinfo``) whose answers are checked.

    >>> from asgimon.settings import Settings
    >>> channel = WebhookChannel(Settings())
    >>> target, errors = channel.validate({"url": "https://hooks.example.com/asgimon"})
    >>> target["secret"].startswith("whsec_"), errors
    (True, [])
    """

    name = "webhook"

    def __init__(
        self,
        settings: Settings,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        now: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        rng: Callable[[], float] = random.random,
        verify: ssl.SSLContext | bool = True,
        resolve: Resolve | None = None,
    ) -> None:
        import httpx

        self._timeout = settings.webhook_timeout
        self._max_attempts = settings.alerts_max_attempts
        self._retry_deadline = settings.alerts_retry_deadline
        self._guard = AddressGuard(settings.webhook_allow, resolve=resolve)
        self._sleep = sleep
        self._now = now
        self._wall = wall
        self._rng = rng
        self._client = httpx.AsyncClient(
            follow_redirects=False,
            trust_env=False,
            verify=verify,
            timeout=settings.webhook_timeout,
            # A pooled connection had its address checked, and its certificate matched, for
            # whichever name first led to that address: every attempt gets its own.
            limits=httpx.Limits(max_keepalive_connections=0),
        )

    def validate(self, target: Mapping[str, Any]) -> tuple[dict[str, Any], list[FieldError]]:
        """The target with its URL normalised and a secret made if it had none."""
        errors = [
            FieldError(str(key), "unknown key: a webhook target has url and secret")
            for key in target
            if key not in _KEYS
        ]
        normal: dict[str, Any] = {"url": target.get("url")}
        try:
            normal["url"] = str(_parse_url(target.get("url")))
        except ValueError as exc:
            errors.append(FieldError("url", str(exc)))
        secret = target.get("secret")
        if secret is None:
            secret = _new_secret()
        else:
            try:
                _decode_secret(secret)
            except ValueError as exc:
                errors.append(FieldError("secret", str(exc)))
        normal["secret"] = secret
        return normal, errors

    async def send(self, notification: Notification, target: Mapping[str, Any]) -> Delivery:
        """Deliver, retrying within the deadlines; the outcome, never an exception."""
        tries: list[str] = []
        delivery = await self._send(notification, target, tries)
        return dataclasses.replace(delivery, tries=tuple(tries))

    async def _send(
        self, notification: Notification, target: Mapping[str, Any], tries: list[str]
    ) -> Delivery:
        try:
            url, key = _destination(target)
        except ValueError as exc:
            return Delivery(ok=False, attempts=0, reason=f"invalid target: {exc}")
        body = json.dumps(notification.to_json())
        deadline = self._now() + self._retry_deadline
        attempts = 0
        while True:
            attempts += 1
            budget = min(self._timeout, deadline - self._now())
            outcome = await self._attempt(url, key, notification.id, body, budget)
            tries.append(outcome.reason)
            if outcome.ok:
                late = "" if attempts == 1 else f" on attempt {attempts}"
                return Delivery(ok=True, attempts=attempts, reason=outcome.reason + late)
            if not outcome.retry:
                return Delivery(
                    ok=False, attempts=attempts, reason=outcome.reason, disable=outcome.disable
                )
            reason = _after(outcome.reason, attempts)
            if attempts >= self._max_attempts:
                return Delivery(ok=False, attempts=attempts, reason=reason)
            delay = outcome.retry_after
            if delay is None:
                delay = self._rng() * min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (attempts - 1))
                why = f"the retry deadline of {self._retry_deadline:g} s is reached"
            else:
                why = f"Retry-After {delay:g} s is past the retry deadline"
            if delay >= deadline - self._now():
                return Delivery(ok=False, attempts=attempts, reason=f"{reason}; {why}")
            await self._sleep(delay)

    async def _attempt(
        self, url: httpx.URL, key: bytes, msg_id: str, body: str, budget: float
    ) -> _Outcome:
        import httpx

        response: httpx.Response | None = None
        problem = ""
        try:
            async with asyncio.timeout(budget):
                address = await self._guard.check(url.host, url.port or _DEFAULT_PORTS[url.scheme])
                request = self._request(url, address, key, msg_id, body)
                response = await self._client.send(request, stream=True)
                try:
                    await _read_capped(response)
                finally:
                    await response.aclose()
        except Refused as exc:
            return _Outcome(f"refused: {exc.reason}", retry=exc.transient)
        except (TimeoutError, httpx.TimeoutException):
            problem = f"no answer within {budget:.3g} s"
        except (httpx.HTTPError, OSError) as exc:
            problem = f"cannot deliver: {str(exc) or type(exc).__name__}"
        if response is None:
            return _Outcome(problem, retry=True)
        # Once the status is in, a stalled or broken answer body changes nothing.
        return self._judge(response)

    def _request(
        self, url: httpx.URL, address: IPAddress, key: bytes, msg_id: str, body: str
    ) -> httpx.Request:
        timestamp = int(self._wall())
        headers = {
            "host": url.netloc.decode("ascii"),
            "content-type": "application/json",
            "user-agent": "asgimon-webhooks",
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": _sign(key, msg_id, timestamp, body),
        }
        # The connection goes to the checked address; TLS still verifies the name in the URL.
        extensions = {"sni_hostname": url.host} if url.scheme == "https" else {}
        return self._client.build_request(
            "POST",
            url.copy_with(host=str(address)),
            headers=headers,
            content=body.encode(),
            extensions=extensions,
        )

    def _judge(self, response: httpx.Response) -> _Outcome:
        status = response.status_code
        if 200 <= status < 300:
            return _Outcome(f"HTTP {status}", ok=True)
        if 300 <= status < 400:
            return _Outcome(f"HTTP {status}: redirects are not followed")
        if status == 410:
            return _Outcome("HTTP 410: the endpoint is gone", disable=True)
        if status in (408, 429) or status >= 500:
            retry_after = None
            if status in (429, 503):
                retry_after = _retry_after(response.headers.get("retry-after"), self._wall())
            return _Outcome(f"HTTP {status}", retry=True, retry_after=retry_after)
        return _Outcome(f"HTTP {status}")

    async def aclose(self) -> None:
        await self._client.aclose()


def channel(settings: Settings) -> WebhookChannel | None:
    """The ``webhook`` entry point: the channel, unless ``WEBHOOK_ALERTS_ENABLED`` is false."""
    if not settings.webhook_alerts_enabled:
        return None
    require_extra("httpx", "alerts", "WEBHOOK_ALERTS_ENABLED", "true")
    return WebhookChannel(settings)
