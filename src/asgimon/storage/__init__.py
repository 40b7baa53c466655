"""Storage backends, chosen by URL scheme; a backend's driver is imported only when used."""

from __future__ import annotations

from typing import Any

from asgimon.errors import ConfigError

from .base import KINDS, Storage, WriteResult
from .memory import MemoryStorage

__all__ = ["KINDS", "MemoryStorage", "Storage", "WriteResult", "storage_from_url"]


def storage_from_url(url: str, **options: Any) -> Storage:
    """Build the backend a URL names: ``memory://``, ``sqlite:///path``, ``postgresql://…``.

    ``options`` go to the backend's constructor (e.g. ``busy_timeout`` for SQLite).
    """
    scheme = url.partition("://")[0].lower()
    if scheme == "memory":
        return MemoryStorage()
    if scheme in ("sqlite", "sqlite+aiosqlite", "postgres", "postgresql", "postgresql+asyncpg"):
        if scheme.startswith("postgres"):
            try:
                import asyncpg  # type: ignore[import-untyped]  # noqa: F401
            except ImportError:
                raise ConfigError(
                    "ANALYTICS_STORAGE_URL",
                    url,
                    "installed extras: pip install 'asgimon[postgres]'",
                ) from None
        from .sql import SQLStorage

        try:
            return SQLStorage(url, **options)
        except ValueError as exc:
            raise ConfigError("ANALYTICS_STORAGE_URL", url, str(exc)) from None
    if scheme in ("redis", "rediss"):
        try:
            from .redis import RedisStorage
        except ImportError:
            raise ConfigError(
                "ANALYTICS_STORAGE_URL", url, "installed extras: pip install 'asgimon[redis]'"
            ) from None
        return RedisStorage(url, **options)
    raise ConfigError(
        "ANALYTICS_STORAGE_URL", url, "memory://, sqlite:///path, postgresql://… or redis://…"
    )
