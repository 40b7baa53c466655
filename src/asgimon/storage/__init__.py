"""Storage backends, chosen by URL scheme; a backend's driver is imported only when used."""

from __future__ import annotations

import importlib
from typing import Any

from asgimon.errors import ConfigError, require_extra

from .base import KINDS, Storage, WriteResult
from .memory import MemoryStorage
from .schemes import backend_of

__all__ = ["KINDS", "MemoryStorage", "Storage", "WriteResult", "storage_from_url"]


def storage_from_url(url: str, **options: Any) -> Storage:
    """Build the backend a URL names: ``memory://``, ``sqlite:///path``, ``postgresql://…``.

    ``options`` go to the backend's constructor (e.g. ``busy_timeout`` for SQLite).
    """
    backend = backend_of(url)
    if backend is None:
        raise ConfigError(
            "ANALYTICS_STORAGE_URL", url, "memory://, sqlite:///path, postgresql://… or redis://…"
        )
    if backend.driver is not None and backend.extra is not None:
        require_extra(backend.driver, backend.extra, "ANALYTICS_STORAGE_URL", url)
    module, _, name = backend.target.partition(":")
    cls = getattr(importlib.import_module(module), name)
    try:
        built: Storage = cls(url, **options) if backend.name != "memory" else cls()
    except ValueError as exc:
        raise ConfigError("ANALYTICS_STORAGE_URL", url, str(exc)) from None
    return built
