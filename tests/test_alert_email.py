"""The email channel against real SMTP servers on loopback (aiosmtpd, and raw sockets for
servers that misbehave): what arrives in the mailbox, TLS and AUTH, which failures are
retried and on what schedule, and how long a hanging server can hold an attempt."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import socket
import ssl
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from asgimon.alerts.channels import Notification, load_channels
from asgimon.errors import ConfigError
from asgimon.plugins.email import EmailChannel, channel
from asgimon.settings import Settings

USER = "alerts@example.com"
PASSWORD = "p@ss w/rd:%"
SENDER = "asgimon@example.com"
AT = datetime(2024, 5, 1, 12, 0, tzinfo=UTC).timestamp()


@dataclass
class Received:
    mail_from: str | None
    rcpt_tos: list[str]
    message: EmailMessage
    tls: bool
    authenticated: bool


@dataclass
class Mailbox:
    """An aiosmtpd handler: answers DATA from ``replies`` first, then accepts."""

    replies: list[str] = field(default_factory=list)
    stall: float = 0.0
    received: list[Received] = field(default_factory=list)
    message_ids: list[str] = field(default_factory=list)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.original_content, bytes)
        message = message_from_bytes(envelope.original_content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        self.message_ids.append(str(message["Message-ID"]))
        if self.stall:
            await asyncio.sleep(self.stall)
        if self.replies:
            return self.replies.pop(0)
        self.received.append(
            Received(
                mail_from=envelope.mail_from,
                rcpt_tos=list(envelope.rcpt_tos),
                message=message,
                tls=session.ssl is not None,
                authenticated=bool(session.authenticated),
            )
        )
        return "250 2.0.0 queued as 1234"


class _Controller(Controller):
    """Binds port 0: the kernel picks a free port, so parallel runs cannot collide."""

    def _trigger_server(self) -> None:
        server = self.server
        assert isinstance(server, asyncio.Server)
        self.port = server.sockets[0].getsockname()[1]
        # aiosmtpd builds its SMTP object on the first connection: make one, read the greeting.
        with socket.create_connection((self.hostname, self.port), timeout=5) as probe:
            probe.recv(1024)


def _serve(handler: Mailbox, **smtp: Any) -> Iterator[int]:
    controller = _Controller(
        handler, hostname="127.0.0.1", port=0, server_hostname="mx.test", **smtp
    )
    controller.start()
    try:
        yield controller.port
    finally:
        controller.stop()


def _authenticate(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
) -> AuthResult:
    expected = LoginPassword(USER.encode(), PASSWORD.encode())
    return AuthResult(success=auth_data == expected, handled=False)


@pytest.fixture
def mailbox() -> Mailbox:
    return Mailbox()


@pytest.fixture
def smtp_port(mailbox: Mailbox) -> Iterator[int]:
    yield from _serve(mailbox)


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "asgimon test SMTP")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "smtp.crt", tmp_path / "smtp.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@pytest.fixture
def tls_port(mailbox: Mailbox, certificate: tuple[Path, Path]) -> Iterator[int]:
    """A server that insists on STARTTLS and then on AUTH, as a submission server does."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    yield from _serve(
        mailbox,
        tls_context=context,
        require_starttls=True,
        auth_required=True,
        authenticator=_authenticate,
    )


@pytest.fixture
def free_port() -> int:
    """A port nothing listens on: bound once by us, then released."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@dataclass
class Clock:
    """The channel's clock and sleep: the retry schedule runs without waiting."""

    t: float = 0.0
    sleeps: list[float] = field(default_factory=list)

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds


def _notification(**changes: Any) -> Notification:
    base = Notification(
        id="n-1f3a",
        project_id="shop",
        rule_id="r1",
        rule_name="High error rate",
        rule_type="error_rate",
        status="firing",
        summary="5xx responses above 5% for 5 minutes",
        at=AT,
        started_at=AT,
        value=7.5,
        threshold=5.0,
        unit="%",
        link="https://mon.example.com/alerts/r1",
        labels={"endpoint": "/checkout"},
    )
    return dataclasses.replace(base, **changes)


def _channel(url: str, clock: Clock | None = None, **settings: Any) -> EmailChannel:
    clock = clock or Clock()
    built = Settings(smtp_url=url, smtp_from=SENDER, smtp_timeout=0.5, **settings)
    return EmailChannel.from_settings(built, sleep=clock.sleep, now=clock.now, rng=lambda: 0.5)


def _parts(message: EmailMessage) -> tuple[str, str]:
    text, body = message.get_body(("plain",)), message.get_body(("html",))
    assert isinstance(text, EmailMessage)
    assert isinstance(body, EmailMessage)
    return text.get_content(), body.get_content()


