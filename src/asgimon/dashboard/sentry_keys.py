"""Which Sentry DSN key a request presents, and the project it opens."""

from __future__ import annotations

import hmac
import re
from typing import Any

from asgimon.settings import Settings

from .auth import Principal

SENTRY_PATH = re.compile(r"^/api/\d{1,18}/(envelope|store)/$")
_AUTH_FIELD = re.compile(r"sentry_key\s*=\s*([^,\s]+)")


def sentry_key(scope: Any) -> str | None:
    """The DSN public key a request presents, from ``X-Sentry-Auth`` or the query."""
    for name, value in scope.get("headers") or ():
        if name in (b"x-sentry-auth", b"authorization"):
            found = _AUTH_FIELD.search(value.decode("latin-1"))
            if found:
                key: str = found.group(1)
                return key
    query: str = scope.get("query_string", b"").decode("latin-1")
    for part in query.split("&"):
        name_, _, given = part.partition("=")
        if name_ == "sentry_key" and given:
            return given
    return None


def sentry_principal(settings: Settings, key: str) -> Principal | None:
    projects = {
        project
        for project, known in settings.sentry_keys
        if project != "*" and hmac.compare_digest(known.encode(), key.encode())
    }
    if len(projects) != 1:
        return None
    return Principal(subject="sentry-key", projects=frozenset(projects), ingest_only=True)
