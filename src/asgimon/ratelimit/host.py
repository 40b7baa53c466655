"""The host app's rate limit as the ``RATE_LIMIT_*`` settings describe it, and its upkeep.

:class:`HostLimits` builds the limiter (counting in memory, or in Redis so that every
worker shares one count), the policy, the key (user, JWT subject, API key, address) and
the middleware; it refreshes the administrators' per-key overrides from storage every
second, so a change made through one worker holds in all of them within that second (at
once in the worker that made it); and it answers the administration API: the configured
limits, a key's usage, resetting a key, setting and removing overrides.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from limits import parse_many
from starlette.types import ASGIApp, Scope

from asgimon.analytics.ranges import BadQuery
from asgimon.errors import StorageError

from .denials import DenialLog
from .keys import ClientAddress, address_key, hashed, parse_address, parse_networks
from .limiter import RateLimiter, Verdict
from .middleware import RateLimitMiddleware
from .overrides import SUBJECT_KINDS, Override
from .policy import Policy, Rule, default_rule, parse_endpoint_rules

if TYPE_CHECKING:
    from asgimon.settings import Settings
    from asgimon.storage.base import Storage

log = logging.getLogger("asgimon.ratelimit")

REFRESH_S = 1.0
MAX_SUBJECT = 400
TierOf = Callable[[Scope], "str | None"]
"""The host's tier callback: a rate string (``"1000/minute"``) for the request, or None."""
CostOf = Callable[[Scope], int]
Resolver = Callable[[Scope], Any]


class SubjectError(BadQuery):
    """A subject or rate an administrator sent is not one: the field and why (a 422)."""


@dataclass(frozen=True, slots=True)
class Usage:
    rule: Rule
    standing: list[Verdict]


def parse_subject(subject: Any, ipv6_prefix: int = 128) -> str:
    """``user:alice``, ``sub:…``, ``key:…`` or ``addr:203.0.113.7``, else SubjectError. An
    IPv6 address (or network) is the network the limiter counts it by."""
    if not isinstance(subject, str) or not subject.strip():
        raise SubjectError("subject", "is required: user:ID, sub:SUBJECT, key:API_KEY or addr:IP")
    kind, sep, rest = subject.strip().partition(":")
    if not sep or kind not in SUBJECT_KINDS or not rest:
        raise SubjectError("subject", "must be user:ID, sub:SUBJECT, key:API_KEY or addr:IP")
    if len(subject) > MAX_SUBJECT or not subject.isprintable():
        raise SubjectError("subject", f"at most {MAX_SUBJECT} printable characters")
    if kind == "addr":
        # As the limiter writes a client's address: canonical, IPv4-mapped as IPv4.
        addr = parse_address(rest.removesuffix(f"/{ipv6_prefix}") if ":" in rest else rest)
        if addr is None:
            raise SubjectError("subject", "addr: takes one IPv4 or IPv6 address")
        rest = address_key(addr, ipv6_prefix)
    return f"{kind}:{rest}"


def parse_rate(rate: Any) -> Rule:
    if not isinstance(rate, str) or not rate.strip() or len(rate) > 200:
        raise SubjectError("rate", "is required: a rate such as 1000/minute")
    try:
        items = tuple(parse_many(rate.replace(",", ";")))
    except ValueError:
        items = ()
    if not items:
        raise SubjectError("rate", f"{rate!r} is not a rate such as 1000/minute")
    return Rule(f"tier {rate.strip()}", items)


