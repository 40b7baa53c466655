"""Scrubbing: what an error report may never carry, removed before it is queued or stored.

A key is sensitive when, lower-cased and stripped of ``-``, ``_``, ``.`` and spaces, it
contains a term of the denylist (``X-Api-Key`` is ``xapikey``, which holds ``apikey``). Its
value is replaced by :data:`FILTERED`. Free text (messages, stacks, reprs) is cleaned of
``key=value`` / ``key: value`` pairs whose key is sensitive, of bearer credentials, of
card numbers (13 to 19 digits passing the Luhn check) and of every value that a sensitive
key held elsewhere in the same report: a token sent in a header and echoed into an
exception message is caught by its value.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

FILTERED = "[Filtered]"

DEFAULT_DENYLIST = (
    "password",
    "passwd",
    "pwd",
    "secret",
    "token",
    "apikey",
    "authorization",
    "auth",
    "cookie",
    "session",
    "csrf",
    "xsrf",
    "privatekey",
    "credential",
    "creditcard",
    "cardnumber",
    "cvv",
    "ssn",
    "bearer",
    "signature",
    "dsn",
)
"""Terms in sensitive keys (compared without ``-``, ``_``, ``.``, spaces and case)."""

_NORMALISE = str.maketrans("", "", "-_. ")
_CARD = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")
_BEARER = re.compile(r"(?i)\b(bearer|basic|token)\s+([A-Za-z0-9._~+/=-]{8,})")
# key=value, key: value, "key": "value": filtered when the key is sensitive.
# From the start of a word only: tried at every position, a key would be matched again
# from each of its letters.
_KEY = re.compile(r"(?<![\w.-])([\w.-]+)[\"']?\s*[:=]\s*[\"']?")
_VALUE = re.compile(r"[^\s\"'&,;}]+")
MAX_JUDGED = 4096
MIN_ECHO = 6
"""Values shorter than this are not hunted for in free text: ``1`` would blank every digit."""


def normalise_key(key: str) -> str:
    return key.lower().translate(_NORMALISE)


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


class Scrubber:
    """Removes sensitive keys' values and secrets in text. Stateless but for ``echoes``.

    >>> s = Scrubber()
    >>> s.mapping({"user": "ann", "api_key": "k-123456"})
    {'user': 'ann', 'api_key': '[Filtered]'}
    >>> s.text("login failed: password=hunter22 for ann")
    'login failed: password=[Filtered] for ann'
    """

    def __init__(self, extra: Iterable[str] = (), *, defaults: bool = True) -> None:
        terms = {normalise_key(t) for t in (*(DEFAULT_DENYLIST if defaults else ()), *extra)}
        self.terms = tuple(sorted(t for t in terms if t))
        self.echoes: set[str] = set()
        # Keys repeat (header names, context keys): each is judged once, for every report.
        self._judged: dict[str, bool] = {}

    def fork(self) -> Scrubber:
        """A scrubber for one report: the same rules, its own remembered values."""
        other = object.__new__(Scrubber)
        other.terms = self.terms
        other.echoes = set()
        other._judged = self._judged
        return other

    def sensitive(self, key: str) -> bool:
        found = self._judged.get(key)
        if found is None:
            k = normalise_key(key)
            found = any(t in k for t in self.terms)
            if len(self._judged) < MAX_JUDGED:
                self._judged[key] = found
        return found

    def remember(self, value: Any) -> None:
        if isinstance(value, str) and len(value) >= MIN_ECHO:
            self.echoes.add(value)

    def text(self, value: str) -> str:
        if not value:
            return value
        value = _BEARER.sub(self._bearer, value)
        if ":" in value or "=" in value:
            value = self._pairs(value)
        value = _CARD.sub(_card, value)
        for echo in sorted(self.echoes, key=len, reverse=True):
            if echo in value:
                value = value.replace(echo, FILTERED)
        return value

    def echoes_out(self, value: str) -> str:
        """Only the remembered values blanked: for text made of parts already cleaned."""
        for echo in sorted(self.echoes, key=len, reverse=True):
            if echo in value:
                value = value.replace(echo, FILTERED)
        return value

    def _bearer(self, m: re.Match[str]) -> str:
        self.remember(m.group(2))
        return f"{m.group(1)} {FILTERED}"

    def _pairs(self, text: str) -> str:
        # A loop rather than one sub(): in "for ann: password=x" the pair "ann: ..." must
        # not swallow the sensitive pair inside its value.
        out: list[str] = []
        pos = 0
        while (key := _KEY.search(text, pos)) is not None:
            value = _VALUE.match(text, key.end())
            if value is None or not self.sensitive(key.group(1)):
                out.append(text[pos : key.end()])
                pos = key.end()
                continue
            if not text.startswith(FILTERED, key.end()):
                self.remember(value.group(0))
            out.append(text[pos : key.end()] + FILTERED)
            pos = key.end() + len(FILTERED) if text.startswith(FILTERED, key.end()) else value.end()
        out.append(text[pos:])
        return "".join(out)

    def value(self, value: Any, depth: int = 0) -> Any:
        """A JSON-like value with sensitive keys filtered and its text cleaned, recursively."""
        if isinstance(value, str):
            return self.text(value)
        if depth > 8:
            return FILTERED
        if isinstance(value, Mapping):
            return self.mapping(value, depth + 1)
        if isinstance(value, list | tuple):
            return [self.value(v, depth + 1) for v in value]
        return value

    def mapping(self, data: Mapping[str, Any], depth: int = 0) -> dict[str, Any]:
        # Two passes: every sensitive value is remembered before any text is cleaned, so
        # a secret is caught in a sibling field whatever the order of the keys.
        self.collect(data, depth)
        return {
            k: FILTERED if self.sensitive(str(k)) else self.value(v, depth) for k, v in data.items()
        }

    def collect(self, data: Any, depth: int = 0) -> None:
        """Remember the values of sensitive keys anywhere in ``data``."""
        if depth > 8:
            return
        if isinstance(data, Mapping):
            for k, v in data.items():
                if self.sensitive(str(k)):
                    self._remember_all(v, depth + 1)
                else:
                    self.collect(v, depth + 1)
        elif isinstance(data, list | tuple):
            for v in data:
                self.collect(v, depth + 1)

    def _remember_all(self, value: Any, depth: int) -> None:
        if depth > 8:
            return
        if isinstance(value, Mapping):
            for v in value.values():
                self._remember_all(v, depth + 1)
        elif isinstance(value, list | tuple):
            for v in value:
                self._remember_all(v, depth + 1)
        elif value is not None:
            self.remember(str(value))


def _card(m: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", m.group(0))
    return FILTERED if 13 <= len(digits) <= 19 and luhn_ok(digits) else m.group(0)
