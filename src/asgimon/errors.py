"""The exception types asgimon raises: one per kind of failure."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


class AsgimonError(Exception):
    """Base class of every error asgimon raises on purpose."""


class ConfigError(AsgimonError, ValueError):
    """A setting has a value that is not allowed.

    The message names the variable, the value it had and what is allowed, e.g.
    ``RATE_LIMIT_MAX='ten' is invalid: expected an integer >= 1``.
    """

    def __init__(self, name: str, value: object, allowed: str) -> None:
        self.name = name
        self.value = value
        self.allowed = allowed
        super().__init__(f"{name}={value!r} is invalid: expected {allowed}")


@dataclass(frozen=True, slots=True)
class FieldError:
    """One invalid field of an event: its name and what is wrong with it."""

    field: str
    message: str


class InvalidEventError(AsgimonError, ValueError):
    """An event failed validation; nothing of it was stored.

    ``errors`` lists every bad field, so a caller can fix them all at once.
    """

    def __init__(self, kind: str, errors: Sequence[FieldError]) -> None:
        self.kind = kind
        self.errors = tuple(errors)
        detail = "; ".join(f"{e.field}: {e.message}" for e in self.errors)
        super().__init__(f"invalid {kind} event: {detail}")


class StorageError(AsgimonError):
    """A storage backend failed. Driver errors are wrapped in one of the subclasses.

    ``stored`` names events a write did store before it failed (a store whose batch is not
    one transaction, Redis): they are handed to the subscribers, since the retry will find
    them already there.
    """

    reason = "storage_unavailable"
    stored: tuple[Any, ...] = ()


class StorageUnavailable(StorageError):
    """Transient: the store is locked, down, unreachable or read-only. Worth retrying."""

    reason = "storage_unavailable"


class StorageFull(StorageError):
    """The store has no space left. Retried slowly; batches are dropped as ``storage_full``."""

    reason = "storage_full"


class StorageRejected(StorageError):
    """The store refused the data itself (a constraint or encoding error): retrying cannot help."""

    reason = "invalid"


class SchemaVersionError(StorageError):
    """The database schema is newer or older than this version of asgimon understands."""


def missing_extra(setting: str, value: str, extra: str) -> ConfigError:
    """The one way a missing optional dependency is reported: the extra to install."""
    return ConfigError(setting, value, f"installed extras: pip install 'asgimon[{extra}]'")


def require_extra(module: str, extra: str, setting: str, value: str) -> None:
    """Import ``module`` or raise :func:`missing_extra`."""
    try:
        importlib.import_module(module)
    except ImportError:
        raise missing_extra(setting, value, extra) from None
