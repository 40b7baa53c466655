"""Secrets planted in a failing request are found nowhere in storage: every table, every key,
the SQLite file's bytes. Scrubbing happens before anything is queued, on every backend."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from asgimon import MemoryStorage, Monitor, Storage
from asgimon.errortracking.logs import ErrorLogHandler
from asgimon.errortracking.scrub import Scrubber
from asgimon.storage.redis import RedisStorage
from asgimon.storage.sql import SQLStorage

SECRETS = {
    "header": "hdr-Secret-7Qm2xV9p",
    "api_key_header": "key-Secret-4Tn8wB3c",
    "cookie": "ck-Secret-9Lp1zR6d",
    "query": "qs-Secret-2Hs5yK8f",
    "body": "bd-Secret-6Wd3jM1g",
    "message": "msg-Secret-8Xc4nP7h",
    "local": "loc-Secret-3Vb9qT2k",
    "card": "4242 4242 4242 4242",
}


async def login(request: Request) -> Response:
    form = {"username": "ann", "password": SECRETS["body"]}  # what the app parsed
    monitor: Monitor = request.app.state.monitor
    try:
        raise PermissionError(f"login refused for ann: password={SECRETS['message']}")
    except PermissionError as exc:
        monitor.capture_exception(exc, context={"form": form, "card": SECRETS["card"]})
    api_token = SECRETS["local"]
    raise RuntimeError(
        f"session store down; token echoed {request.headers['authorization'][7:]} "
        f"and {request.query_params['access_token']} and {len(api_token)}"
    )


async def checkout(request: Request) -> Response:
    logging.getLogger("shop.checkout").error(
        "charge declined for card %s with key %s", SECRETS["card"], SECRETS["api_key_header"]
    )
    return PlainTextResponse("declined", status_code=502)


async def dump(storage: Storage, tmp: Path) -> bytes:
    """Every byte the store holds."""
    if isinstance(storage, SQLStorage) and storage.dialect == "sqlite":
        await storage.close()
        path = Path(storage.url.split("///", 1)[1])
        return b"".join(
            p.read_bytes() for p in path.parent.iterdir() if p.name.startswith(path.name)
        )
    if isinstance(storage, SQLStorage):
        import asyncpg  # type: ignore[import-untyped]

        from .conftest import PG_URL

        conn = await asyncpg.connect(PG_URL)
        try:
            tables = await conn.fetch(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = $1",
                storage.schema,
            )
            assert len(tables) >= 8
            out: list[bytes] = []
            for (name,) in tables:
                rows = await conn.fetch(f'SELECT t::text FROM "{storage.schema}"."{name}" t')
                out.extend(r[0].encode() for r in rows)
            return b"\n".join(out)
        finally:
            await conn.close()
    assert isinstance(storage, RedisStorage)
    r = storage._redis()
    texts: list[str] = []
    async for key in r.scan_iter(match=f"{storage.prefix}:*", count=1000):
        kind = await r.type(key)
        if kind == "string":
            texts.append(str(await r.get(key)))
        elif kind == "hash":
            texts.append(str(await r.hgetall(key)))
        elif kind == "zset":
            texts.append(str(await r.zrange(key, 0, -1, withscores=True)))
        elif kind == "set":
            texts.append(str(await r.smembers(key)))
        elif kind == "list":
            texts.append(str(await r.lrange(key, 0, -1)))
        texts.append(key)
    return "\n".join(texts).encode()


@pytest.mark.parametrize("storage", ["sqlite", "postgresql", "redis"], indirect=True)
async def test_planted_secrets_are_stored_nowhere(storage: Storage, tmp_path: Path) -> None:
    monitor = Monitor(
        storage=storage, flush_interval=0.01, error_include_locals=True, api_call_sample_rate=1.0
    )
    app = Starlette(routes=[Route("/login", login), Route("/checkout", checkout)])
    app.state.monitor = monitor
    handler = ErrorLogHandler(monitor)
    logging.getLogger("shop.checkout").addHandler(handler)
    transport = httpx.ASGITransport(app=monitor.wrap(app), raise_app_exceptions=False)
    try:
        async with monitor, httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            r = await client.get(
                "/login",
                params={"access_token": SECRETS["query"], "page": "2"},
                headers={
                    "authorization": f"Bearer {SECRETS['header']}",
                    "x-api-key": SECRETS["api_key_header"],
                    "cookie": f"sid={SECRETS['cookie']}; theme=dark",
                },
            )
            assert r.status_code == 500
            r = await client.get("/checkout", headers={"x-api-key": SECRETS["api_key_header"]})
            assert r.status_code == 502
            await monitor.recorder.flush()
            await asyncio.sleep(0.2)
            # What was stored is there: the scrub removed the secrets, not the reports.
            # The 502 after a logged error is that error's report, not a second one.
            errors = await storage.events("error", limit=100)
            assert len(errors) == 3
            assert len(await storage.error_groups("default")) == 3
    finally:
        logging.getLogger("shop.checkout").removeHandler(handler)
    stored = await dump(storage, tmp_path)
    assert b"[Filtered]" in stored
    leaked = {name: s for name, s in SECRETS.items() if s.encode() in stored}
    assert leaked == {}
    assert b"4242424242424242" not in stored


def test_the_denylist_is_extendable_and_replaceable() -> None:
    extended = Scrubber(["ssn_last4", "tenant-secret"])
    assert extended.mapping({"ssn_last4": "1234", "password": "x", "name": "ann"}) == {
        "ssn_last4": "[Filtered]",
        "password": "[Filtered]",
        "name": "ann",
    }
    replaced = Scrubber(["pin"], defaults=False)
    assert replaced.mapping({"pin": "0000", "password": "kept"}) == {
        "pin": "[Filtered]",
        "password": "kept",
    }
    monitor = Monitor(
        error_scrub_keys=("pin",), error_scrub_defaults=False, storage=MemoryStorage()
    )
    assert monitor.errors.rules.scrubber.sensitive("PIN") is True
    assert monitor.errors.rules.scrubber.sensitive("password") is False


def test_free_text_loses_pairs_bearer_credentials_cards_and_echoed_values() -> None:
    s = Scrubber().fork()
    s.remember("echoed-value-123")
    text = (
        "password=hunter22 api_key: 'k-99887766' Authorization: Bearer abc.def.ghi123 "
        "card 4111-1111-1111-1111 not a card 4111-1111-1111-1112 saw echoed-value-123"
    )
    cleaned = s.text(text)
    for secret in ("hunter22", "k-99887766", "abc.def.ghi123", "4111-1111-1111-1111"):
        assert secret not in cleaned
    assert "echoed-value-123" not in cleaned
    assert "4111-1111-1111-1112" in cleaned  # fails the Luhn check: not a card number