TO = {"to": ["ops@example.com", "dev@example.com"]}


async def test_a_firing_alert_arrives_with_text_html_and_link(
    mailbox: Mailbox, smtp_port: int
) -> None:
    email = _channel(f"smtp://127.0.0.1:{smtp_port}")
    rule = "<script>alert(1)</script> & errors"

    delivery = await email.send(_notification(rule_name=rule), TO)

    assert delivery.ok, delivery.reason
    assert delivery.attempts == 1
    assert len(mailbox.received) == 1
    got = mailbox.received[0]
    assert got.mail_from == SENDER
    assert got.rcpt_tos == TO["to"]
    assert got.message["Subject"] == f"[asgimon] FIRING: {rule} (shop)"
    assert got.message["From"] == SENDER
    assert got.message["To"] == "ops@example.com, dev@example.com"
    assert got.message["Message-ID"] == "<asgimon.n-1f3a@example.com>"
    text, body = _parts(got.message)
    assert "5xx responses above 5% for 5 minutes" in text
    assert "7.5% (threshold 5%)" in text
    assert "endpoint: /checkout" in text
    assert "https://mon.example.com/alerts/r1" in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; errors" in body
    assert "<script>" not in body
    assert "href='https://mon.example.com/alerts/r1'" in body
    await email.aclose()


async def test_a_resolution_says_how_long_it_fired_and_what_was_held_back(
    mailbox: Mailbox, smtp_port: int
) -> None:
    email = _channel(f"smtp://127.0.0.1:{smtp_port}")
    resolved = _notification(status="resolved", started_at=AT - 3900, suppressed=3, link=None)

    delivery = await email.send(resolved, {"to": "ops@example.com"})

    assert delivery.ok, delivery.reason
    message = mailbox.received[0].message
    assert message["Subject"] == "[asgimon] RESOLVED: High error rate (shop)"
    text, body = _parts(message)
    assert "Fired for:" in text
    assert "1 h 5 min" in body
    assert "Suppressed repeats: 3 since the previous notification" in text
    assert "2024-05-01 12:00:00 UTC" in text
    assert "href" not in body


async def test_the_subject_stays_one_line_whatever_the_rule_is_called(
    mailbox: Mailbox, smtp_port: int
) -> None:
    email = _channel(f"smtp://127.0.0.1:{smtp_port}")
    rule = "Latenz über 800 ms\r\nBcc: evil@example.com"

    delivery = await email.send(_notification(status="test", rule_name=rule), TO)

    assert delivery.ok, delivery.reason
    got = mailbox.received[0]
    assert (
        got.message["Subject"] == "[asgimon] TEST: Latenz über 800 ms Bcc: evil@example.com (shop)"
    )
    assert got.message["Bcc"] is None
    assert got.rcpt_tos == TO["to"]


async def test_a_link_that_is_not_http_is_left_out(mailbox: Mailbox, smtp_port: int) -> None:
    email = _channel(f"smtp://127.0.0.1:{smtp_port}")

    delivery = await email.send(_notification(link="javascript:alert(1)"), TO)

    assert delivery.ok, delivery.reason
    text, body = _parts(mailbox.received[0].message)
    assert "javascript" not in body
    assert "javascript" not in text


async def test_auth_over_starttls_with_a_private_ca(
    mailbox: Mailbox, tls_port: int, certificate: tuple[Path, Path]
) -> None:
    url = (
        f"smtp://{quote(USER, safe='')}:{quote(PASSWORD, safe='')}@127.0.0.1:{tls_port}"
        f"?starttls=require&ca_file={certificate[0]}"
    )
    email = _channel(url)

    delivery = await email.send(_notification(), TO)

    assert delivery.ok, delivery.reason
    assert len(mailbox.received) == 1
    assert mailbox.received[0].tls
    assert mailbox.received[0].authenticated


async def test_a_wrong_password_fails_at_once(
    mailbox: Mailbox, tls_port: int, certificate: tuple[Path, Path]
) -> None:
    clock = Clock()
    url = f"smtp://{quote(USER, safe='')}:nope@127.0.0.1:{tls_port}?ca_file={certificate[0]}"
    email = _channel(url, clock)

    delivery = await email.send(_notification(), TO)

    assert not delivery.ok
    assert delivery.attempts == 1
    assert delivery.reason is not None
    assert "535" in delivery.reason
    assert clock.sleeps == []
    assert mailbox.received == []


async def test_an_untrusted_certificate_fails_at_once(mailbox: Mailbox, tls_port: int) -> None:
    url = f"smtp://{quote(USER, safe='')}:{quote(PASSWORD, safe='')}@127.0.0.1:{tls_port}"
    email = _channel(url)

    delivery = await email.send(_notification(), TO)

    assert not delivery.ok
    assert delivery.attempts == 1
    assert delivery.reason is not None
    assert "certificate" in delivery.reason
    assert mailbox.received == []