class HostLimits:
    def __init__(
        self,
        settings: Settings,
        storage: Storage,
        *,
        put: Callable[[Any], object],
        user: Resolver | None = None,
        project: Resolver | None = None,
        tier: TierOf | None = None,
        cost: CostOf | None = None,
        subject: Callable[[Scope], str | None] | None = None,
    ) -> None:
        s = settings
        self.settings = settings
        self.storage = storage
        self.enabled = s.rate_limit_enabled
        self.policy = Policy(
            default_rule(s.rate_limit_max, s.rate_limit_window, s.rate_limit_burst),
            parse_endpoint_rules(s.rate_limit_endpoints),
            # The dashboard, wherever it is mounted, limits its API itself.
            (*s.rate_limit_exempt, s.mount_path, s.mount_path + "/*"),
        )
        url = s.rate_limit_storage_url or s.redis_url
        self.redis_url = None if url in (None, "memory://") else url
        self.limiter = RateLimiter(
            redis_url=self.redis_url,
            key_prefix=s.redis_key_prefix,
            strategy=s.rate_limit_strategy,
            timeout=s.rate_limit_timeout_ms / 1000,
            namespace="host-limit",
        )
        self.denials = DenialLog(put, self._project_of(project, s.project_id))
        self._user = _user_of(user) if user is not None else None
        self._subject = subject  # a verified JWT's subject, with RATE_LIMIT_JWT_SUBJECT
        self._tier = self._tier_of(tier) if tier is not None else None
        self._cost = cost
        self._overrides: dict[str, Override] = {}
        self._override_rules: dict[str, Rule] = {}
        self._refresh: asyncio.Task[None] | None = None
        self.refresh_failures = 0
        self.middleware: RateLimitMiddleware | None = None

    # -- the request path ----------------------------------------------------------------

    def wrap(self, app: ASGIApp) -> ASGIApp:
        """The app behind the rate limit (itself when ``RATE_LIMIT_ENABLED`` is false)."""
        if not self.enabled:
            return app
        s = self.settings
        self.middleware = RateLimitMiddleware(
            app,
            limiter=self.limiter,
            policy=self.policy,
            client=ClientAddress(
                parse_networks(s.rate_limit_trusted_proxies),
                s.rate_limit_forwarded_header,
                s.rate_limit_ipv6_prefix,
            ),
            key_header=s.rate_limit_key_header,
            hash_keys=s.rate_limit_hash_keys,
            shadow=s.rate_limit_shadow,
            headers=s.rate_limit_headers,
            fail_closed=frozenset(s.rate_limit_fail_closed),
            cost=self._cost,
            tier=self._tier,
            report=self.denials,
            user=self._user,
            subject=self._subject,
            overrides=self._override_rules.get,
        )
        return self.middleware

    @staticmethod
    def _project_of(project: Resolver | None, default: str) -> Callable[[Scope], str]:
        if project is None:
            return lambda scope: default

        def of(scope: Scope) -> str:
            try:
                found = project(scope)
            except Exception:
                return default
            return found if isinstance(found, str) and 0 < len(found) <= 128 else default

        return of

    def _tier_of(self, tier: TierOf) -> Callable[[Scope], Rule | None]:
        rules: dict[str, Rule | None] = {}

        def of(scope: Scope) -> Rule | None:
            rate = tier(scope)
            if rate is None:
                return None
            if rate not in rules:
                if len(rules) >= 1000:
                    rules.clear()  # a tier per request is a bug of the host's: stay bounded
                try:
                    rules[rate] = parse_rate(rate)
                except SubjectError:
                    log.warning("asgimon: the rate-limit tier %r is not a rate", rate)
                    rules[rate] = None
            return rules[rate]

        return of

    # -- overrides, the same for every worker ---------------------------------------------

    def key(self, subject: str) -> str:
        return hashed(subject) if self.settings.rate_limit_hash_keys else subject

    async def start(self) -> None:
        with contextlib.suppress(StorageError):
            await self.refresh()
        self._refresh = asyncio.create_task(self._refresh_loop(), name="asgimon-rate-overrides")

    async def close(self) -> None:
        if self._refresh is not None:
            self._refresh.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresh
            self._refresh = None
        self.denials.flush()
        await self.limiter.aclose()

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_S)
            try:
                await self.refresh()
            except Exception as exc:  # storage down: the overrides held stay in force
                self.refresh_failures += 1
                if self.refresh_failures == 1 or self.refresh_failures % 60 == 0:
                    log.warning("asgimon: rate-limit overrides not refreshed: %r", exc)

    async def refresh(self) -> None:
        found = await self.storage.rate_limit_overrides()
        now = time.time()
        live = {o.key: o for o in found if o.live(now)}
        rules: dict[str, Rule] = {}
        for o in live.values():
            try:
                rules[o.key] = Rule("override", parse_rate(o.rate).items)
            except SubjectError:
                continue  # written by hand into the store: not ours to enforce
        self._overrides = live
        # Replaced in place: the middleware holds this dict's ``get``.
        self._override_rules.clear()
        self._override_rules.update(rules)

    def overrides(self) -> list[Override]:
        now = time.time()
        return sorted(
            (o for o in self._overrides.values() if o.live(now)), key=lambda o: o.created_at
        )

    async def set_override(
        self,
        subject: Any,
        rate: Any,
        *,
        note: Any = "",
        expires_at: Any = None,
        by: str | None = None,
    ) -> Override:
        """Validated (SubjectError naming the field), stored, in force here at once."""
        subject = parse_subject(subject, self.settings.rate_limit_ipv6_prefix)
        parse_rate(rate)
        if not isinstance(note, str) or len(note) > 500:
            raise SubjectError("note", "at most 500 characters")
        now = time.time()
        if expires_at is not None:
            if isinstance(expires_at, bool) or not isinstance(expires_at, int | float):
                raise SubjectError("expiresAt", "epoch seconds, or null for never")
            if not now < expires_at < now + 10 * 365 * 86400:
                raise SubjectError("expiresAt", "must be in the future (within 10 years)")
        override = Override(
            key=self.key(subject),
            subject=subject,
            rate=rate.strip(),
            note=note.strip(),
            created_at=now,
            created_by=by,
            expires_at=None if expires_at is None else float(expires_at),
        )
        await self.storage.set_rate_limit_override(override)
        await self.refresh()
        return override

    async def remove_override(self, subject: Any) -> bool:
        key = self.key(parse_subject(subject, self.settings.rate_limit_ipv6_prefix))
        gone = await self.storage.remove_rate_limit_override(key)
        await self.refresh()
        return gone

    # -- usage -----------------------------------------------------------------------------

    def rules_of(self, key: str) -> list[Rule]:
        """Every rule a key's requests may meet: its own default (override or the default)
        and each endpoint's."""
        own = self._override_rules.get(key, self.policy.default)
        return [own, *(e.rule for e in self.policy.endpoints)]

    async def usage(self, subject: Any) -> list[Usage] | None:
        """Where the subject stands against every rule now; None when the store failed."""
        key = self.key(parse_subject(subject, self.settings.rate_limit_ipv6_prefix))
        out = []
        for rule in self.rules_of(key):
            standing = await self.limiter.usage(rule, key)
            if standing is None:
                return None
            out.append(Usage(rule, standing))
        return out

    async def reset(self, subject: Any) -> bool:
        """Forget what the subject spent, every rule; False when the store failed."""
        key = self.key(parse_subject(subject, self.settings.rate_limit_ipv6_prefix))
        done = True
        for rule in self.rules_of(key):
            done = await self.limiter.reset(rule, key) and done
        return done

    def report(self) -> dict[str, Any]:
        """For ``GET {mount}/api/health``."""
        m = self.middleware
        return {
            "enabled": self.enabled,
            "shadow": self.settings.rate_limit_shadow,
            "storage": "redis" if self.redis_url else "memory",
            "refused": m.denied if m else 0,
            "shadowRefused": m.shadow_denied if m else 0,
            "letThrough": self.limiter.bypassed,
            "storeFailures": self.limiter.failures,
            "lastStoreError": self.limiter.last_error,
            "breakerOpen": self.limiter.breaker.is_open,
            "refusedClosed": m.refused_closed if m else 0,
            "callbackFailures": m.callback_failures if m else 0,
            "overrides": len(self._override_rules),
            "overrideRefreshFailures": self.refresh_failures,
        }


def _user_of(resolver: Resolver) -> Callable[[Scope], str | None]:
    def of(scope: Scope) -> str | None:
        found = resolver(scope)
        return None if found is None else str(found)

    return of
