"""The host app's rate limit, as a pure-ASGI middleware.

Before the app runs, each HTTP request (and websocket connection) meets its rule
(:class:`~asgimon.ratelimit.policy.Policy`): its key (the user, else an API key header when
one is configured, else the client address through trusted proxies only) spends its cost
against the rule's limits. An API key header is trusted as the client sends it: a random
one per request is a fresh bucket each time, so name one only where the key is checked
before the app (a gateway) or through the key resolver. Denied, it
is answered 429 with a JSON body naming the limit and ``Retry-After`` (a websocket too, where
the server offers the denial-response extension; else it is closed with 1008 before it is
accepted); in shadow mode it goes through and the denial it would have
been is only reported. Allowed, it goes through with the limit headers added to the app's
response (the IETF pair by default, see :mod:`.headers`); nothing else of the response is
touched. With the counters' store failing or slow, the request goes through (counted as let
through), unless its rule fails closed: then a 503 with ``Retry-After``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from math import ceil
from time import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from asgimon.pipeline.records import user_id_of

from .headers import HEADER_MODES, Headers, Standing, limit_headers, with_limit_headers
from .keys import ClientAddress, hashed
from .limiter import RateLimiter, Verdict
from .policy import Policy, Rule

FAIL_CLOSED_RETRY_S = 5
MAX_HASHES = 4096


@dataclass(frozen=True, slots=True)
class Denial:
    """A request refused (or, in shadow mode, that would have been)."""

    key: str  # hashed unless configured otherwise
    method: str
    path: str
    rule: Rule
    standing: Standing
    shadow: bool


Report = Callable[[Denial, Scope], object]
Cost = Callable[[Scope], int]
Tier = Callable[[Scope], "Rule | None"]
Identify = Callable[[Scope], "str | None"]
Lookup = Callable[[str], "Rule | None"]
Passage = tuple[ASGIApp, Headers]
"""What runs for a request (the app, or a refusal in its place) and the headers its response
gains."""


class RateLimitMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        limiter: RateLimiter,
        policy: Policy,
        client: ClientAddress | None = None,
        key_header: str | None = None,
        hash_keys: bool = True,
        shadow: bool = False,
        headers: str = "ietf",
        fail_closed: frozenset[str] = frozenset(),
        cost: Cost | None = None,
        tier: Tier | None = None,
        report: Report | None = None,
        user: Identify | None = None,
        subject: Identify | None = None,
        overrides: Lookup | None = None,
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.policy = policy
        self.client = client or ClientAddress()
        self.key_header = key_header.lower().encode() if key_header else None
        self.hash_keys = hash_keys
        self.shadow = shadow
        if headers not in HEADER_MODES:
            raise ValueError(f"headers={headers!r}: one of {', '.join(HEADER_MODES)}")
        self.headers = headers
        self.fail_closed = fail_closed
        self.cost = cost
        self.tier = tier
        self.report = report
        self.user = user
        self.subject = subject
        self.overrides = overrides
        self.denied = 0
        self.shadow_denied = 0
        self.refused_closed = 0
        self.callback_failures = 0
        self._hashes: dict[str, str] = {}
        # With no user, subject or key header to look for and no proxy to believe, a
        # request's key is its peer's address alone: looked up by it, once made.
        self._by_peer = user is None and subject is None and not key_header
        self._by_peer = self._by_peer and not self.client.trusted
        self._peer_keys: dict[Any, str] = {}
        self._reruled = overrides is not None or tier is not None
        self._headed = headers != "none" and not shadow  # headers on allowed responses

    def _rule(self, scope: Scope, rule: Rule, key: str) -> Rule:
        """An override of the key, else its tier, in place of the default limit (``rule``):
        never in place of an endpoint's own, which guards a resource, not a client."""
        if self.overrides is not None:
            override = self.overrides(key)
            if override is not None:
                return override
        if self.tier is None:
            return rule
        try:
            tiered = self.tier(scope)
        except Exception:  # the host's callback failing must not fail the request
            self.callback_failures += 1
            return rule
        return tiered if tiered is not None else rule

    def _cost(self, cost: Cost, scope: Scope) -> int:
        try:
            return max(1, int(cost(scope)))
        except Exception:
            self.callback_failures += 1
            return 1

    def _identify(self, who: Identify, scope: Scope) -> str | None:
        try:
            found = who(scope)
        except Exception:
            self.callback_failures += 1
            return None
        return found if isinstance(found, str) and found else None

    def key_of(self, scope: Scope) -> str:
        """The user, else the JWT's subject, else the API key, else the client address."""
        subject = self.subject_of(scope)
        key = self._hashes.get(subject) if self.hash_keys else subject
        if key is None:
            if len(self._hashes) >= MAX_HASHES:
                self._hashes.clear()  # bounded: a hash is cheap to make again, not free
            key = self._hashes[subject] = hashed(subject)
        if self._by_peer and "user" not in scope:  # the peer's address was the key
            if len(self._peer_keys) >= MAX_HASHES:
                self._peer_keys.clear()
            client = scope.get("client")
            self._peer_keys[client[0] if client else ""] = key
        return key

    def subject_of(self, scope: Scope) -> str:
        user = user_id_of(scope.get("user")) if "user" in scope else None
        if not user and self.user is not None:
            user = self._identify(self.user, scope)
        if user:
            return "user:" + user
        if self.subject is not None and (sub := self._identify(self.subject, scope)):
            return "sub:" + sub
        if self.key_header is not None:
            for name, value in scope.get("headers") or ():
                if name == self.key_header and value:
                    return "key:" + bytes(value).decode("latin-1")
        return "addr:" + self.client(scope)

    @property
    def decides_now(self) -> bool:
        """Counted in this process's memory: :meth:`admit_now` decides, without an await."""
        return self.limiter.local is not None

    def admit_now(self, scope: Scope) -> Passage:
        """What to run for an HTTP request or websocket, decided in the caller's frame: the
        app with the limit headers its response carries, or the refusal. Only where
        :attr:`decides_now`."""
        asked = self._asked(scope)
        if asked is None:
            return self.app, ()
        rule, key, cost = asked
        limiter = self.limiter
        if not self._headed or scope["type"] != "http":
            return self._passage(scope, rule, key, limiter.decide_now(rule, key, cost))
        # Every request of the host passes here: an allowed one is answered without making
        # its verdict, in as few calls as it takes.
        assert limiter.local is not None
        index, allowed, remaining, resets = limiter.local.spend(rule.counters, key, cost)
        if not allowed:
            refused = limiter.verdict_of(rule, index, remaining, resets)
            return self._passage(scope, rule, key, refused)
        extra = limit_headers(
            rule.listed,
            rule.names[index],
            rule.counters[index][3],
            remaining,
            max(0, ceil(resets - time())),
            self.headers == "all",
        )
        return self.app, extra

    async def admit(self, scope: Scope) -> Passage:
        """:meth:`admit_now` wherever the counters are (a round trip to Redis)."""
        asked = self._asked(scope)
        if asked is None:
            return self.app, ()
        rule, key, cost = asked
        return self._passage(scope, rule, key, await self.limiter.decide(rule, key, cost))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        app, extra = self.admit_now(scope) if self.decides_now else await self.admit(scope)
        if extra:

            async def with_headers(message: Message) -> None:
                await send(with_limit_headers(message, extra))

            await app(scope, receive, with_headers)
            return
        await app(scope, receive, send)

    def _asked(self, scope: Scope) -> tuple[Rule, str, int] | None:
        """The request's rule, key and cost; None where it is exempt, whoever asks."""
        method = scope.get("method", "GET") if scope["type"] == "http" else "WS"
        path = scope.get("path", "/")
        root = scope.get("root_path")
        matched = self.policy.rule_for(method, _route_path(path, root) if root else path)
        if matched is None:
            return None
        key = None
        if self._by_peer and "user" not in scope:  # known by the address the server gave
            client = scope.get("client")
            key = self._peer_keys.get(client[0] if client else "")
        if key is None:
            key = self.key_of(scope)
        if matched is self.policy.default and self._reruled:
            matched = self._rule(scope, matched, key)
        return matched, key, 1 if self.cost is None else self._cost(self.cost, scope)

    def _passage(self, scope: Scope, rule: Rule, key: str, verdict: Verdict | None) -> Passage:
        if verdict is None:  # the store failed
            if rule.name in self.fail_closed:
                self.refused_closed += 1
                return Answer(503, _body(rule, None), [_retry(FAIL_CLOSED_RETRY_S)]), ()
            return self.app, ()  # fails open: counted by the limiter
        kind = scope["type"]
        if not verdict.allowed:
            standing = _standing(rule, verdict)
            method = scope.get("method", "GET") if kind == "http" else "WS"
            path = scope.get("path", "/")
            self._tell(Denial(key, method, path, rule, standing, self.shadow), scope)
            if not self.shadow:
                self.denied += 1
                return Answer(429, _body(rule, standing), standing.headers()), ()
            self.shadow_denied += 1
        # No headers in shadow mode: a client that obeys them would slow down for nothing.
        if self.headers == "none" or self.shadow or kind != "http":
            return self.app, ()
        extra = limit_headers(  # allowed here: no Retry-After
            rule.listed,
            rule.names[verdict.index],
            verdict.limit,
            verdict.remaining,
            verdict.reset_s,
            self.headers == "all",
        )
        return self.app, extra

    def _tell(self, denial: Denial, scope: Scope) -> None:
        if self.report is None:
            return
        try:
            self.report(denial, scope)
        except Exception:  # reporting one must never fail the request
            self.callback_failures += 1


