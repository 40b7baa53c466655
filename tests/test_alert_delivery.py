"""Alerts from real traffic delivered by a real SMTP server and a real webhook receiver on
loopback; a channel that hangs costs only itself, and never the host app."""

from __future__ import annotations

import asyncio
import email
import email.policy
import socket
import time
from collections.abc import AsyncIterator, Iterator
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from asgimon import MemoryStorage
from asgimon.alerts.records import DELIVERY

from .alerting import Shop, open_shop
from .pg_cluster import free_port
from .webhook_receiver import SECRET, Received, webhook_receiver


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append(parsed)
        return "250 OK"


@pytest.fixture
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    box = Mailbox()
    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield box, port
    finally:
        controller.stop()


@pytest.fixture
async def hook() -> AsyncIterator[Received]:
    async with webhook_receiver() as received:
        yield received


def channels(hook: Received) -> list[dict[str, Any]]:
    return [
        {"type": "email", "to": ["ops@example.com", "oncall@example.com"]},
        {"type": "webhook", "url": hook.url, "secret": SECRET},
        {"type": "inapp"},
    ]


async def deliveries(shop: Shop) -> list[dict[str, Any]]:
    found = await shop.monitor.storage.alert_history("default", kinds=[DELIVERY], limit=100)
    return [e.body for e in reversed(found)]


async def test_a_firing_and_a_resolved_alert_reach_every_channel_once(
    mailbox: tuple[Mailbox, int], hook: Received
) -> None:
    box, port = mailbox
    settings: dict[str, Any] = {
        "smtp_url": f"smtp://127.0.0.1:{port}?starttls=off",
        "webhook_allow": ("127.0.0.1/32",),
        "dashboard_url": "https://ops.example/analytics",
    }
    async for shop in open_shop(**settings):
        rule = await shop.rule(
            type="error_rate", name="Checkout <failing>", threshold=20, channels=channels(hook)
        )
        await shop.client.get("/boom")
        await shop.client.get("/ok")
        now = time.time()
        await shop.evaluate(now)
        await hook.wait_for(1)
        await shop.evaluate(now + 360)
        await hook.wait_for(2)

        assert [b["type"] for b in hook.bodies] == ["alert.firing", "alert.resolved"]
        firing = hook.bodies[0]
        assert firing["ruleId"] == rule
        assert firing["value"] == 50
        assert firing["threshold"] == 20
        assert firing["link"] == f"https://ops.example/analytics/alerts?project=default#rule-{rule}"
        assert hook.forged == 0
        assert hook.requests == 2

        assert len(box.messages) == 2
        message = box.messages[0]
        assert "FIRING" in message["Subject"]
        assert "Checkout <failing>" in message["Subject"]
        assert message["To"] == "ops@example.com, oncall@example.com"
        html = message.get_body(("html",))
        text = message.get_body(("plain",))
        assert html is not None
        assert text is not None
        assert "Checkout &lt;failing&gt;" in html.get_content()
        assert firing["link"] in text.get_content()
        assert "RESOLVED" in box.messages[1]["Subject"]

        assert [n.body["status"] for n in await shop.inbox(rule)] == ["firing", "resolved"]
        outcomes = [(d["channel"], d["status"], d["ok"]) for d in await deliveries(shop)]
        assert sorted(outcomes) == sorted(
            (c, s, True) for c in ("email", "webhook", "inapp") for s in ("firing", "resolved")
        )


