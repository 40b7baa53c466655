"""Alerts by email: one SMTP conversation per notification, every stage under a timeout.

``ALERTS_SMTP_URL`` says where to send and how::

    smtp://alerts:s3cret@mail.example.com:587?starttls=require
    smtps://mail.example.com?ca_file=/etc/ssl/private-ca.pem

A connection is opened for each notification and closed after it: alerts are rare, and a
connection kept open between them would mostly be found dead by the next one. aiosmtplib
is imported only when the channel is switched on, so the ``alerts`` extra stays optional.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import re
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import parseaddr
from typing import TYPE_CHECKING, Any

from asgimon.alerts.channels import Delivery, Notification
from asgimon.errors import ConfigError, FieldError, require_extra

from .email_message import compose, one_line
from .smtp_server import URL_RULE, SmtpServer, redacted

if TYPE_CHECKING:
    import aiosmtplib

    from asgimon.settings import Settings

__all__ = ["EmailChannel", "SmtpServer", "channel"]

log = logging.getLogger("asgimon.alerts")

MAX_RECIPIENTS = 20
BACKOFF_BASE = 1.0
BACKOFF_CAP = 60.0

_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_ADDRESS = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@{_LABEL}(?:\.{_LABEL})*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


@dataclass(frozen=True, slots=True)
class _Outcome:
    ok: bool
    retry: bool
    reason: str | None


class EmailChannel:
    """The ``email`` alert channel: a target is ``{"to": ["ops@example.com", ...]}``.

    Connection errors, timeouts and 4xx replies are retried, up to ``max_attempts``
    within ``retry_deadline`` seconds, with exponential backoff and full jitter; a 5xx
    reply is final. ``sleep``, ``now`` and ``rng`` are there for tests to run the
    schedule without waiting.

    >>> email = EmailChannel(SmtpServer.from_url("smtp://localhost"), sender="a@example.com")
    >>> email.validate({"to": "ops@example.com"})
    ({'to': ['ops@example.com']}, [])
    """

    name = "email"

    def __init__(
        self,
        server: SmtpServer,
        *,
        sender: str,
        timeout: float = 10.0,
        max_attempts: int = 5,
        retry_deadline: float = 300.0,
        dashboard_url: str | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        now: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        envelope_from = parseaddr(sender)[1]
        if _CONTROL.search(sender) or not _ADDRESS.fullmatch(envelope_from):
            raise ConfigError("ALERTS_SMTP_FROM", sender, "an address like alerts@example.com")
        self._server = server
        self._sender = sender
        self._envelope_from = envelope_from
        self._timeout = timeout
        self._max_attempts = max(1, max_attempts)
        self._retry_deadline = retry_deadline
        self._dashboard_url = dashboard_url
        self._sleep = sleep
        self._now = now
        self._rng = rng
        self._client = _client_type()
        self._closed = False

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        now: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> EmailChannel:
        """The channel ``ALERTS_SMTP_URL`` and the other ``ALERTS_*`` settings describe."""
        if settings.smtp_url is None:
            raise ConfigError("ALERTS_SMTP_URL", None, URL_RULE)
        return cls(
            SmtpServer.from_url(settings.smtp_url),
            sender=settings.smtp_from,
            timeout=settings.smtp_timeout,
            max_attempts=settings.alerts_max_attempts,
            retry_deadline=settings.alerts_retry_deadline,
            dashboard_url=settings.dashboard_url,
            sleep=sleep,
            now=now,
            rng=rng,
        )

    def validate(self, target: Mapping[str, Any]) -> tuple[dict[str, Any], list[FieldError]]:
        """``{"to": address or list of addresses}`` normalised to a list without repeats."""
        return _validate_target(target)

    async def send(self, notification: Notification, target: Mapping[str, Any]) -> Delivery:
        """Deliver one notification, retrying as the settings allow; never raises for it."""
        tries: list[str] = []
        delivery = await self._send(notification, target, tries)
        return dataclasses.replace(delivery, tries=tuple(tries))

    async def _send(
        self, notification: Notification, target: Mapping[str, Any], tries: list[str]
    ) -> Delivery:
        normalised, errors = self.validate(target)
        if errors:
            detail = "; ".join(f"{e.field}: {e.message}" for e in errors)
            return Delivery(ok=False, attempts=0, reason=f"invalid target: {detail}")
        if self._closed:
            return Delivery(ok=False, attempts=0, reason="the email channel is closed")
        attempts = 0
        try:
            message = compose(notification, self._sender, normalised["to"], self._dashboard_url)
            started = self._now()
            for attempts in range(1, self._max_attempts + 1):
                budget = min(self._timeout * 3, started + self._retry_deadline - self._now())
                outcome = await self._attempt(message, normalised["to"], max(budget, 0.01))
                tries.append(outcome.reason or "")
                if outcome.ok or not outcome.retry:
                    return Delivery(ok=outcome.ok, attempts=attempts, reason=outcome.reason)
                if attempts == self._max_attempts:
                    break
                delay = self._rng() * min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (attempts - 1))
                if self._now() + delay - started > self._retry_deadline:
                    note = f"the retry deadline of {self._retry_deadline:g} s came first"
                    reason = f"{outcome.reason} (gave up after {_attempts(attempts)}: {note})"
                    return Delivery(ok=False, attempts=attempts, reason=reason)
                await self._sleep(delay)
        except Exception:
            # A bug of ours or of the driver must cost one notification, not the alert engine.
            log.exception("asgimon: email notification %s failed unexpectedly", notification.id)
            return Delivery(ok=False, attempts=attempts, reason="internal error; see the log")
        reason = f"{outcome.reason} (gave up after {_attempts(attempts)})"
        return Delivery(ok=False, attempts=attempts, reason=reason)

    async def aclose(self) -> None:
        """Refuse further sends; no connection outlives the send that opened it."""
        self._closed = True

    async def _attempt(self, message: EmailMessage, to: list[str], budget: float) -> _Outcome:
        import aiosmtplib

        server = self._server
        client = self._client(
            hostname=server.host,
            port=server.port,
            use_tls=server.implicit_tls,
            start_tls=server.starttls,
            tls_context=server.tls_context,
            username=server.username,
            password=server.password,
            timeout=self._timeout,
        )
        try:
            # aiosmtplib's timeout bounds each read; this one bounds a server that answers
            # every command just in time, or trickles the reply a byte at a time.
            async with asyncio.timeout(budget):
                await client.connect()
                refused, reply = await client.send_message(
                    message, sender=self._envelope_from, recipients=to
                )
        except (aiosmtplib.SMTPException, OSError, ValueError) as exc:
            client.close()
            await asyncio.sleep(0)  # the transport's connection_lost closes the socket
            return _failure(exc, server, self._timeout, budget)
        # Delivered: a server slow to say goodbye must not turn that into a retry (a duplicate).
        with contextlib.suppress(aiosmtplib.SMTPException, OSError):
            async with asyncio.timeout(self._timeout):
                await client.quit()
        client.close()
        await asyncio.sleep(0)
        if refused:
            listed = ", ".join(f"{a} ({r.code} {r.message})" for a, r in refused.items())
            note = f"accepted for {len(to) - len(refused)} of {len(to)}; refused: {listed}"
            return _Outcome(ok=True, retry=False, reason=one_line(note))
        return _Outcome(ok=True, retry=False, reason=one_line(f"accepted: {reply}"))


def channel(settings: Settings) -> EmailChannel | None:
    """The entry point's factory: None unless email alerts are on and a server is set."""
    if not settings.email_alerts_enabled or settings.smtp_url is None:
        return None
    require_extra("aiosmtplib", "alerts", "ALERTS_SMTP_URL", redacted(settings.smtp_url))
    return EmailChannel.from_settings(settings)


