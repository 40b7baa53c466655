"""Fingerprints: which occurrences are the same error.

An exception's group is its type and its in-app frames, each as module and function: not
line numbers, not absolute paths, not memory addresses, so an edit above the failing line
or a second checkout of the app does not split a group. Chained exceptions (``raise ... from``
and exceptions raised while handling another) take part, the way a reader of the traceback
tells two errors apart. With no in-app frame the library frames stand in; with no frame at
all (a message, an exception never raised) the message does, with its numbers, ids, UUIDs
and hex stripped so ``user 41 not found`` and ``user 42 not found`` are one group.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT = "{{ default }}"
"""In a custom fingerprint, stands for the fingerprint asgimon would have computed."""

_UUID = re.compile(r"[0-9a-fA-F]{8}(?:-?[0-9a-fA-F]{4}){3}-?[0-9a-fA-F]{12}")
_HEX = re.compile(r"\b0[xX][0-9a-fA-F]+\b")
_ID = re.compile(r"\b(?=\w*\d)\w{4,}\b")  # a word holding a digit: usr_8f3a2, 41f0c9e2
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_QUOTED = re.compile(r"'[^']{1,200}'|\"[^\"]{1,200}\"")
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class Frame:
    """One stack frame as stored: where it ran, whether it is the app's own."""

    module: str
    function: str
    filename: str  # relative: to the app's directory, or to the package root
    lineno: int
    in_app: bool
    line: str = ""

    def to_json(self) -> dict[str, object]:
        return {
            "module": self.module,
            "function": self.function,
            "filename": self.filename,
            "lineno": self.lineno,
            "inApp": self.in_app,
            "line": self.line,
        }


def normalise_message(message: str) -> str:
    """The message with what varies between occurrences of one error replaced by markers."""
    text = _UUID.sub("<uuid>", message)
    text = _HEX.sub("<hex>", text)
    text = _QUOTED.sub("<str>", text)
    text = _ID.sub("<id>", text)
    text = _NUMBER.sub("<n>", text)
    return _SPACE.sub(" ", text).strip()[:500]


def _frame_key(f: Frame) -> str:
    # A lambda or comprehension is one frame whatever its address or position.
    return f"{f.module}:{f.function}"


def default_parts(chain: Sequence[tuple[str, str, Sequence[Frame]]]) -> list[str]:
    """What the default fingerprint hashes, for a chain of ``(type, message, frames)``,
    the outermost exception first."""
    parts: list[str] = []
    for error_type, message, frames in chain:
        in_app = [f for f in frames if f.in_app] or list(frames)
        parts.append(error_type)
        if in_app:
            parts.extend(_frame_key(f) for f in in_app)
        else:
            parts.append(normalise_message(message))
    return parts


def fingerprint(
    chain: Sequence[tuple[str, str, Sequence[Frame]]], custom: Sequence[str] | str | None = None
) -> str:
    """32 hex digits naming the group (no ``:``, which the rollup series use as a separator).

    ``custom`` replaces the default; ``{{ default }}`` inside it extends the default instead.
    """
    parts = default_parts(chain)
    if custom is not None:
        given = [custom] if isinstance(custom, str) else [str(p) for p in custom]
        parts = [p for item in given for p in (parts if item == DEFAULT else [f"custom:{item}"])]
    # surrogatepass: a message may hold lone surrogates, and still name one group.
    return hashlib.sha256("\n".join(parts).encode("utf-8", "surrogatepass")).hexdigest()[:32]
