"""Rate limiting: the limiter the analytics API guards itself with."""

from __future__ import annotations

from .limiter import RateLimiter, Verdict

__all__ = ["RateLimiter", "Verdict"]