def hanging_smtp() -> tuple[socket.socket, int]:
    """Accepts connections and never sends the 220 banner."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    return listener, listener.getsockname()[1]


async def test_a_hanging_smtp_server_delays_neither_the_other_channels_nor_the_host(
    hook: Received,
) -> None:
    listener, port = hanging_smtp()
    settings: dict[str, Any] = {
        "smtp_url": f"smtp://127.0.0.1:{port}?starttls=off",
        "smtp_timeout": 0.5,
        "alerts_max_attempts": 2,
        "alerts_retry_deadline": 3.0,
        "webhook_allow": ("127.0.0.1/32",),
    }
    try:
        async for shop in open_shop(**settings):
            rule = await shop.rule(type="critical_error", channels=channels(hook))
            started = time.monotonic()
            shop.monitor.capture_exception(RuntimeError("ledger"), severity="critical")
            await shop.monitor.recorder.flush()
            await hook.wait_for(1, timeout=5)
            webhook_took = time.monotonic() - started
            assert webhook_took < 1.0  # not behind the email's timeouts
            # The host answers as fast as ever while the email hangs.
            for _ in range(20):
                t = time.monotonic()
                assert (await shop.client.get("/ok")).status_code == 200
                assert time.monotonic() - t < 0.25
            assert [n.body["status"] for n in await shop.inbox(rule)] == ["firing"]

            assert await shop.engine.outbox.settled(timeout=10)
            email_took = time.monotonic() - started
            assert email_took < 3.0 + 1.0  # no attempt outlived the deadline
            by_channel = {d["channel"]: d for d in await deliveries(shop)}
            assert by_channel["webhook"]["ok"] is True
            assert by_channel["inapp"]["ok"] is True
            failed = by_channel["email"]
            assert failed["ok"] is False
            assert failed["attempts"] == 2
            assert len(failed["tries"]) == 2  # each attempt's outcome, in the history
            assert all("timed out" in t for t in failed["tries"]), failed["tries"]
            assert failed["reason"]
    finally:
        listener.close()


async def test_a_webhook_that_hangs_is_recorded_as_failed_and_email_still_arrives(
    mailbox: tuple[Mailbox, int],
) -> None:
    box, smtp_port = mailbox
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    settings: dict[str, Any] = {
        "smtp_url": f"smtp://127.0.0.1:{smtp_port}?starttls=off",
        "webhook_timeout": 0.5,
        "alerts_max_attempts": 1,
        "webhook_allow": ("127.0.0.1/32",),
    }
    try:
        async for shop in open_shop(**settings):
            rule = await shop.rule(
                type="critical_error",
                channels=[
                    {"type": "webhook", "url": f"http://127.0.0.1:{port}/hook"},
                    {"type": "email", "to": "ops@example.com"},
                ],
            )
            shop.monitor.capture_exception(RuntimeError("ledger"), severity="critical")
            await shop.settle()
            assert len(box.messages) == 1
            by_channel = {d["channel"]: d for d in await deliveries(shop)}
            assert by_channel["email"]["ok"] is True
            assert by_channel["webhook"]["ok"] is False
            assert "0.5 s" in by_channel["webhook"]["reason"]
            assert (await shop.state(rule)).status == "firing"
    finally:
        listener.close()


async def test_a_webhook_gone_for_good_is_disabled_and_its_owner_told(hook: Received) -> None:
    async def gone(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 410 Gone\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(gone, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async for shop in open_shop(webhook_allow=("127.0.0.1/32",)):
            rule = await shop.rule(
                type="critical_error",
                channels=[{"type": "webhook", "url": f"http://127.0.0.1:{port}/old"}],
            )
            shop.monitor.capture_exception(RuntimeError("ledger"), severity="critical")
            await shop.settle()
            held = await shop.engine.rule(rule)
            assert held is not None
            assert held.channels[0]["disabled"] is True
            (told,) = await shop.inbox(rule)
            assert "410 Gone" in told.body["summary"]
            (outcome,) = await deliveries(shop)
            assert outcome["disabled"] is True
            assert outcome["attempts"] == 1
    finally:
        server.close()
        await server.wait_closed()


async def test_a_delivery_cut_short_by_shutdown_is_recorded_as_not_sent() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    storage = MemoryStorage()
    try:
        async for shop in open_shop(storage, webhook_allow=("127.0.0.1/32",), shutdown_timeout=1.0):
            await shop.rule(
                type="critical_error",
                channels=[{"type": "webhook", "url": f"http://127.0.0.1:{port}/hook"}],
            )
            shop.monitor.capture_exception(RuntimeError("ledger"), severity="critical")
            await shop.monitor.recorder.flush()
            assert await shop.monitor.recorder.sinks.settled()
            started = time.monotonic()
        # The monitor has stopped, within its budget, the webhook still hanging.
        assert time.monotonic() - started < 3.0
        found = await storage.alert_history("default", kinds=[DELIVERY])
        (outcome,) = [e.body for e in found]
        assert outcome["ok"] is False
        assert outcome["reason"] == "not sent: the process shut down first"
    finally:
        listener.close()


async def test_a_hanging_webhook_holds_back_only_itself(hook: Received) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    port = listener.getsockname()[1]
    settings: dict[str, Any] = {
        "webhook_allow": ("127.0.0.1/32",),
        "webhook_timeout": 2.0,
        "alerts_max_attempts": 1,
    }
    try:
        async for shop in open_shop(**settings):
            stuck = {"type": "webhook", "url": f"http://127.0.0.1:{port}/hook"}
            for i in range(6):  # more than any worker pool shared by every webhook would hold
                await shop.rule(type="critical_error", name=f"stuck {i}", channels=[stuck])
            await shop.rule(
                type="critical_error",
                name="healthy",
                channels=[{"type": "webhook", "url": hook.url, "secret": SECRET}],
            )
            started = time.monotonic()
            shop.monitor.capture_exception(RuntimeError("ledger"), severity="critical")
            await shop.monitor.recorder.flush()
            await hook.wait_for(1, timeout=5)
            assert time.monotonic() - started < 1.5  # not behind six two-second hangs
            assert hook.bodies[0]["ruleName"] == "healthy"
    finally:
        listener.close()