async def test_a_password_is_never_sent_in_clear(mailbox: Mailbox, smtp_port: int) -> None:
    email = _channel(f"smtp://alerts:hunter2@127.0.0.1:{smtp_port}")

    delivery = await email.send(_notification(), TO)

    assert not delivery.ok
    assert delivery.attempts == 1
    assert delivery.reason is not None
    assert "STARTTLS" in delivery.reason
    assert mailbox.message_ids == []


async def test_tempfail_twice_then_accepted_is_delivered_once(
    mailbox: Mailbox, smtp_port: int
) -> None:
    mailbox.replies = ["451 4.3.0 try again later"] * 2
    clock = Clock()
    email = _channel(f"smtp://127.0.0.1:{smtp_port}", clock)

    delivery = await email.send(_notification(), TO)

    assert delivery.ok, delivery.reason
    assert delivery.attempts == 3
    assert len(mailbox.received) == 1
    assert mailbox.message_ids == ["<asgimon.n-1f3a@example.com>"] * 3
    assert clock.sleeps == [0.5, 1.0]


async def test_a_permanent_refusal_is_not_retried(mailbox: Mailbox, smtp_port: int) -> None:
    mailbox.replies = ["550 5.7.1 message refused by policy"]
    clock = Clock()
    email = _channel(f"smtp://127.0.0.1:{smtp_port}", clock)

    delivery = await email.send(_notification(), TO)

    assert not delivery.ok
    assert delivery.attempts == 1
    assert delivery.reason == "550 5.7.1 message refused by policy"
    assert clock.sleeps == []
    assert mailbox.received == []


async def test_a_server_that_is_down_is_retried_with_growing_backoff(free_port: int) -> None:
    clock = Clock()
    email = _channel(f"smtp://127.0.0.1:{free_port}", clock, alerts_max_attempts=5)

    delivery = await email.send(_notification(), TO)

    assert not delivery.ok
    assert delivery.attempts == 5
    assert clock.sleeps == [0.5, 1.0, 2.0, 4.0]
    assert delivery.reason is not None
    assert f"127.0.0.1 on port {free_port}" in delivery.reason
    assert delivery.reason.endswith("(gave up after 5 attempts)")


@pytest.mark.parametrize(
    ("max_attempts", "deadline", "sleeps"),
    [
        pytest.param(9, 1000.0, [1, 2, 4, 8, 16, 32, 60, 60], id="capped-at-60s"),
        pytest.param(20, 100.0, [1, 2, 4, 8, 16, 32], id="stops-before-the-deadline"),
    ],
)
async def test_backoff_is_capped_and_kept_within_the_deadline(
    free_port: int, max_attempts: int, deadline: float, sleeps: list[float]
) -> None:
    clock = Clock()
    built = Settings(
        smtp_url=f"smtp://127.0.0.1:{free_port}",
        alerts_max_attempts=max_attempts,
        alerts_retry_deadline=deadline,
    )
    email = EmailChannel.from_settings(built, sleep=clock.sleep, now=clock.now, rng=lambda: 1.0)

    delivery = await email.send(_notification(), TO)

    assert not delivery.ok
    assert clock.sleeps == sleeps
    assert delivery.attempts == len(sleeps) + 1
    assert sum(clock.sleeps) <= deadline


@pytest.fixture
async def silent_port() -> AsyncIterator[int]:
    """Accepts connections and never sends the 220 greeting."""

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client gives up and closes
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port: int = server.sockets[0].getsockname()[1]
    yield port
    server.close()
    await server.wait_closed()


async def test_a_server_that_never_greets_is_given_up_on(silent_port: int) -> None:
    email = _channel(f"smtp://127.0.0.1:{silent_port}", alerts_max_attempts=1)
    started = time.monotonic()

    delivery = await email.send(_notification(), TO)

    assert time.monotonic() - started < 2
    assert not delivery.ok
    assert delivery.attempts == 1
    assert delivery.reason is not None
    assert "timed out" in delivery.reason.lower()


async def test_a_server_that_stalls_after_data_is_given_up_on(
    mailbox: Mailbox, smtp_port: int
) -> None:
    mailbox.stall = 30
    email = _channel(f"smtp://127.0.0.1:{smtp_port}", alerts_max_attempts=2)
    started = time.monotonic()

    delivery = await email.send(_notification(), TO)

    assert time.monotonic() - started < 3
    assert not delivery.ok
    assert delivery.attempts == 2
    assert len(mailbox.message_ids) == 2
    assert delivery.reason is not None
    assert "timed out" in delivery.reason.lower()