def _client_type() -> type[aiosmtplib.SMTP]:
    import aiosmtplib

    class _Client(aiosmtplib.SMTP):
        def close(self) -> None:
            # aiosmtplib closes a TLS connection gracefully: the socket then waits for the
            # server's close_notify, up to 30 s, and outlives the send. Nothing is left to
            # flush once a reply has come or a stage has failed, so drop it at once.
            if isinstance(self.transport, asyncio.WriteTransport):
                self.transport.abort()
            super().close()

    return _Client


def _failure(exc: Exception, server: SmtpServer, timeout: float, budget: float) -> _Outcome:
    import aiosmtplib

    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [r.code for r in exc.recipients]
        listed = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients)
        transient = bool(codes) and all(400 <= c < 500 for c in codes)
        return _Outcome(False, transient, one_line(f"every recipient refused: {listed}"))
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        auth = isinstance(exc, aiosmtplib.SMTPAuthenticationError)
        what = "authentication failed: " if auth else ""
        return _Outcome(False, 400 <= exc.code < 500, one_line(f"{what}{exc.code} {exc.message}"))
    if _certificate_error(exc):
        return _Outcome(
            False, False, one_line(f"the server's TLS certificate is not trusted: {exc}")
        )
    if isinstance(exc, TimeoutError):
        if str(exc):
            return _Outcome(False, True, one_line(f"timed out ({timeout:g} s a stage): {exc}"))
        return _Outcome(False, True, f"timed out: the conversation took over {budget:g} s")
    if isinstance(exc, OSError):  # refused, reset, disconnected: aiosmtplib's are OSErrors too
        detail = str(exc) if server.host in str(exc) else f"{server.host}:{server.port}: {exc}"
        return _Outcome(False, True, one_line(f"connection failed: {detail}"))
    if isinstance(exc, aiosmtplib.SMTPException):
        # STARTTLS or AUTH not offered, an unsupported feature: retrying cannot help.
        return _Outcome(False, False, one_line(str(exc)))
    return _Outcome(False, False, one_line(f"cannot be sent: {exc}"))


