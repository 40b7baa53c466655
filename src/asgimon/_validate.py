"""Field checks shared by every event kind: collect errors, never stop at the first."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Collection
from datetime import datetime
from typing import Any

from .errors import FieldError

# Ten minutes of clock skew into the future is generous for CI runners; data older than
# retention would be purged at once, so it is refused instead (see RELIABILITY F36).
MAX_FUTURE_S = 600.0
DEFAULT_MAX_AGE_S = 91 * 86_400.0
MAX_DURATION_MS = 30 * 86_400_000.0
MAX_CONTEXT_BYTES = 16_384
MAX_CONTEXT_DEPTH = 6
MAX_PROJECT_ID = 128


class Checker:
    """Accumulates :class:`FieldError` s for one event."""

    __slots__ = ("errors",)

    def __init__(self) -> None:
        self.errors: list[FieldError] = []

    def fail(self, name: str, message: str) -> None:
        self.errors.append(FieldError(name, message))

    def text(
        self,
        name: str,
        value: Any,
        *,
        max_len: int,
        required: bool = True,
        choices: Collection[str] | None = None,
    ) -> None:
        if value is None:
            if required:
                self.fail(name, "is required")
            return
        if not isinstance(value, str):
            self.fail(name, f"must be a string, not {type(value).__name__}")
            return
        if required and not value:
            self.fail(name, "must not be empty")
        elif len(value) > max_len:
            self.fail(name, f"must be at most {max_len} characters")
        elif "\x00" in value:
            self.fail(name, "must not contain NUL characters")
        elif not _encodable(value):
            self.fail(name, "must be valid Unicode (no lone surrogates)")
        elif choices is not None and value not in choices:
            self.fail(name, "must be one of " + ", ".join(sorted(choices)))

    def number(
        self,
        name: str,
        value: Any,
        *,
        high: float,
        required: bool = False,
        integer: bool = False,
    ) -> None:
        if value is None:
            if required:
                self.fail(name, "is required")
            return
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(name, "must be a number")
        elif integer and not isinstance(value, int):
            self.fail(name, "must be an integer")
        elif isinstance(value, float) and not math.isfinite(value):
            self.fail(name, "must be a finite number")
        elif not 0 <= value <= high:
            self.fail(name, f"must be between 0 and {high:g}")

    def identifier(
        self, name: str, value: Any, *, max_len: int, required: bool = True, slash: bool = False
    ) -> None:
        """A name data is stored and looked up under: see :func:`identifier_problem`."""
        before = len(self.errors)
        self.text(name, value, max_len=max_len, required=required)
        if len(self.errors) == before and isinstance(value, str) and value:
            problem = identifier_problem(value, slash=slash)
            if problem is not None:
                self.fail(name, problem)

    def json_object(self, name: str, value: Any) -> None:
        """A small JSON object: what error context may hold."""
        if not isinstance(value, dict):
            self.fail(name, "must be an object")
            return
        try:
            text = json.dumps(value, allow_nan=False, separators=(",", ":"))
        except (TypeError, ValueError, RecursionError):
            self.fail(name, "must hold only JSON values (finite numbers, strings, lists, objects)")
            return
        if len(text) > MAX_CONTEXT_BYTES:
            self.fail(name, f"must be at most {MAX_CONTEXT_BYTES} bytes as JSON")
        elif "\\u0000" in text or not _encodable(text):
            self.fail(name, "must not contain NUL characters or lone surrogates")

    def flag(self, name: str, value: Any) -> None:
        if not isinstance(value, bool):
            self.fail(name, "must be true or false")

    def timestamp(
        self, name: str, value: Any, *, now: float | None = None, max_age_s: float | None = None
    ) -> None:
        if isinstance(value, datetime):
            self.fail(name, "must be timezone-aware (naive datetimes are ambiguous)")
            return
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(name, "must be a timestamp")
            return
        if not math.isfinite(value):
            self.fail(name, "must be a finite timestamp")
            return
        now = time.time() if now is None else now
        oldest = now - (DEFAULT_MAX_AGE_S if max_age_s is None else max_age_s)
        if value > now + MAX_FUTURE_S:
            self.fail(name, "is in the future (timestamp_out_of_range)")
        elif value < oldest:
            self.fail(name, "is older than retention allows (timestamp_out_of_range)")


def identifier_problem(value: str, *, slash: bool = False) -> str | None:
    """Why ``value`` cannot name a project, deployment, function or endpoint; None if it can.

    The write side and the read side both ask this, so whatever is stored can be read back
    by its name. Refused: control, format and bidi characters (``str.isprintable``: NUL,
    newline, U+202E, zero-width spaces, lone surrogates), whitespace at either end, ``.``
    and ``..``, and path separators unless ``slash`` (endpoints are paths).
    """
    if not value.isprintable():
        return "must hold only printable characters (no control, format or bidi characters)"
    if value != value.strip():
        return "must not start or end with whitespace"
    if value in (".", ".."):
        return "must not be . or .."
    if not slash and ("/" in value or "\\" in value):
        return "must not contain / or \\"
    return None


def project_id_problem(value: Any) -> str | None:
    """Why ``value`` is not a project id (1 to 128 characters, an identifier); None if it is."""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_PROJECT_ID:
        return f"must be 1 to {MAX_PROJECT_ID} characters"
    return identifier_problem(value)


# ISO 8601 needs no more than these; anything else (NUL, a newline after the offset, which
# ``datetime.fromisoformat`` ignores) is refused before parsing.
_ISO_CHARS = frozenset("0123456789-:.,+TZWtz ")


def iso_instant(raw: str) -> datetime | None:
    """An ISO 8601 text as a datetime (naive if it has no offset); None if it is not one."""
    if not 0 < len(raw) <= 64 or not _ISO_CHARS.issuperset(raw):
        return None
    try:
        return datetime.fromisoformat(raw)
    except ValueError:
        return None


def _encodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def to_epoch(value: datetime | float | int | None) -> float | Any:
    """Normalise a timestamp to epoch seconds; naive datetimes are refused later as bad input."""
    if value is None:
        return time.time()
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return value  # left as is so the checker reports it
        return value.timestamp()
    return value


def clean_text(value: str, max_len: int) -> str:
    """Make text from the wire safe to store: bounded, no NUL, no lone surrogates."""
    if len(value) <= max_len and value.isascii() and "\x00" not in value:
        return value
    if len(value) > max_len:
        value = value[:max_len]
    if "\x00" in value:
        value = value.replace("\x00", "")
    if not _encodable(value):
        value = value.encode("utf-8", "replace").decode("utf-8")
    return value


def bounded_json(value: Any, depth: int = 0) -> Any:
    """A JSON-safe copy of host data for error context: bounded depth, sizes and text.

    Anything else (objects, bytes, NaN) becomes its bounded ``repr``; it never raises.
    """
    if value is None or isinstance(value, bool | int):
        return value if not isinstance(value, int) or abs(value) < 2**53 else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, str):
        return clean_text(value, 1000)
    if depth >= MAX_CONTEXT_DEPTH:
        return "…"
    if isinstance(value, dict):
        items = list(value.items())[:50]
        return {clean_text(str(k), 100): bounded_json(v, depth + 1) for k, v in items}
    if isinstance(value, list | tuple | set | frozenset):
        return [bounded_json(v, depth + 1) for v in list(value)[:50]]
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return clean_text(text, 200)
