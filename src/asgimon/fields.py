"""What each field of an event is, declared once beside it, for every part that reads it.

An event class says per field what it holds (``text(128)``, ``FLOAT``, ``INSTANT``…),
whether a client must send it, and whether storage indexes it; the storage tables, the
ingestion API's JSON names and checks, its OpenAPI schema and the Redis members all follow
from these declarations. Neutral on purpose: nothing here knows SQL or JSON Schema.

>>> @register                                       # doctest: +SKIP
... @dataclass(slots=True, kw_only=True)
... class Scan(Event):
...     kind: ClassVar[str] = "scan"
...     table: ClassVar[str] = "scan_events"
...     target: str = spec("", text(200), indexed=True, required=True)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ._validate import Checker

SPEC = "asgimon.spec"


@dataclass(frozen=True, slots=True)
class Kind:
    """The sort of value, as storage and the wire see it."""

    name: str  # text, long_text, small_int, big_int, float, bool, instant, json
    length: int | None = None


def text(length: int) -> Kind:
    return Kind("text", length)


LONG_TEXT = Kind("long_text")
SMALL_INT = Kind("small_int")
BIG_INT = Kind("big_int")
FLOAT = Kind("float")
BOOL = Kind("bool")
INSTANT = Kind("instant")
"""Epoch seconds in Python, epoch microseconds in SQL, ISO 8601 on the wire."""
JSON = Kind("json")


@dataclass(frozen=True, slots=True)
class Spec:
    kind: Kind
    required: bool = False  # a client posting the event must send it
    indexed: bool = False  # storage keeps an index of (field, time)
    wire: str | None = None  # its JSON path if not the camelCase of its name ("error.type")
    choices: frozenset[str] | None = None  # the only values it may take
    ident: bool = False  # a name data is stored and looked up under (no control characters…)
    slash: bool = False  # an identifier that may hold "/" (endpoints, frameworks)
    max_len: int | None = None  # of a long text (a text's is its kind's length)
    high: float | None = None  # the largest number it may hold (numbers start at 0)
    blank: bool = False  # a text that may be empty


def meta(kind: Kind, **options: Any) -> dict[str, Spec]:
    """A field's metadata carrying its :class:`Spec` (for ``dataclasses.field``)."""
    return {SPEC: Spec(kind, **options)}


def spec(default: Any, kind: Kind, **options: Any) -> Any:
    """A dataclass field with an immutable default, carrying its :class:`Spec`."""
    return dataclasses.field(default=default, metadata=meta(kind, **options))


def incomplete(cls: type) -> list[str]:
    """What a class's specs leave unsaid that its checks need (empty when all is said)."""
    found = []
    for f in declared(cls):
        kind = f.spec.kind.name
        if kind == "long_text" and f.spec.max_len is None:
            found.append(f"{f.name}: a long text says its max_len")
        elif kind in ("small_int", "big_int", "float") and f.spec.high is None:
            found.append(f"{f.name}: a number says its highest value (high=)")
    return found


def check(c: Checker, f: Field, value: Any) -> None:
    """The checks its spec implies, with the messages clients read (see ``_validate``)."""
    s, name = f.spec, f.name
    kind = s.kind.name
    if kind in ("text", "long_text"):
        max_len = s.max_len or s.kind.length
        assert max_len is not None, f"{name}: a long text says its max_len"
        required = not f.optional and not s.blank
        if s.ident:
            c.identifier(name, value, max_len=max_len, required=required, slash=s.slash)
        else:
            c.text(name, value, max_len=max_len, required=required, choices=s.choices)
    elif kind == "bool":
        c.flag(name, value)
    elif kind == "json":
        c.json_object(name, value)
    elif kind == "instant" and s.high is None:
        c.timestamp(name, value)
    else:
        assert s.high is not None, f"{name}: a number says its highest value"
        integer = kind in ("small_int", "big_int")
        c.number(name, value, high=s.high, required=not f.optional, integer=integer)


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


@dataclass(frozen=True, slots=True)
class Field:
    """One declared field of an event class."""

    name: str
    spec: Spec
    optional: bool  # may be None

    @property
    def wire(self) -> str:
        return self.spec.wire or camel(self.name)


_declared: dict[type, tuple[Field, ...]] = {}


def declared(cls: type) -> tuple[Field, ...]:
    """The fields an event class declares beyond the ones every event has."""
    found = _declared.get(cls)
    if found is None:
        found = _declared[cls] = tuple(
            Field(f.name, f.metadata[SPEC], "None" in str(f.type))
            for f in dataclasses.fields(cls)
            if SPEC in f.metadata
        )
    return found
