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


def meta(
    kind: Kind,
    *,
    required: bool = False,
    indexed: bool = False,
    wire: str | None = None,
    choices: frozenset[str] | None = None,
) -> dict[str, Spec]:
    """A field's metadata carrying its :class:`Spec` (for ``dataclasses.field``)."""
    return {SPEC: Spec(kind, required, indexed, wire, choices)}


def spec(
    default: Any,
    kind: Kind,
    *,
    required: bool = False,
    indexed: bool = False,
    wire: str | None = None,
    choices: frozenset[str] | None = None,
) -> Any:
    """A dataclass field with an immutable default, carrying its :class:`Spec`."""
    return dataclasses.field(
        default=default,
        metadata=meta(kind, required=required, indexed=indexed, wire=wire, choices=choices),
    )


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
