"""Which backend each storage URL scheme names, and what it needs: the one table of them.

Pure data, importing no driver: the settings check URLs against it, the Monitor reads each
backend's options from it, and :func:`~asgimon.storage.storage_from_url` builds from it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Backend:
    name: str
    schemes: tuple[str, ...]
    target: str  # "module:Class", imported only when a URL names it
    extra: str | None = None  # the pip extra that installs its driver
    driver: str | None = None  # the driver's module, checked before building
    options: Callable[[Any], dict[str, Any]] = lambda settings: {}  # from the Settings


BACKENDS = (
    Backend("memory", ("memory",), "asgimon.storage.memory:MemoryStorage"),
    Backend(
        "sqlite",
        ("sqlite", "sqlite+aiosqlite"),
        "asgimon.storage.sql:SQLStorage",
        options=lambda s: {"busy_timeout": s.sqlite_busy_timeout},
    ),
    Backend(
        "postgresql",
        ("postgres", "postgresql", "postgresql+asyncpg"),
        "asgimon.storage.sql:SQLStorage",
        extra="postgres",
        driver="asyncpg",
    ),
    Backend(
        "redis",
        ("redis", "rediss"),
        "asgimon.storage.redis:RedisStorage",
        extra="redis",
        driver="redis",
        options=lambda s: {
            "retention_hours": s.redis_retention_hours,
            "prefix": s.redis_key_prefix,
        },
    ),
)
SCHEMES: dict[str, Backend] = {scheme: b for b in BACKENDS for scheme in b.schemes}


def backend_of(url: str) -> Backend | None:
    return SCHEMES.get(url.partition("://")[0].lower())
