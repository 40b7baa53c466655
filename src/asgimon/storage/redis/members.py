"""An event as the JSON member of its ZSET, encoded and decoded exactly."""

from __future__ import annotations

import json
import operator
from collections.abc import Callable
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Any

from asgimon.events import EVENT_TYPES, Event
from asgimon.fields import declared

# -- members: an event as the JSON object stored in its ZSET ---------------------------------

_JSON = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
_json_any: Callable[[Any], str] = _JSON.encode
if c_make_encoder is not None:
    # One C encoder for every call: ``json.dumps`` with options builds a new one each time.
    # No circularity markers (a failed encode would leave stale ones behind): a cycle ends
    # in RecursionError instead, rejected like any other bad event.
    _c_encode = c_make_encoder(
        None, _JSON.default, encode_basestring_ascii, None, ":", ",", False, False, False
    )

    def _json_any(value: Any) -> str:
        return "".join(_c_encode(value, 0))


def _json_float(value: float) -> str:
    if value - value != 0.0:  # inf and nan
        raise ValueError(f"Out of range float values are not JSON compliant: {value!r}")
    return float.__repr__(value)


# Exactly what the JSON encoder writes for these types; anything else goes through it.
_JSON_SCALAR: dict[type, Callable[[Any], str]] = {
    str: encode_basestring_ascii,
    int: int.__repr__,
    float: _json_float,
    bool: lambda value: "true" if value else "false",
    type(None): lambda _: "null",
}


def _member_encoder(kind: str) -> Callable[[Event], str]:
    """What ``json.dumps({field: value, ..., "kind": kind}, separators=(",", ":"),
    allow_nan=False)`` writes for an event of this kind, its keys written once: ASCII only, so
    no member holds a newline."""
    # What every event has, then what its kind declares: undeclared fields are not stored.
    names = ("id", "project_id", "timestamp", *(f.name for f in declared(EVENT_TYPES[kind])))
    keys = [("," if i else "{") + encode_basestring_ascii(n) + ":" for i, n in enumerate(names)]
    tail = "," + encode_basestring_ascii("kind") + ":" + encode_basestring_ascii(kind) + "}"
    template = "%s".join(k.replace("%", "%%") for k in keys) + "%s" + tail.replace("%", "%%")
    get = operator.attrgetter(*names)
    scalar, other = _JSON_SCALAR.get, _json_any

    def encode(ev: Event) -> str:
        return template % tuple([scalar(type(v), other)(v) for v in get(ev)])

    return encode


class _Members(dict[str, Callable[[Event], str]]):
    """Each kind's encoder, made on first use (a kind may be registered after import)."""

    def __missing__(self, kind: str) -> Callable[[Event], str]:
        encode = self[kind] = _member_encoder(kind)
        return encode


_MEMBER = _Members()


def _decode(member: str | bytes) -> Event:
    data = json.loads(member)
    kind = data.pop("kind")
    return EVENT_TYPES[kind](**data)
