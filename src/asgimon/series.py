"""Rollup series names: how each kind names its series, and how a name is read back.

A series name is the rollups' key below the project: ``api:{METHOD} {endpoint}``,
``fn:{function}``, ``deploy:{framework}`` (completed deployments), ``deploystep:{type}``,
``build:{phase}:{framework}``, ``error:{severity}:{fingerprint}:{type}``, ``domain:{type}``,
``ratelimit:{denied|shadow}:{rule}``, ``sys:{metric}:{process}`` and
``db:{metric}:{METHOD} {endpoint}:{statement}``, plus each project's totals. The prefixes are also
the ranges that reads ask for (every series starting with ``build:``), so they live here,
built and parsed in one place.
"""

from __future__ import annotations

API = "api:"
FUNCTION = "fn:"
DEPLOY = "deploy:"
DEPLOY_STEP = "deploystep:"
BUILD = "build:"
ERROR = "error:"
DOMAIN = "domain:"
RATE_LIMIT = "ratelimit:"
SYSTEM = "sys:"
DB = "db:"
DB_METRICS = frozenset({"time", "repeats"})
DB_KIND = "db_query"
"""The event kind the query-timing integration records (its series, ``db:``, are read by
the performance figures whether or not it is installed)."""

API_TOTAL = "all:api"
FUNCTION_TOTAL = "all:fn"
ERROR_TOTAL = "all:error"
"""The series every API call, function invocation and error of a project also adds to."""
TOTAL_SERIES = frozenset({API_TOTAL, FUNCTION_TOTAL, ERROR_TOTAL})

NONE = "-"  # an absent part (no framework)


def api(method: str, endpoint: str) -> str:
    return f"{API}{method} {endpoint}"


def api_parts(series: str) -> tuple[str, str]:
    """(method, endpoint) of an API series."""
    method, _, endpoint = series.removeprefix(API).partition(" ")
    return method, endpoint


def function(function_id: str) -> str:
    return FUNCTION + function_id


def function_id(series: str) -> str:
    return series.removeprefix(FUNCTION)


def deploy(framework: str | None) -> str:
    return DEPLOY + (framework or NONE)


def deploy_step(step: str) -> str:
    return DEPLOY_STEP + step


def deploy_framework(series: str) -> str:
    framework = series.removeprefix(DEPLOY)
    return "unknown" if framework == NONE else framework


def build(phase: str, framework: str | None) -> str:
    return f"{BUILD}{phase}:{framework or NONE}"


def build_parts(series: str) -> tuple[str, str]:
    """(phase, framework) of a build series."""
    phase, _, framework = series.removeprefix(BUILD).partition(":")
    return phase, ("unknown" if framework in ("", NONE) else framework)


def error(severity: str, fingerprint: str, error_type: str) -> str:
    # Fingerprints hold no colon (events check it), so the parts read back unambiguously.
    return f"{ERROR}{severity}:{fingerprint}:{error_type}"


def error_parts(series: str) -> tuple[str, str, str]:
    """(severity, fingerprint, type) of an error series."""
    severity, _, rest = series.removeprefix(ERROR).partition(":")
    fingerprint, _, error_type = rest.partition(":")
    return severity, fingerprint, error_type or "unknown"


def domain(step: str) -> str:
    return DOMAIN + step


def rate_limit(shadow: bool, rule: str) -> str:
    return f"{RATE_LIMIT}{'shadow' if shadow else 'denied'}:{rule}"


def db(metric: str, method: str, endpoint: str, digest: str) -> str:
    """A statement's series under one endpoint: ``db:{time|repeats}:{METHOD} {endpoint}:{hash}``."""
    return f"{DB}{metric}:{method} {endpoint}:{digest}"


def db_parts(series: str) -> tuple[str, str, str, str]:
    """(metric, method, endpoint, hash) of a query series; the hash holds no colon, an
    endpoint may."""
    metric, _, rest = series.removeprefix(DB).partition(":")
    route, _, digest = rest.rpartition(":")
    method, _, endpoint = route.partition(" ")
    return metric, method, endpoint, digest


def system(metric: str, process: str) -> str:
    """A sampled process metric: ``sys:memory:{host}/{pid}``, ``sys:cpu:{host}/{pid}``."""
    return f"{SYSTEM}{metric}:{process}"


def system_parts(series: str) -> tuple[str, str]:
    """(metric, process) of a system series."""
    metric, _, process = series.removeprefix(SYSTEM).partition(":")
    return metric, process


def rate_limit_parts(series: str) -> tuple[bool, str]:
    """(shadow, rule) of a rate-limit series; rule names may hold colons, the mode does not."""
    mode, _, rule = series.removeprefix(RATE_LIMIT).partition(":")
    return mode == "shadow", rule
