"""How each setting's text becomes a value, and which values it may take.

The parsers and checks :class:`~asgimon.settings.Settings` declares its fields with: each
check pairs a predicate with the words a start-up error uses for what is allowed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import field
from typing import Any

from limits import parse_many
from sqlalchemy.engine import make_url

from ._validate import project_id_problem
from .storage.schemes import SCHEMES

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})

STORAGE_SCHEMES = tuple(SCHEMES)

DEFAULT_EXCLUDE_PATHS = (
    "/health",
    "/healthz",
    "/livez",
    "/readyz",
    "/ping",
    "/favicon.ico",
    "/robots.txt",
    "/.well-known/*",
)


def parse_bool(raw: str) -> bool:
    low = raw.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError(raw)


def parse_optional_str(raw: str) -> str | None:
    return raw.strip() or None


def parse_paths(raw: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in raw.split(",") if p.strip())


def int_at_least(low: int) -> tuple[Callable[[Any], bool], str]:
    def check(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= low

    return check, f"an integer >= {low}"


def int_between(low: int, high: int, what: str = "an integer") -> tuple[Callable[[Any], bool], str]:
    def check(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and low <= v <= high

    return check, f"{what} from {low} to {high}"


def float_between(
    low: float, high: float, what: str = "a number of seconds"
) -> tuple[Callable[[Any], bool], str]:
    def check(v: Any) -> bool:
        return (
            isinstance(v, int | float)
            and not isinstance(v, bool)
            and math.isfinite(v)
            and low <= v <= high
        )

    return check, f"{what} from {low:g} to {high:g}"


def is_bool(v: Any) -> bool:
    return isinstance(v, bool)


def is_storage_url(v: Any) -> bool:
    if not isinstance(v, str) or "://" not in v:
        return False
    scheme = v.split("://", 1)[0].lower()
    if scheme not in STORAGE_SCHEMES:
        return False
    if scheme == "memory":
        return v.lower() == "memory://"
    if scheme.startswith("redis"):
        return len(v) > len(scheme) + 3
    try:
        url = make_url(v)
        _ = url.port  # a port that is not a number raises here, not at the first connection
    except (ValueError, TypeError):
        return False
    if scheme.startswith("sqlite"):
        return url.database not in (None, "", ":memory:")
    return bool(url.host or url.query.get("host"))


def is_optional_url(schemes: tuple[str, ...]) -> Callable[[Any], bool]:
    def check(v: Any) -> bool:
        return v is None or (
            isinstance(v, str) and "://" in v and v.split("://", 1)[0].lower() in schemes
        )

    return check


def is_optional_text(v: Any) -> bool:
    return v is None or (isinstance(v, str) and 0 < len(v) <= 4096)


def is_mount_path(v: Any) -> bool:
    return (
        isinstance(v, str)
        and v.startswith("/")
        and not v.endswith("/")
        and len(v) <= 200
        and all(c.isalnum() or c in "-_./" for c in v)
    )


PROJECT_ID_RULE = "1 to 128 printable characters, no / or \\, no whitespace at either end"


def is_project_id(v: Any) -> bool:
    return project_id_problem(v) is None


def parse_ingest_keys(raw: str) -> tuple[tuple[str, str], ...]:
    pairs = []
    for item in raw.split(","):
        if not item.strip():
            continue
        project, sep, key = item.strip().partition("=")
        if not sep:
            raise ValueError(item)
        pairs.append((project.strip(), key.strip()))
    return tuple(pairs)


def is_ingest_keys(v: Any) -> bool:
    return isinstance(v, tuple) and all(
        isinstance(p, tuple)
        and len(p) == 2
        and (p[0] == "*" or is_project_id(p[0]))
        and isinstance(p[1], str)
        and 16 <= len(p[1]) <= 256
        and p[1].isprintable()
        for p in v
    )


def is_sentry_keys(v: Any) -> bool:
    """Ingest-key pairs, each key naming one project (a DSN reports into one), none ``*``."""
    if not is_ingest_keys(v):
        return False
    keys = [key for _, key in v]
    return all(project != "*" for project, _ in v) and len(keys) == len(set(keys))


def is_key_prefix(v: Any) -> bool:
    return isinstance(v, str) and 0 < len(v) <= 64 and all(c.isalnum() or c in "-_." for c in v)


def is_paths(v: Any) -> bool:
    return isinstance(v, tuple) and all(
        isinstance(p, str) and p.startswith("/") and len(p) <= 500 for p in v
    )


def parse_statuses(raw: str) -> tuple[tuple[int, int], ...]:
    """``500-599,429`` as ranges ``((500, 599), (429, 429))``; empty for none."""
    ranges = []
    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        lo, sep, hi = item.partition("-")
        ranges.append((int(lo), int(hi) if sep else int(lo)))
    return tuple(ranges)


def is_statuses(v: Any) -> bool:
    return isinstance(v, tuple) and all(
        isinstance(r, tuple)
        and len(r) == 2
        and all(isinstance(n, int) and 100 <= n <= 599 for n in r)
        and r[0] <= r[1]
        for r in v
    )


def parse_words(raw: str) -> tuple[str, ...]:
    return tuple(w.strip() for w in raw.split(",") if w.strip())


def is_words(v: Any) -> bool:
    return isinstance(v, tuple) and all(
        isinstance(w, str) and 0 < len(w) <= 100 and w.isprintable() for w in v
    )


RELEASE_VARIABLES = (
    "SENTRY_RELEASE",
    "GIT_SHA",
    "GIT_COMMIT",
    "SOURCE_VERSION",
    "RENDER_GIT_COMMIT",
    "VERCEL_GIT_COMMIT_SHA",
    "RAILWAY_GIT_COMMIT_SHA",
    "HEROKU_SLUG_COMMIT",
    "CF_PAGES_COMMIT_SHA",
)
"""Where platforms and CI put the release a process runs, read when
``ANALYTICS_DEPLOYMENT_ID`` is not set."""


SECRET_FIELDS = frozenset({"jwt_secret", "ingest_keys", "sentry_keys", "smtp_url"})


def shown(field_name: str, value: Any) -> Any:
    """A value for an error message: secrets are never printed (logs travel far)."""
    return "(hidden)" if field_name in SECRET_FIELDS else value


JWT_ALGORITHMS = ("HS256", "HS384", "HS512", "RS256", "RS384", "RS512")


def parse_key(raw: str) -> str | None:
    text = raw.strip()
    if not text or text.startswith("-----BEGIN"):
        return text or None
    try:
        with open(text, encoding="ascii") as f:
            return f.read().strip()
    except (OSError, UnicodeDecodeError):
        raise ValueError(raw) from None


def is_optional_pem(v: Any) -> bool:
    return v is None or (
        isinstance(v, str) and v.startswith("-----BEGIN") and "PUBLIC KEY-----" in v
    )


def is_optional_rate(v: Any) -> bool:
    if v is None:
        return True
    if not isinstance(v, str):
        return False
    try:
        return bool(parse_many(v))
    except ValueError:
        return False


def setting(
    env: str,
    default: Any,
    parse: Callable[[str], Any],
    check: tuple[Callable[[Any], bool], str],
) -> Any:
    return field(default=default, metadata={"env": env, "parse": parse, "check": check})


BOOL = (is_bool, "true or false (also 1/0, yes/no, on/off)")
