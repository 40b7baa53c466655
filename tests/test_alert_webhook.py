"""The webhook channel against a real receiver on loopback that verifies and deduplicates."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email.utils
import itertools
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from asgimon.alerts.channels import Notification, load_channels
from asgimon.plugins.ssrf import Resolve
from asgimon.plugins.webhook import MAX_ANSWER_BYTES, WebhookChannel
from asgimon.settings import Settings

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
LOOPBACK = ("127.0.0.0/8", "::1/128")
FLOOD_BYTES = 10 * 1024 * 1024

Behaviour = Literal["answer", "hang", "drip", "drip-body", "flood"]


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"
    behaviour: Behaviour = "answer"


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    verified: bool


class Receiver:
    """An HTTP/1.1 webhook endpoint that answers from a script and keeps count of everything.

    It verifies each request as a receiver following Standard Webhooks would, processes a
    message only when it answers 2xx and has not processed that ``webhook-id`` before, and
    counts accepted connections so a test can tell "refused" from "tried and failed".
    """

    def __init__(self, secret: str = SECRET, replies: Sequence[Reply] = ()) -> None:
        self.secret = secret
        self.replies = list(replies)
        self.connections = 0
        self.requests: list[Received] = []
        self.processed: dict[str, Any] = {}
        self.duplicates = 0
        self.flooded = 0
        self.flood_over = asyncio.Event()
        self.server_names: list[str | None] = []
        self.port = 0
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self, tls: ssl.SSLContext | None = None) -> Receiver:
        if tls is not None:
            tls.sni_callback = lambda _sock, name, _ctx: self.server_names.append(name)
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=tls)
        self._servers.append(server)
        self.port = server.sockets[0].getsockname()[1]
        # The same port on ::1, so that a refused [::1] URL would have found a listener.
        with contextlib.suppress(OSError):
            self._servers.append(await asyncio.start_server(self._serve, "::1", self.port, ssl=tls))
        return self

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()

    @property
    def ipv6(self) -> bool:
        return len(self._servers) > 1

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")[1:]
                headers = {}
                for line in filter(None, lines):
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                reply = self.replies.pop(0) if self.replies else Reply()
                await self._answer(writer, self._receive(headers, body, reply))
        except ConnectionError:
            return
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()

    def _receive(self, headers: dict[str, str], body: bytes, reply: Reply) -> Reply:
        try:
            payload = Webhook(self.secret).verify(body, headers)
        except WebhookVerificationError:
            self.requests.append(Received(headers, body, verified=False))
            return Reply(401)
        self.requests.append(Received(headers, body, verified=True))
        if 200 <= reply.status < 300:
            if headers["webhook-id"] in self.processed:
                self.duplicates += 1
            else:
                self.processed[headers["webhook-id"]] = payload
        return reply

    async def _answer(self, writer: asyncio.StreamWriter, reply: Reply) -> None:
        size = {"answer": len(reply.body), "flood": FLOOD_BYTES}.get(reply.behaviour, 10**6)
        head = f"HTTP/1.1 {reply.status} Scripted\r\ncontent-length: {size}\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in reply.headers.items())
        start = (head + "\r\n").encode()
        if reply.behaviour == "answer":
            writer.write(start + reply.body)
            await writer.drain()
        elif reply.behaviour == "hang":
            await asyncio.get_running_loop().create_future()
        elif reply.behaviour in ("drip", "drip-body"):
            if reply.behaviour == "drip-body":
                writer.write(start)
                start = b""
            for byte in itertools.chain(start, itertools.repeat(ord("x"))):
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.2)
        else:
            await self._flood(writer, start)

    async def _flood(self, writer: asyncio.StreamWriter, start: bytes) -> None:
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
        writer.write(start)
        chunk = b"x" * 65536
        try:
            while self.flooded < FLOOD_BYTES:
                writer.write(chunk)
                await writer.drain()
                self.flooded += len(chunk)
        finally:
            self.flood_over.set()


class FakeClock:
    """A clock that only moves when the channel sleeps, so retry schedules take no time."""

    def __init__(self) -> None:
        self.t = float(int(time.time()))
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds
        await asyncio.sleep(0)


class Channels:
    """Builds channels on loopback-allowing settings and closes them all afterwards."""

    def __init__(self) -> None:
        self.made: list[WebhookChannel] = []
        self.clock = FakeClock()

    def __call__(
        self,
        *,
        rng: Callable[[], float] = lambda: 1.0,
        verify: ssl.SSLContext | bool = True,
        resolve: Resolve | None = None,
        **settings: Any,
    ) -> WebhookChannel:
        values: dict[str, Any] = {"webhook_allow": LOOPBACK, "webhook_timeout": 0.5}
        values.update(settings)
        channel = WebhookChannel(
            Settings(**values),
            sleep=self.clock.sleep,
            now=self.clock.now,
            wall=self.clock.now,
            rng=rng,
            verify=verify,
            resolve=resolve,
        )
        self.made.append(channel)
        return channel


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    receiver = await Receiver().start()
    yield receiver
    await receiver.stop()


@pytest.fixture
async def channels() -> AsyncIterator[Channels]:
    channels = Channels()
    yield channels
    for channel in channels.made:
        await channel.aclose()


def alert(msg_id: str = "msg_2Zx8b1c4") -> Notification:
    return Notification(
        id=msg_id,
        project_id="shop",
        rule_id="rule_1",
        rule_name="Checkout errors",
        rule_type="error_rate",
        status="firing",
        summary="Error rate 12% is above 5% on POST /checkout",
        at=time.time(),
        value=12.0,
        threshold=5.0,
        unit="%",
        labels={"endpoint": "POST /checkout"},
    )


def target(url: str) -> dict[str, str]:
    return {"url": url, "secret": SECRET}


# -- Delivery and signatures ------------------------------------------------------------


async def test_a_delivery_verifies_with_the_standard_webhooks_library(
    receiver: Receiver, channels: Channels
) -> None:
    channel = channels()
    normal, errors = channel.validate({"url": receiver.url})
    assert errors == []
    receiver.secret = normal["secret"]
    notification = alert()

    delivery = await channel.send(notification, normal)

    assert delivery.ok
    assert delivery.attempts == 1
    assert [r.verified for r in receiver.requests] == [True]
    assert receiver.processed == {notification.id: notification.to_json()}
    headers = receiver.requests[0].headers
    assert headers["content-type"] == "application/json"
    assert headers["host"] == f"127.0.0.1:{receiver.port}"
    assert receiver.connections == 1


async def test_a_wrong_secret_is_caught_by_the_receiver(
    receiver: Receiver, channels: Channels
) -> None:
    other = "whsec_" + base64.b64encode(b"o" * 32).decode()
    delivery = await channels().send(alert(), {"url": receiver.url, "secret": other})
    assert not delivery.ok
    assert delivery.reason == "HTTP 401"
    assert [r.verified for r in receiver.requests] == [False]


async def test_500_three_times_then_200_is_processed_once(
    receiver: Receiver, channels: Channels
) -> None:
    receiver.replies = [Reply(500), Reply(500), Reply(500)]
    notification = alert()

    delivery = await channels().send(notification, target(receiver.url))

    assert delivery.ok
    assert delivery.attempts == 4
    assert delivery.reason == "HTTP 200 on attempt 4"
    sent = [r.headers for r in receiver.requests]
    assert {h["webhook-id"] for h in sent} == {notification.id}
    assert len({h["webhook-timestamp"] for h in sent}) == 4
    assert len({h["webhook-signature"] for h in sent}) == 4
    assert all(r.verified for r in receiver.requests)
    assert list(receiver.processed) == [notification.id]
    assert receiver.duplicates == 0
    assert channels.clock.sleeps == [1.0, 2.0, 4.0]


async def test_pauses_grow_exponentially_with_full_jitter_up_to_the_cap(
    receiver: Receiver, channels: Channels
) -> None:
    receiver.replies = [Reply(500)] * 10
    channel = channels(rng=lambda: 0.5, alerts_max_attempts=10, alerts_retry_deadline=3600)

    delivery = await channel.send(alert(), target(receiver.url))

    assert not delivery.ok
    assert delivery.attempts == 10
    assert delivery.reason == "HTTP 500 after 10 attempts"
    assert channels.clock.sleeps == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]


async def test_retries_stop_at_the_retry_deadline(receiver: Receiver, channels: Channels) -> None:
    receiver.replies = [Reply(503)] * 20
    channel = channels(alerts_max_attempts=20, alerts_retry_deadline=10)

    delivery = await channel.send(alert(), target(receiver.url))

    assert not delivery.ok
    assert delivery.attempts == 4
    assert delivery.reason == ("HTTP 503 after 4 attempts; the retry deadline of 10 s is reached")
    assert channels.clock.sleeps == [1, 2, 4]


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
async def test_transient_answers_are_retried(
    status: int, receiver: Receiver, channels: Channels
) -> None:
    receiver.replies = [Reply(status)]
    delivery = await channels().send(alert(), target(receiver.url))
    assert delivery.ok
    assert delivery.attempts == 2


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
async def test_other_client_errors_are_final(
    status: int, receiver: Receiver, channels: Channels
) -> None:
    receiver.replies = [Reply(status)]
    delivery = await channels().send(alert(), target(receiver.url))
    assert not delivery.ok
    assert delivery.attempts == 1
    assert delivery.reason == f"HTTP {status}"
    assert not delivery.disable
    assert channels.clock.sleeps == []


@pytest.mark.parametrize(
    ("status", "retry_after", "expected"),
    [(429, "3", 3.0), (503, "3", 3.0), (429, "date+5", 5.0)],
)
async def test_retry_after_is_honoured(
    status: int, retry_after: str, expected: float, receiver: Receiver, channels: Channels
) -> None:
    channel = channels()
    if retry_after == "date+5":
        retry_after = email.utils.formatdate(channels.clock.now() + 5, usegmt=True)
    receiver.replies = [Reply(status, {"retry-after": retry_after})]

    delivery = await channel.send(alert(), target(receiver.url))

    assert delivery.ok
    assert delivery.attempts == 2
    assert channels.clock.sleeps == [pytest.approx(expected)]


async def test_a_retry_after_past_the_deadline_gives_up(
    receiver: Receiver, channels: Channels
) -> None:
    receiver.replies = [Reply(429, {"retry-after": "3"})]
    delivery = await channels(alerts_retry_deadline=2).send(alert(), target(receiver.url))
    assert not delivery.ok
    assert delivery.attempts == 1
    assert delivery.reason == "HTTP 429; Retry-After 3 s is past the retry deadline"
    assert channels.clock.sleeps == []


async def test_410_disables_the_target(receiver: Receiver, channels: Channels) -> None:
    receiver.replies = [Reply(410)]
    delivery = await channels().send(alert(), target(receiver.url))
    assert delivery.disable
    assert not delivery.ok
    assert delivery.attempts == 1
    assert len(receiver.requests) == 1


async def test_a_refused_connection_is_retried(channels: Channels) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    delivery = await channels(alerts_max_attempts=3).send(
        alert(), target(f"http://127.0.0.1:{port}/")
    )
    assert not delivery.ok
    assert delivery.attempts == 3
    assert delivery.reason is not None
    assert delivery.reason.startswith("cannot deliver: ")
    assert delivery.reason.endswith(" after 3 attempts")


# -- Misbehaving receivers ----------------------------------------------------------------


async def test_a_redirect_is_not_followed(receiver: Receiver, channels: Channels) -> None:
    elsewhere = await Receiver().start()
    try:
        receiver.replies = [Reply(302, {"location": elsewhere.url})]
        delivery = await channels().send(alert(), target(receiver.url))
    finally:
        await elsewhere.stop()
    assert not delivery.ok
    assert delivery.attempts == 1
    assert delivery.reason == "HTTP 302: redirects are not followed"
    assert elsewhere.connections == 0


@pytest.mark.parametrize("behaviour", ["hang", "drip"])
async def test_a_silent_or_dripping_receiver_is_cut_at_the_deadline(
    behaviour: Behaviour, receiver: Receiver, channels: Channels
) -> None:
    receiver.replies = [Reply(behaviour=behaviour)]
    started = time.perf_counter()
    async with asyncio.timeout(5):  # fail, rather than hang, if the deadline is per read
        delivery = await channels(alerts_max_attempts=1).send(alert(), target(receiver.url))
    elapsed = time.perf_counter() - started
    assert not delivery.ok
    assert delivery.reason == "no answer within 0.5 s"
    assert elapsed < 1.5


async def test_a_200_whose_body_drips_is_delivered_within_the_deadline(
    receiver: Receiver, channels: Channels
) -> None:
    receiver.replies = [Reply(behaviour="drip-body")]
    started = time.perf_counter()
    async with asyncio.timeout(5):
        delivery = await channels(alerts_max_attempts=1).send(alert(), target(receiver.url))
    assert time.perf_counter() - started < 1.5
    assert delivery.ok


async def test_a_10_mb_answer_is_not_read_to_the_end(
    receiver: Receiver, channels: Channels
) -> None:
    receiver.replies = [Reply(behaviour="flood")]
    # Long enough that only the cap, not the deadline, can stop the reading.
    delivery = await channels(webhook_timeout=5.0).send(alert(), target(receiver.url))
    assert delivery.ok
    await asyncio.wait_for(receiver.flood_over.wait(), 5)
    # What the receiver got out is what was read plus what the kernels' buffers soaked up.
    assert MAX_ANSWER_BYTES <= receiver.flooded < FLOOD_BYTES // 2


# -- Where it may connect ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:{port}/", "refused: 127.0.0.1 is loopback"),
        ("http://localhost:{port}/", "refused: localhost resolves to 127.0.0.1, which is loopback"),
        ("http://2130706433:{port}/", "refused: 2130706433 resolves to 127.0.0.1, which is lo"),
        ("http://0x7f000001:{port}/", "refused: 0x7f000001 resolves to 127.0.0.1, which is lo"),
        ("http://127.1:{port}/", "refused: 127.1 resolves to 127.0.0.1, which is loopback"),
        ("http://[::ffff:127.0.0.1]:{port}/", "refused: ::ffff:127.0.0.1 resolves to 127.0.0.1"),
        ("http://[::1]:{port}/", "refused: ::1 is loopback"),
        # The URL parser already rejects this spelling; the guard would refuse it as loopback.
        ("http://0177.0.0.1:{port}/", "invalid target: url: not a valid URL"),
        ("http://169.254.169.254/", "refused: 169.254.169.254 is the cloud metadata address"),
        ("http://10.0.0.1/", "refused: 10.0.0.1 is private and not in ALERTS_WEBHOOK_ALLOW"),
    ],
)
async def test_private_destinations_are_refused_without_connecting(
    url: str, reason: str, receiver: Receiver, channels: Channels
) -> None:
    channel = channels(webhook_allow=())
    delivery = await channel.send(alert(), target(url.format(port=receiver.port)))
    assert not delivery.ok
    assert delivery.reason is not None
    assert delivery.reason.startswith(reason)
    assert delivery.attempts == (0 if reason.startswith("invalid target") else 1)
    assert receiver.connections == 0
    assert channels.clock.sleeps == []


async def test_an_allowlisted_ipv6_loopback_is_reached(
    receiver: Receiver, channels: Channels
) -> None:
    if not receiver.ipv6:
        pytest.skip("no IPv6 loopback here")
    delivery = await channels(webhook_allow=("::1/128",)).send(
        alert(), target(f"http://[::1]:{receiver.port}/hook")
    )
    assert delivery.ok
    assert receiver.requests[0].headers["host"] == f"[::1]:{receiver.port}"


async def test_the_connection_goes_to_the_address_that_was_checked(
    receiver: Receiver, channels: Channels
) -> None:
    # The system resolver knows nothing of this name: only the checked answer can lead to
    # the receiver, so a second lookup by the HTTP client would fail the delivery.
    async def resolve(host: str, port: int) -> Sequence[str]:
        return ["127.0.0.1"] if host == "hooks.example.invalid" else []

    channel = channels(resolve=resolve)
    url = f"http://hooks.example.invalid:{receiver.port}/hook"
    delivery = await channel.send(alert(), target(url))
    assert delivery.ok
    assert receiver.requests[0].headers["host"] == f"hooks.example.invalid:{receiver.port}"


def issue_certificate(tmp_path: Path, name: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context whose certificate names ``name``, and a client context trusting it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "asgimon test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cadata=ca.public_bytes(serialization.Encoding.PEM).decode())
    return server, client


async def test_https_connects_to_the_checked_address_and_verifies_the_name(
    tmp_path: Path, channels: Channels
) -> None:
    server, client = issue_certificate(tmp_path, "localhost")
    receiver = await Receiver().start(tls=server)
    try:
        url = f"https://localhost:{receiver.port}/hook"
        delivery = await channels(verify=client).send(alert(), target(url))
    finally:
        await receiver.stop()
    assert delivery.ok
    assert receiver.server_names == ["localhost"]
    assert receiver.requests[0].headers["host"] == f"localhost:{receiver.port}"


async def test_https_refuses_a_certificate_for_another_name(
    tmp_path: Path, channels: Channels
) -> None:
    server, client = issue_certificate(tmp_path, "elsewhere.test")
    receiver = await Receiver().start(tls=server)
    try:
        url = f"https://localhost:{receiver.port}/hook"
        channel = channels(verify=client, alerts_max_attempts=1)
        delivery = await channel.send(alert(), target(url))
    finally:
        await receiver.stop()
    assert not delivery.ok
    assert delivery.reason is not None
    assert "CERTIFICATE_VERIFY_FAILED" in delivery.reason
    assert receiver.requests == []


# -- Targets ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        None,
        42,
        "",
        "hooks.example.com/asgimon",
        "ftp://hooks.example.com/",
        "javascript:alert(1)",
        "http:///path-only",
        "https://user:pass@hooks.example.com/",
        "https://token@hooks.example.com/",
        "https://hooks.example.com/" + "a" * 2030,
        "http://0177.0.0.1/",
    ],
)
def test_a_bad_url_is_named(url: object, channels: Channels) -> None:
    _, errors = channels().validate({"url": url, "secret": SECRET})
    assert [e.field for e in errors] == ["url"]


@pytest.mark.parametrize(
    "secret",
    [
        42,
        "",
        base64.b64encode(b"k" * 32).decode(),
        "whsec_",
        "whsec_not base64!",
        "whsec_" + base64.b64encode(b"k" * 15).decode(),
        "whsec_" + base64.b64encode(b"k" * 65).decode(),
    ],
)
def test_a_bad_secret_is_named(secret: object, channels: Channels) -> None:
    _, errors = channels().validate({"url": "https://hooks.example.com/", "secret": secret})
    assert [e.field for e in errors] == ["secret"]


def test_an_unknown_key_is_named(channels: Channels) -> None:
    _, errors = channels().validate({"url": "https://hooks.example.com/", "headers": {}})
    assert [e.field for e in errors] == ["headers"]


def test_a_good_target_is_normalised(channels: Channels) -> None:
    normal, errors = channels().validate({"url": "HTTPS://Hooks.Example.COM/a", "secret": SECRET})
    assert errors == []
    assert normal == {"url": "https://hooks.example.com/a", "secret": SECRET}


def test_a_missing_secret_is_made(channels: Channels) -> None:
    channel = channels()
    first, errors = channel.validate({"url": "https://hooks.example.com/"})
    second, _ = channel.validate({"url": "https://hooks.example.com/"})
    assert errors == []
    assert first["secret"].startswith("whsec_")
    assert len(base64.b64decode(first["secret"].removeprefix("whsec_"))) == 32
    assert first["secret"] != second["secret"]


async def test_a_target_without_a_secret_is_not_sent(
    receiver: Receiver, channels: Channels
) -> None:
    delivery = await channels().send(alert(), {"url": receiver.url})
    assert not delivery.ok
    assert delivery.attempts == 0
    assert delivery.reason == "invalid target: secret: missing"
    assert receiver.connections == 0


# -- Found through the entry point ------------------------------------------------------


async def test_load_channels_finds_the_webhook_channel() -> None:
    found = load_channels(Settings())
    try:
        assert isinstance(found.get("webhook"), WebhookChannel)
    finally:
        for channel in found.values():
            await channel.aclose()


async def test_webhook_alerts_can_be_turned_off() -> None:
    found = load_channels(Settings.from_env({"WEBHOOK_ALERTS_ENABLED": "false"}))
    try:
        assert "webhook" not in found
    finally:
        for channel in found.values():
            await channel.aclose()
