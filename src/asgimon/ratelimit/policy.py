"""Which limit a request meets: the default with its burst, an endpoint's own, or none.

**Burst.** ``RATE_LIMIT_MAX`` requests per ``RATE_LIMIT_WINDOW`` seconds with a burst of
``RATE_LIMIT_BURST`` means two limits at once: at most ``MAX + BURST`` in any one window,
and at most ``2 * MAX`` in any two windows in a row. A quiet client may spend its burst at
once; over time it still gets ``MAX`` per window, since a window that used the burst leaves
the next one ``MAX - BURST``. With no burst, one limit: ``MAX`` per window.

**Endpoints.** ``"GET /items/{id}=10/minute; /search=5 per 10 seconds"``: a method (or
none, for every method), a route template (``{name}`` matches one path segment, a trailing
``{name:path}`` the rest) and a ``limits`` rate string (several separated by ``,``). The
first rule whose method and template match applies, else the default; exempt paths (exact,
or a prefix ending in ``*``) meet none.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from limits import RateLimitItem, parse, parse_many

from .headers import policy_list

_PARAM = re.compile(r"\{(\w+)(:path)?\}")
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "WS"})


@dataclass(frozen=True, slots=True)
class Rule:
    """A named set of limits, all of which a request must pass."""

    name: str
    items: tuple[RateLimitItem, ...]
    # Per limit, the parts of its counter's key around the client's, its window and amount:
    # built once, since ``limits``' ``key_for`` joins five strings a call.
    counters: tuple[tuple[str, str, int, int], ...] = field(init=False, compare=False, repr=False)

    # Its RateLimit-Policy header, every limit listed, and each limit's name in it.
    listed: bytes = field(init=False, compare=False, repr=False)
    names: tuple[bytes, ...] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "counters", tuple(_parts(i, self.name) for i in self.items))
        listed, names = policy_list(self.name, [(i.amount, i.get_expiry()) for i in self.items])
        object.__setattr__(self, "listed", listed)
        object.__setattr__(self, "names", names)

    def describe(self) -> str:
        return ", ".join(f"{i.amount} per {i.get_expiry()} seconds" for i in self.items)


def _parts(item: RateLimitItem, scope: str) -> tuple[str, str, int, int]:
    head, _, tail = item.key_for(scope, "\x00").partition("\x00")
    return head, tail, item.get_expiry(), item.amount


def default_rule(maximum: int, window: int, burst: int) -> Rule:
    items = [parse(f"{maximum + burst} per {window} seconds")]
    if burst:
        items.append(parse(f"{2 * maximum} per {2 * window} seconds"))
    return Rule("default", tuple(items))


def _template_regex(template: str) -> re.Pattern[str]:
    out, pos = [], 0
    for m in _PARAM.finditer(template):
        out.append(re.escape(template[pos : m.start()]))
        out.append(".+" if m.group(2) else "[^/]+")
        pos = m.end()
    out.append(re.escape(template[pos:]))
    return re.compile("^" + "".join(out) + "$")


@dataclass(frozen=True, slots=True)
class EndpointRule:
    method: str | None
    template: str
    pattern: re.Pattern[str]
    rule: Rule

    def matches(self, method: str, path: str) -> bool:
        # HEAD runs the GET handler: a GET rule that HEAD escaped would not be one.
        same = self.method is None or self.method == method
        same = same or (self.method == "GET" and method == "HEAD")
        return same and bool(self.pattern.match(path))


def parse_endpoint_rules(raw: str) -> tuple[EndpointRule, ...]:
    """ValueError naming the part that is wrong."""
    rules = []
    for part in raw.split(";"):
        part = part.strip()
        if not part:
            continue
        target, sep, rate = part.rpartition("=")
        if not sep or not target.strip() or not rate.strip():
            raise ValueError(f"{part!r}: expected [METHOD] /template=rate")
        words = target.split()
        if len(words) == 2 and words[0].upper() in METHODS:
            method, template = words[0].upper(), words[1]
        elif len(words) == 1:
            method, template = None, words[0]
        else:
            raise ValueError(f"{target!r}: expected [METHOD] /template")
        if not template.startswith("/"):
            raise ValueError(f"{template!r}: a template starts with /")
        try:
            items = tuple(parse_many(rate.replace(",", ";")))
        except ValueError:
            raise ValueError(f"{rate.strip()!r}: not a rate such as 10/minute") from None
        if not items:
            raise ValueError(f"{rate.strip()!r}: not a rate such as 10/minute")
        name = f"{method} {template}" if method else template
        rules.append(EndpointRule(method, template, _template_regex(template), Rule(name, items)))
    return tuple(rules)


class Policy:
    """The rule of a request, from its method and path (before the app has routed it)."""

    def __init__(
        self, default: Rule, endpoints: Iterable[EndpointRule], exempt: Iterable[str]
    ) -> None:
        self.default = default
        self.endpoints = tuple(endpoints)
        exempt = tuple(exempt)
        self._exact = frozenset(p for p in exempt if not p.endswith("*"))
        self._prefixes = tuple(p[:-1] for p in exempt if p.endswith("*"))

    def rule_for(self, method: str, path: str) -> Rule | None:
        """None for an exempt path."""
        if path in self._exact or path.startswith(self._prefixes):
            return None
        for endpoint in self.endpoints:
            if endpoint.matches(method, path):
                return endpoint.rule
        return self.default
