"""Reading a response's IETF ``RateLimit`` header back: the limit's name, what remains, the
seconds until its window frees a request."""

from __future__ import annotations

import re

import httpx

_FIELD = re.compile(r'^"((?:[^"\\]|\\.)*)";r=(\d+);t=(\d+)$')


def standing(response: httpx.Response) -> tuple[str, int, int]:
    found = _FIELD.match(response.headers["ratelimit"])
    assert found is not None, response.headers["ratelimit"]
    return found[1], int(found[2]), int(found[3])


def remaining(response: httpx.Response) -> int:
    return standing(response)[1]
