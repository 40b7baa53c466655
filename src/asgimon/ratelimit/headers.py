"""The rate-limit headers of a response: IETF's ``RateLimit-Policy`` and ``RateLimit``
(draft-ietf-httpapi-ratelimit-headers), the common ``X-RateLimit-*``, and ``Retry-After``.

    RateLimit-Policy: "default";q=100;w=60
    RateLimit: "default";r=42;t=17
    X-RateLimit-Limit: 100      X-RateLimit-Remaining: 42      X-RateLimit-Reset: 17

``t`` and ``X-RateLimit-Reset`` are seconds until the window frees a request, never an
epoch (clients' clocks differ from the server's).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Standing:
    """Where a key stands against one rule after this request."""

    policy: str  # the rule's name
    limit: int
    window_s: int
    remaining: int
    reset_s: int
    allowed: bool

    def headers(self) -> list[tuple[bytes, bytes]]:
        name = self.policy.replace("\\", "\\\\").replace('"', '\\"')
        out = [
            (b"ratelimit-policy", f'"{name}";q={self.limit};w={self.window_s}'.encode()),
            (b"ratelimit", f'"{name}";r={self.remaining};t={self.reset_s}'.encode()),
            (b"x-ratelimit-limit", str(self.limit).encode()),
            (b"x-ratelimit-remaining", str(self.remaining).encode()),
            (b"x-ratelimit-reset", str(self.reset_s).encode()),
        ]
        if not self.allowed:
            out.append((b"retry-after", str(max(1, self.reset_s)).encode()))
        return out