def _certificate_error(exc: BaseException | None) -> bool:
    # aiosmtplib wraps the handshake's error for smtps:// and passes it on for STARTTLS.
    for _ in range(5):
        if exc is None:
            return False
        if isinstance(exc, ssl.SSLCertVerificationError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _validate_target(target: Mapping[str, Any]) -> tuple[dict[str, Any], list[FieldError]]:
    if not isinstance(target, Mapping):
        return {}, [FieldError("to", 'the target must be an object like {"to": [...]}')]
    errors = [
        FieldError(str(key), 'unknown key: an email target has only "to"')
        for key in target
        if key != "to"
    ]
    raw = target.get("to")
    single = isinstance(raw, str)
    if isinstance(raw, str | list | tuple):
        items: list[Any] = [raw] if isinstance(raw, str) else list(raw)
    else:
        errors.append(FieldError("to", "required: an address or a list of 1 to 20 addresses"))
        return {}, errors
    if not 1 <= len(items) <= MAX_RECIPIENTS:
        errors.append(FieldError("to", f"1 to {MAX_RECIPIENTS} addresses, not {len(items)}"))
        return {}, errors
    addresses: list[str] = []
    for i, item in enumerate(items):
        problem = _address_problem(item)
        if problem is not None:
            errors.append(FieldError("to" if single else f"to[{i}]", problem))
        elif item.strip().lower() not in (a.lower() for a in addresses):
            addresses.append(item.strip())
    return {"to": addresses}, errors


def _address_problem(item: Any) -> str | None:
    if not isinstance(item, str):
        return "an email address as text"
    if "\r" in item or "\n" in item:
        return "an address must not contain a line break"
    if len(item) > 254:
        return "at most 254 characters"
    if not _ADDRESS.fullmatch(item.strip()) or len(item.strip().partition("@")[0]) > 64:
        return "an address like ops@example.com"
    return None


def _attempts(n: int) -> str:
    return f"{n} attempt" if n == 1 else f"{n} attempts"
