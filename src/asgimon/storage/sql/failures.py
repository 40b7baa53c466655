"""Driver errors to asgimon's StorageError subclasses, by what retrying can do about them."""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError, StatementError

from asgimon.errors import StorageError, StorageFull, StorageRejected, StorageUnavailable

# PostgreSQL SQLSTATE classes: 22 data exception, 23 integrity violation, P0 raised by a
# trigger or function. All are about the data itself, so retrying the same batch cannot help.
_REJECTED_SQLSTATE_CLASSES = ("22", "23", "P0")

_REJECTED = frozenset(
    {
        "IntegrityError",
        "DataError",
        "ProgrammingError",
        "UniqueViolationError",
        "CharacterNotInRepertoireError",
        "UntranslatableCharacterError",
        "InvalidTextRepresentationError",
        "NumericValueOutOfRangeError",
    }
)


def classify(exc: BaseException) -> StorageError:
    """One StorageError subclass per way a driver can fail, by what retrying can do."""
    if isinstance(exc, StorageError):
        return exc
    orig: BaseException = exc
    if (isinstance(exc, DBAPIError) and exc.orig is not None) or (
        isinstance(exc, StatementError) and exc.orig is not None
    ):
        orig = exc.orig
    text = str(orig).lower()
    name = type(orig).__name__
    sqlstate = str(getattr(orig, "sqlstate", "") or getattr(orig, "pgcode", "") or "")
    if "full" in text or sqlstate == "53100" or "diskfull" in name.lower():
        return StorageFull(str(orig))
    if sqlstate:
        if sqlstate.startswith(_REJECTED_SQLSTATE_CLASSES):
            return StorageRejected(f"{name}: {orig}")
        return StorageUnavailable(f"{name}: {orig}")
    bad_data = isinstance(orig, UnicodeError | ValueError | TypeError | OverflowError)
    if (bad_data or name in _REJECTED) and "lock" not in text and "connect" not in text:
        return StorageRejected(f"{name}: {orig}")
    return StorageUnavailable(f"{name}: {orig}")
