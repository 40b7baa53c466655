"""What the ``RATE_LIMIT_*`` settings accept: parsers and checks for :mod:`asgimon.settings`."""

from __future__ import annotations

from typing import Any

from asgimon.setting_values import parse_bool

from .headers import HEADER_MODES
from .keys import parse_networks
from .limiter import STRATEGIES
from .policy import parse_endpoint_rules

DEFAULT_EXEMPT = ("/health", "/healthz", "/livez", "/readyz", "/ping")
"""Health checks: a load balancer probing often must never be throttled out of its answer."""

STRATEGY_RULE = "one of " + ", ".join(STRATEGIES)
ENDPOINTS_RULE = (
    "rules separated by ';', each [METHOD] /template=rate, "
    "e.g. 'GET /items/{id}=10/minute; /search=5 per 10 seconds'"
)
PROXIES_RULE = "comma-separated addresses or networks, e.g. 10.0.0.0/8,127.0.0.1"
FORWARDED_RULE = "x-forwarded-for or forwarded"
HEADER_RULE = "an HTTP header name such as x-api-key"
FAIL_CLOSED_RULE = "comma-separated rule names: default, or a RATE_LIMIT_ENDPOINTS target"
HEADERS_RULE = (
    "ietf (RateLimit-Policy and RateLimit), all (and X-RateLimit-*) or none; "
    "a boolean (true, false, on, off…) means all or none"
)
REDIS_OR_MEMORY_RULE = "memory:// or a redis:// or rediss:// URL (default: ANALYTICS_REDIS_URL)"

_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz")


def parse_list(raw: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in raw.split(",") if p.strip())


def parse_lower(raw: str) -> str:
    return raw.strip().lower()


def parse_header_mode(raw: str) -> str:
    """A mode, or a boolean as every boolean setting reads one: true is all, false none."""
    try:
        return "all" if parse_bool(raw) else "none"
    except ValueError:
        return raw.strip().lower()


def is_header_mode(v: Any) -> bool:
    return v in HEADER_MODES


def is_strategy(v: Any) -> bool:
    return v in STRATEGIES


def is_endpoint_rules(v: Any) -> bool:
    if not isinstance(v, str):
        return False
    try:
        parse_endpoint_rules(v)
    except ValueError:
        return False
    return True


def is_networks(v: Any) -> bool:
    if not isinstance(v, tuple) or not all(isinstance(i, str) for i in v):
        return False
    try:
        parse_networks(v)
    except ValueError:
        return False
    return True


def is_forwarded_header(v: Any) -> bool:
    return v in ("x-forwarded-for", "forwarded")


def is_optional_header(v: Any) -> bool:
    return v is None or (isinstance(v, str) and 0 < len(v) <= 64 and set(v.lower()) <= _TOKEN)


def is_rule_names(v: Any) -> bool:
    return isinstance(v, tuple) and all(isinstance(i, str) and 0 < len(i) <= 500 for i in v)


def is_counter_url(v: Any) -> bool:
    if v is None:
        return True
    if not isinstance(v, str):
        return False
    scheme, sep, rest = v.partition("://")
    if v == "memory://":
        return True
    return bool(sep) and scheme in ("redis", "rediss", "unix") and bool(rest)


def rule_names(endpoints: str) -> frozenset[str]:
    """Every name a rule may be given in ``RATE_LIMIT_FAIL_CLOSED``."""
    return frozenset({"default", *(e.rule.name for e in parse_endpoint_rules(endpoints))})
