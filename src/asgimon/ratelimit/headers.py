"""The rate-limit headers of a response: IETF's ``RateLimit-Policy`` and ``RateLimit``
(draft-ietf-httpapi-ratelimit-headers), the common ``X-RateLimit-*``, and ``Retry-After``.

    RateLimit-Policy: "default";q=110;w=60, "default/120s";q=200;w=120
    RateLimit: "default";r=42;t=17
    X-RateLimit-Limit: 100      X-RateLimit-Remaining: 42      X-RateLimit-Reset: 17

``t`` and ``X-RateLimit-Reset`` are seconds until the window frees a request, never an
epoch (clients' clocks differ from the server's). A refusal carries all of them; an allowed
response the IETF pair (``ietf``, the default), all five (``all``) or none (``none``):
the server checks, lowers and copies every header it writes, so each costs every response.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

HEADER_MODES = ("ietf", "all", "none")
Headers = Sequence[tuple[bytes, bytes]]
_OWN = frozenset({b"ratelimit", b"ratelimit-policy", b"x-ratelimit-limit"})


# Not frozen: made on every request, and a frozen dataclass takes 4x as long to make.
@dataclass(slots=True)
class Standing:
    """Where a key stands against one rule after this request."""

    policy: str  # the rule's name
    limit: int
    window_s: int
    remaining: int
    reset_s: int
    allowed: bool
    # The rule's whole RateLimit-Policy and the deciding limit's name in it, when known.
    listed: bytes = b""
    name: bytes = b""

    def headers(self, mode: str = "all") -> list[tuple[bytes, bytes]]:
        """Its headers: every one on a refusal (``Retry-After`` too), else as ``mode`` says."""
        if self.allowed and mode == "none":
            return []
        listed, name = self.listed, self.name
        if not listed:
            listed, name = _constant(self.policy, self.limit, self.window_s)
        every = not self.allowed or mode == "all"
        out = limit_headers(listed, name, self.limit, self.remaining, self.reset_s, every)
        if not self.allowed:
            out.append((b"retry-after", b"%d" % max(1, self.reset_s)))
        return out


def limit_headers(
    listed: bytes, name: bytes, limit: int, remaining: int, reset_s: int, every: bool
) -> list[tuple[bytes, bytes]]:
    """The IETF pair (the rule's whole policy, the deciding limit by its name in it), and
    with ``every`` the ``X-RateLimit-*`` trio after it."""
    out = [
        (b"ratelimit-policy", listed),
        (b"ratelimit", b'"%s";r=%d;t=%d' % (name, remaining, reset_s)),
    ]
    if every:
        out += (
            (b"x-ratelimit-limit", b"%d" % limit),
            (b"x-ratelimit-remaining", b"%d" % remaining),
            (b"x-ratelimit-reset", b"%d" % reset_s),
        )
    return out


def with_limit_headers(message: Any, extra: Headers) -> Any:
    """An ASGI message with ``extra`` added when it starts the response, unless the app wrote
    limit headers of its own (an API with limits of its own): those win over ours."""
    if message["type"] != "http.response.start":
        return message
    held = message.get("headers", ())
    for name, _ in held:
        if name.lower() in _OWN:
            return message
    return {**message, "headers": [*held, *extra]}


def policy_list(rule: str, limits: list[tuple[int, int]]) -> tuple[bytes, tuple[bytes, ...]]:
    """A rule's ``RateLimit-Policy``, every limit of it listed, and each limit's name: the
    rule's for the first, with its window after it for the others (the burst's second
    limit: ``"default";q=110;w=60, "default/120s";q=200;w=120``)."""
    names = [
        _quoted(rule) if i == 0 else _quoted(f"{rule}/{w}s") for i, (_, w) in enumerate(limits)
    ]
    listed = b", ".join(
        b'"%s";q=%d;w=%d' % (name, q, w) for name, (q, w) in zip(names, limits, strict=True)
    )
    return listed, tuple(names)


def _quoted(name: str) -> bytes:
    return name.replace("\\", "\\\\").replace('"', '\\"').encode("utf-8")


@functools.lru_cache(maxsize=1024)
def _constant(policy: str, limit: int, window_s: int) -> tuple[bytes, bytes]:
    """The policy of a limit known by its figures alone, and its name: formatted once."""
    name = _quoted(policy)
    return b'"%s";q=%d;w=%d' % (name, limit, window_s), name