def _route_path(path: str, root: str | None) -> str:
    """The path as the app's routes see it: under a ``root_path`` (an app served below a
    prefix), without it, as Starlette matches its routes and as the templates are written."""
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("/", ""):
        return path[len(root) :] or "/"
    return path


def _standing(rule: Rule, verdict: Verdict) -> Standing:
    return Standing(
        rule.name,
        verdict.limit,
        verdict.window_s,
        verdict.remaining,
        verdict.reset_s,
        verdict.allowed,
        rule.listed,
        rule.names[verdict.index],
    )


def _retry(seconds: int) -> tuple[bytes, bytes]:
    return (b"retry-after", str(seconds).encode())


def _body(rule: Rule, standing: Standing | None) -> dict[str, Any]:
    if standing is None:
        return {
            "error": {
                "code": "rate_limiter_unavailable",
                "message": "the rate limiter cannot decide now; retry shortly",
                "details": [{"field": "limit", "message": rule.describe()}],
            },
            "retryAfter": FAIL_CLOSED_RETRY_S,
        }
    return {
        "error": {
            "code": "rate_limited",
            "message": f"too many requests: {standing.limit} per {standing.window_s} seconds",
            "details": [{"field": "limit", "message": rule.describe()}],
        },
        "limit": rule.name,
        "retryAfter": max(1, standing.reset_s),
    }


class Answer:
    """A refusal (429, or 503 where the rule fails closed), answered in place of the app."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, body: dict[str, Any], headers: Headers) -> None:
        self.status = status
        self.body = body
        self.headers = headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        prefix = "http.response"
        if scope["type"] == "websocket":
            # A real 429 (or 503) where the server can send one in place of the handshake
            # (the ASGI denial-response extension), else a close before accept (a 403).
            if "websocket.http.response" not in (scope.get("extensions") or {}):
                await send({"type": "websocket.close", "code": 1008})
                return
            prefix = "websocket.http.response"
        payload = json.dumps(self.body).encode()
        await send(
            {
                "type": prefix + ".start",
                "status": self.status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                    *self.headers,
                ],
            }
        )
        await send({"type": prefix + ".body", "body": payload})
