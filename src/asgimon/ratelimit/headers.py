"""The rate-limit headers of a response: IETF's ``RateLimit-Policy`` and ``RateLimit``
(draft-ietf-httpapi-ratelimit-headers), the common ``X-RateLimit-*``, and ``Retry-After``.

    RateLimit-Policy: "default";q=100;w=60
    RateLimit: "default";r=42;t=17
    X-RateLimit-Limit: 100      X-RateLimit-Remaining: 42      X-RateLimit-Reset: 17

``t`` and ``X-RateLimit-Reset`` are seconds until the window frees a request, never an
epoch (clients' clocks differ from the server's).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass


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

    def headers(self) -> list[tuple[bytes, bytes]]:
        policy, name, limit = _constant(self.policy, self.limit, self.window_s)
        out = [
            (b"ratelimit-policy", policy),
            (b"ratelimit", b'"%s";r=%d;t=%d' % (name, self.remaining, self.reset_s)),
            (b"x-ratelimit-limit", limit),
            (b"x-ratelimit-remaining", b"%d" % self.remaining),
            (b"x-ratelimit-reset", b"%d" % self.reset_s),
        ]
        if not self.allowed:
            out.append((b"retry-after", b"%d" % max(1, self.reset_s)))
        return out


@functools.lru_cache(maxsize=1024)
def _constant(policy: str, limit: int, window_s: int) -> tuple[bytes, bytes, bytes]:
    """What a rule's headers say on every response: formatted once, not per request."""
    name = policy.replace("\\", "\\\\").replace('"', '\\"').encode("utf-8")
    return b'"%s";q=%d;w=%d' % (name, limit, window_s), name, b"%d" % limit