@pytest.mark.parametrize(
    ("target", "fields"),
    [
        ({"to": "ops@example.com"}, []),
        ({"to": ["a@example.com", " A@example.com ", "b@example.com"]}, []),
        ({}, ["to"]),
        ({"to": []}, ["to"]),
        ({"to": 5}, ["to"]),
        ({"to": [f"u{i}@example.com" for i in range(21)]}, ["to"]),
        ({"to": "not-an-address"}, ["to"]),
        ({"to": ["ok@example.com", "x@example.com\r\nBcc: all@example.com"]}, ["to[1]"]),
        ({"to": ["ok@example.com", 42, "a" * 250 + "@example.com"]}, ["to[1]", "to[2]"]),
        ({"to": "ops@example.com", "cc": "boss@example.com"}, ["cc"]),
    ],
)
def test_validate_names_each_bad_field(target: dict[str, Any], fields: list[str]) -> None:
    email = EmailChannel.from_settings(Settings(smtp_url="smtp://mail.example.com"))

    _, errors = email.validate(target)

    assert [e.field for e in errors] == fields


def test_validate_normalises_to_a_list_without_repeats() -> None:
    email = EmailChannel.from_settings(Settings(smtp_url="smtp://mail.example.com"))

    normalised, errors = email.validate({"to": ["a@example.com", " A@example.com ", "b@x.org"]})

    assert errors == []
    assert normalised == {"to": ["a@example.com", "b@x.org"]}


async def test_an_invalid_target_is_not_sent(mailbox: Mailbox, smtp_port: int) -> None:
    email = _channel(f"smtp://127.0.0.1:{smtp_port}")

    delivery = await email.send(_notification(), {"to": "x@example.com\nBcc: y@example.com"})

    assert not delivery.ok
    assert delivery.attempts == 0
    assert delivery.reason is not None
    assert delivery.reason.startswith("invalid target: to:")
    assert mailbox.message_ids == []


@pytest.mark.parametrize(
    "settings",
    [
        pytest.param(Settings(), id="no-url"),
        pytest.param(
            Settings.from_env(
                {"ALERTS_SMTP_URL": "smtp://mail.example.com", "EMAIL_ALERTS_ENABLED": "false"}
            ),
            id="disabled",
        ),
    ],
)
def test_the_factory_builds_nothing_when_email_is_off(settings: Settings) -> None:
    assert channel(settings) is None


@pytest.mark.parametrize(
    ("url", "secret"),
    [
        ("smtp://", "hunter2"),
        ("smtp://alerts:hunter2@/?starttls=require", "hunter2"),
        ("smtp://alerts:hunter2@mail.example.com?starttls=sometimes", "hunter2"),
        ("smtps://alerts:hunter2@mail.example.com?starttls=require", "hunter2"),
        ("smtp://alerts:hunter2@mail.example.com:99999", "hunter2"),
        ("smtp://alerts:hunter2@mail.example.com/inbox", "hunter2"),
        ("smtp://alerts:hunter2@mail.example.com?verify=no", "hunter2"),
        ("smtp://alerts:hunter2@mail.example.com?ca_file=/nonexistent/ca.pem", "hunter2"),
        ("smtp://alerts:hun/ter2@mail.example.com", "ter2"),
    ],
)
def test_a_bad_url_is_a_config_error_that_hides_the_password(url: str, secret: str) -> None:
    with pytest.raises(ConfigError) as caught:
        channel(Settings(smtp_url=url))

    assert caught.value.name == "ALERTS_SMTP_URL"
    assert secret not in str(caught.value)


async def test_load_channels_finds_email_through_its_entry_point() -> None:
    channels = load_channels(Settings(smtp_url="smtp://mail.example.com"))

    assert isinstance(channels.get("email"), EmailChannel)
    for built in channels.values():
        await built.aclose()


async def test_a_closed_channel_sends_nothing(mailbox: Mailbox, smtp_port: int) -> None:
    email = _channel(f"smtp://127.0.0.1:{smtp_port}")
    await email.aclose()

    delivery = await email.send(_notification(), TO)

    assert not delivery.ok
    assert delivery.attempts == 0
    assert mailbox.message_ids == []


def test_a_bad_smtp_url_stops_start_up_naming_it_and_never_shows_the_password() -> None:
    from asgimon import ConfigError, Monitor

    with pytest.raises(ConfigError, match="ALERTS_SMTP_URL") as bad:
        Monitor(smtp_url="smtp://alerts:s3cret@?starttls=maybe")
    assert "s3cret" not in str(bad.value)
    with pytest.raises(ConfigError, match="ALERTS_SMTP_URL") as wrong_scheme:
        Monitor(smtp_url="ftp://alerts:s3cret@mail.example.com")
    assert "s3cret" not in str(wrong_scheme.value)
